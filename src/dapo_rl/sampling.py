"""Dynamic sampling as a stage of the loop: generation rounds feed an admission gate that keeps
informative groups until the step's batch is full (semantics doc section 4).

The collector is independent of models: it asks a ``generate`` callable for scored groups, one
round at a time, so tests can drive it with hand-made groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dapo_rl.algorithm.filtering import GroupView, filter_groups
from dapo_rl.data.types import PromptRow
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
    """The groups a step trains on, the raw groups of every round (for logging), and counts."""

    groups: list[Group]
    generated: list[Group]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class GroupCollector:
    """Runs generation rounds until ``target`` informative groups are collected."""

    target: int
    prompts_per_round: int
    max_rounds: int
    enable: bool = True
    metric: Literal["acc", "score", "reward"] = "acc"
    user_filter: Callable[[GroupView], bool] | None = None
    on_shortfall: Literal["train", "error"] = "train"
    carry_over: bool = False
    buffer: list[Group] = field(default_factory=list)

    def collect(self, generate: Callable[[int, int], list[Group]]) -> Collected:
        """``generate(num_prompts, round_index)`` returns scored groups for fresh prompts."""
        if not self.enable:
            groups = generate(self.target, 0)
            return Collected(groups, groups, {"sampling/rounds": 1, "sampling/keep_rate": 1.0})
        kept = [g for g in self.buffer]
        for g in kept:
            g.age += 1
        self.buffer = []
        generated: list[Group] = []
        counts = {"kept": 0, "all_correct": 0, "all_wrong": 0}
        rounds = 0
        while len(kept) < self.target and rounds < self.max_rounds:
            fresh = generate(self.prompts_per_round, rounds)
            rounds += 1
            generated += fresh
            flags, c = filter_groups([g.view() for g in fresh], self.metric, self.user_filter)
            for key in counts:
                counts[key] += int(c.get(key, 0))
            kept += [g for g, keep in zip(fresh, flags) if keep]
        if len(kept) < self.target and self.on_shortfall == "error":
            raise ShortfallError(
                f"dynamic sampling collected {len(kept)} informative groups of the {self.target} needed "
                f"after {rounds} rounds (max_rounds={self.max_rounds}); raise dynamic_sampling.max_rounds "
                "or oversample, or set dynamic_sampling.on_shortfall=train"
            )
        surplus = kept[self.target :]
        kept = kept[: self.target]
        if self.carry_over:
            self.buffer = surplus
        return Collected(kept, generated, self._metrics(kept, generated, surplus, counts, rounds))

    def _metrics(
        self, kept: list[Group], generated: list[Group], surplus: list[Group], counts: dict, rounds: int
    ) -> dict[str, float]:
        n = max(len(generated), 1)
        trained = {id(g) for g in kept}
        discarded_tokens = sum(g.num_tokens for g in generated if id(g) not in trained)
        if self.carry_over:
            discarded_tokens -= sum(g.num_tokens for g in surplus)
        return {
            "sampling/rounds": rounds,
            "sampling/prompts_generated": len(generated),
            "sampling/groups_informative": counts["kept"],
            "sampling/groups_all_correct": counts["all_correct"],
            "sampling/groups_all_wrong": counts["all_wrong"],
            "sampling/keep_rate": counts["kept"] / n,
            "sampling/groups_trained": len(kept),
            "sampling/shortfall": max(self.target - len(kept), 0),
            "sampling/discarded_tokens": discarded_tokens,
            "sampling/carried_groups": len(self.buffer),
            "sampling/carried_age_max": max((g.age for g in kept), default=0),
        }

    def state_dict(self) -> dict:
        return {"buffer": self.buffer}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = list(state["buffer"])
