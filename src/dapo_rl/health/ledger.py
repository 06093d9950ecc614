"""The learning-signal ledger: every response token a step accounts for, counted exactly once under
the reason it did or did not carry gradient (docs/health.md).

A token's reason is the first that applies, in the order of the loop::

    filtered_all_correct / filtered_all_wrong / filtered_other   its group was dropped by dynamic
                                                  sampling (by the group's accs, as sampling/ counts)
    surplus            an informative group left over once the batch was full (dropped)
    overlong_masked    a truncated response masked by overlong filtering (overlong.mask_truncated)
    zero_advantage     a trained response whose advantage is exactly 0 (a kept group whose rewards
                       are all equal: every response; rarely one response at its group's mean)
    skipped_guard      its micro-batch was zeroed by the importance-ratio guard
    skipped_nonfinite  its optimizer update was skipped (non-finite loss or gradient)
    masked_importance  dropped from the loss by ``rollout.importance_correction=mask`` (its weight
                       pi_train / pi_rollout was over ``rollout.importance_cap``)
    clipped_low        r < 1 - clip_ratio_low with A < 0: the clipped surrogate is flat, no gradient
    clipped_high       r > 1 + clip_ratio_high with A > 0: flat, no gradient
    dual_clipped       A < 0 and the dual-clip bound -A * clip_ratio_c is active: flat, no gradient
    live               everything else: it moved the policy

With ``batch.epochs_per_step > 1`` a token takes part in several optimizer updates; the ledger
counts its state in the LAST update that included it (the last epoch), so each token is counted
once. The categories from ``overlong_masked`` on add up to the step's trained response tokens;
those from ``zero_advantage`` on (the tokens with a loss weight) add up to the token-mean loss
denominator summed over the step's mini-batches.

What the categories add up to, ``ledger/tokens``: the tokens generated this step
(``perf/tokens_generated``), minus those of fresh groups put in the carry-over buffer
(``ledger/carried_out``: they are counted at the step that trains or drops them), plus those of
groups carried in from earlier steps and trained now (``ledger/carried_in``). Without
``dynamic_sampling.carry_over`` both are 0 and the ledger adds up to the tokens generated.

Everything here is pure counting on this rank; the caller sums the counts over data-parallel ranks
(:meth:`dapo_rl.distributed.DistContext.sum_values`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dapo_rl import metric_names as M

CATEGORIES = M.LEDGER_CATEGORIES
"""The ledger's reasons, in the order they are decided (a token gets the first that applies)."""

UPDATE_CATEGORIES = CATEGORIES[CATEGORIES.index("zero_advantage") :]
"""The reasons decided inside the optimizer updates: the tokens with a loss weight."""

TOKENS, CARRIED_IN, CARRIED_OUT = M.LEDGER_TOKENS, M.LEDGER_CARRIED_IN, M.LEDGER_CARRIED_OUT
key = M.ledger_key


def _empty() -> dict[str, float]:
    return dict.fromkeys(UPDATE_CATEGORIES, 0.0)


@dataclass
class UpdateTally:
    """This rank's token states inside one step's optimizer updates, fed by
    :class:`dapo_rl.update.PolicyUpdate`: :meth:`micro` per micro-batch, :meth:`end_update` per
    optimizer update. Only updates made while ``counting`` is True (the last epoch) are kept."""

    counts: dict[str, float] = field(default_factory=_empty)
    counting: bool = True
    _pending: dict[str, float] = field(default_factory=_empty)

    def micro(self, mask: torch.Tensor, adv: torch.Tensor, ok: bool, states: Mapping[str, Any]) -> None:
        """One micro-batch: ``mask`` its ``[b, T]`` loss mask, ``adv`` the ``[b]`` advantages, ``ok``
        False when the importance-ratio guard zeroed it, ``states`` the per-token bool masks of
        :func:`~dapo_rl.algorithm.policy_loss.clipped_policy_loss` (``clip_low``, ``clip_high``,
        ``dual_clip``) and, with ``rollout.importance_correction=mask``, ``dropped``."""
        valid = mask.detach().bool()
        zero = valid & (adv.detach().reshape(-1)[: valid.shape[0]] == 0).unsqueeze(-1)
        rest = valid & ~zero
        p = self._pending
        p["zero_advantage"] += float(zero.sum())
        if not ok:
            p["skipped_guard"] += float(rest.sum())
            return
        dropped = states.get("dropped")
        if dropped is not None:
            p["masked_importance"] += float((rest & dropped).sum())
            rest = rest & ~dropped
        for category, state in (
            ("clipped_low", "clip_low"),
            ("clipped_high", "clip_high"),
            ("dual_clipped", "dual_clip"),
        ):
            hit = rest & states[state]
            p[category] += float(hit.sum())
            rest = rest & ~hit
        p["live"] += float(rest.sum())

    def end_update(self, finite: bool) -> None:
        """Close one optimizer update; a skipped (non-finite) one moves its tokens with a non-zero
        advantage to ``skipped_nonfinite``."""
        p, self._pending = self._pending, _empty()
        if not finite:
            moved = sum(v for k, v in p.items() if k != "zero_advantage")
            p = {**_empty(), "zero_advantage": p["zero_advantage"], "skipped_nonfinite": moved}
        if self.counting:
            for k, v in p.items():
                self.counts[k] += v


