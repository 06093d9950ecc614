"""The learning-signal ledger on a hand-built step: every count by hand, the sum equals the tokens
generated, the update's categories equal the token-mean loss denominator, and the counts do not
depend on how the step is cut into micro-batches or ranks."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl import metric_names as M
from dapo_rl.algorithm.aggregation import aggregation_totals
from dapo_rl.algorithm.policy_loss import clipped_policy_loss
from dapo_rl.batch import TrainSample
from dapo_rl.data.types import PromptRow
from dapo_rl.health.ledger import (
    CATEGORIES,
    UPDATE_CATEGORIES,
    UpdateTally,
    format_shares,
    ledger_shares,
    step_ledger,
)
from dapo_rl.rollout.base import Response
from dapo_rl.sampling import Group

# The trained group's five responses as rows of one [5, 4] batch. Log-ratios log(r) per token:
#   row 0: A = +1, 4 tokens, r = (1, 1.5, 1, 1): token 1 clipped high (r > 1.28)    -> 1 high, 3 live
#   row 1: A = -1, 3 tokens, r = (0.5, 5, 1):    token 0 clipped low (r < 0.8), token 1 dual (r > c = 3)
#                                                                                  -> 1 low, 1 dual, 1 live
#   row 2: A = 0,  2 tokens                                                        -> 2 zero advantage
#   row 3: A = +0.5, 4 tokens, r = (0.5, 1, 1, 1): r < 0.8 with A > 0 is not clipped -> 4 live
#   row 4: A = -1, 5 tokens, truncated and masked by overlong filtering (mask 0)     -> 5 overlong-masked
RATIOS = [[1, 1.5, 1, 1], [0.5, 5, 1, 1], [1, 1, 1, 1], [0.5, 1, 1, 1], [1, 1, 1, 1]]
MASK = torch.tensor(
    [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.float64
)
ADV = torch.tensor([1.0, -1.0, 0.0, 0.5, -1.0], dtype=torch.float64)
LENGTHS = [4, 3, 2, 4, 5]
HAND_UPDATE = {"zero_advantage": 2, "clipped_low": 1, "clipped_high": 1, "dual_clipped": 1, "live": 8}


def _tally(
    splits: list[list[int]], ok: tuple[bool, ...] | None = None, dropped: torch.Tensor | None = None
) -> UpdateTally:
    """The update's tally with the rows cut into micro-batches ``splits`` (one optimizer update)."""
    tally = UpdateTally()
    old = torch.zeros(5, 4, dtype=torch.float64)
    logp = torch.log(torch.tensor(RATIOS, dtype=torch.float64))
    for j, rows in enumerate(splits):
        states: dict = {}
        clipped_policy_loss(logp[rows], old[rows], ADV[rows], MASK[rows], 0.2, 0.28, 3.0, token_states=states)
        if dropped is not None:
            states["dropped"] = dropped[rows]
        tally.micro(MASK[rows], ADV[rows], True if ok is None else ok[j], states)
    tally.end_update(True)
    return tally


def _response(n: int, truncated: bool = False) -> Response:
    return Response(list(range(n)), "x" * n, "length" if truncated else "eos")


def _group(lengths: list[int], accs: list[bool], informative: bool, truncated: int = -1) -> Group:
    resp = [_response(n, i == truncated) for i, n in enumerate(lengths)]
    scores = [float(a) for a in accs]
    g = Group(PromptRow("p", "1", "u"), [1], resp, scores, accs, scores)
    g.informative = informative
    return g


def _step() -> tuple[list[Group], Group, list[TrainSample]]:
    trained = _group(LENGTHS, [True, False, True, True, False], True, truncated=4)
    generated = [
        _group([3, 3], [True, True], False),  # all correct: filtered, 6 tokens
        trained,
        _group([2, 7], [False, False], False),  # all wrong: filtered, 9 tokens
        _group([1, 1, 1], [True, False, True], False),  # a user filter dropped it: other, 3 tokens
        _group([1, 2], [True, False], True),  # informative, the batch was full: surplus, 3 tokens
    ]
    samples = [
        TrainSample([1], list(range(n)), float(a), 0, loss_mask=i != 4)
        for i, (n, a) in enumerate(zip(LENGTHS, ADV.tolist()))
    ]
    return generated, trained, samples


def test_update_tally_counts_each_token_by_hand() -> None:
    assert _tally([[0, 1, 2, 3, 4]]).counts == pytest.approx(
        {**dict.fromkeys(UPDATE_CATEGORIES, 0), **HAND_UPDATE}
    )


