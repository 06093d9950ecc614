"""The embedded default run (`dapo train`, no arguments) over several seeds: held-out accuracy of the
warm-started tiny model before and after DAPO, with wall time and tokens, and the warm start's
carry-forgetting habit before and after (the share of carried columns whose carry a sampled
response leaves out, 200 held-out problems x 8 samples at T=1).

    .venv/bin/python benchmarks/default_run.py                 # seeds 0 1 2, each from an empty cache
    .venv/bin/python benchmarks/default_run.py --seeds 0 --steps 10

Writes benchmarks/results/default_run.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result


def forgotten_carry_rate(model_dir: Path) -> float:
    """The share of due carries that sampled held-out responses of the model leave out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dapo_rl.models.sft import evaluate_warm_model

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return evaluate_warm_model(model, tokenizer)["sampled_forgotten_carry_rate"]


def run_seed(seed: int, extra: list[str], run_root: Path, cold: bool) -> dict:
    """One `dapo train` in a subprocess; ``cold``: with an empty model cache, so the wall time
    includes the SFT warm start (what a first `make train` on a fresh machine pays)."""
    name = f"default_seed{seed}"
    cmd = [
        sys.executable, "-m", "dapo_rl", "train", f"train.seed={seed}", f"logging.run_dir={run_root}",
        f"logging.run_name={name}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, DAPO_RL_CACHE=str(run_root / f"cache{seed}")) if cold else None
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    summary = json.loads((run_root / name / "summary.json").read_text())
    summary["wall_seconds"] = time.perf_counter() - start
    if not any(o.startswith("model.path=") for o in extra):
        from dapo_rl.models.sft import ensure_warm_model, read_info

        warm = ensure_warm_model(cache_dir=run_root / f"cache{seed}" if cold else None, progress=False)
        final = sorted((run_root / name / "checkpoints").glob("step_*"))[-1] / "model"
        # the SFT measured its model the same way when it built it (sft_info.json)
        before = (read_info(warm) or {}).get("sampled_forgotten_carry_rate")
        summary["forgotten_carry_before"] = before if before is not None else forgotten_carry_rate(warm)
        summary["forgotten_carry_after"] = forgotten_carry_rate(final)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override train.total_steps")
    parser.add_argument(
        "--warm-cache", action="store_true", help="reuse the cached warm start (default: build it per seed)"
    )
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides")
    args = parser.parse_args()
    extra = list(args.overrides) + ([f"train.total_steps={args.steps}"] if args.steps else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            s = run_seed(seed, extra, Path(tmp), cold=not args.warm_cache)
            before, after = s["heldout_before"], s["heldout_after"]
            rows.append(
                {
                    "seed": seed,
                    "metric": after["metric"],
                    "before": before["mean"],
                    "before_ci95": before["ci95"],
                    "after": after["mean"],
                    "after_ci95": after["ci95"],
                    "gain_points": 100 * (after["mean"] - before["mean"]),
                    "seconds": s["seconds"],
                    "wall_seconds": s["wall_seconds"],
                    "steps": s["steps"],
                    "tokens_generated": s["tokens_generated"],
                    "forgotten_carry_before": s.get("forgotten_carry_before"),
                    "forgotten_carry_after": s.get("forgotten_carry_after"),
                }
            )
    mean_gain = sum(r["gain_points"] for r in rows) / len(rows)
    lines = [
        f"| seed | held-out before ({rows[0]['metric']}) | after | gain (points) | training (s) "
        f"| whole command{'' if args.warm_cache else ', SFT included'} (s) | tokens generated "
        "| carries left out, before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        habit = (
            f"{100 * r['forgotten_carry_before']:.0f}% -> {100 * r['forgotten_carry_after']:.0f}%"
            if r["forgotten_carry_before"] is not None
            else "n/a"
        )
        lines.append(
            f"| {r['seed']} | {100 * r['before']:.1f}% | {100 * r['after']:.1f}% | {r['gain_points']:+.1f} | "
            f"{r['seconds']:.0f} | {r['wall_seconds']:.0f} | {r['tokens_generated']:,} | {habit} |"
        )
    lines.append(f"| **mean** | | | **{mean_gain:+.1f}** | | | | |")
    table = "\n".join(lines)
    path = write_result(
        "default_run",
        {"overrides": extra, "seeds": args.seeds, "cold_cache": not args.warm_cache},
        {"runs": rows, "mean_gain_points": mean_gain},
        table,
    )
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
