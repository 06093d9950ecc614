"""The registered reward functions (``REWARDS``): a name in ``reward.name`` -> the function.
The table of what each one checks is in :mod:`dapo_rl.rewards`."""

from __future__ import annotations

from collections.abc import Callable

from dapo_rl.registry import Registry
from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.countdown import countdown_reward
from dapo_rl.rewards.gsm8k import gsm8k_reward
from dapo_rl.rewards.math_dapo import math_dapo_reward
from dapo_rl.rewards.math_verify_reward import math_verify_reward
from dapo_rl.rewards.synthetic import synthetic_reward

RewardFn = Callable[..., RewardResult]

REWARDS: Registry[RewardFn] = Registry("reward function")
REWARDS.register("math_dapo", math_dapo_reward)
REWARDS.register("math_verify", math_verify_reward)
REWARDS.register("gsm8k", gsm8k_reward)
REWARDS.register("synthetic", synthetic_reward)
REWARDS.register("countdown", countdown_reward)
