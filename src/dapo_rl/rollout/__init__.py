"""Rollout engines: prompts in, sampled responses out (see :mod:`dapo_rl.rollout.base`).

``ROLLOUT_ENGINES`` maps a config name to an engine class; ``"hf"`` is the Hugging Face
transformers engine, which samples from the live policy module; ``"vllm"`` a colocated vLLM engine
that holds its own copy of the weights (pushed after every update). Both are registered by import
path, so the names are known (and checked when a config loads) without importing transformers;
``from dapo_rl.rollout import HFRolloutEngine`` imports it when asked.
"""

from __future__ import annotations

from typing import Any

from dapo_rl.registry import Registry
from dapo_rl.rollout.base import FinishReason, Response, RolloutEngine, SamplingParams

ROLLOUT_ENGINES: Registry[type] = Registry("rollout engine")
ROLLOUT_ENGINES.register_path("hf", "dapo_rl.rollout.hf_engine:HFRolloutEngine")
ROLLOUT_ENGINES.register_path("vllm", "dapo_rl.rollout.vllm_engine:VLLMRolloutEngine")

_ENGINE_CLASSES = {"HFRolloutEngine": "hf", "VLLMRolloutEngine": "vllm"}

__all__ = [
    "ROLLOUT_ENGINES",
    "FinishReason",
    "HFRolloutEngine",
    "Response",
    "RolloutEngine",
    "SamplingParams",
    "VLLMRolloutEngine",
]


def __getattr__(name: str) -> Any:
    """The engine classes, imported on first use (transformers takes about a second to import)."""
    if name in _ENGINE_CLASSES:
        return ROLLOUT_ENGINES.get(_ENGINE_CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
