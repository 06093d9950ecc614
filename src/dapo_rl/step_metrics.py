"""The metrics of a training step, exact over data-parallel ranks (docs/metrics.md).

Every function here works the same way: count SUMS (and MAXES) on this rank, reduce them over the
ranks in one collective each (:meth:`dapo_rl.distributed.DistContext.sum_values`), then divide. So a
mean is a mean over all ranks' responses or tokens, not a mean of per-rank means, and every rank
gets the same numbers. In one process the reductions are the identity. Every rank must call these
functions at the same point of the step, with or without data of its own.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dapo_rl import metric_names as M
from dapo_rl.algorithm.policy_loss import POLICY_METRIC_MAXES, POLICY_METRIC_SUMS, finalize_policy_metrics
from dapo_rl.batch import TrainSample
from dapo_rl.distributed import DistContext
from dapo_rl.rewards.base import RewardResult
from dapo_rl.sampling import Group


@dataclass
class RewardCounts:
    """Reward failures and answer-less responses among this rank's scored responses."""

    timeouts: int = 0
    errors: int = 0
    no_answer: int = 0

    def add_batch(self, results: Sequence[RewardResult], batch_metrics: dict[str, float]) -> None:
        """Count one :meth:`~dapo_rl.rewards.runner.RewardRunner.score_batch` call."""
        self.timeouts += int(batch_metrics["reward/timeouts"])
        self.errors += int(batch_metrics["reward/errors"])
        self.no_answer += sum(res.pred is None for res in results)


@dataclass
class RunTotals:
    """The run's running totals on this rank (saved with each checkpoint)."""

    reward_timeouts: int = 0
    reward_errors: int = 0
    nonfinite_skipped: int = 0

    def add_step(self, counts: RewardCounts) -> None:
        self.reward_timeouts += counts.timeouts
        self.reward_errors += counts.errors

    def to_dict(self) -> dict[str, float]:
        """The logged names; ``optim/nonfinite_skipped`` only once an update was skipped (the same
        on every rank: skipping is decided on global values)."""
        out = {M.REWARD_TIMEOUTS_TOTAL: self.reward_timeouts, M.REWARD_ERRORS_TOTAL: self.reward_errors}
        return out | ({M.OPTIM_NONFINITE_SKIPPED: self.nonfinite_skipped} if self.nonfinite_skipped else {})

    def load(self, state: dict[str, float]) -> None:
        """Restore from :meth:`to_dict`'s output (a checkpoint)."""
        self.reward_timeouts = int(state.get(M.REWARD_TIMEOUTS_TOTAL, 0))
        self.reward_errors = int(state.get(M.REWARD_ERRORS_TOTAL, 0))
        self.nonfinite_skipped = int(state.get(M.OPTIM_NONFINITE_SKIPPED, 0))


@dataclass
class UpdateSums:
    """This rank's sums over a step's optimizer updates, beside the policy-loss metrics: its share
    of the loss, token entropy and (with a reference policy) KL summed over response tokens,
    micro-batches the ratio guard skipped, and the global gradient norm (the same on every rank)."""

    loss: float = 0.0
    entropy: float = 0.0
    kl_ref: float | None = None
    guard_skipped: int = 0
    grad_norm: float = 0.0


