"""Loss aggregation: hand values per mode, reference loop, and exact invariance of loss and gradient
to micro-batch and data-parallel splits for every mode (semantics §7)."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.algorithm.aggregation import (
    AGGREGATIONS,
    AggregationTotals,
    aggregate,
    aggregation_totals,
    aggregation_weights,
)
from dapo_rl.algorithm.policy_loss import clipped_policy_loss

MODES = [
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
    "group-token-mean",
]
NORM_TOKENS = 8


def reference_loss(
    values: torch.Tensor, mask: torch.Tensor, groups: list[int], mode: str, norm_tokens: int
) -> float:
    """The table of semantics §7 written as Python loops over responses and groups."""
    rows = []  # (group, token sum, token count) of responses with at least one valid token
    for i in range(values.shape[0]):
        toks = [float(values[i, t]) for t in range(values.shape[1]) if mask[i, t]]
        if toks:
            rows.append((groups[i], sum(toks), len(toks)))
    if not rows:
        return 0.0
    if mode == "token-mean":
        return sum(s for _, s, _ in rows) / sum(n for _, _, n in rows)
    if mode == "seq-mean-token-sum":
        return sum(s for _, s, _ in rows) / len(rows)
    if mode == "seq-mean-token-mean":
        return sum(s / n for _, s, n in rows) / len(rows)
    if mode == "seq-mean-token-sum-norm":
        return sum(s for _, s, _ in rows) / (len(rows) * norm_tokens)
    assert mode == "group-token-mean"
    per_group: dict[int, list[float]] = {}
    for g, s, n in rows:
        acc = per_group.setdefault(g, [0.0, 0.0])
        acc[0] += s
        acc[1] += n
    return sum(s / n for s, n in per_group.values()) / len(per_group)


def weights_for(mask: torch.Tensor, groups: torch.Tensor, mode: str) -> torch.Tensor:
    return aggregation_weights(
        mask, groups, mode, aggregation_totals(mask, groups), loss_norm_tokens=NORM_TOKENS
    )


def test_registry_has_the_five_modes() -> None:
    assert AGGREGATIONS.names() == sorted(MODES)
    with pytest.raises(KeyError, match="Did you mean 'token-mean'"):
        AGGREGATIONS.get("token_mean")


# Hand example. Rows (valid token values), group ids:
#   row 0: [1, 2, 3]  group 10      row 1: [4]     group 10
#   row 2: []         group 3       row 3: [5, 6]  group 3       row 4: [] group 7 (empty group)
# N = 6 tokens, S = 3 non-empty responses, K = 2 non-empty groups, L = 8.
#   token-mean              (1+2+3+4+5+6) / 6                 = 21/6 = 3.5
#   seq-mean-token-sum      (6 + 4 + 11) / 3                  = 7
#   seq-mean-token-mean     (6/3 + 4/1 + 11/2) / 3 = 11.5/3   = 3.8333...
#   seq-mean-token-sum-norm 21 / (3 * 8)                      = 0.875
#   group-token-mean        ((6+4)/4 + 11/2) / 2 = (2.5+5.5)/2 = 4.0
HAND_VALUES = torch.tensor(
    [[1, 2, 3, 0], [4, 0, 0, 0], [0, 0, 0, 0], [5, 6, 0, 0], [0, 0, 0, 0]], dtype=torch.float64
)
HAND_MASK = torch.tensor(
    [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float64
)
HAND_GROUPS = torch.tensor([10, 10, 3, 3, 7])
HAND_EXPECTED = {
    "token-mean": 3.5,
    "seq-mean-token-sum": 7.0,
    "seq-mean-token-mean": 11.5 / 3,
    "seq-mean-token-sum-norm": 0.875,
    "group-token-mean": 4.0,
}


def test_totals_hand_example() -> None:
    totals = aggregation_totals(HAND_MASK, HAND_GROUPS)
    assert totals == AggregationTotals(num_tokens=6.0, num_seqs=3.0, num_groups=2.0)


@pytest.mark.parametrize("mode", MODES)
def test_hand_values(mode: str) -> None:
    w = weights_for(HAND_MASK, HAND_GROUPS, mode)
    assert aggregate(HAND_VALUES, w).item() == pytest.approx(HAND_EXPECTED[mode], abs=1e-12)
    assert torch.equal(w[HAND_MASK == 0], torch.zeros(int((HAND_MASK == 0).sum()), dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_vectorised_matches_reference_loop(mode: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, t = 11, 9
    values = torch.randn(b, t, generator=gen, dtype=torch.float64)
    lengths = torch.randint(0, t + 1, (b,), generator=gen)  # includes empty rows
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    values = values * mask
    groups = torch.randint(-3, 4, (b,), generator=gen) * 7  # few, repeated, negative, unsorted ids
    got = aggregate(values, weights_for(mask, groups, mode)).item()
    want = reference_loss(values, mask, groups.tolist(), mode, NORM_TOKENS)
    assert got == pytest.approx(want, abs=1e-12)


# --- invariance to micro-batch and data-parallel splits --------------------------------------


def make_minibatch(seed: int) -> dict[str, torch.Tensor]:
    """12 responses in 4 groups of 3 whose rows are interleaved (so contiguous splits cut groups),
    with ragged lengths, one empty row, and ratios far enough from 1 to exercise clipping."""
    gen = torch.Generator().manual_seed(seed)
    b, t = 12, 10
    groups = torch.tensor([40, 11, 40, 2, 11, 40, 2, 7, 11, 2, 7, 7])
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[4] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    logp0 = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.4
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    return {"groups": groups, "mask": mask, "old": old, "logp0": logp0, "adv": adv}


def loss_and_grad(
    data: dict[str, torch.Tensor], mode: str, parts: list[list[int]]
) -> tuple[float, torch.Tensor]:
    """Weights once for the whole mini-batch, then one backward per micro-batch (rows ``parts``)."""
    logp = data["logp0"].clone().requires_grad_(True)
    weights = weights_for(data["mask"], data["groups"], mode)
    total = 0.0
    for rows in parts:
        idx = torch.tensor(rows)
        token_loss, _ = clipped_policy_loss(
            logp[idx], data["old"][idx], data["adv"][idx], data["mask"][idx], 0.2, 0.28, 3.0
        )
        loss = aggregate(token_loss, weights[idx])
        loss.backward()
        total += loss.item()
    return total, logp.grad


SPLITS = {
    "one": [list(range(12))],
    "two": [list(range(6)), list(range(6, 12))],
    "three": [list(range(4)), list(range(4, 8)), list(range(8, 12))],
    "uneven": [[0], list(range(1, 8)), list(range(8, 12))],
    "scattered": [[11, 0, 5], [3, 9], [1, 2, 4, 6, 7, 8, 10]],  # arbitrary rows, e.g. token-budget packing
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", MODES)
def test_loss_and_gradient_invariant_to_micro_batch_split(mode: str, seed: int) -> None:
    data = make_minibatch(seed)
    ref_loss, ref_grad = loss_and_grad(data, mode, SPLITS["one"])
    want = reference_loss(
        clipped_policy_loss(data["logp0"], data["old"], data["adv"], data["mask"], 0.2, 0.28, 3.0)[0],
        data["mask"],
        data["groups"].tolist(),
        mode,
        NORM_TOKENS,
    )
    assert ref_loss == pytest.approx(want, abs=1e-12)
    assert ref_grad.abs().sum() > 0
    for name, parts in SPLITS.items():
        loss, grad = loss_and_grad(data, mode, parts)
        assert loss == pytest.approx(ref_loss, abs=1e-6), name
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6, msg=name)


def test_splits_cut_groups_in_two() -> None:
    groups = make_minibatch(0)["groups"]
    for name in ("two", "three", "uneven"):
        for rows in SPLITS[name]:
            in_part = set(groups[rows].tolist())
            outside = set(groups[[i for i in range(12) if i not in rows]].tolist())
            if in_part & outside:
                break
        else:
            pytest.fail(f"split {name} cuts no group")


def test_naive_per_micro_batch_mean_is_not_invariant() -> None:
    """Negative control: normalising per micro-batch (the common bug) changes the loss, so the
    invariance test above is sensitive to it."""
    data = make_minibatch(0)
    token_loss, _ = clipped_policy_loss(data["logp0"], data["old"], data["adv"], data["mask"], 0.2, 0.28)
    full = (token_loss.sum() / data["mask"].sum()).item()
    parts = SPLITS["uneven"]
    naive = sum((token_loss[p].sum() / data["mask"][p].sum()).item() for p in parts) / len(parts)
    assert abs(naive - full) > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_invariant_to_data_parallel_split(mode: str) -> None:
    """Two simulated ranks, each holding whole groups; totals are summed by a fake all-reduce."""
    data = make_minibatch(3)
    ref_loss, ref_grad = loss_and_grad(data, mode, SPLITS["one"])
    groups = data["groups"]
    rank_rows = [
        [i for i in range(12) if groups[i].item() in (40, 2)],
        [i for i in range(12) if groups[i].item() in (11, 7)],
    ]
    local = [aggregation_totals(data["mask"][r], groups[r]) for r in rank_rows]
    summed = torch.tensor(
        [
            sum(x.num_tokens for x in local),
            sum(x.num_seqs for x in local),
            sum(x.num_groups for x in local),
        ],
        dtype=torch.float64,
    )

    def fake_all_reduce(t: torch.Tensor) -> torch.Tensor:
        return summed.clone()

    logp = data["logp0"].clone().requires_grad_(True)
    total = 0.0
    for rows in rank_rows:
        idx = torch.tensor(rows)
        mask, grp = data["mask"][idx], groups[idx]
        totals = aggregation_totals(mask, grp, all_reduce=fake_all_reduce)
        weights = aggregation_weights(mask, grp, mode, totals, loss_norm_tokens=NORM_TOKENS)
        for half in (slice(0, 2), slice(2, None)):  # micro-batches inside the rank, cutting a group
            sub = idx[half]
            token_loss, _ = clipped_policy_loss(
                logp[sub], data["old"][sub], data["adv"][sub], data["mask"][sub], 0.2, 0.28, 3.0
            )
            loss = aggregate(token_loss, weights[half])
            loss.backward()  # rank gradients add up (all-reduce SUM)
            total += loss.item()
    assert total == pytest.approx(ref_loss, abs=1e-6)
    torch.testing.assert_close(logp.grad, ref_grad, rtol=0, atol=1e-6)


def test_in_place_all_reduce_returning_none_is_accepted() -> None:
    def in_place_double(t: torch.Tensor) -> None:
        t.mul_(2)

    totals = aggregation_totals(HAND_MASK, HAND_GROUPS, all_reduce=in_place_double)
    assert totals == AggregationTotals(num_tokens=12.0, num_seqs=6.0, num_groups=4.0)


@pytest.mark.parametrize("mode", MODES)
def test_all_empty_mask_gives_zero_weights(mode: str) -> None:
    mask = torch.zeros(3, 4)
    w = weights_for(mask, torch.tensor([0, 0, 1]), mode)
    assert w.dtype == torch.float32
    assert torch.equal(w, torch.zeros(3, 4))


def test_bool_mask_gives_float32_weights() -> None:
    mask = HAND_MASK.bool()
    w = weights_for(mask, HAND_GROUPS, "token-mean")
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, (HAND_MASK / 6).float())


def test_errors() -> None:
    totals = aggregation_totals(HAND_MASK, HAND_GROUPS)
    with pytest.raises(ValueError, match="loss_norm_tokens"):
        aggregation_weights(HAND_MASK, HAND_GROUPS, "seq-mean-token-sum-norm", totals)
    with pytest.raises(KeyError, match="Valid names"):
        aggregation_weights(HAND_MASK, HAND_GROUPS, "sum", totals)
    with pytest.raises(ValueError, match="group_index"):
        aggregation_totals(HAND_MASK, HAND_GROUPS[:2])
    with pytest.raises(ValueError, match="shape"):
        aggregate(HAND_VALUES, HAND_MASK[:, :2])
