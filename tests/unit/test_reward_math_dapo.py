"""Hand-written cases for the DAPO-strict math reward (semantics §1)."""

from __future__ import annotations

import pytest

from dapo_rl.rewards import REWARDS, RewardRunner
from dapo_rl.rewards.math_dapo import ANSWER_WINDOW_CHARS, math_dapo_reward, normalize_final_answer

PAD = "Let me think about this carefully. " * 3  # reasoning before the answer

# (case id, response, ground truth, expected score, expected pred)
CASES = [
    # Answer-line variants, case and spacing
    ("plain", PAD + "\nAnswer: 42", "42", 1.0, "42"),
    ("lowercase", PAD + "\nanswer: 42", "42", 1.0, "42"),
    ("uppercase", PAD + "\nANSWER: 42", "42", 1.0, "42"),
    ("mixed case", "AnSwEr: 42", "42", 1.0, "42"),
    ("no space after colon", "Answer:42", "42", 1.0, "42"),
    ("spaces around colon", "Answer :   42  ", "42", 1.0, "42"),
    ("answer on the next line", "Answer:\n42", "42", 1.0, "42"),
    ("prefix on the line", "Final Answer: 42", "42", 1.0, "42"),
    ("negative", "Answer: -7", "-7", 1.0, "-7"),
    ("decimal", "Answer: 3.5", "3.5", 1.0, "3.5"),
    ("wrong number", "Answer: 41", "42", -1.0, "41"),
    ("no symbolic equivalence", "Answer: 7/2", "3.5", -1.0, "7/2"),
    ("trailing period is strict", "Answer: 42.", "42", -1.0, "42."),
    # dollar signs and LaTeX wrappers
    ("inline math", "Answer: $42$", "42", 1.0, "42"),
    ("sentence with math", "Answer: The answer is $42$.", "42", 1.0, "42"),
    ("escaped dollar currency", "Answer: \\$42", "42", 1.0, "42"),
    ("text macro", "Answer: \\text{Evelyn}", "Evelyn", 1.0, "Evelyn"),
    ("boxed inside answer line", "Answer: \\boxed{42}", "42", 1.0, "42"),
    ("frac without braces", "Answer: \\frac12", "\\frac{1}{2}", 1.0, "\\frac{1}{2}"),
    ("sqrt without braces", "Answer: 3\\sqrt2", "3\\sqrt{2}", 1.0, "3\\sqrt{2}"),
    # units, degrees, thousands commas
    ("unit word dollars", "Answer: 42 dollars", "42", 1.0, "42"),
    ("unit word cm", "Answer: 15 cm", "15", 1.0, "15"),
    ("text units", "Answer: 42 \\text{ units}", "42", 1.0, "42"),
    ("degrees circ", "Answer: 90^\\circ", "90", 1.0, "90"),
    ("degrees braced circ", "Answer: 90^{\\circ}", "90", 1.0, "90"),
    ("thousands commas in response", "Answer: 1,000,000", "1000000", 1.0, "1000000"),
    ("thousands commas in ground truth", "Answer: 2125", "2,125", 1.0, "2125"),
    ("a list keeps its comma", "Answer: 1,2", "12", -1.0, "1,2"),
    # text after the last '='
    ("after equals", "Answer: x = 5", "5", 1.0, "5"),
    ("after the last equals", "Answer: a + b = 2 + 3 = 5", "5", 1.0, "5"),
    # the last line wins
    ("last line wins (right)", "Answer: 41\nWait, I made an error.\nAnswer: 42", "42", 1.0, "42"),
    ("last line wins (wrong)", "Answer: 42\nHmm, no.\nAnswer: 41", "42", -1.0, "41"),
    ("answer line beats boxed", "So \\boxed{41}.\nAnswer: 42", "42", 1.0, "42"),
    # the 300-character window
    ("answer line before the window is ignored", "Answer: 42\n" + "x" * 400, "42", -1.0, None),
    ("answer line inside the window", "Answer: 42\n" + "x" * 250, "42", 1.0, "42"),
    ("long reasoning, answer at the end", "y" * 5000 + "\nAnswer: 42", "42", 1.0, "42"),
    ("early right answer, late wrong one", "Answer: 42\n" + "z" * 400 + "\nAnswer: 7", "42", -1.0, "7"),
    # \boxed{} fallback
    ("boxed fallback", PAD + "so the result is \\boxed{42}.", "42", 1.0, "42"),
    ("last boxed wins", "\\boxed{41} then \\boxed{42}", "42", 1.0, "42"),
    ("nested braces", "Thus \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", 1.0, "\\frac{1}{2}"),
    ("nested braces, short frac gt", "Thus \\boxed{\\frac{1}{2}}.", "\\frac12", 1.0, "\\frac{1}{2}"),
    (
        "deeply nested",
        "\\boxed{\\sqrt{\\frac{a}{b^{2}}}}",
        "\\sqrt{\\frac{a}{b^{2}}}",
        1.0,
        "\\sqrt{\\frac{a}{b^{2}}}",
    ),
    ("unbalanced boxed is invalid", "So \\boxed{42", "42", -1.0, None),
    ("boxed before the window is ignored", "\\boxed{42}" + "w" * 400, "42", -1.0, None),
    # invalid outputs
    ("empty output", "", "42", -1.0, None),
    ("whitespace only", "   \n\t ", "42", -1.0, None),
    ("no answer at all", "I think it is 42.", "42", -1.0, None),
]


