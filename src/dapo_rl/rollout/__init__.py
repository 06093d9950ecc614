"""Rollout engines: prompts in, sampled responses out (see :mod:`dapo_rl.rollout.base`).

``ROLLOUT_ENGINES`` maps a config name to an engine class; ``"hf"`` is the Hugging Face
transformers engine, which samples from the live policy module; ``"vllm"`` a colocated vLLM engine
that holds its own copy of the weights (pushed after every update).
"""

from __future__ import annotations

from dapo_rl.registry import Registry
from dapo_rl.rollout.base import FinishReason, Response, RolloutEngine, SamplingParams
from dapo_rl.rollout.hf_engine import HFRolloutEngine
from dapo_rl.rollout.vllm_engine import VLLMRolloutEngine  # imports vllm only when built

ROLLOUT_ENGINES: Registry[type] = Registry("rollout engine")
ROLLOUT_ENGINES.register("hf", HFRolloutEngine)
ROLLOUT_ENGINES.register("vllm", VLLMRolloutEngine)

__all__ = [
    "ROLLOUT_ENGINES",
    "FinishReason",
    "HFRolloutEngine",
    "Response",
    "RolloutEngine",
    "SamplingParams",
    "VLLMRolloutEngine",
]
