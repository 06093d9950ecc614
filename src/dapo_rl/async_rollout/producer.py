"""The batches of the steps: prompt sampling -> roll out G responses each -> reward (+ overlong
shaping) -> dynamic sampling (:class:`~dapo_rl.sampling.GroupCollector`: rounds, admission gate,
carry-over). The same code runs in the trainer's process (the synchronous source) and in the rollout
worker (:mod:`dapo_rl.async_rollout.worker`), so what a step trains on depends only on the weights
version it was generated with, the data position and the carry-over buffer, never on where it ran.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from dapo_rl import metric_names as M
from dapo_rl.algorithm.overlong import overlong_penalty
from dapo_rl.config_async import plain_behaviour_ratio
from dapo_rl.distributed import DistContext, gathered
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout.base import RolloutEngine, SamplingParams
from dapo_rl.sampling import Collected, Group, GroupCollector
from dapo_rl.step_metrics import RewardCounts, StageTimes


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from (run seed, step, round, ...), the same after a resume."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class StepBatch:
    """What a batch source hands the trainer for one step: the collected groups, the reward counts
    and stage times (rollout, reward) of making them, the weights version that generated the fresh
    groups, and the source's own metrics (``async/*``)."""

    step: int
    collected: Collected
    counts: RewardCounts
    stages: StageTimes
    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    carried: list[Group] = field(default_factory=list)  # the carry-over buffer after it (async)


class BatchProducer:
    """Makes the batch of a step with ``engine`` (which samples from the weights of ``version``).

    ``max_staleness`` (asynchronous sources only): a carried-over group that would train more than
    this many versions after the one that generated it is dropped and counted
    (``async/dropped_stale_groups``), never re-queued. ``None``: today's carry-over, unbounded.
    """

    def __init__(
        self, cfg: Any, engine: RolloutEngine, policy: Any, encode: Any, dataset: Any, reward: RewardRunner,
        collector: GroupCollector, eos_ids: list[int], dist: DistContext, max_staleness: int | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.engine, self.policy, self.encode = cfg, engine, policy, encode
        self.dataset, self.reward, self.collector = dataset, reward, collector
        self.eos_ids, self.dist, self.max_staleness = eos_ids, dist, max_staleness

    def produce(self, step: int, version: int) -> StepBatch:
        """The batch of ``step``, generated with the weights of ``version`` (trained at step - 1)."""
        stages, counts = StageTimes(), RewardCounts()
        dropped = self._drop_stale(step)
        collected = self.collector.collect(partial(self._generate_round, step, version, stages, counts))
        metrics = {M.ASYNC_DROPPED_STALE_GROUPS: float(dropped)} if self.max_staleness is not None else {}
        return StepBatch(step, collected, counts, stages, version, metrics)

    def _drop_stale(self, step: int) -> int:
        """Drop carried-over groups that would exceed the staleness bound at ``step``."""
        if self.max_staleness is None:
            return 0
        buffer = self.collector.buffer
        keep = [g for g in buffer if step - 1 - g.version <= self.max_staleness]
        self.collector.buffer = keep
        return len(buffer) - len(keep)

    def _generate_round(
        self,
        step: int,
        version: int,
        stages: StageTimes,
        counts: RewardCounts,
        num_prompts: int,
        round_index: int,
    ) -> list[Group]:
        """Roll out G responses for this rank's share of ``num_prompts`` fresh prompts and score them.
        Every rank draws the same rows from its copy of the stream and keeps its own share."""
        rollout = self.cfg.rollout
        rows = self.dist.shard(self.dataset.next_batch(num_prompts))
        params = SamplingParams(
            max_new_tokens=rollout.max_response_tokens, temperature=rollout.temperature,
            top_p=rollout.top_p, top_k=rollout.top_k, eos_token_ids=self.eos_ids,
            stop_strings=rollout.stop_strings,
            seed=derive_seed(self.cfg.train.seed, step, round_index, *self.dist.seed_parts),
            return_logprobs=rollout.importance_correction != "none" or plain_behaviour_ratio(self.cfg),
        )  # fmt: skip
        with stages.time("rollout"):
            prompt_ids = [self.encode(row) for row in rows]
            # decode lengths differ across ranks: no collectives inside (vllm reads no policy weights)
            with gathered(self.policy, getattr(self.engine, "samples_from_policy", True)):
                outs = self.engine.generate(prompt_ids, self.cfg.batch.samples_per_prompt, params)
        with stages.time("reward"):
            return self._score(rows, prompt_ids, outs, counts, version)

    def _score(
        self, rows: list, prompt_ids: list[list[int]], outs: list[list], counts: RewardCounts, version: int
    ) -> list[Group]:
        """Task scores from the reward runner, plus overlong shaping: the groups' rewards."""
        size = self.cfg.batch.samples_per_prompt
        texts = [resp.text for group in outs for resp in group]
        golds = [row.answer for row in rows for _ in range(size)]
        extras = [row.extra for row in rows for _ in range(size)]
        results, batch_metrics = self.reward.score_batch(texts, golds, extras)
        counts.add_batch(results, batch_metrics)
        lengths = torch.tensor([resp.length for group in outs for resp in group], dtype=torch.float32)
        scores = torch.tensor([res.score for res in results], dtype=torch.float32)
        overlong = self.cfg.overlong
        shaped = scores
        if overlong.enable:
            shaped = scores + overlong_penalty(
                lengths, self.cfg.rollout.max_response_tokens, overlong.buffer_tokens, overlong.penalty_factor
            )
        groups = []
        for i, (row, ids, responses) in enumerate(zip(rows, prompt_ids, outs)):
            part = slice(i * size, (i + 1) * size)
            accs = [res.acc for res in results[part]]
            groups.append(
                Group(
                    row, ids, responses, scores[part].tolist(), accs, shaped[part].tolist(), version=version
                )
            )
        return groups

    def state_dict(self) -> dict[str, Any]:
        """The data position and the carry-over buffer (what the next batch depends on besides weights)."""
        return {"dataset": self.dataset.state_dict(), "collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state["dataset"])
        self.collector.load_state_dict(state["collector"])
