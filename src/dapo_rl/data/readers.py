"""Read problem files (.jsonl, .json, .parquet) into :class:`~dapo_rl.data.types.PromptRow` lists.

Columns are found automatically unless named (keys may be dotted paths into nested dicts, e.g.
``reward_model.ground_truth``):

- prompt: the first of ``question``, ``problem``, ``prompt`` present in the file's first row;
- answer: the first of ``answer``, ``ground_truth``, ``reward_model.ground_truth``. A ``solution``
  column is never used as the answer (it holds a worked solution, not the final answer).

Values are canonicalised so that every reward function sees a plain string:

- a prompt is either a non-empty string or a list of chat messages ``{"role", "content"}`` (the
  verl / DAPO-Math-17k layout), kept as messages;
- a GSM8K answer ``"<worked solution>\\n#### 1,080"`` becomes ``"1080"`` (the text after the last
  ``####``, thousands commas removed) and the full text is kept in ``extra["solution"]``;
- a number becomes its canonical string: ``27.0`` -> ``"27"``, ``2.5`` -> ``"2.5"``;
- a dict or list answer (Countdown's ``{"numbers": [...], "target": n}``) becomes compact JSON with
  sorted keys, ``'{"numbers": [44, 19, 35], "target": 98}'``; reward functions ``json.loads`` it.

``extra`` keeps the row's other top-level fields (everything but the prompt column and, when it is a
top-level key, the answer column). ``uid`` is ``"<file name>:<row index>"``, the 0-based index of the
record in the file (for .jsonl: among the non-blank lines), stable whether or not malformed rows
are skipped.

Bytes that are not UTF-8 make their row malformed (the message names the file, the row and the
byte), so ``on_malformed="skip"`` drops such rows like any other; :func:`read_files` reports how
many rows of each file were skipped. A file with no usable row is an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from dapo_rl.data.types import PromptRow
from dapo_rl.errors import DataError

PROMPT_KEYS: tuple[str, ...] = ("question", "problem", "prompt")
ANSWER_KEYS: tuple[str, ...] = ("answer", "ground_truth", "reward_model.ground_truth")

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")
_GROUPED_NUMBER = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")
_MISSING = object()


class MalformedRowError(DataError):
    """A row that cannot become a PromptRow (the message names the file, the row and the problem)."""


def read_rows(
    path: str | Path,
    prompt_key: str | None = None,
    answer_key: str | None = None,
    on_malformed: Literal["error", "skip"] = "error",
) -> tuple[list[PromptRow], dict[str, Any]]:
    """Read every row of ``path`` (.jsonl, .json or .parquet) as a :class:`PromptRow`.

    Args:
        path: the file.
        prompt_key: the prompt column (dotted path allowed); None detects it (see module docstring).
        answer_key: the answer column (dotted path allowed); None detects it.
        on_malformed: ``"error"`` raises ``DataError`` naming the file, the row and the problem at
            the first malformed row (missing key, wrong type, bad JSON line); ``"skip"`` drops such
            rows and counts them.

    Returns:
        ``(rows, stats)`` with ``stats = {"rows": kept, "skipped_malformed": skipped,
        "prompt_key": ..., "answer_key": ...}``, plus ``"first_skipped"`` (where and why) when a
        row was skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError (a ValueError): an unsupported extension, undetectable columns, a malformed row
            in ``"error"`` mode, or no usable row at all.
    """
    if on_malformed not in ("error", "skip"):
        raise ValueError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    rows: list[PromptRow] = []
    skipped, first_skipped = 0, None
    keys: tuple[str, str] | None = None
    for index, line_note, record in _iter_records(path):
        try:
            if isinstance(record, _BadRecord):
                raise MalformedRowError(record.reason)
            if not isinstance(record, dict):
                raise MalformedRowError(f"expected a JSON object, got {type(record).__name__}")
            if keys is None:
                keys = (
                    prompt_key or _detect(record, PROMPT_KEYS, "prompt", path),
                    answer_key or _detect(record, ANSWER_KEYS, "answer", path),
                )
            rows.append(_to_row(record, keys[0], keys[1], f"{path.name}:{index}"))
        except MalformedRowError as exc:
            where = f"{path}: row {index}{line_note}: {exc}"
            if on_malformed == "error":
                raise DataError(where + " (or set data.on_malformed=skip to drop such rows)") from None
            skipped += 1
            first_skipped = first_skipped or where
    if not rows:
        why = f"all {skipped} row(s) are malformed, e.g. {first_skipped}" if skipped else "it is empty"
        raise DataError(f"{path} holds no usable row: {why}")
    stats: dict[str, Any] = {
        "rows": len(rows),
        "skipped_malformed": skipped,
        "prompt_key": keys[0] if keys else prompt_key,
        "answer_key": keys[1] if keys else answer_key,
    }
    if first_skipped:
        stats["first_skipped"] = first_skipped
    return rows, stats


def read_files(
    paths: list[str] | list[Path],
    prompt_key: str | None = None,
    answer_key: str | None = None,
    on_malformed: Literal["error", "skip"] = "error",
    report: Any = print,
) -> list[PromptRow]:
    """The rows of every file in order (see :func:`read_rows`); each file's skipped rows are
    reported with ``report(message)``, naming the first one and why it was skipped."""
    rows: list[PromptRow] = []
    for path in paths:
        got, stats = read_rows(path, prompt_key, answer_key, on_malformed)
        if stats["skipped_malformed"]:
            report(
                f"skipped {stats['skipped_malformed']} malformed row(s) of {path} "
                f"(data.on_malformed=skip), kept {stats['rows']}; first: {stats['first_skipped']}"
            )
        rows += got
    return rows


# ------------------------------------------------------------------------------------ file formats
class _BadRecord:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _iter_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield ``(row index, " (line n)" or "", record)``; unreadable records come as _BadRecord."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        index = 0
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                yield index, f" (line {line_no})", _json_line(raw)
                index += 1
    elif suffix == ".json":
        # undecodable bytes become lone surrogates, so one bad string spoils only its own record
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json dataset must hold a list of objects, got {type(data).__name__}")
        for index, record in enumerate(data):
            bad = _undecodable(record)
            yield index, "", _BadRecord(f"not valid UTF-8 (byte 0x{bad:02x})") if bad is not None else record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # deferred: only parquet readers pay for it

        for index, record in enumerate(pq.read_table(path).to_pylist()):
            yield index, "", record
    else:
        raise DataError(f"{path}: unsupported dataset format {suffix!r} (use .jsonl, .json or .parquet)")


def _json_line(raw: bytes) -> Any:
    """One .jsonl record, or a _BadRecord saying which byte is not UTF-8 / what is not JSON."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _BadRecord(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)"
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return _BadRecord(f"invalid JSON ({exc.msg} at column {exc.colno})")


