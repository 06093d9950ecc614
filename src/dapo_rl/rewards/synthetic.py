"""Exact checker for the embedded synthetic arithmetic task (score +1 / -1).

The prediction is the last line of the form ``Answer: N`` (case-insensitive, spaces around the
colon allowed, the line may be indented). N must be a whole integer (optional sign, nothing after
it but spaces); otherwise, or with no such line, the answer is invalid (``pred`` None). Correct when
N equals the integer ground truth: score +1, ``acc`` True; otherwise -1.
"""

from __future__ import annotations

import re

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import reward_traits

_ANSWER_LINE = re.compile(r"^[ \t]*answer[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_INTEGER = re.compile(r"[+-]?\d+")


@reward_traits(wrong_score=-1.0, isolate=False)
def synthetic_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """+1 when the last ``Answer: N`` line holds exactly the ground-truth integer, else -1."""
    gold = int(str(ground_truth).strip())
    lines = _ANSWER_LINE.findall(response)
    if not lines or not _INTEGER.fullmatch(lines[-1]):
        return RewardResult(score=-1.0, acc=False, pred=None)
    pred = int(lines[-1])
    correct = pred == gold
    return RewardResult(score=1.0 if correct else -1.0, acc=correct, pred=str(pred))
