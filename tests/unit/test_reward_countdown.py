"""The countdown reward (TinyZero's rule) on hand-checked cases and on the shared Countdown data."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_rl.rewards import REWARDS
from dapo_rl.rewards.countdown import countdown_reward, evaluate_equation

TRUTH = '{"numbers": [96, 7, 37, 74], "target": 55}'  # the first row of countdown_test.parquet
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "countdown"


@pytest.mark.parametrize(
    ("response", "score", "acc", "pred"),
    [
        # 96 * 37 = 3552, / 74 = 48, + 7 = 55: each number once, right value.
        ("<think>hmm</think> <answer>96 * 37 / 74 + 7</answer>", 1.0, True, "96 * 37 / 74 + 7"),
        ("<answer>(37 / 74) * 96 + 7</answer>", 1.0, True, "(37 / 74) * 96 + 7"),  # exact: 1/2 * 96
        # 96 - 74 + 37 - 7 = 52: each number once, wrong value -> the format score.
        ("<answer>96 - 74 + 37 - 7</answer>", 0.1, False, "96 - 74 + 37 - 7"),
        # 96 - 74 + 37 - 7 + 3 = 55 but 3 is not given.
        ("<answer>96 - 74 + 37 - 7 + 3</answer>", 0.1, False, "96 - 74 + 37 - 7 + 3"),
        # 96 * 37 / 74 + 7 * 1 = 55 with an extra number; 96 * 37 / 74 + 7 + 0 likewise.
        ("<answer>96 * 37 / 74 + 7 * 1</answer>", 0.1, False, "96 * 37 / 74 + 7 * 1"),
        ("<answer>96 / (74 - 74) + 37 - 7</answer>", 0.1, False, "96 / (74 - 74) + 37 - 7"),  # ÷ 0
        ("<answer> 74 - 96 / (37 - 7 * ...) </answer>", 0.0, False, None),  # not an equation
        ("<answer>__import__('os')</answer>", 0.0, False, None),
        ("96 * 37 / 74 + 7 = 55", 0.0, False, None),  # no answer tag
    ],
)
def test_cases(response: str, score: float, acc: bool, pred: str | None) -> None:
    out = countdown_reward(response, TRUTH)
    assert (out.score, out.acc, out.pred) == (score, acc, pred)


def test_last_tag_wins_and_numbers_are_a_multiset() -> None:
    truth = {"numbers": [3, 5, 7], "target": 22}  # 3 * 5 + 7
    assert countdown_reward("<answer>1 + 1</answer> then <answer>3*5+7</answer>", truth).acc
    assert not countdown_reward("<answer>3*5+7</answer> then <answer>1 + 1</answer>", truth).acc
    twice = {"numbers": [7, 7, 8], "target": 7}
    assert countdown_reward("<answer>8 - 7 / 7</answer>", twice).acc  # 7 given twice, used twice
    assert countdown_reward("<answer>7 * 8 / 8</answer>", twice).score == 0.1  # 8 used twice, 7 once


def test_json_text_and_dict_ground_truths_agree() -> None:
    response = "<answer>3 * 5 + 7</answer>"
    as_text = countdown_reward(response, '{"numbers": [3, 5, 7], "target": 22}')
    as_dict = countdown_reward(response, {"numbers": [3, 5, 7], "target": 22})
    assert as_text == as_dict and as_text.acc
    with pytest.raises(ValueError, match="numbers"):
        countdown_reward(response, '{"target": 22}')


def test_evaluate_equation_rejects_everything_but_arithmetic() -> None:
    assert evaluate_equation("2 ** 3") is None  # ** is not an operator of the game
    assert evaluate_equation("1.5 + 2") is None
    assert evaluate_equation("9" * 20) is None
    value, used = evaluate_equation("-(4 - 10) * 2")
    assert value == 12 and used == [4, 10, 2]


def test_registered() -> None:
    assert REWARDS.get("countdown") is countdown_reward


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Countdown data not present")
def test_rows_read_from_the_shared_parquet() -> None:
    from dapo_rl.data.readers import read_rows

    rows, _ = read_rows(SHARED / "countdown_test.parquet")
    assert rows[0].answer == TRUTH
    assert countdown_reward("<answer>96 * 37 / 74 + 7</answer>", rows[0].answer).score == 1.0
    assert countdown_reward("<answer>96 - 74 + 37 - 7</answer>", rows[0].answer).score == 0.1
