"""The ablation's statistics (benchmarks/ablation.py): a run's held-out summary, t and paired
bootstrap intervals, each piece's seed-paired effect and each arm's means over seeds."""

from __future__ import annotations

import math

import numpy as np
from _ablation_arms import arm_label, arm_overrides

#: Two-sided 95% t quantiles by degrees of freedom (no scipy here).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def per_problem(result: dict) -> dict[str, list[float]]:
    problems = result["problems"]
    return {
        "acc": [p["num_correct"] / len(p["correct"]) for p in problems],
        "truncated": [p["num_truncated"] / len(p["correct"]) for p in problems],
        "length": [float(np.mean(p["response_tokens"])) for p in problems],
    }


def summary(result: dict) -> dict:
    fit = sum(len(p["correct"]) - p["num_truncated"] for p in result["problems"])
    return {
        "acc": result["avg_at_k"]["mean"],
        # accuracy among the responses that ended within the cap: the arithmetic, apart from length
        "acc_fit": sum(p["num_correct"] for p in result["problems"]) / fit if fit else 0.0,
        "acc_ci95": result["avg_at_k"]["ci95"],
        "truncated": result["truncation_rate"],
        "length": result["mean_response_tokens"],
        "per_problem": per_problem(result),
    }


def t_interval(values: list[float]) -> list[float] | None:
    n = len(values)
    if n < 2:
        return None
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def paired_bootstrap(diffs: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> list[float]:
    """Interval of the mean over seeds of per-problem paired differences, resampling problems within
    each seed (evaluation noise only)."""
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(resamples, len(d)))
        means += d[idx].mean(axis=1)
    means /= len(diffs)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def effect(runs: dict, piece: str, with_arm: str, without: str, seeds: list[int]) -> dict:
    out: dict = {"piece": piece, "with": with_arm, "without": without}
    for metric in ("acc", "truncated", "length"):
        per_seed = [runs[with_arm, s]["after"][metric] - runs[without, s]["after"][metric] for s in seeds]
        diffs = [
            np.asarray(runs[with_arm, s]["after"]["per_problem"][metric])
            - np.asarray(runs[without, s]["after"]["per_problem"][metric])
            for s in seeds
        ]
        ci = t_interval(per_seed)
        out[metric] = {
            "diff": float(np.mean(per_seed)),
            "per_seed": per_seed,
            "t95": ci,
            "eval_bootstrap95": paired_bootstrap(diffs),
            "beyond_noise": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
        }
    for metric, get in (
        ("entropy", lambda r: r["final_entropy"]),
        ("acc_fit", lambda r: r["after"]["acc_fit"]),
        ("trunc_curve", lambda r: float(np.nanmean(r["curves"]["truncated"]))),
        ("acc_curve", lambda r: float(np.nanmean(r["curves"]["acc"]))),
    ):
        per_seed = [get(runs[with_arm, s]) - get(runs[without, s]) for s in seeds]
        ci = t_interval(per_seed)
        out[metric] = {
            "diff": float(np.mean(per_seed)),
            "per_seed": per_seed,
            "t95": ci,
            "beyond_noise": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
        }
    return out


def arm_summary(arm: str, runs: list[dict]) -> dict:
    acc = [r["after"]["acc"] for r in runs]
    return {
        "arm": arm,
        "label": arm_label(arm),
        "overrides": arm_overrides(arm),
        "acc_mean": float(np.mean(acc)),
        "acc_t95": t_interval(acc),
        "truncated_mean": float(np.mean([r["after"]["truncated"] for r in runs])),
        "acc_fit_mean": float(np.mean([r["after"]["acc_fit"] for r in runs])),
        "length_mean": float(np.mean([r["after"]["length"] for r in runs])),
        "entropy_mean": float(np.mean([r["final_entropy"] for r in runs])),
        "trunc_curve_mean": float(np.mean([np.nanmean(r["curves"]["truncated"]) for r in runs])),
        "acc_curve_mean": float(np.mean([np.nanmean(r["curves"]["acc"]) for r in runs])),
        "steps_mean": float(np.mean([r["steps"] for r in runs])),
        "steps_min": min(r["steps"] for r in runs),
        "steps_max": max(r["steps"] for r in runs),
        "tokens_mean": float(np.mean([r["tokens"] for r in runs])),
        "seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
    }
