"""A structured ground truth reaches the reward as the same object from a file and from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo_rl.data.readers import canonical_answer, read_rows
from dapo_rl.rewards.countdown import countdown_reward

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "countdown"


def _rows_from_python(items: list[dict]) -> list:
    """The rows ``dapo_rl.train(train_rows=items)`` trains on."""
    from dapo_rl import runtime

    convert = getattr(runtime, "rows_from_user", None)
    if convert is None:  # moved by the core split
        from dapo_rl.data.encoder import rows_from_user as convert
    return convert(items, "train_rows")


def test_dict_answers_from_jsonl_and_from_python_are_equal(tmp_path: Path) -> None:
    truth = {"target": 22, "numbers": [3, 5, 7]}  # keys out of order on purpose
    path = tmp_path / "cd.jsonl"
    path.write_text(json.dumps({"prompt": "make 22", "answer": truth}) + "\n")
    from_file, _ = read_rows(path)
    from_python = _rows_from_python([{"prompt": "make 22", "answer": truth}])
    assert from_file[0].answer == from_python[0].answer == '{"numbers": [3, 5, 7], "target": 22}'
    assert json.loads(from_python[0].answer) == truth
    assert countdown_reward("<answer>3 * 5 + 7</answer>", from_python[0].answer).acc


def test_numbers_and_strings_from_python_match_the_readers() -> None:
    rows = _rows_from_python([{"prompt": "p", "answer": 27.0}, {"prompt": "p", "answer": " 41 "}])
    assert [r.answer for r in rows] == [canonical_answer(27.0), canonical_answer(" 41 ")] == ["27", "41"]
    with pytest.raises(ValueError, match="answer"):
        _rows_from_python([{"prompt": "p", "answer": None}])


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Countdown data not present")
def test_parquet_rows_and_the_same_rows_from_python() -> None:
    rows, _ = read_rows(SHARED / "countdown_test.parquet")
    items = [
        {"prompt": r.prompt, "answer": {"numbers": r.extra["nums"], "target": r.extra["target"]}}
        for r in rows[:20]
    ]
    again = _rows_from_python(items)
    assert [r.answer for r in again] == [r.answer for r in rows[:20]]
