"""Importance-ratio guard (RLinf's early_stop_imp_ratio), semantics §8."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dapo_rl.algorithm.policy_loss import LOG_RATIO_CLAMP


def importance_ratio_guard(
    logp: Tensor,
    old_logp: Tensor,
    mask: Tensor,
    max_ratio: float | None,
) -> tuple[bool, float]:
    """Decide whether a micro-batch may contribute gradient.

    Args:
        logp, old_logp: ``[B, T]`` current and sampling-policy log-probs.
        mask: ``[B, T]`` valid-token mask.
        max_ratio: threshold on the mean ratio r = exp(clamp(logp - old_logp, -20, 20)) over valid
            tokens; None disables the guard.

    Returns:
        ``(passes, mean_ratio)``. ``passes`` is False when ``mean_ratio > max_ratio`` or the mean is
        NaN; the caller then zeroes that micro-batch's loss and counts it in a metric. With no valid
        token the mean ratio is reported as 1.0. Reads a scalar back from the device (one sync).
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must share a shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if max_ratio is not None and max_ratio <= 0:
        raise ValueError(f"max_ratio must be > 0 or None, got {max_ratio}")
    with torch.no_grad():
        valid = mask.bool()
        dtype = torch.promote_types(logp.dtype, torch.float32)
        log_ratio = (logp.detach().to(dtype) - old_logp.detach().to(dtype)).clamp(
            -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP
        )
        ratio = torch.where(valid, log_ratio.exp(), 0.0)
        n = int(valid.sum().item())
        mean_ratio = float(ratio.sum().item()) / n if n else 1.0
    if max_ratio is None:
        return True, mean_ratio
    passes = not math.isnan(mean_ratio) and mean_ratio <= max_ratio
    return passes, mean_ratio
