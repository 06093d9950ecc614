"""Per-function facts the :class:`~dapo_rl.rewards.runner.RewardRunner` needs.

A reward function is any ``fn(response: str, ground_truth: str, **extra) -> RewardResult``. Three
facts about it cannot be read from its signature, so they ride on the function as one attribute set
by :func:`reward_traits`:

- ``wrong_score``: the score of a wrong answer. The runner gives it to an item that timed out or
  raised (math_dapo and synthetic: -1.0; math_verify and gsm8k: 0.0; undecorated user functions: 0.0).
- ``isolate``: whether the runner should, by default, evaluate the function in worker subprocesses
  that can be killed on timeout (True for math_verify, whose symbolic checks can hang) or in the
  calling process (cheap regex checkers).
- ``warmup``: an optional zero-argument callable that a worker runs before it reports ready, so that
  slow imports are not charged to the first item's timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__dapo_reward_traits__"


@dataclass(frozen=True)
class RewardTraits:
    """See the module docstring."""

    wrong_score: float = 0.0
    isolate: bool = False
    warmup: Callable[[], None] | None = None


def reward_traits(
    wrong_score: float = 0.0, isolate: bool = False, warmup: Callable[[], None] | None = None
) -> Callable[[F], F]:
    """Decorator that records :class:`RewardTraits` on a reward function and returns it unchanged."""

    def mark(fn: F) -> F:
        setattr(fn, _ATTR, RewardTraits(wrong_score=wrong_score, isolate=isolate, warmup=warmup))
        return fn

    return mark


def get_traits(fn: Callable[..., Any]) -> RewardTraits:
    """The traits recorded on ``fn``, or the defaults (wrong score 0.0, in-process, no warm-up)."""
    traits = getattr(fn, _ATTR, None)
    return traits if isinstance(traits, RewardTraits) else RewardTraits()
