"""Symbolic-equivalence math reward built on the ``math-verify`` library (score 1 / 0).

The response is parsed with math-verify's LaTeX extractor with ``\\boxed{}`` matches first (then its
"final answer is" anchors, then the last LaTeX or plain expression); the ground truth is parsed as
``\\boxed{<ground truth>}``; ``verify(gold, pred)`` decides.

Timeouts: math-verify guards ``parse`` and ``verify`` with ``signal.alarm``, which only works in the
main thread of the main interpreter and raises ``ValueError`` elsewhere. We switch that mechanism
off (``parsing_timeout=None``, ``timeout_seconds=None``) and rely on the
:class:`~dapo_rl.rewards.runner.RewardRunner`, which runs this function in worker subprocesses that
it kills on timeout. The library is imported lazily so that importing :mod:`dapo_rl.rewards` stays
cheap; workers import it in :func:`warmup` before they report ready.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import reward_traits


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its own timeout is off; that is intended here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@functools.cache
def _configs() -> tuple[list[Any], list[Any]]:
    """Extraction configs for predictions and gold answers (built once per process)."""
    import math_verify

    for logger_name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(logger_name).addFilter(_DropTimeoutDisabledWarning())
    pred_config = [
        math_verify.LatexExtractionConfig(boxed_match_priority=0),
        math_verify.ExprExtractionConfig(),
    ]
    gold_config = [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]
    return pred_config, gold_config


def warmup() -> None:
    """Import math-verify and parse one expression (loads its LaTeX grammar)."""
    import math_verify

    pred_config, _ = _configs()
    math_verify.parse("\\boxed{1}", pred_config, parsing_timeout=None)


def _pred_text(parsed: list[Any]) -> str | None:
    if not parsed:
        return None
    # math-verify returns [parsed object, matched string]; the string is the readable prediction.
    return parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])


@reward_traits(wrong_score=0.0, isolate=True, warmup=warmup)
def math_verify_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """1.0 when math-verify finds the response's (boxed) answer equivalent to ``ground_truth``,
    else 0.0. ``pred`` is None when no answer could be extracted. Has no timeout of its own: run it
    through :class:`~dapo_rl.rewards.runner.RewardRunner`."""
    import math_verify

    pred_config, gold_config = _configs()
    gt = str(ground_truth)
    gold_text = gt if "\\boxed" in gt else "\\boxed{" + gt + "}"
    gold = math_verify.parse(gold_text, gold_config, parsing_timeout=None)
    if not gold:
        raise ValueError(f"math-verify could not parse the ground truth {gt!r}")
    parsed = math_verify.parse(response, pred_config, parsing_timeout=None)
    if not parsed:
        return RewardResult(score=0.0, acc=False, pred=None)
    correct = bool(math_verify.verify(gold, parsed, timeout_seconds=None))
    return RewardResult(score=1.0 if correct else 0.0, acc=correct, pred=_pred_text(parsed))
