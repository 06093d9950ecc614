"""One DAPO step with the hf engine vs the vllm engine, and the weight push's share of the step.

    .venv/bin/python benchmarks/step_vllm.py [--models llama qwen2_25m qwen2_100m] [--threads 2]

The same step for both engines: ``dapo_rl.train`` through the public API on a randomly initialised
model saved locally (the sizes of ``rollout_vs_generate.py``: the embedded tiny Llama and Qwen2-shaped
models of about 25M and 100M parameters, with the synthetic task's tokenizer), synthetic
arithmetic prompts, T = 1, a deterministic reward that varies on a random model (the fraction of
digits in the response, as ``step_vs_trl.py``), no dynamic sampling or overlong shaping, one
optimizer update per step, fp32. Each (model, engine) runs in its own process for
``--warmup + --steps`` steps; the figures are the stage times (the run's own ``perf/time_*_s``
metrics, docs/metrics.md) of its fastest timed step (the machine is shared: the least disturbed
step), ``weight_sync`` being ``RolloutEngine.sync_weights`` (about 0 for hf, which samples from
the live module; the full parameter push for vllm), plus the median weight sync over the timed steps.

Writes benchmarks/results/step_vllm.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from _step_workload import digit_fraction

WORKLOAD = {"llama": (16, 8, 64), "qwen2_25m": (8, 8, 32), "qwen2_100m": (4, 8, 32)}
"""model -> (prompts per step, samples per prompt, response tokens)."""

STAGES = ("step", "rollout", "reward", "old_logprobs", "update", "weight_sync")


def digit_reward(response: str, ground_truth: str, **extra: Any) -> float:
    return digit_fraction(response)


def save_model(name: str, path: Path) -> int:
    """Save model ``name`` with the synthetic tokenizer to ``path``; returns its parameter count."""
    from rollout_vs_generate import build_models

    from dapo_rl.models.tiny import build_tokenizer

    model = build_models([name])[name]
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def worker(spec: dict[str, Any]) -> None:
    """One run (in its own process): train, then print the per-step stage times as JSON."""
    import dapo_rl

    prompts, g, tokens = WORKLOAD[spec["model"]]
    run_dir = Path(spec["workdir"]) / "runs"
    overrides = [
        f"model.path={spec['model_dir']}", "data.template=plain", f"rollout.engine={spec['engine']}",
        f"rollout.max_response_tokens={tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "rollout.kv_cache_bytes=1073741824", "overlong.enable=false", "overlong.mask_truncated=false",
        "dynamic_sampling.enable=false", f"batch.prompts_per_step={prompts}", f"batch.samples_per_prompt={g}",
        f"batch.prompts_per_update={prompts}", "batch.micro_batch_tokens=4096", "optim.lr=1e-5",
        "optim.warmup_updates=0", f"train.total_steps={spec['warmup'] + spec['steps']}",
        f"train.num_threads={spec['threads']}", "train.device=cpu", "checkpoint.every_steps=0",
        "checkpoint.save_final=false", "eval.every_steps=0", f"logging.run_dir={run_dir}",
        f"logging.run_name={spec['engine']}", "logging.tensorboard=false", "logging.plots=false",
        "logging.progress=false",
    ]  # fmt: skip
    cfg = dapo_rl.load_config("tiny", overrides)
    from dapo_rl.data.synthetic import make_rows

    rows = make_rows(2000, seed=0)
    dapo_rl.train(cfg, reward_fn=digit_reward, train_rows=rows, eval_rows=[])
    records = [json.loads(line) for line in (run_dir / spec["engine"] / "metrics.jsonl").open()]
    steps = [r for r in records if "perf/time_step_s" in r]
    print("RESULT " + json.dumps(steps))


def run(model: str, model_dir: Path, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "model": model, "model_dir": str(model_dir), "engine": engine, "workdir": tmp,
            "warmup": args.warmup, "steps": args.steps, "threads": args.threads,
        }  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{model}/{engine} failed:\n{out.stderr[-3000:]}")
    steps = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    timed = steps[args.warmup :]
    best = min(timed, key=lambda r: r["perf/time_step_s"])
    fig = {f"{s}_s": round(best.get(f"perf/time_{s}_s", 0.0), 4) for s in STAGES}
    fig["weight_sync_median_s"] = round(
        statistics.median(r.get("perf/time_weight_sync_s", 0.0) for r in timed), 4
    )
    fig["tokens_generated"] = best["perf/tokens_generated"]
    fig["weight_sync_share"] = round(fig["weight_sync_s"] / fig["step_s"], 4)
    fig["all_step_s"] = [round(r["perf/time_step_s"], 3) for r in steps]
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(WORKLOAD), choices=list(WORKLOAD))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    figures: dict[str, Any] = {}
    lines = [
        "| model | parameters | prompts x G x tokens | engine | step (s) | rollout (s) | update + old log-probs (s) "
        "| weight sync (s) | weight sync share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            model_dir = Path(tmp) / model
            params = save_model(model, model_dir)
            prompts, g, tokens = WORKLOAD[model]
            for engine in ("hf", "vllm"):
                fig = run(model, model_dir, engine, args) | {"parameters": params}
                figures[f"{model}_{engine}"] = fig
                row = (
                    f"| {model} | {params / 1e6:.1f}M | {prompts} x {g} x {tokens} | {engine} | {fig['step_s']} "
                    f"| {fig['rollout_s']} | {round(fig['update_s'] + fig['old_logprobs_s'], 4)} "
                    f"| {fig['weight_sync_s']} | {100 * fig['weight_sync_share']:.1f}% |"
                )
                lines.append(row)
                print(row, fig["all_step_s"], flush=True)
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        config = {
            "workload": {m: WORKLOAD[m] for m in args.models},
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": args.threads,
            "load_average_at_end": os.getloadavg(),
        }
        print(write_result("step_vllm", config, figures, table))


if __name__ == "__main__":
    main()
