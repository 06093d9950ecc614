"""Group-relative advantages (GRPO / DAPO outcome reward), semantics §5.

For response i of group g with scalar reward R_i::

    A_i = (R_i - mean_g R) / (std_g R + eps)      std unbiased (n - 1)
    A_i =  R_i - mean_g R                          with norm_by_std=False (Dr. GRPO)

A group of one response, and a group whose rewards are all equal, gets exactly A = 0. The advantage
is a per-response scalar; ``clipped_policy_loss`` broadcasts it to every valid token. It is computed
once per step over whole groups, never per micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dapo_rl.registry import Registry

AdvantageEstimator = Callable[..., tuple[Tensor, dict[str, float]]]

ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")
"""name -> ``fn(rewards, group_index, **options) -> (advantages[B], metrics)``."""


def _check_inputs(rewards: Tensor, group_index: Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_index.shape != rewards.shape:
        raise ValueError(
            f"group_index shape {tuple(group_index.shape)} must equal rewards shape {tuple(rewards.shape)}"
        )
    if group_index.dtype.is_floating_point or group_index.dtype == torch.bool:
        raise TypeError(f"group_index must be an integer tensor, got {group_index.dtype}")


def group_advantages(
    rewards: Tensor,
    group_index: Tensor,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> tuple[Tensor, dict[str, float]]:
    """Group-normalised advantages, vectorised over groups of any sizes.

    Args:
        rewards: ``[B]`` scalar reward of each response (float or int).
        group_index: ``[B]`` integer id of the group (prompt) of each response. Ids need not be
            contiguous, sorted, or start at 0; groups may have different sizes.
        norm_by_std: divide by ``std_g + eps`` (GRPO/DAPO). False gives ``R - mean_g`` (Dr. GRPO).
        eps: added to the unbiased group std.

    Returns:
        ``(advantages[B], metrics)``. Advantages have the rewards' dtype (float32 for integer
        rewards); internal sums run in float64. A group of one, or with all rewards equal, gets
        exactly 0. Metrics: ``adv/mean``, ``adv/abs_mean``, ``adv/std``, ``adv/max``, ``adv/min``,
        ``adv/zero_frac`` (fraction of responses with A == 0, i.e. in uninformative groups).
    """
    _check_inputs(rewards, group_index)
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    if rewards.numel() == 0:
        empty = torch.zeros(0, dtype=out_dtype, device=rewards.device)
        return empty, _metrics(empty)

    r = rewards.to(torch.float64)
    # Dense ids 0..K-1 so scatter targets are small whatever the caller's ids are.
    _, dense = torch.unique(group_index, return_inverse=True)
    num_groups = int(dense.max().item()) + 1
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=r.device)

    counts = zeros.index_add(0, dense, torch.ones_like(r))
    means = zeros.index_add(0, dense, r) / counts
    centered = r - means[dense]

    # Constant groups (including groups of one) are exactly zero, not float noise / eps.
    gmax = zeros.scatter_reduce(0, dense, r, reduce="amax", include_self=False)
    gmin = zeros.scatter_reduce(0, dense, r, reduce="amin", include_self=False)
    constant = (gmax == gmin)[dense]

    if norm_by_std:
        sq = zeros.index_add(0, dense, centered * centered)
        var = sq / (counts - 1).clamp(min=1)
        adv = centered / (var.sqrt()[dense] + eps)
    else:
        adv = centered
    adv = torch.where(constant, torch.zeros_like(adv), adv).to(out_dtype)
    return adv, _metrics(adv)


ADVANTAGE_ESTIMATORS.register("grpo", group_advantages)


def _metrics(adv: Tensor) -> dict[str, float]:
    if adv.numel() == 0:
        return {
            k: 0.0 for k in ("adv/mean", "adv/abs_mean", "adv/std", "adv/max", "adv/min", "adv/zero_frac")
        }
    a = adv.detach().to(torch.float64)
    return {
        "adv/mean": a.mean().item(),
        "adv/abs_mean": a.abs().mean().item(),
        "adv/std": a.std(unbiased=False).item(),
        "adv/max": a.max().item(),
        "adv/min": a.min().item(),
        "adv/zero_frac": (a == 0).to(torch.float64).mean().item(),
    }
