"""The tiny model and character tokenizer of the embedded synthetic task, and its SFT warm start."""

from __future__ import annotations

from dapo_rl.models.sft import SFTConfig, ensure_warm_model, evaluate_warm_model, read_info, run_sft
from dapo_rl.models.tiny import build_tiny_model, build_tokenizer, default_cache_dir

__all__ = [
    "SFTConfig",
    "build_tiny_model",
    "build_tokenizer",
    "default_cache_dir",
    "ensure_warm_model",
    "evaluate_warm_model",
    "read_info",
    "run_sft",
]
