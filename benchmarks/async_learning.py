"""Learning with asynchronous rollouts: held-out accuracy of the embedded default run against steps
and against training wall-clock, for eta in {0, 1, 2, 4}, the decoupled loss against the plain ratio
against behaviour log-probs, over seeds.

Arms (each a `dapo train` of the warm-started tiny model, the default's 50 steps):

- `sync`            eta = 0, the synchronous trainer on 2 threads (what `dapo train` runs)
- `eta<k>`          async.max_staleness=k, the decoupled loss (recomputed proximal log-probs, the
                    behaviour weight capped by TIS), trainer and rollout worker on 1 thread each
- `eta<k>-plain`    the same with async.decoupled_loss=false: the clipped ratio taken directly
                    against the behaviour (rollout) log-probs, no behaviour weight

Held-out avg@4 on 200 problems every `--eval-every` steps (25: the default run's own evaluations) (the evaluation's own time is left out
of the wall-clock axis: the x axis is the summed step time, `perf/time_step_s`).

    .venv/bin/python benchmarks/async_learning.py --cache runs/async-learning-cache   # ~50 min
    .venv/bin/python benchmarks/async_learning.py --arms sync eta1 --seeds 0 --steps 10

Writes benchmarks/results/async_learning.{json,md,png}. Runs are interleaved seed by seed, so the
machine's load hits every arm alike; with --cache, finished runs are kept and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _ablation_stats import t_interval
from _common import write_result

from dapo_rl import metric_names as M
from dapo_rl.plots import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ASYNC = ["train.num_threads=1", "async.worker_threads=1"]
ARMS = {
    "sync": ["train.num_threads=2"],
    **{f"eta{k}": [*ASYNC, f"async.max_staleness={k}"] for k in (1, 2, 4)},
    **{
        f"eta{k}-plain": [*ASYNC, f"async.max_staleness={k}", "async.decoupled_loss=false"] for k in (1, 2, 4)
    },
}
QUIET = [
    "logging.plots=false", "logging.tensorboard=false", "logging.progress=false",
    "checkpoint.every_steps=0", "checkpoint.save_final=false", "logging.generations_per_step=0",
]  # fmt: skip
ACC, STEP_S = M.EVAL_AVG_AT_K, M.PERF_TIME_STEP


def run(arm: str, seed: int, steps: int, eval_every: int, root: Path, extra: list[str]) -> dict:
    """One `dapo train`; the held-out curve against steps and against summed step seconds."""
    name = f"{arm}_s{seed}"
    cmd = [
        sys.executable, "-m", "dapo_rl", "train", f"logging.run_dir={root}", f"logging.run_name={name}",
        f"train.seed={seed}", f"train.total_steps={steps}", f"eval.every_steps={eval_every}", *QUIET,
        *ARMS[arm], *extra,
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    rows = read_metrics(root / name / "metrics.jsonl")
    elapsed, clock, curve = 0.0, {0: 0.0}, []
    for r in rows:
        if STEP_S in r:
            elapsed += r[STEP_S]
            clock[r["step"]] = elapsed
        if ACC in r:
            curve.append({"step": r["step"], "acc": r[ACC]})
    for point in curve:
        point["seconds"] = clock[point["step"]]
    train = [r for r in rows if STEP_S in r]
    return {
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "final_acc": curve[-1]["acc"],
        "train_seconds": elapsed,
        "s_per_step": float(np.median([r[STEP_S] for r in train[2:]])),
        "staleness_mean": float(np.mean([r.get("async/staleness_mean", 0.0) for r in train])),
        "is_capped_frac": float(np.mean([r.get("rollout/is_capped_frac", 0.0) for r in train])),
        "dropped_stale_groups": sum(r.get("async/dropped_stale_groups", 0) for r in train),
        "entropy_last5": float(
            np.mean([r["loss/entropy"] for r in train[-5:] if "loss/entropy" in r] or [np.nan])
        ),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }


def acc_at(run: dict, seconds: float) -> float:
    """Held-out accuracy at a training wall-clock, linearly between the evaluations around it."""
    xs = [p["seconds"] for p in run["curve"]]
    return float(np.interp(seconds, xs, [p["acc"] for p in run["curve"]]))


def summarize(runs: dict, arms: list[str], seeds: list[int]) -> tuple[dict, float]:
    """Per arm: final accuracy, accuracy at the wall-clock every arm reached, and the seed-paired
    difference from `sync` of both."""
    equal_s = min(runs[a, s]["train_seconds"] for a in arms for s in seeds)
    out = {}
    for arm in arms:
        rs = [runs[arm, s] for s in seeds]
        row = {
            "final_acc": float(np.mean([r["final_acc"] for r in rs])),
            "final_acc_ci95": t_interval([r["final_acc"] for r in rs]),
            "acc_at_equal_s": float(np.mean([acc_at(r, equal_s) for r in rs])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in rs])),
            "s_per_step": float(np.mean([r["s_per_step"] for r in rs])),
            "staleness_mean": float(np.mean([r["staleness_mean"] for r in rs])),
            "is_capped_frac": float(np.mean([r["is_capped_frac"] for r in rs])),
            "dropped_stale_groups": float(np.mean([r["dropped_stale_groups"] for r in rs])),
            "start_acc": float(np.mean([r["curve"][0]["acc"] for r in rs])),
        }
        if "sync" in arms and arm != "sync":
            base = [runs["sync", s] for s in seeds]
            d_final = [r["final_acc"] - b["final_acc"] for r, b in zip(rs, base)]
            d_equal = [acc_at(r, equal_s) - acc_at(b, equal_s) for r, b in zip(rs, base)]
            row |= {"d_final_vs_sync": float(np.mean(d_final)), "d_final_ci95": t_interval(d_final)}
            row |= {"d_equal_s_vs_sync": float(np.mean(d_equal)), "d_equal_s_ci95": t_interval(d_equal)}
        out[arm] = row
    return out, equal_s


def _pts(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return ""
    text = f"{100 * value:+.1f}"
    if ci is not None:
        star = " \\*" if ci[0] > 0 or ci[1] < 0 else ""
        text += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{star}"
    return text


def table(summary: dict, equal_s: float, steps: int) -> str:
    lines = [
        f"| arm | held-out avg@4 at step {steps} | 95% t interval | d vs sync (points) | training s "
        f"| s/step | at {equal_s:.0f} s | d vs sync at {equal_s:.0f} s | staleness | TIS capped | stale dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in summary.items():
        ci = r["final_acc_ci95"]
        lines.append(
            f"| {arm} | {100 * r['final_acc']:.1f}% | "
            + (f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}" if ci else "")
            + f" | {_pts(r.get('d_final_vs_sync'), r.get('d_final_ci95'))} | {r['train_seconds']:.0f} "
            f"| {r['s_per_step']:.2f} | {100 * r['acc_at_equal_s']:.1f}% "
            f"| {_pts(r.get('d_equal_s_vs_sync'), r.get('d_equal_s_ci95'))} | {r['staleness_mean']:.2f} "
            f"| {100 * r['is_capped_frac']:.2f}% | {r['dropped_stale_groups']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: dict, arms: list[str], seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = {"sync": "black", "1": "tab:blue", "2": "tab:orange", "4": "tab:red"}
    for arm in arms:
        eta = "sync" if arm == "sync" else arm[3:].split("-")[0]
        style = "--" if arm.endswith("plain") else "-"
        curves = [runs[arm, s]["curve"] for s in seeds]
        steps = [p["step"] for p in curves[0]]
        acc = 100 * np.mean([[p["acc"] for p in c] for c in curves], axis=0)
        secs = np.mean([[p["seconds"] for p in c] for c in curves], axis=0)
        label = (
            "sync (eta=0)" if arm == "sync" else f"eta={eta}, " + ("plain" if style == "--" else "decoupled")
        )
        axes[0].plot(steps, acc, style, color=colors[eta], label=label, marker="o", ms=3)
        axes[1].plot(secs, acc, style, color=colors[eta], label=label, marker="o", ms=3)
    axes[0].set(
        xlabel="step", ylabel=f"held-out avg@4, % (mean of {len(seeds)} seeds)", title="against steps"
    )
    axes[1].set(xlabel="training wall-clock, s (evaluations left out)", title="against wall-clock")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--cache", type=Path, default=None, help="keep each run's result here; reuse it")
    ap.add_argument("overrides", nargs="*", help="extra dotted overrides for every run")
    args = ap.parse_intermixed_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                key = (
                    f"{arm}_s{seed}_{args.steps}steps_every{args.eval_every}{'_'.join(['', *args.overrides])}"
                )
                saved = args.cache / f"{key}.json" if args.cache else None
                if saved is not None and saved.is_file():
                    runs[arm, seed] = json.loads(saved.read_text())
                else:
                    runs[arm, seed] = run(arm, seed, args.steps, args.eval_every, Path(tmp), args.overrides)
                    if saved is not None:
                        saved.parent.mkdir(parents=True, exist_ok=True)
                        saved.write_text(json.dumps(runs[arm, seed]))
                r = runs[arm, seed]
                print(
                    f"{arm:10s} seed {seed}: held-out {100 * r['curve'][0]['acc']:.1f}% -> {100 * r['final_acc']:.1f}%,"
                    f" {r['train_seconds']:.0f} s training ({r['s_per_step']:.2f} s/step)",
                    flush=True,
                )
    summary, equal_s = summarize(runs, args.arms, args.seeds)
    text = table(summary, equal_s, args.steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, args.arms, args.seeds, RESULTS / "async_learning.png")
    config = vars(args) | {"cache": str(args.cache), "arms_overrides": {a: ARMS[a] for a in args.arms}}
    figures = {
        "equal_seconds": equal_s,
        "arms": summary,
        "runs": [runs[a, s] for a in args.arms for s in args.seeds],
    }
    write_result("async_learning", config, figures, text)
    print(text)


if __name__ == "__main__":
    main()
