"""Calling a reward function on one item: resolving its name, passing only the extra fields it
takes, accepting the plain return values user functions give, and checking the score. Shared by the
in-process path (:mod:`dapo_rl.rewards.runner`) and the worker processes
(:mod:`dapo_rl.rewards.workers`)."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.builtin import REWARDS, RewardFn

_RESERVED_EXTRA_KEYS = frozenset({"response", "ground_truth"})


def resolve_reward_fn(fn: str | RewardFn) -> RewardFn:
    """A registered name's function, or ``fn`` itself when it is callable."""
    if isinstance(fn, str):
        return REWARDS.get(fn)
    if not callable(fn):
        raise TypeError(f"reward function must be a registered name or a callable, got {fn!r}")
    return fn


def _accepted_extras(fn: RewardFn) -> frozenset[str] | None:
    """Names of the extra fields ``fn`` takes, or None when it takes ``**extra`` (all of them)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


NO_EXTRACTED_ANSWER = "no_extracted_answer"
"""``info`` key of a result converted from a bare number, pair or dict: the reward function extracts
no answer, so evaluation reports maj@k and the invalid rate as unavailable rather than 0 and 1."""


def as_reward_result(value: Any) -> RewardResult:
    """Accept what a user reward may return: RewardResult, a number (acc = score > 0), a
    ``(score, acc)`` pair or a ``{"score", "acc"}`` dict (the last three marked
    :data:`NO_EXTRACTED_ANSWER`)."""
    if isinstance(value, RewardResult):
        return value
    plain = {NO_EXTRACTED_ANSWER: True}
    if isinstance(value, bool):
        return RewardResult(score=float(value), acc=value, info=plain)
    if isinstance(value, (int, float)):
        return RewardResult(score=float(value), acc=float(value) > 0, info=plain)
    if isinstance(value, tuple) and len(value) == 2:
        return RewardResult(score=float(value[0]), acc=bool(value[1]), info=plain)
    if isinstance(value, dict) and "score" in value:
        acc = bool(value.get("acc", value["score"] > 0))
        return RewardResult(score=float(value["score"]), acc=acc, info=plain)
    raise TypeError(
        f"reward function returned {type(value).__name__} {value!r:.80}; expected RewardResult, a float, "
        "a (score, acc) tuple or a dict with 'score' and 'acc'"
    )


def call_reward(fn: RewardFn, response: str, ground_truth: str, extra: dict[str, Any]) -> RewardResult:
    """Call ``fn`` and check what it returned (raises on a bad return value)."""
    accepted = _accepted_extras(fn)
    kwargs = {
        k: v
        for k, v in extra.items()
        if k not in _RESERVED_EXTRA_KEYS and (accepted is None or k in accepted)
    }
    result = as_reward_result(fn(response, ground_truth, **kwargs))
    if not math.isfinite(result.score):
        raise ValueError(f"reward function returned a non-finite score {result.score!r}")
    return result


@dataclass
class Outcome:
    """How one item ended: a result, an error (its traceback) or a timeout."""

    kind: str  # "ok" | "error" | "timeout"
    result: RewardResult | None = None
    error: str | None = None