@pytest.mark.parametrize("splits", [[[0], [1], [2], [3], [4]], [[0, 3], [4, 1, 2]], [[4], [], [2, 1, 0, 3]]])
def test_micro_batch_splits_and_ranks_count_alike(splits: list[list[int]]) -> None:
    whole = _tally([[0, 1, 2, 3, 4]]).counts
    assert _tally(splits).counts == whole
    # two ranks each tally their rows; the ledger's sum over ranks is the one-process count
    rank0, rank1 = _tally(splits[: len(splits) // 2]).counts, _tally(splits[len(splits) // 2 :]).counts
    assert {k: rank0[k] + rank1[k] for k in whole} == whole


def test_update_categories_reconcile_with_the_token_mean_denominator() -> None:
    totals = aggregation_totals(MASK, torch.zeros(5, dtype=torch.long))
    assert totals.num_tokens == 13 == sum(_tally([[0, 1], [2, 3, 4]]).counts.values())


def test_guard_and_nonfinite_skips_and_only_the_last_epoch_counts() -> None:
    guarded = _tally([[0, 1], [2, 3, 4]], ok=(False, True)).counts  # rows 0-1 zeroed by the guard
    assert guarded == pytest.approx(
        {**dict.fromkeys(UPDATE_CATEGORIES, 0), "zero_advantage": 2, "skipped_guard": 7, "live": 4}
    )
    tally = UpdateTally()
    tally.counting = False  # an earlier epoch: its states are overwritten by the last one's
    states: dict = {}
    clipped_policy_loss(
        torch.zeros(5, 4), torch.zeros(5, 4), ADV.float(), MASK.float(), 0.2, 0.28, token_states=states
    )
    tally.micro(MASK, ADV, True, states)
    tally.end_update(True)
    tally.counting = True
    tally.micro(MASK, ADV, True, states)
    tally.end_update(False)  # a non-finite update: every token with a non-zero advantage skipped
    assert tally.counts == pytest.approx(
        {**dict.fromkeys(UPDATE_CATEGORIES, 0), "zero_advantage": 2, "skipped_nonfinite": 11}
    )


def test_tokens_dropped_by_the_importance_mask() -> None:
    """rollout.importance_correction=mask drops tokens from the loss before clipping matters: row 0's
    clipped-high token, one live token of row 3, and a zero-advantage token (it stays zero advantage)."""
    dropped = torch.zeros(5, 4, dtype=torch.bool)
    dropped[0, 1] = dropped[3, 0] = dropped[2, 0] = True
    counts = _tally([[0, 1], [2, 3, 4]], dropped=dropped).counts
    hand = {**HAND_UPDATE, "masked_importance": 2, "clipped_high": 0, "live": 7}
    assert counts == pytest.approx({**dict.fromkeys(UPDATE_CATEGORIES, 0), **hand})
    assert sum(counts.values()) == 13  # still the token-mean denominator


def test_step_ledger_by_hand_sums_to_the_tokens_generated() -> None:
    generated, trained, samples = _step()
    ledger = step_ledger(generated, [trained], samples, [], _tally([[0, 1, 2, 3, 4]]).counts)
    hand = {
        "filtered_all_correct": 6, "filtered_all_wrong": 9, "filtered_other": 3, "surplus": 3,
        "overlong_masked": 5, **HAND_UPDATE,
    }  # fmt: skip
    assert {c: ledger[M.ledger_key(c)] for c in CATEGORIES} == pytest.approx(
        {**dict.fromkeys(CATEGORIES, 0), **hand}
    )
    generated_tokens = sum(g.num_tokens for g in generated)
    assert generated_tokens == 39 == ledger[M.LEDGER_TOKENS]
    assert ledger[M.LEDGER_CARRIED_IN] == ledger[M.LEDGER_CARRIED_OUT] == 0
    # two ranks: the groups split between them, each with its own samples and tally
    r0 = step_ledger(generated[:1] + generated[2:], [], [], [], None)
    r1 = step_ledger([trained], [trained], samples, [], _tally([[0, 1, 2, 3, 4]]).counts)
    assert {k: r0[k] + r1[k] for k in ledger} == ledger


def test_carry_over_moves_tokens_between_steps() -> None:
    generated, trained, samples = _step()
    surplus = generated[-1]
    first = step_ledger(generated, [trained], samples, [surplus], _tally([[0, 1, 2, 3, 4]]).counts)
    assert first[M.LEDGER_CARRIED_OUT] == 3 and first[M.ledger_key("surplus")] == 0
    assert first[M.LEDGER_TOKENS] == 39 - 3
    surplus.age = 1  # trained at the next step, beside nothing fresh
    carried = [TrainSample([1], [0], 1.0, 0), TrainSample([1], [0, 1], -1.0, 0)]
    tally = UpdateTally()
    tally.counts.update(live=3.0)
    second = step_ledger([], [surplus], carried, [], tally.counts)
    assert second[M.LEDGER_CARRIED_IN] == 3 == second[M.LEDGER_TOKENS] == second[M.LEDGER_LIVE]


def test_shares_over_a_run() -> None:
    rows = [{M.LEDGER_LIVE: 30.0, M.LEDGER_FILTERED_ALL_WRONG: 10.0}, {M.LEDGER_LIVE: 10.0}, {"eval/k": 4}]
    shares = ledger_shares(rows)
    assert shares["live"] == 0.8 and shares["filtered_all_wrong"] == 0.2
    assert math.isclose(sum(shares.values()), 1.0)
    assert format_shares(shares) == "live 80.0% · filtered: all wrong 20.0%"
    assert ledger_shares([{"eval/k": 4}]) == {}
