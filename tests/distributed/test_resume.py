"""`torchrun --nproc_per_node 2 -m dapo_rl train` end to end on CPU (gloo on loopback): FSDP2, the
HF engine decoding under gathered parameters, sharded evaluation, distributed checkpoints, an
exact resume after every process of the run was SIGKILLed, and a clear error when resuming at
another world size."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.helpers import free_port, kill_tree, loopback_env
from tests.helpers_run import SMALL, assert_same_run, save_random_tiny_model

pytestmark = pytest.mark.distributed

COMMON = ["train.total_steps=3", "checkpoint.every_steps=2", "checkpoint.keep_last=5", "logging.plots=false"]


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "dapo_rl", "train", *args,
    ]  # fmt: skip


def _train(model: Path, runs: Path, name: str) -> list[str]:
    return _torchrun(
        f"model.path={model}", f"logging.run_dir={runs}", f"logging.run_name={name}", *SMALL, *COMMON
    )


def test_killed_two_rank_run_resumes_exactly(tmp_path: Path) -> None:
    model = save_random_tiny_model(tmp_path / "model")
    runs, env = tmp_path / "runs", loopback_env(tmp_path)
    ref = subprocess.run(_train(model, runs, "ref"), capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    proc = subprocess.Popen(
        _train(model, runs, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    marker = runs / "killed" / "checkpoints" / "step_000002" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "no checkpoint appeared before the run ended"
    kill_tree(proc.pid)  # the launcher and both ranks, as in a lost node
    proc.wait()
    assert not (runs / "killed" / "summary.json").exists(), "the run finished before it was killed"

    resumed = subprocess.run(
        _torchrun("--resume", str(runs / "killed")), capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(runs / "ref", runs / "killed", [1, 2, 3], timings=())
    final = Path("checkpoints") / "step_000003"
    wa = load_file(runs / "ref" / final / "model" / "model.safetensors")
    assert any(not torch.equal(wa[k], w) for k, w in load_file(model / "model.safetensors").items())
    for f in ("trainer_state.pt", "trainer_state_rank00001.pt", "sharded/.metadata"):
        assert (runs / "killed" / final / f).is_file(), f
    summary = json.loads((runs / "killed" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["heldout_after"] is not None

    single = subprocess.run(  # a distributed checkpoint resumes at its own world size only
        [sys.executable, "-m", "dapo_rl", "train", "--resume", str(runs / "killed")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert single.returncode == 2
    assert "resume at the same world size" in single.stderr and "--nproc_per_node 2" in single.stderr
