"""Training-inference mismatch: measured, and corrected by truncated importance sampling (TIS).

A rollout engine with its own kernels (vLLM) samples from pi_rollout, which differs numerically
from pi_train, the trainer's forward on the same weights. Per valid response token t, with the
sampled token's log-probs ``rollout_logp`` (from the engine) and ``train_logp`` (the trainer's
recomputed old log-probs), and d_t = train_logp_t - rollout_logp_t::

    abs diff    |d_t|                                      (mean and max over tokens)
    k3          exp(d_t) - 1 - d_t                         (mean: estimates KL(pi_rollout || pi_train),
                                                            the tokens being drawn from pi_rollout)
    TIS weight  w_t = min(exp(d_t), C)                     (detached; multiplies the token's policy loss)

``d`` is clamped to [-20, 20] before ``exp`` (as the policy ratio is). Mismatch metrics are returned as
sums (plus a max) so that micro-batches and data-parallel ranks combine exactly, as
:mod:`dapo_rl.algorithm.policy_loss` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 20.0

MISMATCH_SUMS = ("num_tokens", "abs_diff_sum", "k3_sum")
"""Keys of :func:`mismatch_sums` that combine across micro-batches and ranks by SUM."""

MISMATCH_MAXES = ("abs_diff_max",)
"""Keys of :func:`mismatch_sums` that combine by MAX."""


def _log_ratio(train_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if train_logp.shape != rollout_logp.shape or train_logp.shape != mask.shape:
        raise ValueError(
            f"train_logp, rollout_logp and mask must share a shape, got {tuple(train_logp.shape)}, "
            f"{tuple(rollout_logp.shape)}, {tuple(mask.shape)}"
        )
    valid = mask.bool()
    diff = torch.where(valid, train_logp.detach() - rollout_logp.detach(), 0.0)
    return diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP), valid


def mismatch_sums(train_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Sums over valid tokens of ``|d|`` and k3, their count, and ``abs_diff_max`` (0 when there
    are no valid tokens). Shapes ``[B, T]`` (any shape, all equal); ``mask`` bool or 0/1."""
    d, valid = _log_ratio(train_logp, rollout_logp, mask)
    d = d.to(torch.promote_types(d.dtype, torch.float32))
    k3 = torch.where(valid, torch.expm1(d) - d, 0.0)
    return {
        "num_tokens": valid.sum().to(d.dtype),
        "abs_diff_sum": d.abs().sum(),
        "k3_sum": k3.sum(),
        "abs_diff_max": d.abs().amax() if d.numel() else d.new_zeros(()),
    }


def finalize_mismatch(sums: dict[str, Tensor], prefix: str = "rollout/") -> dict[str, float]:
    """``{prefix}logprob_abs_diff_mean``, ``logprob_abs_diff_max`` and ``logprob_kl_k3`` from
    (accumulated, all-reduced) :func:`mismatch_sums`; means are 0 when there are no tokens."""
    n = float(sums["num_tokens"])
    inv = 1.0 / n if n > 0 else 0.0
    return {
        f"{prefix}logprob_abs_diff_mean": float(sums["abs_diff_sum"]) * inv,
        f"{prefix}logprob_abs_diff_max": float(sums["abs_diff_max"]),
        f"{prefix}logprob_kl_k3": float(sums["k3_sum"]) * inv,
    }


def truncated_importance_weights(
    train_logp: Tensor, rollout_logp: Tensor, mask: Tensor, cap: float
) -> Tensor:
    """TIS token weights ``min(pi_train / pi_rollout, cap)``, detached, 0 at masked positions.

    Multiply the per-token policy loss by them (before aggregation) to correct for sampling from
    pi_rollout rather than pi_train. ``cap`` (C >= 1) bounds the variance the weights add.
    """
    if cap < 1.0:
        raise ValueError(f"importance cap must be >= 1, got {cap}")
    d, valid = _log_ratio(train_logp, rollout_logp, mask)
    weights = torch.exp(d.clamp(max=math.log(cap)))
    return torch.where(valid, weights, 0.0).to(train_logp.dtype)


def capped_importance_weights(
    train_logp: Tensor, rollout_logp: Tensor, mask: Tensor, cap: float, mode: str
) -> tuple[Tensor, Tensor]:
    """Importance weights w = pi_train / pi_rollout under a cap, detached, 0 at masked positions,
    and the bool tensor of valid tokens whose w is over the cap.

    ``mode="tis"``: ``min(w, cap)`` (:func:`truncated_importance_weights`). ``mode="mask"``: ``w``
    where ``w <= cap``, else 0 (the token drops out of the numerator; it stays in the token-mean
    denominator, which is computed from the response mask before any weight). With asynchronous
    rollouts pi_train is the proximal policy (the trainer's recomputed log-probs) and pi_rollout the
    behaviour policy that sampled the tokens (docs/algorithm.md).
    """
    if cap < 1.0:
        raise ValueError(f"importance cap must be >= 1, got {cap}")
    if mode not in ("tis", "mask"):
        raise ValueError(f"importance correction mode must be 'tis' or 'mask', got {mode!r}")
    d, valid = _log_ratio(train_logp, rollout_logp, mask)
    over = valid & (d > math.log(cap))
    if mode == "tis":
        weights = torch.exp(d.clamp(max=math.log(cap)))
    else:
        weights = torch.where(over, 0.0, torch.exp(d))
    return torch.where(valid, weights, 0.0).to(train_logp.dtype), over
