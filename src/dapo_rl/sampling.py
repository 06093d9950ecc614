"""Dynamic sampling as a stage of the loop: generation rounds feed an admission gate that keeps
informative groups until the step's batch is full (semantics doc section 4).

The collector is independent of models: it asks a ``generate`` callable for scored groups, one
round at a time, so tests can drive it with hand-made groups. Across data-parallel ranks it counts
informative groups globally (see :class:`GroupCollector`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dapo_rl.algorithm.filtering import GroupView, filter_groups
from dapo_rl.data.types import PromptRow
from dapo_rl.distributed import DistContext
from dapo_rl.rollout.base import Response


@dataclass
class Group:
    """One prompt and its G scored responses. ``rewards`` include overlong shaping; ``scores`` are
    the task scores; ``age`` counts the steps the group waited in the carry-over buffer."""

    row: PromptRow
    prompt_ids: list[int]
    responses: list[Response]
    scores: list[float]
    accs: list[bool]
    rewards: list[float]
    age: int = 0
    version: int = 0  # the policy version (weight publication) whose weights generated the group
    informative: bool = True  # False: dropped by the dynamic-sampling filter (the ledger's reason)

    def view(self) -> GroupView:
        return GroupView(
            rewards=list(self.rewards),
            accs=list(self.accs),
            scores=list(self.scores),
            lengths=[r.length for r in self.responses],
            texts=[r.text for r in self.responses],
        )

    @property
    def num_tokens(self) -> int:
        return sum(r.length for r in self.responses)


class ShortfallError(RuntimeError):
    """Dynamic sampling ran ``max_rounds`` rounds without filling the batch (on_shortfall=error)."""


@dataclass
class Collected:
    """What a step trains on and what it generated (this rank's part), with global counts.

    ``positions[i]`` is the position of ``groups[i]`` in the step's batch counted over all ranks
    (0 .. ``total`` - 1); ``total`` is the number of groups trained over all ranks.
    """

    groups: list[Group]
    generated: list[Group]
    metrics: dict[str, float] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)
    total: int = 0


@dataclass
class _Admission:
    """The step's batch as it fills: candidates arrive in batches (the carried buffer, then each
    round's informative groups); within a batch they are ordered by (rank, position), and the
    first ``target`` over all batches are admitted. Everything after them is surplus."""

    target: int
    ranks: DistContext
    groups: list[Group] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    surplus: list[Group] = field(default_factory=list)
    total: int = 0

    def offer(self, candidates: list[Group]) -> None:
        counts = self.ranks.all_counts(len(candidates))
        start = self.total + sum(counts[: self.ranks.rank])
        take = min(max(self.target - start, 0), len(candidates))
        self.groups += candidates[:take]
        self.positions += range(start, start + take)
        self.surplus += candidates[take:]
        self.total = min(self.total + sum(counts), self.target)

    @property
    def full(self) -> bool:
        return self.total >= self.target


@dataclass
class GroupCollector:
    """Runs generation rounds until ``target`` informative groups are collected over all ranks.

    With several data-parallel ranks (``ranks``), each rank generates its share of every round and
    the informative groups are counted globally; the admission order is (round, rank, position in
    the rank's share), which is the order of one process that generated the whole round, so a step
    trains on the same groups as one process would. Surplus groups are dropped, or with
    ``carry_over`` kept by the rank that generated them and offered first at the next step.
    """

    target: int
    prompts_per_round: int
    max_rounds: int
    enable: bool = True
    metric: Literal["acc", "score", "reward"] = "acc"
    user_filter: Callable[[GroupView], bool] | None = None
    criterion: str = "std"
    on_shortfall: Literal["train", "error"] = "train"
    carry_over: bool = False
    buffer: list[Group] = field(default_factory=list)
    ranks: DistContext = field(default_factory=DistContext)

    def collect(self, generate: Callable[[int, int], list[Group]]) -> Collected:
        """``generate(num_prompts, round_index)`` returns scored groups for this rank's share of
        ``num_prompts`` fresh prompts (all of them in a single process)."""
        batch = _Admission(self.target, self.ranks)
        if not self.enable:
            groups = generate(self.target, 0)
            batch.offer(groups)
            return Collected(
                batch.groups, groups, {"sampling/rounds": 1, "sampling/keep_rate": 1.0}, batch.positions,
                batch.total,
            )  # fmt: skip
        for g in self.buffer:
            g.age += 1
        batch.offer(self.buffer)
        self.buffer = []
        generated: list[Group] = []
        counts = {"kept": 0, "all_correct": 0, "all_wrong": 0}
        rounds = 0
        while not batch.full and rounds < self.max_rounds:
            fresh = generate(self.prompts_per_round, rounds)
            rounds += 1
            generated += fresh
            flags, c = filter_groups([g.view() for g in fresh], self.metric, self.user_filter, self.criterion)
            for key in counts:
                counts[key] += int(c.get(key, 0))
            for g, keep in zip(fresh, flags):
                g.informative = bool(keep)
            batch.offer([g for g, keep in zip(fresh, flags) if keep])
        if not batch.full and self.on_shortfall == "error":
            raise ShortfallError(
                f"dynamic sampling collected {batch.total} informative groups of the {self.target} needed "
                f"after {rounds} rounds (max_rounds={self.max_rounds}); raise dynamic_sampling.max_rounds "
                "or oversample, or set dynamic_sampling.on_shortfall=train"
            )
        if self.carry_over:
            self.buffer = batch.surplus
        metrics = self._metrics(batch, generated, counts, rounds)
        return Collected(batch.groups, generated, metrics, batch.positions, batch.total)

    def _metrics(
        self, batch: _Admission, generated: list[Group], counts: dict, rounds: int
    ) -> dict[str, float]:
        kept = {id(g) for g in batch.groups + (batch.surplus if self.carry_over else [])}
        discarded_tokens = sum(g.num_tokens for g in generated if id(g) not in kept)
        sums = self.ranks.sum_values(
            {
                "sampling/prompts_generated": len(generated),
                "sampling/groups_informative": counts["kept"],
                "sampling/groups_all_correct": counts["all_correct"],
                "sampling/groups_all_wrong": counts["all_wrong"],
                "sampling/groups_trained": len(batch.groups),
                "sampling/discarded_tokens": discarded_tokens,
                "sampling/carried_groups": len(self.buffer),
            }
        )
        age = self.ranks.max_values(
            {"sampling/carried_age_max": max((g.age for g in batch.groups), default=0)}
        )
        return {
            "sampling/rounds": rounds,
            **sums,
            "sampling/keep_rate": sums["sampling/groups_informative"]
            / max(sums["sampling/prompts_generated"], 1),
            "sampling/shortfall": max(self.target - sums["sampling/groups_trained"], 0),
            **age,
        }

    def state_dict(self) -> dict:
        return {"buffer": self.buffer}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = list(state["buffer"])
