"""read_rows on the real shared datasets, and its errors on small malformed files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _helpers_data import SHARED_DATA, SKIP_REASON

from dapo_rl.data import PromptRow, read_rows

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=SKIP_REASON)

# file, rows, prompt key, answer key, prompt kind
REAL_FILES = [
    ("gsm8k/gsm8k_train.jsonl", 7473, "question", "answer", str),
    ("gsm8k/gsm8k_test.jsonl", 1319, "question", "answer", str),
    ("math500/math500_test.jsonl", 500, "problem", "answer", str),
    ("aime2024/aime24_test.jsonl", 30, "question", "answer", str),
    ("aime2025/aime2025.jsonl", 30, "problem", "answer", str),
    ("amc23/amc23_test.jsonl", 40, "question", "answer", str),
    ("dapo_math_17k/dapo_math_17k.parquet", 17917, "prompt", "reward_model.ground_truth", list),
    ("countdown/countdown_train.parquet", 8001, "prompt", "reward_model.ground_truth", list),
    ("countdown/countdown_test.parquet", 2001, "prompt", "reward_model.ground_truth", list),
]


@needs_shared
@pytest.mark.parametrize(
    ("name", "count", "prompt_key", "answer_key", "kind"), REAL_FILES, ids=[f[0] for f in REAL_FILES]
)
def test_every_real_row_parses(name: str, count: int, prompt_key: str, answer_key: str, kind: type) -> None:
    path = SHARED_DATA / name
    rows, stats = read_rows(path, on_malformed="error")
    assert stats == {
        "rows": count,
        "skipped_malformed": 0,
        "prompt_key": prompt_key,
        "answer_key": answer_key,
    }
    assert len(rows) == count
    assert [r.uid for r in rows] == [f"{path.name}:{i}" for i in range(count)]
    for row in rows:
        assert isinstance(row, PromptRow) and isinstance(row.prompt, kind)
        assert isinstance(row.answer, str) and row.answer.strip() == row.answer and row.answer
        if kind is list:
            assert row.prompt and all(set(m) == {"role", "content"} for m in row.prompt)
            assert row.prompt[-1]["role"] == "user"


@needs_shared
@pytest.mark.parametrize(
    ("name", "first"), [("gsm8k/gsm8k_train.jsonl", "72"), ("gsm8k/gsm8k_test.jsonl", "18")]
)
def test_gsm8k_answer_is_the_final_number(name: str, first: str) -> None:
    rows, _ = read_rows(SHARED_DATA / name)
    assert rows[0].answer == first and rows[0].extra["solution"].endswith(f"#### {first}")
    for row in rows:
        assert re.fullmatch(r"-?\d+", row.answer), row.uid
        assert row.answer == row.extra["solution"].split("####")[-1].strip().replace(",", "")
    assert any("," in r.extra["solution"].split("####")[-1] for r in rows), "some answers carry commas"


@needs_shared
def test_amc_float_answers_become_canonical_strings() -> None:
    rows, _ = read_rows(SHARED_DATA / "amc23/amc23_test.jsonl")
    assert rows[0].answer == "27"
    assert not any(r.answer.endswith(".0") for r in rows)
    assert "-1" in {r.answer for r in rows}


@needs_shared
def test_dapo_math_layout() -> None:
    rows, _ = read_rows(SHARED_DATA / "dapo_math_17k/dapo_math_17k.parquet")
    for row in rows[:200]:
        assert len(row.prompt) == 1 and row.prompt[0]["role"] == "user"
        assert row.answer == row.extra["reward_model"]["ground_truth"]
    assert all(r.answer.lstrip("-").isdigit() for r in rows)


@needs_shared
def test_countdown_ground_truth_is_json() -> None:
    rows, _ = read_rows(SHARED_DATA / "countdown/countdown_test.parquet")
    for row in rows:
        truth = json.loads(row.answer)
        assert truth == {"numbers": row.extra["nums"], "target": row.extra["target"]}
    assert rows[0].answer == '{"numbers": [96, 7, 37, 74], "target": 55}'


# ------------------------------------------------------------------------------ malformed inputs
def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"problem": "1+1?", "answer": "2"})


def test_bad_json_line_names_file_and_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, '{"problem": "x", "answer": ', GOOD])
    with pytest.raises(ValueError, match=r"bad\.jsonl: row 1 \(line 2\): invalid JSON"):
        read_rows(path)


def test_missing_key_names_file_row_and_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "missing.jsonl", [GOOD, GOOD, json.dumps({"problem": "no answer"})])
    with pytest.raises(ValueError, match=r"missing\.jsonl: row 2 \(line 3\): missing answer key 'answer'"):
        read_rows(path)


def test_wrong_types_name_the_problem(tmp_path: Path) -> None:
    cases = {
        "int_prompt": ({"problem": 5, "answer": "2"}, "the prompt must be"),
        "empty_prompt": ({"problem": "  ", "answer": "2"}, "the prompt is empty"),
        "bad_message": ({"prompt": [{"role": "user"}], "answer": "2"}, "prompt message 0"),
        "null_answer": ({"problem": "x", "answer": None}, "the answer must be"),
        "bool_answer": ({"problem": "x", "answer": True}, "the answer must be"),
        "empty_answer": ({"problem": "x", "answer": ""}, "the answer is empty"),
        "not_object": ([1, 2], "expected a JSON object"),
    }
    for name, (record, message) in cases.items():
        first = record if name == "not_object" else {**record}
        path = tmp_path / f"{name}.jsonl"
        lines = [json.dumps({"problem": "p", "prompt": [{"role": "user", "content": "c"}], "answer": "1"})]
        lines.append(json.dumps(first))
        write_jsonl(path, lines)
        key = "prompt" if name == "bad_message" else "problem"
        with pytest.raises(
            ValueError, match=re.escape(f"{name}.jsonl: row 1 (line 2): ") + ".*" + re.escape(message)
        ):
            read_rows(path, prompt_key=key)


def test_skip_mode_counts_and_keeps_uids(tmp_path: Path) -> None:
    lines = [
        GOOD,
        "not json",
        "",
        json.dumps({"problem": "x"}),
        GOOD,
        json.dumps({"problem": 3, "answer": "1"}),
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)
    rows, stats = read_rows(path, on_malformed="skip")
    assert stats["rows"] == 2 and stats["skipped_malformed"] == 3
    assert [r.uid for r in rows] == ["mixed.jsonl:0", "mixed.jsonl:3"]  # blank line not a row


def test_missing_file_and_bad_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported dataset format '\.csv'"):
        read_rows(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="on_malformed"):
        read_rows(tmp_path / "data.csv", on_malformed="ignore")  # type: ignore[arg-type]


def test_undetectable_columns_list_the_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [json.dumps({"text": "q", "label": "1"})])
    with pytest.raises(ValueError, match=r"cannot find the prompt column .*'label', 'text'.*prompt_key"):
        read_rows(path)
    rows, _stats = read_rows(path, prompt_key="text", answer_key="label")
    assert rows[0].prompt == "q" and rows[0].answer == "1" and rows[0].extra == {}


def test_json_list_numbers_and_dotted_keys(tmp_path: Path) -> None:
    records = [
        {"q": {"text": "a"}, "meta": {"gt": 27.0}, "answer": "unused"},
        {"q": {"text": "b"}, "meta": {"gt": 2.5}, "answer": "unused"},
        {"q": {"text": "c"}, "meta": {"gt": -4}, "answer": "unused"},
    ]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(records))
    rows, _ = read_rows(path, prompt_key="q.text", answer_key="meta.gt")
    assert [r.answer for r in rows] == ["27", "2.5", "-4"]
    assert rows[0].prompt == "a" and rows[0].extra["answer"] == "unused"
    path.write_text(json.dumps({"data": records}))
    with pytest.raises(ValueError, match="must hold a list"):
        read_rows(path)


def test_solution_column_is_never_the_answer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sol.jsonl", [json.dumps({"problem": "p", "solution": "long text"})])
    with pytest.raises(ValueError, match="cannot find the answer column"):
        read_rows(path)


def test_parquet_verl_layout(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"prompt": [{"role": "user", "content": "What is 2+2?"}], "reward_model": {"ground_truth": "4"}},
            {"prompt": [{"role": "user", "content": "What is 3+3?"}], "reward_model": {"ground_truth": "6"}},
        ]
    )
    pq.write_table(table, tmp_path / "tiny.parquet")
    rows, stats = read_rows(tmp_path / "tiny.parquet")
    assert stats["answer_key"] == "reward_model.ground_truth"
    assert rows[1] == PromptRow(
        prompt=[{"role": "user", "content": "What is 3+3?"}],
        answer="6",
        uid="tiny.parquet:1",
        extra={"reward_model": {"ground_truth": "6"}},
    )
