"""The DAPO paper's ablation (its Table 1 progression) at toy scale, on the embedded synthetic task:

    GRPO -> +overlong filtering -> +clip-higher -> +soft overlong punishment -> +token-level loss
         -> +dynamic sampling (= DAPO)

Every variant gets the same budget of GENERATED tokens (dynamic sampling spends more tokens per
step, so it gets fewer steps), 3 seeds each, starting from the same warm-started tiny model.
Held-out accuracy (avg@k on the synthetic test split) is measured before and after.

    .venv/bin/python benchmarks/ablation.py --jobs 2              # full: 6 variants x 3 seeds, 2 at a time
    .venv/bin/python benchmarks/ablation.py --seeds 0 --budget 30000 train.num_threads=1

Writes benchmarks/results/ablation.{json,md} and ablation.png.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import RESULTS, write_result

GRPO = [
    "algorithm.clip_ratio_high=0.2",
    "dynamic_sampling.enable=false",
    "algorithm.loss_agg_mode=seq-mean-token-mean",
    "overlong.enable=false",
    "overlong.mask_truncated=false",
]
STEPS = [
    ("GRPO", []),
    ("+ overlong filtering", ["overlong.mask_truncated=true"]),
    ("+ clip-higher", ["algorithm.clip_ratio_high=0.28"]),
    ("+ soft overlong punishment", ["overlong.enable=true"]),
    ("+ token-level loss", ["algorithm.loss_agg_mode=token-mean"]),
    ("+ dynamic sampling (DAPO)", ["dynamic_sampling.enable=true"]),
]


def variants() -> list[tuple[str, list[str]]]:
    out, acc = [], list(GRPO)
    for name, delta in STEPS:
        acc = acc + delta
        out.append((name, list(acc)))
    return out


def run_variant(
    overrides: list[str], seed: int, budget: int, run_dir: Path, extra: list[str], measure_before: bool
) -> dict:
    from dapo_rl.config import load_config
    from dapo_rl.trainer import Trainer

    cfg = load_config(
        None,
        [
            *overrides,
            f"train.seed={seed}",
            "train.total_steps=100000",  # the token budget ends the run
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
    # the warm start is the same for every variant: measured once per seed (by the first variant)
    before = trainer.evaluate() if measure_before else None
    tokens, steps = 0, 0
    while tokens < budget:
        metrics = trainer.train_step()
        trainer.logger.log(trainer.step, metrics)
        tokens += int(metrics["perf/tokens_generated"])
        steps += 1
    after = trainer.evaluate()
    trainer.reward.close()
    return {
        "seed": seed,
        "before": before["avg_at_k"]["mean"] if before else None,
        "after": after["avg_at_k"]["mean"],
        "after_ci95": after["avg_at_k"]["ci95"],
        "steps": steps,
        "tokens": tokens,
        "seconds": time.perf_counter() - start,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in results]
    means = [100 * r["after_mean"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(names[::-1], means[::-1], color="tab:blue", alpha=0.6)
    dots = [100 * x["after"] for r in results for x in r["runs"]]
    for r_i, r in enumerate(results[::-1]):
        ax.plot([100 * x["after"] for x in r["runs"]], [r_i] * len(r["runs"]), "k.", ms=7)
    warm = 100 * results[0]["before_mean"]
    ax.axvline(warm, color="gray", ls="--")
    ax.set_xlim(min([*dots, warm]) - 3, max([*dots, warm]) + 3)
    ax.set_xlabel(f"held-out avg@k after training (%); dots: seeds; dashed: warm start {warm:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=150000, help="generated tokens per run")
    parser.add_argument(
        "overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.num_threads=1"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores / jobs threads)")
    args = parser.parse_args()
    threads = [f"train.num_threads={max(1, (os.cpu_count() or 1) // args.jobs)}"] if args.jobs > 1 else []
    spawn = multiprocessing.get_context("spawn")
    results = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
        jobs = {
            (v, s): pool.submit(
                run_variant,
                overrides,
                s,
                args.budget,
                Path(tmp) / f"{v}_{s}",
                args.overrides + threads,
                v == 0,
            )
            for v, (_, overrides) in enumerate(variants())
            for s in args.seeds
        }
        for v, (name, overrides) in enumerate(variants()):
            runs = [jobs[v, s].result() for s in args.seeds]
            for run, first in zip(runs, (jobs[0, s].result() for s in args.seeds)):
                run["before"] = first["before"]
            after = [r["after"] for r in runs]
            results.append(
                {
                    "variant": name,
                    "overrides": overrides,
                    "runs": runs,
                    "before_mean": sum(r["before"] for r in runs) / len(runs),
                    "after_mean": sum(after) / len(after),
                    "after_min": min(after),
                    "after_max": max(after),
                }
            )
            print(f"{name}: {[round(100 * a, 1) for a in after]}", flush=True)
    lines = ["| variant | held-out after (mean of seeds) | min-max | steps (mean) |", "|---|---|---|---|"]
    for r in results:
        steps = sum(x["steps"] for x in r["runs"]) / len(r["runs"])
        lines.append(
            f"| {r['variant']} | {100 * r['after_mean']:.1f}% | {100 * r['after_min']:.1f}-{100 * r['after_max']:.1f} "
            f"| {steps:.0f} |"
        )
    lines.append(
        f"\nWarm start: {100 * results[0]['before_mean']:.1f}%; budget {args.budget:,} generated tokens per run."
    )
    table = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, RESULTS / "ablation.png")
    write_result(
        "ablation",
        {"seeds": args.seeds, "budget_tokens": args.budget, "overrides": args.overrides},
        {"variants": results},
        table,
    )
    print(table)


if __name__ == "__main__":
    main()
