"""Our side of ``step_vs_trl.py``: ``dapo_rl.train`` on the shared workload, through the public API.

Runs with the repo's ``.venv`` python. ``step_vs_trl.py`` starts it as

    .venv/bin/python benchmarks/_ours_worker.py WORKDIR

reading ``WORKDIR/workload.json`` and writing ``WORKDIR/ours.json`` from the run's ``metrics.jsonl``
(``perf/time_*`` per stage, see docs/metrics.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _step_workload import digit_fraction


def digit_reward(response: str, ground_truth: str, **extra: Any) -> float:
    """Our reward signature around the shared reward."""
    return digit_fraction(response)


def overrides(w: dict[str, Any], run_dir: Path) -> list[str]:
    """The tiny preset, every setting of the workload made explicit."""
    return [
        f"model.path={w['model_dir']}",
        "data.template=plain",
        f"rollout.max_response_tokens={w['max_new_tokens']}",
        f"rollout.temperature={w['temperature']}",
        f"rollout.top_p={w['top_p']}",
        "rollout.top_k=0",
        f"rollout.max_batch_sequences={w['prompts_per_step'] * w['samples_per_prompt']}",
        "overlong.enable=false",
        "overlong.mask_truncated=false",
        "dynamic_sampling.enable=false",
        f"batch.prompts_per_step={w['prompts_per_step']}",
        f"batch.samples_per_prompt={w['samples_per_prompt']}",
        f"batch.prompts_per_update={w['prompts_per_step']}",  # one optimizer update per step
        "batch.epochs_per_step=1",
        f"batch.micro_batch_tokens={w['micro_batch_tokens']}",  # one micro-batch, like TRL's side
        f"algorithm.clip_ratio_low={w['clip_low']}",
        f"algorithm.clip_ratio_high={w['clip_high']}",
        "algorithm.loss_agg_mode=token-mean",
        "algorithm.kl_coef=0.0",
        "algorithm.entropy_coef=0.0",
        f"optim.lr={w['lr']}",
        f"optim.weight_decay={w['weight_decay']}",
        f"optim.grad_clip={w['grad_clip']}",
        "optim.warmup_updates=0",
        "optim.schedule=constant",
        f"train.total_steps={w['warmup'] + w['steps']}",
        f"train.seed={w['seed']}",
        f"train.num_threads={w['threads']}",
        "train.device=cpu",
        "checkpoint.every_steps=0",
        "checkpoint.save_final=false",
        "eval.every_steps=0",
        f"logging.run_dir={run_dir}",
        "logging.run_name=ours",
        "logging.tensorboard=false",
        "logging.plots=false",
        "logging.progress=false",
    ]


STEP_KEYS = {
    "step_s": "perf/time_step_s",
    "rollout_s": "perf/time_rollout_s",
    "reward_s": "perf/time_reward_s",
    "old_logprobs_s": "perf/time_old_logprobs_s",
    "update_s": "perf/time_update_s",
    "tokens_generated": "perf/tokens_generated",
    "mean_completion_len": "rollout/response_len_mean",
    "truncated_frac": "rollout/truncated_frac",
    "reward_mean": "reward/mean",
    "adv_zero_frac": "adv/zero_frac",
    "updates": "optim/updates",
}


def main(workdir: Path) -> None:
    w = json.loads((workdir / "workload.json").read_text())
    import torch
    import transformers

    import dapo_rl

    torch.set_num_threads(w["threads"])
    cfg = dapo_rl.load_config("tiny", overrides(w, workdir / "runs"))
    t = time.perf_counter()
    dapo_rl.train(cfg, reward_fn=digit_reward, train_rows=w["prompts"], eval_rows=[])
    wall = time.perf_counter() - t
    records = [json.loads(line) for line in (workdir / "runs" / "ours" / "metrics.jsonl").open()]
    steps = [
        {name: float(r[key]) for name, key in STEP_KEYS.items() if key in r}
        for r in records
        if "perf/time_step_s" in r
    ]
    for i, row in enumerate(steps, 1):
        print(f"[ours] step {i}: {row['step_s']:.2f} s", file=sys.stderr, flush=True)
    result = {
        "steps": steps,
        "run_wall_s": wall,
        "threads": torch.get_num_threads(),
        "versions": {
            "dapo_rl": getattr(dapo_rl, "__version__", "unknown"),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
    }
    (workdir / "ours.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