def step_ledger(
    generated: Sequence[Any],
    trained: Sequence[Any],
    samples: Sequence[Any],
    carried: Iterable[Any],
    update_counts: Mapping[str, float] | None,
) -> dict[str, float]:
    """This rank's ledger of one step (keys ``ledger/...``, not yet reduced over ranks).

    ``generated``: the groups generated this step; ``trained``: the groups trained (fresh and
    carried in, ``age > 0``); ``samples``: the trained responses as
    :class:`~dapo_rl.batch.TrainSample` (``loss_mask`` False: overlong-masked); ``carried``: the
    carry-over buffer after the step; ``update_counts``: :attr:`UpdateTally.counts` (None when
    nothing was trained). A group needs ``responses`` (with ``length``), ``accs`` and
    ``informative`` (False: dropped by the filter)."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    trained_ids = {id(g) for g in trained}
    carried_ids = {id(g) for g in carried}
    carried_out = carried_in = 0.0
    for g in generated:
        tokens = float(sum(r.length for r in g.responses))
        if id(g) in carried_ids:
            carried_out += tokens
        elif id(g) in trained_ids:
            continue  # counted from its samples below
        elif not getattr(g, "informative", True):
            reason = "all_correct" if all(g.accs) else "all_wrong" if not any(g.accs) else "other"
            out[f"filtered_{reason}"] += tokens
        else:
            out["surplus"] += tokens
    carried_in = float(sum(r.length for g in trained if g.age > 0 for r in g.responses))
    out["overlong_masked"] = float(sum(len(s.response_ids) for s in samples if not s.loss_mask))
    for k, v in (update_counts or {}).items():
        out[k] += v
    ledger = {key(k): v for k, v in out.items()}
    ledger[TOKENS] = sum(out.values())
    ledger[CARRIED_IN], ledger[CARRIED_OUT] = carried_in, carried_out
    return ledger


def ledger_shares(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each category's share of all tokens the ledger counted over ``records`` (metrics.jsonl
    rows); empty when no row has a ledger."""
    sums = dict.fromkeys(CATEGORIES, 0.0)
    for r in records:
        for c in CATEGORIES:
            v = r.get(key(c))
            if isinstance(v, (int, float)):
                sums[c] += v
    total = sum(sums.values())
    return {c: v / total for c, v in sums.items()} if total > 0 else {}


LABELS = {
    "filtered_all_correct": "filtered: all correct",
    "filtered_all_wrong": "filtered: all wrong",
    "filtered_other": "filtered: other",
    "surplus": "surplus (batch full)",
    "overlong_masked": "overlong-masked",
    "zero_advantage": "zero advantage",
    "skipped_guard": "skipped: ratio guard",
    "skipped_nonfinite": "skipped: non-finite",
    "masked_importance": "masked: importance cap",
    "clipped_low": "clipped low",
    "clipped_high": "clipped high",
    "dual_clipped": "dual-clipped",
    "live": "live",
}
"""Short words for each category (summary, doctor, plot legend)."""


def format_shares(shares: Mapping[str, float], min_share: float = 0.0) -> str:
    """``live 41.2% · filtered: all wrong 30.0% · ...``, largest first, live always first."""
    items = sorted(((c, s) for c, s in shares.items() if s > min_share or c == "live"), key=lambda cs: -cs[1])
    items.sort(key=lambda cs: cs[0] != "live")
    return " · ".join(f"{LABELS[c]} {100 * s:.1f}%" for c, s in items)
