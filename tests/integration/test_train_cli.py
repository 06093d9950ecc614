"""`dapo train` end to end on a tiny random model: outputs, parameter change, exact resume after
SIGKILL, SIGTERM checkpointing, and clean errors that write nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers_run import (
    SMALL,
    assert_same_run,
    kill_after_checkpoint,
    logged_step,
    quiet_env,
    save_random_tiny_model,
    step_metrics,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("model"))


_env = quiet_env


def _train_cmd(model: Path, run_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dapo_rl", "train", f"model.path={model}", f"logging.run_dir={run_dir}",
        f"logging.run_name={name}", *SMALL, *extra,
    ]  # fmt: skip


def test_smoke_run_writes_everything_and_changes_parameters(model_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        _train_cmd(model_dir, tmp_path, "smoke", "train.total_steps=2", "checkpoint.every_steps=1"),
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "smoke"
    assert "held-out before" in out.stdout and "held-out after" in out.stdout
    for f in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert (run / f).is_file(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert {
        "reward.png",
        "length.png",
        "clip.png",
        "entropy.png",
        "dynamic_sampling.png",
        "time.png",
    } <= plots
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_000001", "step_000002"]
    final = run / "checkpoints" / "step_000002"
    assert (final / "model" / "model.safetensors").is_file() and (final / "trainer_state.pt").is_file()
    before = load_file(model_dir / "model.safetensors")
    after = load_file(final / "model" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed after two DAPO steps"
    metrics = step_metrics(run)
    assert sorted(metrics) == [1, 2]
    for key in ("loss/clip_frac", "loss/entropy", "sampling/keep_rate", "reward/acc", "optim/grad_norm"):
        assert key in metrics[2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["optimizer_updates"] >= 2
    documented = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    logged = {k for line in (run / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    undocumented = [k for k in sorted(logged - {"step"}) if f"`{k}`" not in documented]
    assert not undocumented, f"metrics missing from docs/metrics.md: {undocumented}"


def test_resume_after_sigkill_matches_uninterrupted(model_dir: Path, tmp_path: Path) -> None:
    common = (
        "train.total_steps=6",
        "checkpoint.every_steps=2",
        "checkpoint.keep_last=5",
        "eval.every_steps=0",
    )
    ref = subprocess.run(
        _train_cmd(model_dir, tmp_path, "ref", *common),
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]

    kill_after_checkpoint(
        _train_cmd(model_dir, tmp_path, "killed", *common), tmp_path / "killed", 2, _env(tmp_path)
    )

    resumed = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "train", "--resume", str(tmp_path / "killed")],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "ref", tmp_path / "killed", [1, 2, 3, 4, 5, 6])


def test_sigterm_finishes_step_and_checkpoints(model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _train_cmd(model_dir, tmp_path, "term", "train.total_steps=200", "checkpoint.every_steps=0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
    )  # fmt: skip
    wait_until(proc, logged_step(tmp_path / "term" / "metrics.jsonl", '"reward/mean"'))
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr[-3000:]  # stopped early, resumable (128 + SIGTERM)
    summary = json.loads((tmp_path / "term" / "summary.json").read_text())
    assert summary["stopped_early"] and 1 <= summary["steps"] < 200
    assert (tmp_path / "term" / "checkpoints" / f"step_{summary['steps']:06d}" / "COMPLETE").exists()
    assert "SIGTERM" in stdout


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.train_files=[/nonexistent/train.jsonl]", "file not found: '/nonexistent/train.jsonl'"),
        ("model.path=/nonexistent/model", "model.path='/nonexistent/model' is not a directory"),
        ("algorithm.clip_ratio_hihg=0.3", "algorithm.clip_ratio_high"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path, override: str, needle: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "train", override, f"logging.run_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_data_row_names_file_and_row(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2"}\n')
    out = subprocess.run(
        _train_cmd(model_dir, tmp_path / "runs", "bad", f"data.train_files=[{data}]", "train.total_steps=1"),
        capture_output=True, text=True, env=_env(tmp_path), timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "train.jsonl" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "bad").exists()
