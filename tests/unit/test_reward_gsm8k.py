"""GSM8K reward (final number vs the number after ####) and the synthetic exact checker."""

from __future__ import annotations

import pytest

from dapo_rl.rewards import REWARDS
from dapo_rl.rewards.gsm8k import gsm8k_reward
from dapo_rl.rewards.synthetic import synthetic_reward

GSM8K_CASES = [
    ("last number", "She has 3 apples, then 4 more, so 7.", "7", 1.0, "7"),
    ("gt with solution and ####", "The total is 72 clips.", "48/2 = 24\n48+24 = 72\n#### 72", 1.0, "72"),
    ("#### line in response", "24 + 48 = 72\n#### 72", "72", 1.0, "72"),
    ("Answer line wins over later numbers", "Answer: 18\nCheck: 9 * 2 = 18 and 3 + 4 = 7", "18", 1.0, "18"),
    ("last number on the marker line", "Answer: 3 + 4 = 7", "7", 1.0, "7"),
    ("marker without a number falls back", "It is 12 eggs.\nAnswer: see above", "12", 1.0, "12"),
    ("commas in response", "The cost is $1,080.", "1080", 1.0, "1080"),
    ("commas in ground truth", "1080", "Sum.\n#### 1,080", 1.0, "1080"),
    ("decimal equals integer", "It costs 18.00 dollars", "18", 1.0, "18.00"),
    ("negative", "The change is -5", "-5", 1.0, "-5"),
    ("wrong", "I get 17.", "18", 0.0, "17"),
    ("no number", "I do not know.", "18", 0.0, None),
    ("empty", "", "18", 0.0, None),
]


@pytest.mark.parametrize(
    ("response", "gt", "score", "pred"), [c[1:] for c in GSM8K_CASES], ids=[c[0] for c in GSM8K_CASES]
)
def test_gsm8k_case(response: str, gt: str, score: float, pred: str | None) -> None:
    result = gsm8k_reward(response, gt)
    assert (result.score, result.acc, result.pred) == (score, score == 1.0, pred)


def test_gsm8k_bad_ground_truth_raises() -> None:
    with pytest.raises(ValueError, match="does not end in a number"):
        gsm8k_reward("7", "#### seven")


SYNTHETIC_CASES = [
    ("exact", "12 + 30 = 42\nAnswer: 42", "42", 1.0, "42"),
    ("case and spaces", "answer :  -3 ", "-3", 1.0, "-3"),
    ("last line wins", "Answer: 41\nAnswer: 42", "42", 1.0, "42"),
    ("wrong", "Answer: 41", "42", -1.0, "41"),
    ("not an integer", "Answer: 42.0", "42", -1.0, None),
    ("trailing words", "Answer: 42 apples", "42", -1.0, None),
    ("marker mid-line is not an answer line", "My Answer: 42", "42", -1.0, None),
    ("no answer", "42", "42", -1.0, None),
]


@pytest.mark.parametrize(
    ("response", "gt", "score", "pred"), [c[1:] for c in SYNTHETIC_CASES], ids=[c[0] for c in SYNTHETIC_CASES]
)
def test_synthetic_case(response: str, gt: str, score: float, pred: str | None) -> None:
    result = synthetic_reward(response, gt)
    assert (result.score, result.acc, result.pred) == (score, score == 1.0, pred)


def test_registry_names() -> None:
    assert {"gsm8k", "math_dapo", "math_verify", "synthetic"} <= set(REWARDS.names())
    assert REWARDS.get("gsm8k") is gsm8k_reward and REWARDS.get("synthetic") is synthetic_reward
