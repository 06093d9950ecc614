"""dapo-rl: DAPO reinforcement learning for language models.

The loop is :mod:`dapo_rl.trainer`; the paper's pieces are pure tensor functions in
:mod:`dapo_rl.algorithm`. From Python::

    import dapo_rl

    def my_reward(response: str, ground_truth: str, **extra) -> float:
        return 1.0 if response.strip().endswith(ground_truth) else -1.0

    cfg = dapo_rl.load_config("tiny", ["train.total_steps=20"])
    summary = dapo_rl.train(cfg, reward_fn=my_reward, group_filter=lambda g: 0 < sum(g.accs) < len(g.accs))

Names are imported lazily so that ``import dapo_rl`` (and ``dapo --help``) stays instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": "dapo_rl.launch",
    "Trainer": "dapo_rl.trainer",
    "load_config": "dapo_rl.config",
    "DapoConfig": "dapo_rl.config",
    "ConfigError": "dapo_rl.config",
    "RewardResult": "dapo_rl.rewards.base",
    "GroupView": "dapo_rl.algorithm.filtering",
    "PromptRow": "dapo_rl.data.types",
    "REWARDS": "dapo_rl.rewards",
    "TEMPLATES": "dapo_rl.data.templates",
    "GROUP_FILTERS": "dapo_rl.algorithm.filtering",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dapo_rl' has no attribute {name!r}")
