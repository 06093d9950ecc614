"""Shared pieces of the end-to-end tests: CI-sized overrides, a quiet environment, a saved tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers_model import make_tiny_model_and_tokenizer

#: A run small enough for CI: 4 prompts x 4 samples, 24-token responses, several micro-batches.
SMALL = [
    "batch.prompts_per_step=4",
    "batch.prompts_per_update=2",
    "batch.samples_per_prompt=4",
    "rollout.max_response_tokens=24",
    "overlong.buffer_tokens=8",
    "batch.micro_batch_tokens=128",  # several micro-batches per update
    "dynamic_sampling.metric=reward",  # a random model is never right; its lengths still differ
    "dynamic_sampling.max_rounds=2",
    "eval.max_problems=4",
    "eval.k=2",
    "optim.lr=1e-3",
    "optim.warmup_updates=0",
    "train.num_threads=1",
]


def quiet_env(tmp: Path) -> dict[str, str]:
    """The environment for a subprocess run: its own model cache, one thread, unbuffered output."""
    return {
        **os.environ,
        "DAPO_RL_CACHE": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def save_random_tiny_model(path: Path) -> Path:
    """A randomly initialised tiny Llama with the synthetic task's tokenizer, saved to ``path``."""
    model, tok = make_tiny_model_and_tokenizer(seed=0, hidden=32, layers=2, init_std=0.05)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 240) -> None:
    """Poll ``ready()`` until it holds, the process ends or ``timeout_s`` passes."""
    deadline = time.time() + timeout_s
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def logged_step(metrics: Path, needle: str) -> Callable[[], bool]:
    """A ``wait_until`` condition: ``needle`` appears in the run's metrics.jsonl."""
    return lambda: metrics.exists() and needle in metrics.read_text()


def kill_after_checkpoint(
    cmd: list[str], run: Path, step: int, env: dict[str, str], timeout_s: float = 240
) -> None:
    """Start the training command ``cmd``, SIGKILL it as soon as checkpoint ``step`` of ``run`` is
    complete, and check that it had not finished by then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    marker = run / "checkpoints" / f"step_{step:06d}" / "COMPLETE"
    wait_until(proc, marker.exists, timeout_s)
    assert marker.exists(), "no checkpoint appeared before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it was killed"


def step_metrics(run: Path) -> dict[int, dict]:
    """The training steps' rows of a run's metrics.jsonl, by step (evaluation rows left out)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "reward/mean" in r}


def assert_same_run(
    ref: Path, run: Path, steps: list[int], timings: tuple[str, ...] = ("reward/seconds",)
) -> None:
    """``run`` (killed and resumed) logged exactly the steps of ``ref``, with the same metrics
    (timings aside: ``perf/*`` and ``timings``), and its last checkpoint holds the same weights."""
    a, b = step_metrics(ref), step_metrics(run)
    assert sorted(a) == sorted(b) == steps
    for step in steps:
        ra = {k: v for k, v in a[step].items() if not k.startswith("perf/") and k not in timings}
        rb = {k: v for k, v in b[step].items() if not k.startswith("perf/") and k not in timings}
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (step, key)
    final = Path("checkpoints") / f"step_{steps[-1]:06d}" / "model" / "model.safetensors"
    wa, wb = load_file(ref / final), load_file(run / final)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)
