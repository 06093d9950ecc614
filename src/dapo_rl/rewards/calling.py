"""Calling a reward function on one item: resolving its name, passing only the extra fields it
takes, accepting the plain return values user functions give, and checking the score. Shared by the
in-process path (:mod:`dapo_rl.rewards.runner`) and the worker processes
(:mod:`dapo_rl.rewards.workers`)."""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any

from dapo_rl.errors import UserCodeError
from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.builtin import REWARDS, RewardFn
from dapo_rl.usercode import guarded_call

FLOAT32_MAX = 3.4028234663852886e38
"""Rewards become float32 tensors (advantages, loss): a larger score would turn into inf, then NaN."""

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


class RewardTypeError(TypeError):
    """A reward function returned a value of a type the runner cannot use."""


def _scalar(value: Any) -> Any:
    """A numpy or torch scalar (0-d) as the Python number it holds; anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and tuple(getattr(value, "shape", (None,))) == ():
        return item()
    return value


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_reward_result(value: Any) -> RewardResult:
    """Accept what a user reward may return: RewardResult, a number (acc = score > 0), a
    ``(score, acc)`` pair or a ``{"score", "acc"}`` dict (the last three marked
    :data:`NO_EXTRACTED_ANSWER`). numpy and torch scalars count as numbers. Anything else is a
    :class:`RewardTypeError`."""
    if isinstance(value, RewardResult):
        return value
    plain = {NO_EXTRACTED_ANSWER: True}
    value = _scalar(value)
    if isinstance(value, bool):
        return RewardResult(score=float(value), acc=value, info=plain)
    if _number(value):
        return RewardResult(score=float(value), acc=float(value) > 0, info=plain)
    if isinstance(value, tuple) and len(value) == 2 and _number(_scalar(value[0])):
        return RewardResult(score=float(_scalar(value[0])), acc=bool(_scalar(value[1])), info=plain)
    if isinstance(value, dict) and "score" in value and _number(_scalar(value["score"])):
        score = float(_scalar(value["score"]))
        acc = bool(_scalar(value.get("acc", score > 0)))
        return RewardResult(score=score, acc=acc, info=plain)
    raise RewardTypeError(
        f"reward function returned {type(value).__name__} {value!r:.80}; expected RewardResult, a float, "
        "a (score, acc) tuple or a dict with 'score' and 'acc'"
    )


def reward_name(fn: Any) -> str:
    """How messages name a reward function: its import path, registered name or qualified name."""
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def call_reward(fn: RewardFn, response: str, ground_truth: str, extra: dict[str, Any]) -> RewardResult:
    """Call ``fn`` and check what it returned. A return value of the wrong type, a score beyond
    float32, or ending the process (``sys.exit``, ``os._exit``) is a
    :class:`~dapo_rl.errors.UserCodeError` naming the function (the run stops, exit code 2); a
    non-finite score is a ``ValueError`` (counted as that item's error)."""
    accepted = _accepted_extras(fn)
    kwargs = {
        k: v
        for k, v in extra.items()
        if k not in _RESERVED_EXTRA_KEYS and (accepted is None or k in accepted)
    }
    what = f"reward function {reward_name(fn)!r}"
    try:
        result = as_reward_result(guarded_call(fn, what, response, ground_truth, **kwargs))
    except RewardTypeError as exc:
        raise UserCodeError(f"{what}: {str(exc).removeprefix('reward function ')}") from None
    if math.isfinite(result.score) and abs(result.score) > FLOAT32_MAX:
        raise UserCodeError(
            f"{what} returned the score {result.score!r}, beyond float32 (at most {FLOAT32_MAX:.3g}), "
            "the precision rewards are trained in: it would become inf and then NaN; scale the reward"
        )
    if not math.isfinite(result.score):
        raise ValueError(f"reward function returned a non-finite score {result.score!r}")
    return result


@dataclass
class Outcome:
    """How one item ended: a result, an error (its traceback) or a timeout."""

    kind: str  # "ok" | "error" | "timeout"
    result: RewardResult | None = None
    error: str | None = None
