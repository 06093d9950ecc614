"""Reward functions for the health tests' runs, named in YAML as ``tests.helpers_health:<name>``."""

from __future__ import annotations

import time

from dapo_rl.rewards.base import RewardResult


def varied_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """A healthy signal for a random model: the answer is the response's first character; it is
    right when the response length is even (about half are), so groups differ."""
    return RewardResult(score=float(len(response) % 2 == 0), acc=len(response) % 2 == 0, pred=response[:1])


def zero_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """Every answer parsed and scored 0: nothing to learn."""
    return RewardResult(score=0.0, acc=False, pred=response[:1])


def slow_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """Never answers within any sensible reward.timeout_s."""
    time.sleep(30)
    return RewardResult(score=1.0, acc=True, pred="1")
