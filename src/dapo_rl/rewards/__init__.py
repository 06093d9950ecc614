"""Reward functions and the batch runner.

A reward function is ``fn(response: str, ground_truth: str, **extra) -> RewardResult``. Registered
functions (``REWARDS.get(name)``):

========================  ===============================================================  ==========
name                      rule                                                             score
========================  ===============================================================  ==========
``math_dapo``             DAPO-strict: last ``Answer: X`` in the final 300 characters,     +1 / -1
                          Minerva-normalised string equality, ``\\boxed{}`` fallback
``math_verify``           math-verify symbolic equivalence of the (boxed) answer           1 / 0
``gsm8k``                 final number (or the number on the last ``Answer:``/``####``      1 / 0
                          line) equals the number after ``####``
``synthetic``             last ``Answer: N`` line equals the integer ground truth           +1 / -1
``countdown``             the last ``<answer>`` equation uses each given number once and   1 / 0.1 / 0
                          equals the target (TinyZero); 0.1 for a well-formed wrong one
========================  ===============================================================  ==========

Run them through :class:`RewardRunner`, which adds timeouts, EOS stripping and failure metrics.
"""

from __future__ import annotations

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.builtin import REWARDS, RewardFn
from dapo_rl.rewards.countdown import countdown_reward
from dapo_rl.rewards.gsm8k import gsm8k_reward
from dapo_rl.rewards.math_dapo import math_dapo_reward, normalize_final_answer
from dapo_rl.rewards.math_verify_reward import math_verify_reward
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rewards.synthetic import synthetic_reward
from dapo_rl.rewards.traits import RewardTraits, get_traits, reward_traits

__all__ = [
    "REWARDS",
    "RewardFn",
    "RewardResult",
    "RewardRunner",
    "RewardTraits",
    "countdown_reward",
    "get_traits",
    "gsm8k_reward",
    "math_dapo_reward",
    "math_verify_reward",
    "normalize_final_answer",
    "reward_traits",
    "synthetic_reward",
]
