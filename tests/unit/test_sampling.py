"""Dynamic sampling: the admission gate, rounds, shortfall policies, carry-over and its counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from dapo_rl.data.types import PromptRow
from dapo_rl.distributed import DistContext
from dapo_rl.rollout.base import Response
from dapo_rl.sampling import Group, GroupCollector, ShortfallError


def make_group(
    accs: list[bool], uid: str = "p", length: int = 3, rewards: list[float] | None = None
) -> Group:
    responses = [Response(token_ids=[1] * length, text="x", finish_reason="eos") for _ in accs]
    scores = [1.0 if a else -1.0 for a in accs]
    return Group(PromptRow("q", "1", uid), [5, 6], responses, scores, list(accs), rewards or list(scores))


class Script:
    """A fake generator: returns pre-written rounds and records what was asked."""

    def __init__(self, rounds: list[list[Group]]) -> None:
        self.rounds = rounds
        self.calls: list[tuple[int, int]] = []

    def __call__(self, num_prompts: int, round_index: int) -> list[Group]:
        self.calls.append((num_prompts, round_index))
        return self.rounds[len(self.calls) - 1]


MIXED, RIGHT, WRONG = [True, False], [True, True], [False, False]


def test_all_equal_groups_are_dropped_and_counted() -> None:
    gen = Script(
        [[make_group(MIXED, "a"), make_group(RIGHT, "b"), make_group(WRONG, "c"), make_group(MIXED, "d")]]
    )
    col = GroupCollector(target=2, prompts_per_round=4, max_rounds=3)
    out = col.collect(gen)
    assert [g.row.uid for g in out.groups] == ["a", "d"]
    assert gen.calls == [(4, 0)]
    m = out.metrics
    assert m["sampling/rounds"] == 1 and m["sampling/prompts_generated"] == 4
    assert m["sampling/groups_all_correct"] == 1 and m["sampling/groups_all_wrong"] == 1
    assert m["sampling/groups_informative"] == 2 and m["sampling/keep_rate"] == 0.5
    # b and c were generated and dropped: 2 groups x 2 responses x 3 tokens
    assert m["sampling/discarded_tokens"] == 12


def test_rounds_repeat_until_full_and_surplus_is_discarded() -> None:
    gen = Script(
        [
            [make_group(MIXED, "a"), make_group(WRONG, "b")],
            [make_group(WRONG, "c"), make_group(WRONG, "d")],
            [make_group(MIXED, "e"), make_group(MIXED, "f")],
        ]
    )
    col = GroupCollector(target=2, prompts_per_round=2, max_rounds=5)
    out = col.collect(gen)
    assert [g.row.uid for g in out.groups] == ["a", "e"]
    assert out.metrics["sampling/rounds"] == 3 and len(gen.calls) == 3
    assert col.buffer == []  # surplus f discarded (carry_over off)
    assert out.metrics["sampling/discarded_tokens"] == 4 * 6  # b, c, d, f


def test_shortfall_train_keeps_what_it_has() -> None:
    gen = Script([[make_group(WRONG, "a")], [make_group(MIXED, "b")]])
    col = GroupCollector(target=3, prompts_per_round=1, max_rounds=2)
    out = col.collect(gen)
    assert [g.row.uid for g in out.groups] == ["b"]
    assert out.metrics["sampling/shortfall"] == 2


def test_shortfall_zero_groups_trains_on_nothing() -> None:
    col = GroupCollector(target=1, prompts_per_round=1, max_rounds=2)
    out = col.collect(Script([[make_group(RIGHT)], [make_group(WRONG)]]))
    assert out.groups == [] and out.metrics["sampling/groups_trained"] == 0


def test_shortfall_error_says_what_to_do() -> None:
    col = GroupCollector(target=2, prompts_per_round=1, max_rounds=2, on_shortfall="error")
    with pytest.raises(ShortfallError, match="max_rounds=2"):
        col.collect(Script([[make_group(WRONG)], [make_group(MIXED)]]))


def test_carry_over_keeps_surplus_for_next_step_and_ages_it() -> None:
    col = GroupCollector(target=1, prompts_per_round=3, max_rounds=2, carry_over=True)
    out = col.collect(Script([[make_group(MIXED, "a"), make_group(MIXED, "b"), make_group(MIXED, "c")]]))
    assert [g.row.uid for g in out.groups] == ["a"]
    assert [g.row.uid for g in col.buffer] == ["b", "c"]
    assert out.metrics["sampling/discarded_tokens"] == 0
    gen = Script([])
    out2 = col.collect(gen)  # the buffer alone fills the step: no generation
    assert gen.calls == []
    assert [g.row.uid for g in out2.groups] == ["b"] and out2.groups[0].age == 1
    assert out2.metrics["sampling/carried_age_max"] == 1
    assert [g.row.uid for g in col.buffer] == ["c"]


def test_metric_choice_reward_vs_acc() -> None:
    # all wrong, but lengths differ so the shaped reward has spread: acc filter drops it
    g = make_group(WRONG, rewards=[-1.0, -1.5])
    assert GroupCollector(1, 1, 1, metric="acc").collect(Script([[g]])).groups == []
    g2 = make_group(WRONG, rewards=[-1.0, -1.5])
    assert len(GroupCollector(1, 1, 1, metric="reward").collect(Script([[g2]])).groups) == 1


def test_user_filter_receives_group_view() -> None:
    seen = []

    def keep_long(view) -> bool:
        seen.append(view)
        return max(view.lengths) > 4

    gen = Script([[make_group(RIGHT, "a", length=5), make_group(MIXED, "b", length=2)]])
    out = GroupCollector(1, 2, 1, user_filter=keep_long).collect(gen)
    assert [g.row.uid for g in out.groups] == ["a"]
    assert seen[0].accs == [True, True] and seen[0].lengths == [5, 5] and seen[0].texts == ["x", "x"]


def test_disabled_dynamic_sampling_takes_one_round_of_target_prompts() -> None:
    gen = Script([[make_group(RIGHT, "a"), make_group(WRONG, "b")]])
    out = GroupCollector(target=2, prompts_per_round=6, max_rounds=3, enable=False).collect(gen)
    assert gen.calls == [(2, 0)] and len(out.groups) == 2


@dataclass(frozen=True)
class PeerRanks(DistContext):
    """This process as rank ``rank`` of a group; ``peer_counts`` scripts the other ranks' numbers of
    informative groups in each offer (the carried buffer, then each round)."""

    peer_counts: list[list[int]] = field(default_factory=list)

    def all_counts(self, n: int) -> list[int]:
        counts = list(self.peer_counts.pop(0))
        counts[self.rank] = n
        return counts

    def _reduce(self, t: torch.Tensor, op: object) -> torch.Tensor:  # metrics: this rank's alone
        return t


def test_admission_across_ranks_follows_round_then_rank_order() -> None:
    # rank 1 of 2, 3 groups needed; round 0: rank 0 has 2 informative, this rank 2 (a, b)
    ranks = PeerRanks(rank=1, world_size=2, peer_counts=[[0, 0], [2, 0], [0, 0], [2, 0]])
    col = GroupCollector(target=3, prompts_per_round=4, max_rounds=3, carry_over=True, ranks=ranks)
    out = col.collect(Script([[make_group(MIXED, "a"), make_group(MIXED, "b")]]))
    assert [g.row.uid for g in out.groups] == ["a"] and out.positions == [2] and out.total == 3
    assert [g.row.uid for g in col.buffer] == ["b"]  # surplus stays with the rank that made it
    # next step: the buffers come first (rank 0 carries none), then a round in which rank 0's two
    # groups come before this rank's c, which is surplus
    out2 = col.collect(Script([[make_group(MIXED, "c"), make_group(WRONG, "d")]]))
    assert [g.row.uid for g in out2.groups] == ["b"] and out2.positions == [0] and out2.groups[0].age == 1
    assert [g.row.uid for g in col.buffer] == ["c"]


def test_rounds_continue_until_the_global_count_is_reached() -> None:
    # rank 0 of 2: round 0 gives 1 + 0 groups (too few), round 1 gives 2 + 3: rank 0's come first
    ranks = PeerRanks(rank=0, world_size=2, peer_counts=[[0, 0], [0, 0], [0, 3]])
    col = GroupCollector(target=3, prompts_per_round=2, max_rounds=5, ranks=ranks)
    gen = Script([[make_group(MIXED, "a")], [make_group(MIXED, "b"), make_group(MIXED, "c")]])
    out = col.collect(gen)
    assert len(gen.calls) == 2 and out.total == 3
    assert [g.row.uid for g in out.groups] == ["a", "b", "c"] and out.positions == [0, 1, 2]
