"""Build the configured rollout engine: ``build_engine(model, tokenizer, cfg)``.

An engine class registered in :data:`dapo_rl.rollout.ROLLOUT_ENGINES` is built as
``Engine(model, tokenizer, cfg.rollout.max_batch_sequences)``; one that reads more of the config
(the vllm engine: memory budget, dtype, context length) offers a classmethod
``from_config(model, tokenizer, cfg, weights)`` instead, used when present; ``weights`` reads the
policy's weights under Hugging Face names for an engine that holds its own copy (with LoRA: the
base with the adapters merged, :func:`dapo_rl.models.lora.merged_weights`).
"""

from __future__ import annotations

from typing import Any

from dapo_rl.config import DapoConfig
from dapo_rl.models.lora import merged_weights
from dapo_rl.rollout import ROLLOUT_ENGINES
from dapo_rl.rollout.base import RolloutEngine


def build_engine(model: Any, tokenizer: Any, cfg: DapoConfig) -> RolloutEngine:
    """The engine named by ``cfg.rollout.engine``, sampling for ``model`` (the policy)."""
    engine_cls = ROLLOUT_ENGINES.get(cfg.rollout.engine)
    from_config = getattr(engine_cls, "from_config", None)
    if from_config is not None:
        return from_config(model, tokenizer, cfg, weights=merged_weights)
    return engine_cls(model, tokenizer, cfg.rollout.max_batch_sequences)
