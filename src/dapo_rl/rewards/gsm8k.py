"""GSM8K reward: the response's final number against the number after ``####`` (score 1 / 0).

Exact rule:

- Numbers are matched by ``-?\\d[\\d,]*(\\.\\d+)?`` (an optional ``$`` before the digits is skipped);
  commas are removed before comparing, so ``1,080`` reads as 1080.
- If the response has a line containing ``####`` or ``Answer:`` (case-insensitive) whose remainder
  holds a number, the prediction is the LAST number after the LAST such marker. Otherwise it is the
  last number anywhere in the response. No number at all: ``pred`` is None, score 0.
- The ground truth is the text after the last ``####`` (the whole string when there is none, as
  after :func:`dapo_rl.data.readers.read_rows` already reduced it), with commas and ``$`` removed.
- The two are compared as exact decimals (``18.00`` equals ``18``). Correct: 1.0, otherwise 0.0.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import reward_traits

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_MARKER = re.compile(r"(?:####|answer\s*:)([^\n]*)", re.IGNORECASE)


def _to_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def extract_gsm8k_number(response: str) -> str | None:
    """The predicted number of ``response`` (commas removed), or None; see the module docstring."""
    for rest in reversed(_MARKER.findall(response)):
        numbers = _NUMBER.findall(rest)
        if numbers:
            return numbers[-1].replace(",", "")
        break  # the last marker holds no number: fall back to the last number anywhere
    numbers = _NUMBER.findall(response)
    return numbers[-1].replace(",", "") if numbers else None


def gsm8k_ground_truth(ground_truth: str) -> Decimal:
    """The number of a GSM8K ground truth (``"... #### 1,080"`` or ``"1080"``)."""
    text = str(ground_truth).split("####")[-1].strip().replace("$", "")
    value = _to_decimal(text)
    if value is None:
        raise ValueError(f"GSM8K ground truth {ground_truth!r} does not end in a number")
    return value


@reward_traits(wrong_score=0.0, isolate=False)
def gsm8k_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """1.0 when the response's final number equals the ground-truth number, else 0.0."""
    gold = gsm8k_ground_truth(ground_truth)
    pred = extract_gsm8k_number(response)
    value = _to_decimal(pred) if pred is not None else None
    correct = value is not None and value == gold
    return RewardResult(score=1.0 if correct else 0.0, acc=correct, pred=pred)
