"""Dynamic sampling: keep only informative groups (paper §3.2, semantics §4).

A group is informative when its filter metric is not constant across its responses. We test
``max - min > tol`` (tol = 1e-9) instead of ``std > 0``: float noise such as ``0.1 + 0.2 != 0.3``
would make a float std positive for a group whose rewards are equal in meaning. For binary
accuracy this is ``0 < #correct < G``.

The default metric is the raw task ``acc``, not the length-shaped reward: an all-wrong group can
vary only through the overlong penalty, and training on such groups collapses policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dapo_rl.registry import Registry

INFORMATIVE_TOL = 1e-9
"""A group is informative when max(metric) - min(metric) exceeds this."""

FILTER_METRICS = ("acc", "score", "reward")


@dataclass
class GroupView:
    """What a group filter sees of one group of G responses to the same prompt.

    ``rewards``: shaped rewards (score + overlong penalty). ``accs``: task correctness.
    ``scores``: raw reward-function scores. ``lengths``: response lengths in tokens.
    ``texts``: decoded responses.
    """

    rewards: list[float]
    accs: list[bool]
    scores: list[float]
    lengths: list[int]
    texts: list[str]


GroupCriterion = Callable[[Tensor, Tensor, int], Tensor]

GROUP_FILTERS: Registry[GroupCriterion] = Registry("group filter")
"""name -> ``fn(values[M], group_of[M], num_groups) -> keep BoolTensor[num_groups]``."""


@GROUP_FILTERS.register("std")
def _informative_std(values: Tensor, group_of: Tensor, num_groups: int) -> Tensor:
    v = values.to(torch.float64)
    fill = torch.zeros(num_groups, dtype=torch.float64, device=v.device)
    gmax = fill.scatter_reduce(0, group_of, v, reduce="amax", include_self=False)
    gmin = fill.scatter_reduce(0, group_of, v, reduce="amin", include_self=False)
    return (gmax - gmin) > INFORMATIVE_TOL


def select_informative_groups(
    metric: Tensor | Sequence[Tensor],
    criterion: str = "std",
) -> Tensor:
    """Which groups carry a learning signal.

    Args:
        metric: ``[num_groups, G]`` per-response metric, or a list of ``num_groups`` 1-D tensors
            (groups of different sizes). Bool tensors are read as 0/1.
        criterion: a name in ``GROUP_FILTERS`` (``"std"``: max - min > 1e-9).

    Returns:
        ``BoolTensor[num_groups]``; a group of one or zero responses is never informative.
    """
    fn = GROUP_FILTERS.get(criterion)
    if isinstance(metric, Tensor):
        if metric.dim() != 2:
            raise ValueError(
                f"metric must be [num_groups, G] or a list of 1-D tensors, got {tuple(metric.shape)}"
            )
        num_groups, size = metric.shape
        sizes = torch.full((num_groups,), size, dtype=torch.long)
        flat = metric.reshape(-1)
    else:
        num_groups = len(metric)
        sizes = torch.tensor([t.numel() for t in metric], dtype=torch.long)
        flat = torch.cat([t.reshape(-1).to(torch.float64) for t in metric]) if num_groups else torch.zeros(0)
    if num_groups == 0:
        return torch.zeros(0, dtype=torch.bool)
    group_of = torch.repeat_interleave(torch.arange(num_groups), sizes).to(flat.device)
    keep = fn(flat.to(torch.float64), group_of, num_groups)
    return keep & (sizes.to(keep.device) > 1)


def _metric_values(group: GroupView, metric: str) -> list[float]:
    if metric == "acc":
        return [float(a) for a in group.accs]
    if metric == "score":
        return [float(s) for s in group.scores]
    return [float(r) for r in group.rewards]


def filter_groups(
    groups: list[GroupView],
    metric: str = "acc",
    user_fn: Callable[[GroupView], bool] | None = None,
    criterion: str = "std",
) -> tuple[list[bool], dict[str, int]]:
    """Keep flags for a round of groups, and counts for the ``sampling/`` metrics.

    Args:
        groups: the round's groups (each non-empty, all lists of one group of equal length).
        metric: ``"acc"`` (default), ``"score"`` or ``"reward"``: the per-response value whose
            variation makes a group informative (see ``select_informative_groups``).
        user_fn: replaces the built-in criterion: ``fn(group) -> bool`` (True keeps the group),
            e.g. ``lambda g: 0 < sum(g.accs) < len(g.accs)``. It must return a ``bool``
            (numpy bools accepted); anything else raises TypeError.
        criterion: without ``user_fn``, the name in ``GROUP_FILTERS`` that decides from the
            metric values (``"std"``, the built-in; ``dynamic_sampling.filter`` names it).

    Returns:
        ``(keep, counts)``: ``keep[i]`` for each group; ``counts`` partitions the groups:
        ``kept`` + ``all_correct`` + ``all_wrong`` + ``other`` == ``total``, where ``all_correct``
        / ``all_wrong`` are DROPPED groups whose accs are all True / all False and ``other`` the
        remaining dropped groups. ``kept_all_correct`` / ``kept_all_wrong`` count kept groups with
        constant acc (non-zero only with a ``score``/``reward`` metric or a ``user_fn``: a warning
        sign, see semantics §4).
    """
    if metric not in FILTER_METRICS:
        raise ValueError(f"unknown group filter metric {metric!r}; valid: {', '.join(FILTER_METRICS)}")
    for i, g in enumerate(groups):
        n = len(g.accs)
        if n == 0:
            raise ValueError(f"group {i} has no responses")
        if not len(g.rewards) == len(g.scores) == len(g.lengths) == len(g.texts) == n:
            raise ValueError(
                f"group {i}: rewards/accs/scores/lengths/texts lengths differ: "
                f"{len(g.rewards)}/{n}/{len(g.scores)}/{len(g.lengths)}/{len(g.texts)}"
            )

    if user_fn is not None:
        keep = []
        for i, g in enumerate(groups):
            verdict = user_fn(g)
            if not isinstance(verdict, (bool, np.bool_)):
                raise TypeError(
                    f"group filter function {getattr(user_fn, '__name__', user_fn)!r} must return a bool "
                    f"(True keeps the group), got {type(verdict).__name__} {verdict!r} for group {i}"
                )
            keep.append(bool(verdict))
    else:
        values = [torch.tensor(_metric_values(g, metric), dtype=torch.float64) for g in groups]
        keep = select_informative_groups(values, criterion).tolist() if groups else []

    counts = {"total": len(groups), "kept": 0, "all_correct": 0, "all_wrong": 0, "other": 0}
    counts.update(kept_all_correct=0, kept_all_wrong=0)
    for g, k in zip(groups, keep):
        all_correct, all_wrong = all(g.accs), not any(g.accs)
        if k:
            counts["kept"] += 1
            counts["kept_all_correct"] += int(all_correct)
            counts["kept_all_wrong"] += int(all_wrong)
        elif all_correct:
            counts["all_correct"] += 1
        elif all_wrong:
            counts["all_wrong"] += 1
        else:
            counts["other"] += 1
    return keep, counts
