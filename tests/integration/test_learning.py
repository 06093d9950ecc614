"""The loop optimises its reward: from a random tiny model, DAPO raises a reward the model can only
earn by changing what it samples (the share of the digit 7 in its responses), within a CI budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_run import save_random_tiny_model

pytestmark = pytest.mark.slow


def sevens(response: str, ground_truth: str) -> tuple[float, bool]:
    """Score = fraction of characters that are '7'; acc = at least a quarter of them."""
    share = response.count("7") / max(len(response), 1)
    return share, share >= 0.25


def test_reward_rises_on_a_learnable_signal(tmp_path: Path) -> None:
    import dapo_rl

    model = save_random_tiny_model(tmp_path / "model")
    cfg = dapo_rl.load_config(
        None,
        [
            f"model.path={model}",
            f"logging.run_dir={tmp_path}",
            "logging.run_name=learn",
            "train.total_steps=12",
            "train.num_threads=1",
            "batch.prompts_per_step=8",
            "batch.prompts_per_update=8",
            "batch.samples_per_prompt=8",
            "rollout.max_response_tokens=16",
            "overlong.enable=false",
            "dynamic_sampling.metric=score",
            "dynamic_sampling.max_rounds=2",
            "optim.lr=3e-3",
            "optim.warmup_updates=0",
            "eval.max_problems=1",
            "eval.k=1",
            "checkpoint.every_steps=0",
            "checkpoint.save_final=false",
            "logging.plots=false",
            "logging.progress=false",
        ],
    )
    dapo_rl.train(cfg, reward_fn=sevens)
    rows = [json.loads(line) for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    scores = [r["reward/score_mean"] for r in rows if "reward/score_mean" in r]
    assert len(scores) == 12
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    # a random 28-token vocabulary gives ~1/28 sevens; learning must at least triple that
    assert first < 0.1, scores
    print("score per step:", [round(s, 3) for s in scores])
    assert last > 3 * first and last > 0.15, scores
