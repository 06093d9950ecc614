"""Loss aggregation as per-token weights fixed once per optimizer mini-batch (semantics §7).

A scalar loss over an optimizer mini-batch is a weighted sum of per-token losses::

    loss = sum_{i,t} token_loss[i, t] * weights[i, t]

The weights depend only on the mask and the group ids of the *whole* mini-batch (on every
data-parallel rank), never on how it is cut into micro-batches. Compute them once, before the first
micro-batch, slice them with the same row indices as the data, and add the micro-batch losses (or
let gradient accumulation add their gradients): the loss and gradient equal the unsplit ones exactly,
for every mode, on one rank or many.

Usage in a trainer::

    totals = aggregation_totals(mask, group_index, all_reduce=sum_across_ranks)   # once
    weights = aggregation_weights(mask, group_index, "token-mean", totals)        # once
    for rows in micro_batches:                                                    # any split
        token_loss, m = clipped_policy_loss(logp[rows], old_logp[rows], adv[rows], mask[rows], ...)
        aggregate(token_loss, weights[rows]).backward()      # no division by the number of micro-batches

Modes (``n_i`` = valid tokens of response i, N = total valid tokens, S = responses with at least one
valid token, K = groups with at least one valid token, ``n_g`` = valid tokens of group g, L =
``loss_norm_tokens``)::

    token-mean               w = 1 / N
    seq-mean-token-sum       w = 1 / S
    seq-mean-token-mean      w = 1 / (S * n_i)
    seq-mean-token-sum-norm  w = 1 / (S * L)
    group-token-mean         w = 1 / (K * n_g)

Empty rows: a response with no valid token (e.g. truncated with overlong filtering on) contributes
nothing and is NOT counted in S; a group with no valid token is not counted in K. With DDP/FSDP the
totals are summed across ranks; a data-parallel gradient all-reduce must then SUM (not average) the
rank gradients, or the trainer multiplies the loss by the world size to undo the average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_rl.registry import Registry


@dataclass
class AggregationTotals:
    """Denominators counted over a whole optimizer mini-batch (summed over data-parallel ranks).

    ``num_tokens``: valid tokens. ``num_seqs``: responses with at least one valid token.
    ``num_groups``: groups with at least one valid token.
    """

    num_tokens: float
    num_seqs: float
    num_groups: float


AggregationFn = Callable[[Tensor, Tensor, AggregationTotals, int | None], Tensor]

AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation mode")
"""name -> ``fn(mask_f[B, T], group_index[B], totals, loss_norm_tokens) -> weights[B, T]``."""


def _check(mask: Tensor, group_index: Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    if group_index.shape != mask.shape[:1]:
        raise ValueError(f"group_index must be [B] = [{mask.shape[0]}], got shape {tuple(group_index.shape)}")


def _weight_dtype(mask: Tensor) -> torch.dtype:
    # float64 stays float64 (exactness tests); bool/int/half/bf16 masks get float32 weights.
    return torch.promote_types(mask.dtype if mask.dtype.is_floating_point else torch.float32, torch.float32)


def _inv(x: float) -> float:
    return 1.0 / x if x > 0 else 0.0


def _dense_groups(group_index: Tensor) -> tuple[Tensor, int]:
    if group_index.numel() == 0:
        return group_index.long(), 0
    _, dense = torch.unique(group_index, return_inverse=True)
    return dense, int(dense.max().item()) + 1


def aggregation_totals(
    mask: Tensor,
    group_index: Tensor,
    all_reduce: Callable[[Tensor], Tensor | None] | None = None,
) -> AggregationTotals:
    """Count valid tokens, non-empty responses and non-empty groups of a whole mini-batch.

    Args:
        mask: ``[B, T]`` valid-token mask of this rank's full optimizer mini-batch.
        group_index: ``[B]`` group id of each row. A group must live entirely on one rank (groups
            are counted per rank, then summed).
        all_reduce: sums a float64 tensor of shape ``[3]`` across data-parallel ranks and returns
            the result; an in-place reducer that returns None (``torch.distributed.all_reduce``
            itself) is accepted too. None means a single process.

    Returns:
        ``AggregationTotals`` with global counts.
    """
    _check(mask, group_index)
    m = mask.to(torch.float64)
    row_tokens = m.sum(-1)
    nonempty = row_tokens > 0
    dense, num_groups = _dense_groups(group_index)
    if num_groups:
        group_tokens = torch.zeros(num_groups, dtype=torch.float64, device=m.device).index_add(
            0, dense, row_tokens
        )
        groups = (group_tokens > 0).sum()
    else:
        groups = torch.zeros((), dtype=torch.float64, device=m.device)
    counts = torch.stack([row_tokens.sum(), nonempty.to(torch.float64).sum(), groups.to(torch.float64)])
    if all_reduce is not None:
        reduced = all_reduce(counts)
        counts = counts if reduced is None else reduced
    tokens, seqs, grps = counts.tolist()
    return AggregationTotals(num_tokens=tokens, num_seqs=seqs, num_groups=grps)


@AGGREGATIONS.register("token-mean")
def _token_mean(
    mask: Tensor, group_index: Tensor, totals: AggregationTotals, loss_norm_tokens: int | None
) -> Tensor:
    return mask * _inv(totals.num_tokens)


@AGGREGATIONS.register("seq-mean-token-sum")
def _seq_mean_token_sum(
    mask: Tensor, group_index: Tensor, totals: AggregationTotals, loss_norm_tokens: int | None
) -> Tensor:
    return mask * _inv(totals.num_seqs)


@AGGREGATIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(
    mask: Tensor, group_index: Tensor, totals: AggregationTotals, loss_norm_tokens: int | None
) -> Tensor:
    row_tokens = mask.sum(-1, keepdim=True)
    per_row = torch.where(row_tokens > 0, 1.0 / row_tokens.clamp(min=1), torch.zeros_like(row_tokens))
    return mask * per_row * _inv(totals.num_seqs)


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def _seq_mean_token_sum_norm(
    mask: Tensor, group_index: Tensor, totals: AggregationTotals, loss_norm_tokens: int | None
) -> Tensor:
    if loss_norm_tokens is None or loss_norm_tokens <= 0:
        raise ValueError(
            "loss_agg_mode 'seq-mean-token-sum-norm' needs loss_norm_tokens > 0 "
            f"(usually max_response_tokens), got {loss_norm_tokens!r}"
        )
    return mask * _inv(totals.num_seqs * float(loss_norm_tokens))


@AGGREGATIONS.register("group-token-mean")
def _group_token_mean(
    mask: Tensor, group_index: Tensor, totals: AggregationTotals, loss_norm_tokens: int | None
) -> Tensor:
    dense, num_groups = _dense_groups(group_index)
    if num_groups == 0:
        return mask.clone()
    row_tokens = mask.sum(-1)
    group_tokens = torch.zeros(num_groups, dtype=mask.dtype, device=mask.device).index_add(
        0, dense, row_tokens
    )
    per_group = torch.where(group_tokens > 0, 1.0 / group_tokens.clamp(min=1), torch.zeros_like(group_tokens))
    return mask * per_group[dense].unsqueeze(-1) * _inv(totals.num_groups)


def aggregation_weights(
    mask: Tensor,
    group_index: Tensor,
    mode: str,
    totals: AggregationTotals,
    loss_norm_tokens: int | None = None,
) -> Tensor:
    """Per-token weights of a whole optimizer mini-batch for loss aggregation mode ``mode``.

    Args:
        mask: ``[B, T]`` valid-token mask of this rank's FULL optimizer mini-batch (not a
            micro-batch: ``group-token-mean`` needs whole groups).
        group_index: ``[B]`` group id of each row (any integer ids).
        mode: one of ``AGGREGATIONS.names()``; unknown names raise ``RegistryError`` listing them.
        totals: from ``aggregation_totals`` on the same mini-batch (all-reduced across ranks).
        loss_norm_tokens: the constant L of ``seq-mean-token-sum-norm`` (ValueError if None there).

    Returns:
        ``weights[B, T]``, 0 at masked positions, float32 (float64 when ``mask`` is float64).
        Slice rows of it alongside the data and pass to ``aggregate``.
    """
    _check(mask, group_index)
    fn = AGGREGATIONS.get(mode)
    mask_f = mask.to(_weight_dtype(mask))
    return fn(mask_f, group_index, totals, loss_norm_tokens)


def aggregate(token_values: Tensor, weights: Tensor) -> Tensor:
    """Scalar ``(token_values * weights).sum()``; shapes ``[B, T]`` and ``[B, T]``.

    ``token_values`` must be finite where ``weights`` is 0 (the per-token losses of this package are
    0 there). The product is computed in the promoted dtype (bf16 values x fp32 weights -> fp32).
    """
    if token_values.shape != weights.shape:
        raise ValueError(
            f"token_values {tuple(token_values.shape)} and weights {tuple(weights.shape)} differ in shape"
        )
    return (token_values * weights).sum()
