"""Clipped surrogate policy loss with decoupled clip ranges (clip-higher) and optional dual-clip,
semantics §6.

Per valid token, with r = exp(clamp(logp - old_logp, -20, 20))::

    pg1 = -A * r
    pg2 = -A * clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high)
    pg  = max(pg1, pg2)
    pg  = min(pg, -A * clip_ratio_c)     where A < 0, when dual-clip is on

The function returns the per-token loss; turning it into a scalar is the job of
``dapo_rl.algorithm.aggregation`` (weights computed once per optimizer mini-batch).

Metrics are returned as *sums over valid tokens* (plus ``ratio_max``, a max) so that a trainer can
combine micro-batches and data-parallel ranks exactly: add the sums (``all_reduce`` SUM), take the
max of ``ratio_max`` (``all_reduce`` MAX), then call ``finalize_policy_metrics``.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 20.0
"""|logp - old_logp| is clamped to this before exp, so r lies in [exp(-20), exp(20)]."""

POLICY_METRIC_SUMS = (
    "num_tokens",
    "clip_count",
    "clip_low_count",
    "clip_high_count",
    "dual_clip_count",
    "approx_kl_sum",
    "ratio_sum",
)
"""Keys of the metrics dict that combine across micro-batches and ranks by SUM."""

POLICY_METRIC_MAXES = ("ratio_max",)
"""Keys of the metrics dict that combine across micro-batches and ranks by MAX."""


def _expand_advantages(advantages: Tensor, like: Tensor) -> Tensor:
    if advantages.dim() == 1:
        if advantages.shape[0] != like.shape[0]:
            raise ValueError(
                f"advantages [B] has B={advantages.shape[0]}, expected {like.shape[0]} (rows of logp)"
            )
        return advantages.unsqueeze(-1)
    if advantages.shape != like.shape:
        raise ValueError(
            f"advantages must be [B] or [B, T] = {tuple(like.shape)}, got {tuple(advantages.shape)}"
        )
    return advantages


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float | None = None,
    token_states: dict[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token clipped policy-gradient loss (PPO surrogate with clip-higher and dual-clip).

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the current policy (differentiable).
        old_logp: ``[B, T]`` log-probs under the policy that sampled (treated as constant).
        advantages: ``[B]`` per-response advantage (broadcast to tokens) or ``[B, T]`` per token.
        mask: ``[B, T]`` valid-token mask (bool or 0/1 float). Masked positions get loss 0 and do
            not enter the metrics; they may hold any finite or infinite log-prob values.
        clip_ratio_low: lower clip range eps_low, ratio floor ``1 - eps_low`` (DAPO 0.2). In [0, 1).
        clip_ratio_high: upper clip range eps_high, ratio ceiling ``1 + eps_high`` (DAPO 0.28). >= 0.
        clip_ratio_c: dual-clip constant c > 1 (DAPO recipe 10), or None for off.
        token_states: when given, filled with the bool ``[B, T]`` masks of the valid tokens counted
            in ``clip_low_count``, ``clip_high_count`` and ``dual_clip_count`` (keys ``clip_low``,
            ``clip_high``, ``dual_clip``; the learning-signal ledger counts tokens with them).

    Returns:
        ``(loss[B, T], metrics)``. ``loss`` has 0 at masked positions. ``metrics`` holds detached
        0-dim tensors summed over valid tokens: ``num_tokens``, ``clip_count`` (pg2 > pg1),
        ``clip_low_count`` (r < 1 - eps_low and A < 0), ``clip_high_count`` (r > 1 + eps_high and
        A > 0), ``dual_clip_count`` (A < 0 and the dual-clip bound is active), ``approx_kl_sum``
        (sum of old_logp - logp), ``ratio_sum``; and ``ratio_max`` (max r over valid tokens, 0 when
        there are none). Combine with ``accumulate_policy_metrics`` and read with
        ``finalize_policy_metrics``.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(
            f"logp, old_logp and mask must share a [B, T] shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if not 0.0 <= clip_ratio_low < 1.0:
        raise ValueError(f"clip_ratio_low must be in [0, 1), got {clip_ratio_low}")
    if clip_ratio_high < 0.0:
        raise ValueError(f"clip_ratio_high must be >= 0, got {clip_ratio_high}")
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c (dual-clip) must be > 1 or None, got {clip_ratio_c}")

    adv = _expand_advantages(advantages, logp).to(logp.dtype)
    valid = mask.bool()
    old_logp = old_logp.detach()

    # Padded positions are set to log-ratio 0 first, so a NaN/inf there reaches neither the loss
    # nor the gradient of logp.
    diff = torch.where(valid, logp - old_logp, 0.0)
    log_ratio = diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    pg = torch.maximum(pg1, pg2)
    negative = (adv < 0).expand_as(pg)
    if clip_ratio_c is not None:
        pg3 = -adv * clip_ratio_c
        dual_active = negative & (pg3 < pg)
        pg = torch.where(negative, torch.minimum(pg, pg3), pg)
    else:
        dual_active = torch.zeros_like(valid)
    loss = torch.where(valid, pg, torch.zeros_like(pg))

    with torch.no_grad():
        acc_dtype = torch.promote_types(logp.dtype, torch.float32)
        r = ratio.detach()

        def vsum(x: Tensor) -> Tensor:
            return torch.where(valid, x.to(acc_dtype), 0.0).sum()

        positive = (adv > 0).expand_as(pg)
        low, high = (r < 1.0 - clip_ratio_low) & negative, (r > 1.0 + clip_ratio_high) & positive
        if token_states is not None:
            token_states.update(clip_low=low & valid, clip_high=high & valid, dual_clip=dual_active & valid)
        metrics = {
            "num_tokens": vsum(torch.ones_like(r)),
            "clip_count": vsum(pg2.detach() > pg1.detach()),
            "clip_low_count": vsum(low),
            "clip_high_count": vsum(high),
            "dual_clip_count": vsum(dual_active),
            "approx_kl_sum": vsum(old_logp - logp.detach()),
            "ratio_sum": vsum(r),
            "ratio_max": torch.where(valid, r.to(acc_dtype), 0.0).amax()
            if r.numel()
            else torch.zeros((), dtype=acc_dtype, device=r.device),
        }
    return loss, metrics


def accumulate_policy_metrics(total: dict[str, Tensor] | None, new: dict[str, Tensor]) -> dict[str, Tensor]:
    """Combine two metric dicts from ``clipped_policy_loss`` (sums add, ``ratio_max`` takes max).

    ``total=None`` starts an accumulation. Returns a new dict; inputs are not modified.
    """
    if total is None:
        return {k: v.detach().clone() for k, v in new.items()}
    out = {}
    for k, v in new.items():
        out[k] = torch.maximum(total[k], v) if k in POLICY_METRIC_MAXES else total[k] + v
    return out


def finalize_policy_metrics(sums: dict[str, Tensor], prefix: str = "loss/") -> dict[str, float]:
    """Turn (accumulated, all-reduced) sums into logged values.

    Returns ``{prefix}clip_frac``, ``clip_low_frac``, ``clip_high_frac``, ``dual_clip_frac``,
    ``approx_kl``, ``ratio_mean`` (each divided by the number of valid tokens; 0 when there are
    none) and ``ratio_max``.
    """
    n = float(sums["num_tokens"])
    inv = 1.0 / n if n > 0 else 0.0
    return {
        f"{prefix}clip_frac": float(sums["clip_count"]) * inv,
        f"{prefix}clip_low_frac": float(sums["clip_low_count"]) * inv,
        f"{prefix}clip_high_frac": float(sums["clip_high_count"]) * inv,
        f"{prefix}dual_clip_frac": float(sums["dual_clip_count"]) * inv,
        f"{prefix}approx_kl": float(sums["approx_kl_sum"]) * inv,
        f"{prefix}ratio_mean": float(sums["ratio_sum"]) * inv,
        f"{prefix}ratio_max": float(sums["ratio_max"]),
    }
