"""AdamW and the learning-rate schedule. Every count here is in OPTIMIZER UPDATES."""

from __future__ import annotations

import math

import torch

from dapo_rl.config import DapoConfig


def lr_factor(update: int, cfg: DapoConfig) -> float:
    """Multiplier of ``optim.lr`` after ``update`` optimizer updates: linear warm-up over
    ``warmup_updates``, then constant, cosine or linear decay to ``min_lr_ratio`` at the run's end."""
    o = cfg.optim
    if update < o.warmup_updates:
        return (update + 1) / o.warmup_updates
    if o.schedule == "constant":
        return 1.0
    span = max(cfg.total_updates - o.warmup_updates, 1)
    frac = min((update - o.warmup_updates) / span, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if o.schedule == "cosine" else 1.0 - frac
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape


def build_optimizer(
    model: torch.nn.Module, cfg: DapoConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the parameters that require grad (all of them, or LoRA's adapters alone), which
    must be float32 master weights: its states then are float32 too (refused otherwise)."""
    check_master_precision(model)
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: lr_factor(update, cfg))
    return optimizer, scheduler


def check_master_precision(model: torch.nn.Module) -> None:
    """Refuse to train parameters stored below float32: AdamW's updates (lr x ~1) fall below a
    bfloat16 weight's resolution (2^-8 relative) and are lost, and its states would be bfloat16."""
    low = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad and p.dtype != torch.float32})
    if low:
        raise ValueError(
            f"trainable parameters are stored in {', '.join(low)}: AdamW's updates fall below their "
            "resolution and are lost. Keep master weights in float32 (load_model_and_tokenizer does) and "
            "choose the compute precision with model.dtype (bfloat16 runs under autocast)."
        )
