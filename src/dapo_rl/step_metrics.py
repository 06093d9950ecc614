"""The metrics of a training step, exact over data-parallel ranks (docs/metrics.md).

Every function here works the same way: count SUMS (and MAXES) on this rank, reduce them over the
ranks in one collective each (:meth:`dapo_rl.distributed.DistContext.sum_values`), then divide. So a
mean is a mean over all ranks' responses or tokens, not a mean of per-rank means, and every rank
gets the same numbers. In one process the reductions are the identity. Every rank must call these
functions at the same point of the step, with or without data of its own.
"""

from __future__ import annotations

import math

import torch

from dapo_rl.algorithm.policy_loss import POLICY_METRIC_MAXES, POLICY_METRIC_SUMS, finalize_policy_metrics
from dapo_rl.batch import TrainSample
from dapo_rl.distributed import DistContext
from dapo_rl.sampling import Group


def rollout_metrics(
    generated: list[Group], step_counts: dict[str, float], counters: dict[str, float], ranks: DistContext
) -> dict[str, float]:
    """What the policy did this step, over every generated response (kept or not); ``step_counts``
    are this step's reward failure counts, ``counters`` the run's running totals."""
    resp = [r for g in generated for r in g.responses]
    sums = ranks.sum_values(
        {
            "n": len(resp),
            "reward": sum(sum(g.rewards) for g in generated),
            "score": sum(sum(g.scores) for g in generated),
            "acc": sum(sum(g.accs) for g in generated),
            "length": sum(r.length for r in resp),
            "truncated": sum(r.truncated for r in resp),
            **step_counts,
            **counters,
        }
    )
    longest = ranks.max_values({"rollout/response_len_max": max((r.length for r in resp), default=0)})
    n = sums.pop("n")
    if not n:
        return {}
    metrics = {
        "reward/mean": sums.pop("reward") / n,
        "reward/score_mean": sums.pop("score") / n,
        "reward/acc": sums.pop("acc") / n,
        "rollout/response_len_mean": sums.pop("length") / n,
        "rollout/truncated_frac": sums.pop("truncated") / n,
        "reward/no_answer_rate": sums.pop("reward/no_answer", 0.0) / n,
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
        "reward/trained_mean": sums["reward"] / n,
        "rollout/masked_truncated_frac": sums["masked"] / n,
        "adv/mean": mean,
        "adv/abs_mean": sums["abs"] / n,
        "adv/std": math.sqrt(max(sums["sq"] / n - mean * mean, 0.0)),
        "adv/max": ext["max"],
        "adv/min": -ext["neg_min"],
        "adv/zero_frac": sums["zero"] / n,
    }


def update_metrics(
    policy: dict[str, torch.Tensor], extra: dict[str, float], n_updates: int, epochs: int, ranks: DistContext
) -> dict[str, float]:
    """The step's optimizer updates. ``policy`` holds the accumulated ``clipped_policy_loss`` sums;
    ``extra`` this rank's loss share, entropy / KL sums and guard counts, and the global grad norm
    summed over updates (the same on every rank)."""
    extra = dict(extra)
    grad_norm = extra.pop("grad_norm")
    sums = ranks.sum_values({**{k: float(policy[k]) for k in POLICY_METRIC_SUMS}, **extra})
    maxes = ranks.max_values({k: float(policy[k]) for k in POLICY_METRIC_MAXES})
    metrics = finalize_policy_metrics({**sums, **maxes})
    tokens = max(sums.pop("num_tokens"), 1.0)
    metrics["loss/entropy"] = sums.pop("entropy_sum") / tokens
    if "kl_ref_sum" in sums:
        metrics["loss/kl_ref"] = sums.pop("kl_ref_sum") / tokens
    metrics["loss/total"] = sums.pop("loss") / n_updates
    metrics["optim/grad_norm"] = grad_norm / n_updates
    if sums.get("loss/guard_skipped_microbatches"):
        metrics["loss/guard_skipped_microbatches"] = sums["loss/guard_skipped_microbatches"]
    metrics["perf/tokens_trained"] = tokens / epochs
    return metrics


def perf_metrics(
    timers: dict[str, float], step_seconds: float, tokens_generated: int, ranks: DistContext
) -> dict[str, float]:
    """Stage times of the slowest rank, tokens generated over all ranks, and their rate."""
    times = ranks.max_values(
        {f"perf/time_{k}_s": v for k, v in timers.items()} | {"perf/time_step_s": step_seconds}
    )
    tokens = ranks.sum_values({"perf/tokens_generated": tokens_generated})["perf/tokens_generated"]
    return times | {
        "perf/tokens_generated": tokens,
        "perf/tokens_per_s": tokens / times["perf/time_step_s"],
    }