@pytest.mark.parametrize(
    ("response", "gt", "score", "pred"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_math_dapo_case(response: str, gt: str, score: float, pred: str | None) -> None:
    result = math_dapo_reward(response, gt)
    assert result.score == score
    assert result.acc is (score == 1.0)
    assert result.pred == pred


def test_enough_cases() -> None:
    assert len(CASES) >= 30


def test_registered_under_math_dapo() -> None:
    assert REWARDS.get("math_dapo") is math_dapo_reward


def test_window_is_300_characters_exactly() -> None:
    assert ANSWER_WINDOW_CHARS == 300
    line = "Answer: 42\n"
    inside = line + "x" * (300 - len(line))  # the answer line starts exactly at the window's start
    outside = line + "x" * (301 - len(line))  # one character more: its "A" falls out of the window
    assert math_dapo_reward(inside, "42").acc
    result = math_dapo_reward(outside, "42")
    assert result.pred is None and result.score == -1.0


def test_source_recorded() -> None:
    assert math_dapo_reward("Answer: 1", "1").info["source"] == "answer_line"
    assert math_dapo_reward("\\boxed{1}", "1").info["source"] == "boxed"
    assert math_dapo_reward("nothing", "1").info["source"] == "none"


def test_normalize_final_answer_examples() -> None:
    assert normalize_final_answer("$\\frac{3}{4}$") == "\\frac{3}{4}"
    assert normalize_final_answer("10 \\text{ inches}") == "10"
    assert normalize_final_answer("-1,234") == "-1234"
    assert normalize_final_answer("\\overline{AB}") == "AB"


EOS = "<|endoftext|>"


def test_eos_text_stripped_by_runner() -> None:
    response = "Answer: 42" + EOS
    assert math_dapo_reward(response, "42").score == -1.0  # the raw text would be wrong
    with RewardRunner("math_dapo", eos_text=EOS) as runner:
        results, metrics = runner.score_batch([response], ["42"])
    assert results[0].score == 1.0 and results[0].pred == "42"
    assert metrics["reward/acc_mean"] == 1.0


def test_repeated_eos_does_not_push_answer_out_of_window() -> None:
    response = "Answer: 42" + EOS * 30  # 390 characters of EOS text after the answer
    with RewardRunner("math_dapo", eos_text=EOS) as runner:
        results, _ = runner.score_batch([response], ["42"])
    assert results[0].acc


def test_runner_math_dapo_metrics_and_wrong_score() -> None:
    with RewardRunner("math_dapo") as runner:
        assert not runner.isolate and runner.wrong_score == -1.0
        results, metrics = runner.score_batch(["Answer: 1", "Answer: 2", ""], ["1", "1", "1"])
    assert [r.score for r in results] == [1.0, -1.0, -1.0]
    assert metrics["reward/score_mean"] == pytest.approx(-1 / 3)
    assert metrics["reward/acc_mean"] == pytest.approx(1 / 3)
    assert metrics["reward/no_answer_rate"] == pytest.approx(1 / 3)