def _undecodable(value: Any) -> int | None:
    """The first byte that was not UTF-8 in a record decoded with ``surrogateescape``, else None."""
    if isinstance(value, str):
        for ch in value:
            if 0xDC80 <= ord(ch) <= 0xDCFF:
                return ord(ch) - 0xDC00
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        bad = _undecodable(key) if isinstance(key, str) else None
        bad = bad if bad is not None else _undecodable(item)
        if bad is not None:
            return bad
    return None


# ---------------------------------------------------------------------------------- field handling
def _lookup(record: dict[str, Any], key: str) -> Any:
    """``record[key]``, or a walk through nested dicts for a dotted key; _MISSING when absent."""
    if key in record:
        return record[key]
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _detect(record: dict[str, Any], candidates: tuple[str, ...], what: str, path: Path) -> str:
    for key in candidates:
        if _lookup(record, key) is not _MISSING:
            return key
    raise DataError(
        f"{path}: cannot find the {what} column (tried {', '.join(candidates)}); the first row has "
        f"keys {sorted(record)}. Name it with {what}_key=..."
    )


def _canonical_prompt(value: Any) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise MalformedRowError("the prompt is empty")
        return value
    if isinstance(value, list) and value:
        messages = []
        for i, msg in enumerate(value):
            if not (
                isinstance(msg, dict)
                and isinstance(msg.get("role"), str)
                and isinstance(msg.get("content"), str)
            ):
                raise MalformedRowError(
                    f"prompt message {i} is not a {{'role': str, 'content': str}} dict: {msg!r:.80}"
                )
            messages.append({"role": msg["role"], "content": msg["content"]})
        return messages
    raise MalformedRowError(
        f"the prompt must be a non-empty string or list of chat messages, got {type(value).__name__}"
    )


def canonical_number(value: int | float) -> str:
    """``27.0`` -> ``"27"``, ``2.5`` -> ``"2.5"``, ``-3`` -> ``"-3"``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedRowError(f"the answer is not a finite number: {value!r}")
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def canonical_answer(value: Any, extra: dict[str, Any] | None = None) -> str:
    """A ground truth as every reward function receives it (module docstring): the same string for
    a row read from a file and for one given from Python (``dapo_rl.train(train_rows=...)``), e.g.
    ``{"target": 98, "numbers": [44, 19, 35]}`` -> ``'{"numbers": [44, 19, 35], "target": 98}'``.
    A GSM8K worked solution goes to ``extra["solution"]``. Raises ``MalformedRowError`` (a
    ``ValueError``) for an empty or non-data answer."""
    return _canonical_answer(value, {} if extra is None else extra)


def _canonical_answer(value: Any, extra: dict[str, Any]) -> str:
    if value is None or isinstance(value, bool):
        raise MalformedRowError(f"the answer must be a string, number, dict or list, got {value!r}")
    if isinstance(value, (int, float)):
        return canonical_number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if not isinstance(value, str):
        raise MalformedRowError(
            f"the answer must be a string, number, dict or list, got {type(value).__name__}"
        )
    text = value.strip()
    if not text:
        raise MalformedRowError("the answer is empty")
    final = _GSM8K_FINAL.search(text)
    if "####" in text and final:  # GSM8K: "<solution>\n#### 1,080"
        extra.setdefault("solution", value)
        text = final.group(1)
        if _GROUPED_NUMBER.fullmatch(text):
            text = text.replace(",", "")
    return text


def _to_row(record: dict[str, Any], prompt_key: str, answer_key: str, uid: str) -> PromptRow:
    prompt_value = _lookup(record, prompt_key)
    if prompt_value is _MISSING:
        raise MalformedRowError(f"missing prompt key {prompt_key!r}")
    answer_value = _lookup(record, answer_key)
    if answer_value is _MISSING:
        raise MalformedRowError(f"missing answer key {answer_key!r}")
    dropped = {key for key in (prompt_key, answer_key) if key in record}  # top-level columns only
    extra = {k: v for k, v in record.items() if k not in dropped}
    prompt = _canonical_prompt(prompt_value)
    answer = _canonical_answer(answer_value, extra)
    return PromptRow(prompt=prompt, answer=answer, uid=uid, extra=extra)
