"""Data files with bytes that are not UTF-8, empty files and skipped rows: errors name the file and
the row, ``on_malformed=skip`` applies, and skipped rows are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo_rl.data.readers import read_files, read_rows
from dapo_rl.errors import DataError

GOOD = json.dumps({"problem": "1+1", "answer": "2"}).encode()
BAD = b'{"problem": "caf\xff", "answer": "3"}'  # latin-1 byte inside a string


def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_non_utf8_jsonl_row_names_file_row_and_byte(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, BAD, GOOD])
    with pytest.raises(DataError, match=r"train\.jsonl: row 2 \(line 3\): not valid UTF-8 \(byte 0xff"):
        read_rows(path)


def test_non_utf8_jsonl_row_is_skipped_and_counted(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "train.jsonl", [GOOD, BAD, GOOD])
    rows, stats = read_rows(path, on_malformed="skip")
    assert [r.uid for r in rows] == ["train.jsonl:0", "train.jsonl:2"]
    assert stats["skipped_malformed"] == 1 and "row 1 (line 2): not valid UTF-8" in stats["first_skipped"]


def test_non_utf8_json_record_names_the_row_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_bytes(b"[" + b", ".join([GOOD, GOOD, BAD]) + b"]")
    with pytest.raises(DataError, match=r"eval\.json: row 2: not valid UTF-8 \(byte 0xff\)"):
        read_rows(path)
    rows, stats = read_rows(path, on_malformed="skip")
    assert len(rows) == 2 and stats["skipped_malformed"] == 1


def test_skipped_rows_are_reported(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", [GOOD, b"not json", BAD, GOOD])
    b = _jsonl(tmp_path / "b.jsonl", [GOOD])
    reports: list[str] = []
    rows = read_files([a, b], on_malformed="skip", report=reports.append)
    assert len(rows) == 3
    assert reports == [
        f"skipped 2 malformed row(s) of {a} (data.on_malformed=skip), kept 2; first: {a}: row 1 (line 2): "
        "invalid JSON (Expecting value at column 1)"
    ]


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "eval.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"eval\.jsonl holds no usable row: it is empty"):
        read_rows(empty)
    bad = _jsonl(tmp_path / "bad.jsonl", [BAD])
    with pytest.raises(DataError, match=r"no usable row: all 1 row\(s\) are malformed, e\.g\. .*row 0"):
        read_rows(bad, on_malformed="skip")
