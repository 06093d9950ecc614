"""KL penalty estimators to a reference policy (semantics §8).

On d = logp - ref_logp per token (Schulman's estimators of KL(pi || pi_ref))::

    k1   = d
    abs  = |d|
    k2   = d^2 / 2
    k3   = exp(-d) + d - 1      with d clamped to [-20, 20] and the result to [-10, 10]

The result is a per-token ``[B, T]`` tensor; aggregate it with the same weights as the policy loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

K3_INPUT_CLAMP = 20.0
K3_OUTPUT_CLAMP = 10.0


def _k1(d: Tensor) -> Tensor:
    return d


def _abs(d: Tensor) -> Tensor:
    return d.abs()


def _k2(d: Tensor) -> Tensor:
    return 0.5 * d * d


def _k3(d: Tensor) -> Tensor:
    d = d.clamp(-K3_INPUT_CLAMP, K3_INPUT_CLAMP)
    return (torch.exp(-d) + d - 1.0).clamp(-K3_OUTPUT_CLAMP, K3_OUTPUT_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "abs": _abs, "k2": _k2, "k3": _k3}
"""name -> ``fn(d[..]) -> kl[..]`` with d = logp - ref_logp."""


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token KL estimate between the current and the reference policy.

    Args:
        logp: ``[B, T]`` (any shape) log-probs of the sampled tokens under the current policy.
        ref_logp: same shape, under the reference policy (treated as constant).
        estimator: ``"k1"``, ``"abs"``, ``"k2"`` or ``"k3"``.

    Returns:
        ``[B, T]`` per-token values, differentiable w.r.t. ``logp``; masked positions are NOT
        zeroed here (the aggregation weights are 0 there).

    Raises:
        ValueError: unknown estimator (the message lists the valid ones) or shape mismatch.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown KL estimator {estimator!r}; valid estimators: {', '.join(sorted(KL_ESTIMATORS))}"
        )
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ in shape")
    return KL_ESTIMATORS[estimator](logp - ref_logp.detach())
