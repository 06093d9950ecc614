"""The DAPO paper's ablation at laptop scale: its Table 1 progression and each piece removed from DAPO.

    GRPO -> +overlong filtering -> +clip-higher -> +soft overlong punishment -> +token-level loss
         -> +dynamic sampling (= DAPO);        DAPO - each piece

Arms (``--arms``): ``grpo``, ``+filter``, ``+clip``, ``+soft``, ``+token``, ``dapo`` (the progression,
each adding one piece to the arm before), ``no-filter``, ``no-clip``, ``no-soft``, ``no-token``,
``no-dynamic`` (DAPO with one piece off), or the groups ``progression``, ``removal``, ``all``. Every arm starts
from the same warm model of the task (``--task``: ``arith``, the default ``dapo train`` task, or
``length``, whose warm model rambles past the response cap: ``--config length``) and gets the same
budget: ``--steps`` training steps (the default), ``--budget`` generated tokens or ``--seconds``
training seconds (wall-clock, the evaluations before and after not counted); with either of the
last two each run stops at the first step that reaches it (``--steps`` then caps the steps, none
by default). Steps, tokens and seconds are recorded per run.

Measured per run: held-out avg@k (with its bootstrap interval), truncation rate and mean length
before (the warm model, once per seed) and after training; per step the training accuracy,
truncated share, response length, policy entropy and generated tokens. Per piece, the seed-paired
difference (DAPO minus DAPO without it; an arm of the progression minus the arm before it) with a
95% t interval over seeds (training and evaluation noise both), and a bootstrap interval over the
held-out problems of the pooled paired differences (evaluation noise only). "Beyond noise": the
t interval excludes 0.

    .venv/bin/python benchmarks/ablation.py --task length --arms grpo dapo no-filter no-soft no-token \\
        --seeds 0 1 2 --steps 40 train.num_threads=1
    .venv/bin/python benchmarks/ablation.py --jobs 2                 # arith, the progression, 3 seeds
    .venv/bin/python benchmarks/ablation.py --task length --arms grpo dapo --seconds 165 \\
        train.num_threads=1                                          # GRPO vs DAPO, equal wall-clock
    .venv/bin/python benchmarks/ablation.py --smoke --out /tmp/abl model.path=/some/tiny/model

Writes ``<out>/ablation_<task>.{json,md}``, ``ablation_<task>.png`` (curves and held-out results)
and ``ablation_<task>_effects.png`` (the paired differences); ``--out`` defaults to
benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _ablation_arms import GROUPS, arm_overrides, comparisons, expand_arms
from _ablation_report import plot, tables
from _ablation_stats import arm_summary, effect, summary
from _common import RESULTS, commit, machine

TASKS = {"arith": [], "length": ["data.synthetic.task=length"]}
SMOKE = [
    "batch.prompts_per_step=4",
    "batch.samples_per_prompt=4",
    "batch.prompts_per_update=4",
    "data.synthetic.num_train=64",
    "data.synthetic.num_eval=8",
    "eval.max_problems=8",
    "eval.k=2",
    "dynamic_sampling.max_rounds=2",
]
CURVES = {
    "acc": "reward/acc",
    "truncated": "rollout/truncated_frac",
    "length": "rollout/response_len_mean",
    "entropy": "loss/entropy",
    "tokens": "perf/tokens_generated",
    "seconds": "perf/time_step_s",
    "clip_high": "loss/clip_high_frac",
}


def run_arm(
    arm: str,
    task: str,
    seed: int,
    steps: int,
    budget: int | None,
    seconds: float | None,
    run_dir: Path,
    extra: list[str],
    before: bool,
) -> dict:
    from dapo_rl.config import load_config
    from dapo_rl.trainer import Trainer

    cfg = load_config(
        None,
        [
            *TASKS[task],
            *arm_overrides(arm),
            f"train.seed={seed}",
            f"train.total_steps={steps}",
            "checkpoint.every_steps=0",
            "checkpoint.save_final=false",
            "eval.every_steps=0",
            "logging.progress=false",
            "logging.plots=false",
            "logging.tensorboard=false",
            f"logging.run_dir={run_dir}",
            *extra,
        ],
    )
    trainer = Trainer(cfg)
    start = time.perf_counter()
    warm = summary(trainer.evaluate()) if before else None
    curves: dict[str, list[float]] = {k: [] for k in CURVES}
    tokens, train_seconds = 0, 0.0
    train_start = time.perf_counter()  # training time leaves the evaluations out
    while (
        trainer.step < steps
        and (budget is None or tokens < budget)
        and (seconds is None or train_seconds < seconds)
    ):
        metrics = trainer.train_step()
        trainer.logger.log(trainer.step, metrics)
        for key, name in CURVES.items():
            curves[key].append(float(metrics.get(name, float("nan"))))
        tokens += int(metrics.get("perf/tokens_generated", 0))
        train_seconds = time.perf_counter() - train_start
    after = summary(trainer.evaluate())
    trainer.reward.close()
    return {
        "arm": arm,
        "seed": seed,
        "before": warm,
        "after": after,
        "steps": trainer.step,
        "updates": trainer.updates,
        "tokens": tokens,
        "curves": curves,
        "final_entropy": float(np.nanmean(curves["entropy"][-5:])) if curves["entropy"] else None,
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
    }


def budget_and_text(
    steps: int | None, budget: int | None, seconds: float | None, smoke: bool
) -> tuple[int, str]:
    """The step limit of every run and the budget as the tables state it (the cache key, unspaced)."""
    if budget is None and seconds is None:
        steps = steps or (2 if smoke else 50)
        return steps, f"{steps} steps"
    text = f"{budget:,} generated tokens" if budget is not None else f"{seconds:g} training s"
    return (10**6, text) if steps is None else (steps, f"{text}, at most {steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(TASKS), default="arith")
    parser.add_argument("--arms", nargs="+", default=["progression"], help="arm names or groups (see above)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per run (equal-steps budget; default 50, --smoke 2); "
        "with --budget or --seconds: at most this many steps (default: no cap)",
    )
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument(
        "--budget", type=int, default=None, help="generated tokens per run (equal-token budget)"
    )
    limit.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="training seconds per run, evaluations not counted (equal wall-clock budget)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON, table and plots")
    parser.add_argument("--name", default=None, help="file names (default ablation_<task>)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep each run's result here and reuse it when run again (--jobs 1)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny end-to-end run (CI): small batches, 2 steps unless --steps, --budget or --seconds",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.num_threads=1"
    )
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    for flag, value in (("--steps", args.steps), ("--budget", args.budget), ("--seconds", args.seconds)):
        if value is not None and not 0 < value < float("inf"):
            parser.error(f"{flag} must be a positive number, got {value:g}")
    arms = expand_arms(args.arms)
    budget, seconds = args.budget, args.seconds
    steps, budget_text = budget_and_text(args.steps, budget, seconds, args.smoke)
    extra = (SMOKE if args.smoke else []) + list(args.overrides)
    if args.jobs > 1:
        extra.append(f"train.num_threads={max(1, (os.cpu_count() or 1) // args.jobs)}")
    print(f"ablation: task {args.task}, arms {arms}, seeds {args.seeds}, {budget_text}", flush=True)
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        calls = [
            (arm, args.task, s, steps, budget, seconds, Path(tmp) / f"{arm}_{s}", extra, i == 0)
            for s in args.seeds
            for i, arm in enumerate(arms)
        ]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                done = [pool.submit(run_arm, *c) for c in calls]
                results = [f.result() for f in done]
        else:
            results = []
            for c in calls:
                saved = (
                    args.cache / f"{args.task}_{c[0]}_s{c[2]}_{budget_text.replace(' ', '')}.json"
                    if args.cache
                    else None
                )
                if (
                    saved is not None
                    and saved.is_file()
                    and (not c[-1] or json.loads(saved.read_text())["before"])
                ):
                    results.append(json.loads(saved.read_text()))
                else:
                    results.append(run_arm(*c))
                    if saved is not None:
                        saved.parent.mkdir(parents=True, exist_ok=True)
                        saved.write_text(json.dumps(results[-1]))
                r = results[-1]
                print(
                    f"  {r['arm']} seed {r['seed']}: acc {100 * r['after']['acc']:.1f}%, truncated "
                    f"{100 * r['after']['truncated']:.1f}%, {r['steps']} steps, {r['train_seconds']:.0f} s",
                    flush=True,
                )
    for r in results:
        runs[r["arm"], r["seed"]] = r
    for s in args.seeds:  # the warm model is the same for every arm: measured by the first
        for arm in arms:
            runs[arm, s]["before"] = runs[arms[0], s]["before"]
    warm = {
        k: float(np.mean([runs[arms[0], s]["before"][k] for s in args.seeds]))
        for k in ("acc", "truncated", "length")
    }
    canonical = GROUPS["all"]  # the table in the paper's order, however the arms were given
    arms = sorted(arms, key=lambda a: canonical.index(a))
    arm_rows = [arm_summary(a, [runs[a, s] for s in args.seeds]) for a in arms]
    effects = [effect(runs, *c, args.seeds) for c in comparisons(arms)]
    table = tables(arm_rows, effects, warm, budget_text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"ablation_{args.task}"
    plot(arm_rows, runs, effects, args.seeds, warm, out, args.task, name)
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit(),
        "machine": machine(),
        "config": {
            "task": args.task,
            "arms": arms,
            "seeds": args.seeds,
            "steps": steps,
            "budget_tokens": budget,
            "budget_seconds": seconds,
            "overrides": extra,
        },
        "figures": {
            "warm_start": warm,
            "arms": arm_rows,
            "effects": effects,
            "runs": [runs[a, s] for a in arms for s in args.seeds],
        },
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
