"""Asynchronous rollouts on this CPU: does overlapping generation with training pay, side by side.

For each setting (the embedded default DAPO run; a generation-heavier one: dynamic sampling
oversampling 4x instead of 2x, so each step generates about twice as much for the same training;
and the default with the vllm engine, colocated in the trainer's process when synchronous and in
the rollout worker with eta=1, whose update time is compared with the hf engine's), three
`dapo train` runs of the warm-started tiny model:

- sync, 2 threads    (train.num_threads=2: generation and training each use both cores)
- sync, 1 thread     (train.num_threads=1)
- eta=1, 1 + 1       (async.max_staleness=1: the trainer on 1 thread, the rollout worker on the other)

Figures per run, over the steps after the warm-up (median): seconds per step, the stage times
(rollout, reward, old log-probs, update, weight sync), and for eta=1 the trainer's and the worker's
idle ratios. The overlap bound: with G_k, T_k the generation (rollout + reward) and training
(old log-probs + update) seconds at k threads, eta=1 on 1 + 1 threads can at best take
max(G_1, T_1) per step, against G_2 + T_2 synchronous on 2 threads.

    nice -n 15 .venv/bin/python benchmarks/async_overlap.py              # ~10 min
    nice -n 15 .venv/bin/python benchmarks/async_overlap.py --model ~/.cache/dapo-rl/warm-<hash>
    .venv/bin/python benchmarks/async_overlap.py --steps 6 --repeats 1   # quicker

Writes benchmarks/results/async_overlap.{json,md}. The machine is shared: each run is repeated and
the fastest repeat kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import write_result

from dapo_rl.plots import read_metrics

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "default": [],
    "generation-heavy": ["dynamic_sampling.oversample=4.0"],
    "vllm engine": ["rollout.engine=vllm"],  # sync: colocated in the trainer; eta=1: in the worker
}
MODES = {
    "sync, 2 threads": ["train.num_threads=2"],
    "sync, 1 thread": ["train.num_threads=1"],
    "eta=1, 1 + 1 threads": [
        "train.num_threads=1", "async.worker_threads=1", "async.max_staleness=1",
        "rollout.importance_correction=tis",
    ],
}  # fmt: skip
STAGES = ("rollout", "reward", "old_logprobs", "update", "weight_sync")
QUIET = [
    "logging.plots=false", "logging.tensorboard=false", "logging.progress=false", "eval.every_steps=0",
    "eval.max_problems=1", "checkpoint.every_steps=0", "checkpoint.save_final=false",
    "logging.generations_per_step=0",
]  # fmt: skip


def run(extra: list[str], steps: int, warmup: int, root: Path, name: str) -> dict:
    """One `dapo train`; medians over the steps after ``warmup``."""
    cmd = [
        sys.executable, "-m", "dapo_rl", "train", f"logging.run_dir={root}", f"logging.run_name={name}",
        f"train.total_steps={steps}", *QUIET, *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    rows = read_metrics(root / name / "metrics.jsonl")
    rows = [r for r in rows if "reward/mean" in r and r["step"] > warmup]

    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    fig = {
        "step_s": med("perf/time_step_s"),
        "stages_s": {s: med(f"perf/time_{s}_s") for s in STAGES},
        "tokens_generated": med("perf/tokens_generated"),
        "steps_measured": len(rows),
        "load_average_1min": [load_before, os.getloadavg()[0]],  # the machine is shared: other work
    }
    fig["generation_s"] = fig["stages_s"]["rollout"] + fig["stages_s"]["reward"]
    fig["training_s"] = fig["stages_s"]["old_logprobs"] + fig["stages_s"]["update"]
    if "async/idle_ratio_trainer" in rows[0]:
        fig |= {
            "idle_ratio_trainer": med("async/idle_ratio_trainer"),
            "idle_ratio_rollout": med("async/idle_ratio_rollout"),
            "trainer_wait_s": med("async/trainer_wait_s"),
            "rollout_wait_s": med("async/rollout_wait_s"),
            "staleness_mean": med("async/staleness_mean"),
        }
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    ap.add_argument("--repeats", type=int, default=2, help="runs per cell; the fastest is kept")
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--model", default=None, help="model directory (default: the warm-started tiny model)")
    args = ap.parse_args()
    model = [f"model.path={args.model}"] if args.model else []
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            figures[setting] = {}
            for repeat in range(args.repeats):  # interleaved: the machine's load hits every mode alike
                for mode, extra in MODES.items():
                    name = f"{setting}-{mode}-{repeat}".replace(" ", "").replace(",", "_").replace("+", "p")
                    fig = run([*model, *SETTINGS[setting], *extra], args.steps, args.warmup, Path(tmp), name)
                    print(f"{setting:17s} {mode:22s} repeat {repeat}: {fig['step_s']:.3f} s/step", flush=True)
                    best = figures[setting].get(mode)
                    if best is None or fig["step_s"] < best["step_s"]:
                        figures[setting][mode] = fig
            f = figures[setting]
            two, one, eta = f["sync, 2 threads"], f["sync, 1 thread"], f["eta=1, 1 + 1 threads"]
            bound = max(one["generation_s"], one["training_s"])
            f["summary"] = {
                "overlap_bound_s": bound,
                "best_speedup_possible": two["step_s"] / bound,
                "eta1_speedup_vs_sync2": two["step_s"] / eta["step_s"],
                "eta1_over_bound": eta["step_s"] / bound,
                "target_within_15pct_of_bound": eta["step_s"] <= 1.15 * bound,
                "target_faster_than_sync2": eta["step_s"] < two["step_s"],
            }
    write_result(
        "async_overlap", vars(args) | {"settings": SETTINGS, "modes": MODES}, figures, table(figures)
    )
    print(table(figures))


def table(figures: dict) -> str:
    lines = [
        "| setting | mode | s/step | generation s | training s | of which update s | idle trainer | idle worker "
        "| load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, f in figures.items():
        for mode in MODES:
            m = f[mode]
            idle = (
                (f"{m['idle_ratio_trainer']:.2f}", f"{m['idle_ratio_rollout']:.2f}")
                if "idle_ratio_trainer" in m
                else ("", "")
            )
            lines.append(
                f"| {setting} | {mode} | {m['step_s']:.3f} | {m['generation_s']:.3f} | {m['training_s']:.3f} "
                f"| {m['stages_s']['update']:.3f} "
                f"| {idle[0]} | {idle[1]} | {max(m['load_average_1min']):.1f} |"
            )
        s = f["summary"]
        lines.append(
            f"| {setting} | overlap bound max(G1, T1) | {s['overlap_bound_s']:.3f} | | | | | | |"
            f" (eta=1: {s['eta1_over_bound']:.2f}x the bound, {s['eta1_speedup_vs_sync2']:.2f}x sync 2 threads;"
            f" at best {s['best_speedup_possible']:.2f}x)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