@dataclass
class StageTimes:
    """Wall seconds per stage of one step on this rank, logged as ``perf/time_{stage}_s``."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextlib.contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Add the block's wall time to ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def rollout_metrics(
    generated: list[Group], counts: RewardCounts, totals: RunTotals, ranks: DistContext
) -> dict[str, float]:
    """What the policy did this step, over every generated response (kept or not); ``counts`` are
    this step's reward counts, ``totals`` the run's running totals."""
    resp = [r for g in generated for r in g.responses]
    sums = ranks.sum_values(
        {
            "n": len(resp),
            "reward": sum(sum(g.rewards) for g in generated),
            "score": sum(sum(g.scores) for g in generated),
            "acc": sum(sum(g.accs) for g in generated),
            "length": sum(r.length for r in resp),
            "truncated": sum(r.truncated for r in resp),
            M.REWARD_TIMEOUTS: counts.timeouts,
            M.REWARD_ERRORS: counts.errors,
            "no_answer": counts.no_answer,
            **totals.to_dict(),
        }
    )
    longest = ranks.max_values({M.ROLLOUT_RESPONSE_LEN_MAX: max((r.length for r in resp), default=0)})
    n = sums.pop("n")
    if not n:
        return {}
    metrics = {
        M.REWARD_MEAN: sums.pop("reward") / n,
        M.REWARD_SCORE_MEAN: sums.pop("score") / n,
        M.REWARD_ACC: sums.pop("acc") / n,
        M.ROLLOUT_RESPONSE_LEN_MEAN: sums.pop("length") / n,
        M.ROLLOUT_TRUNCATED_FRAC: sums.pop("truncated") / n,
        M.REWARD_NO_ANSWER_RATE: sums.pop("no_answer") / n,
    }
    return metrics | longest | sums


def trained_metrics(
    rewards: torch.Tensor, advantages: torch.Tensor, samples: list[TrainSample], ranks: DistContext
) -> dict[str, float]:
    """The trained responses: mean reward, advantage statistics, overlong-filtered fraction."""
    a = advantages.detach().to(torch.float64)
    sums = ranks.sum_values(
        {
            "n": a.numel(),
            "reward": float(rewards.sum()),
            "adv": float(a.sum()),
            "abs": float(a.abs().sum()),
            "sq": float((a * a).sum()),
            "zero": float((a == 0).sum()),
            "masked": sum(not s.loss_mask for s in samples),
        }
    )
    empty = a.numel() == 0
    ext = ranks.max_values(
        {"max": -math.inf if empty else a.max().item(), "neg_min": -math.inf if empty else -a.min().item()}
    )
    n = sums["n"]
    if not n:
        return {}
    mean = sums["adv"] / n
    return {
        M.REWARD_TRAINED_MEAN: sums["reward"] / n,
        M.ROLLOUT_MASKED_TRUNCATED_FRAC: sums["masked"] / n,
        M.ADV_MEAN: mean,
        M.ADV_ABS_MEAN: sums["abs"] / n,
        M.ADV_STD: math.sqrt(max(sums["sq"] / n - mean * mean, 0.0)),
        M.ADV_MAX: ext["max"],
        M.ADV_MIN: -ext["neg_min"],
        M.ADV_ZERO_FRAC: sums["zero"] / n,
    }


def update_metrics(
    policy: dict[str, torch.Tensor], update: UpdateSums, n_updates: int, epochs: int, ranks: DistContext
) -> dict[str, float]:
    """The step's optimizer updates. ``policy`` holds the accumulated ``clipped_policy_loss`` sums,
    ``update`` the other sums (:class:`UpdateSums`)."""
    extra = {"loss": update.loss, "entropy_sum": update.entropy, "guard": update.guard_skipped}
    if update.kl_ref is not None:  # a reference policy on every rank or on none
        extra["kl_ref_sum"] = update.kl_ref
    sums = ranks.sum_values({**{k: float(policy[k]) for k in POLICY_METRIC_SUMS}, **extra})
    maxes = ranks.max_values({k: float(policy[k]) for k in POLICY_METRIC_MAXES})
    metrics = finalize_policy_metrics({**sums, **maxes})
    tokens = max(sums.pop("num_tokens"), 1.0)
    metrics[M.LOSS_ENTROPY] = sums.pop("entropy_sum") / tokens
    if "kl_ref_sum" in sums:
        metrics[M.LOSS_KL_REF] = sums.pop("kl_ref_sum") / tokens
    metrics[M.LOSS_TOTAL] = sums.pop("loss") / n_updates
    metrics[M.OPTIM_GRAD_NORM] = update.grad_norm / n_updates
    if sums["guard"]:
        metrics[M.LOSS_GUARD_SKIPPED_MICROBATCHES] = sums["guard"]
    metrics[M.PERF_TOKENS_TRAINED] = tokens / epochs
    return metrics


def perf_metrics(
    stages: StageTimes, step_seconds: float, tokens_generated: int, ranks: DistContext
) -> dict[str, float]:
    """Stage times of the slowest rank, tokens generated over all ranks, and their rate."""
    times = ranks.max_values(
        {M.perf_time(k): v for k, v in stages.seconds.items()} | {M.PERF_TIME_STEP: step_seconds}
    )
    tokens = ranks.sum_values({M.PERF_TOKENS_GENERATED: tokens_generated})[M.PERF_TOKENS_GENERATED]
    return times | {
        M.PERF_TOKENS_GENERATED: tokens,
        M.PERF_TOKENS_PER_S: tokens / times[M.PERF_TIME_STEP],
    }
