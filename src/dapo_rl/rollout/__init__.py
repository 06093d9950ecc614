"""Rollout engines: prompts in, sampled responses out (see :mod:`dapo_rl.rollout.base`).

``ROLLOUT_ENGINES`` maps a config name to an engine class; ``"hf"`` is the Hugging Face
transformers engine, which samples from the live policy module.
"""

from __future__ import annotations

from dapo_rl.registry import Registry
from dapo_rl.rollout.base import FinishReason, Response, RolloutEngine, SamplingParams
from dapo_rl.rollout.hf_engine import HFRolloutEngine

ROLLOUT_ENGINES: Registry[type] = Registry("rollout engine")
ROLLOUT_ENGINES.register("hf", HFRolloutEngine)

__all__ = [
    "ROLLOUT_ENGINES",
    "FinishReason",
    "HFRolloutEngine",
    "Response",
    "RolloutEngine",
    "SamplingParams",
]
