"""What a run leaves to read, end to end on a tiny random model: generations and eval responses on
disk and `dapo samples`, wandb offline with a resumable run id, a summary that survives resumes, a
quiet console, and `dapo train --config countdown`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_rl.generations import read_jsonl
from tests.helpers_run import SMALL, quiet_env, save_random_tiny_model

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("model"))


def _dapo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dapo_rl", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _train(model: Path, runs: Path, name: str, *extra: str, resume: bool = False) -> list[str]:
    if resume:
        return ["train", "--resume", str(runs / name), *extra]
    return [
        "train",
        f"model.path={model}",
        f"logging.run_dir={runs}",
        f"logging.run_name={name}",
        *SMALL,
        *extra,
    ]


def test_three_steps_write_generations_and_eval_files(model_dir: Path, tmp_path: Path) -> None:
    env = quiet_env(tmp_path)
    out = _dapo(*_train(model_dir, tmp_path, "gen", "train.total_steps=3", "eval.every_steps=2"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "gen"
    gens = read_jsonl(run / "generations.jsonl")
    assert sorted({r["step"] for r in gens}) == [1, 2, 3]
    fields = {"step", "group", "kept", "age", "uid", "prompt", "ground_truth", "sample", "response", "score",
              "acc", "reward", "advantage", "length", "finish_reason", "version"}  # fmt: skip
    assert all(set(r) == fields for r in gens)
    for step in (1, 2, 3):
        groups = {r["group"] for r in gens if r["step"] == step}
        assert len(groups) == 4  # logging.generations_per_step default
        assert len([r for r in gens if r["step"] == step]) == 4 * 4  # all G=4 responses of each group
    kept = [r for r in gens if r["kept"]]
    assert kept and all(isinstance(r["advantage"], float) for r in kept)
    assert all(r["advantage"] is None for r in gens if not r["kept"])
    assert all(r["finish_reason"] in ("eos", "stop", "length") for r in gens)
    # every evaluation (before, at step 2, final) writes all k=2 responses of its 4 problems
    for step in (0, 2, 3):
        recs = read_jsonl(run / "eval" / f"step_{step}.jsonl")
        assert len(recs) == 8 and {r["step"] for r in recs} == {step}
        assert {"response", "score", "acc", "pred", "ground_truth", "prompt"} <= set(recs[0])
    shown = _dapo("samples", str(run), env=env)
    assert shown.returncode == 0, shown.stderr
    assert (
        "generations.jsonl step 3" in shown.stdout
        and "reward " in shown.stdout
        and "\033[" not in shown.stdout
    )
    first = gens[0]
    assert _dapo("samples", str(run), "--step", "1", env=env).stdout.count(f"step 1  {first['uid']}") >= 1
    ev = _dapo("samples", str(run), "--eval", "--step", "2", env=env)
    assert ev.returncode == 0 and "step_2.jsonl" in ev.stdout and "answer " in ev.stdout
    bad = _dapo("samples", str(run), "--step", "9", env=env)
    assert bad.returncode == 2 and "no generations at step 9" in bad.stderr


def test_console_is_quiet(model_dir: Path, tmp_path: Path) -> None:
    out = _dapo(*_train(model_dir, tmp_path, "quiet", "train.total_steps=1"), env=quiet_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for noise in ("Loading weights", "Writing model shards", "FutureWarning", "past_key_values"):
        assert noise not in text, noise
    assert "dapo train" in out.stderr and "DAPO run finished" in out.stdout


def test_resume_keeps_the_story_and_a_finished_run_does_nothing(model_dir: Path, tmp_path: Path) -> None:
    env = quiet_env(tmp_path)
    first = _dapo(*_train(model_dir, tmp_path, "story", "train.total_steps=2"), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "story"
    before = json.loads((run / "summary.json").read_text())
    more = _dapo(*_train(model_dir, tmp_path, "story", "train.total_steps=3", resume=True), env=env)
    assert more.returncode == 0, more.stderr[-3000:]
    after = json.loads((run / "summary.json").read_text())
    assert after["steps"] == 3
    assert after["heldout_before"] == before["heldout_before"] is not None
    step3 = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    generated = sum(r.get("perf/tokens_generated", 0) for r in step3)
    assert after["tokens_generated"] == int(generated) > before["tokens_generated"]
    metrics_before = (run / "metrics.jsonl").read_text()
    again = _dapo(*_train(model_dir, tmp_path, "story", "train.total_steps=3", resume=True), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout + again.stderr
    assert (run / "metrics.jsonl").read_text() == metrics_before  # no duplicate final evaluation
    assert json.loads((run / "summary.json").read_text()) == after


def test_wandb_offline_run_is_named_and_resumed(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    env = {**quiet_env(tmp_path), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ("train.total_steps=1", "logging.wandb=true", "checkpoint.save_final=true")
    out = _dapo(*_train(model_dir, tmp_path, "wb", *args), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "wb"
    run_id = (run / "wandb_id.txt").read_text().strip()
    more = _dapo(*_train(model_dir, tmp_path, "wb", "train.total_steps=2", resume=True), env=env)
    assert more.returncode == 0, more.stderr[-3000:]
    assert (run / "wandb_id.txt").read_text().strip() == run_id
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)


def test_wandb_missing_fails_before_writing(model_dir: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "wandb.py").write_text("raise ImportError('no wandb here')\n")
    env = {**quiet_env(tmp_path), "PYTHONPATH": f"{shadow}:{Path(__file__).resolve().parents[2]}"}
    out = _dapo(*_train(model_dir, tmp_path, "nowb", "train.total_steps=1", "logging.wandb=true"), env=env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "wandb" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "nowb").exists()


@pytest.mark.skipif(not (SHARED / "countdown").is_dir(), reason="shared Countdown data not present")
def test_countdown_preset_trains(tmp_path: Path) -> None:
    from dapo_rl.models.tiny import build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(tok, hidden=32, layers=2, heads=4, max_positions=1024, seed=0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = _dapo(
        "train", "--config", "countdown", f"model.path={tmp_path / 'model'}", "model.dtype=float32",
        f"data.train_files=[{SHARED / 'countdown' / 'countdown_train.parquet'}]",
        f"data.eval_files=[{SHARED / 'countdown' / 'countdown_test.parquet'}]",
        "data.max_prompt_tokens=1024", f"logging.run_dir={tmp_path}", "logging.run_name=cd",
        "train.total_steps=2", "batch.prompts_per_step=2", "batch.prompts_per_update=2",
        "batch.samples_per_prompt=2", "rollout.max_response_tokens=16", "overlong.buffer_tokens=4",
        "batch.micro_batch_tokens=4096", "dynamic_sampling.max_rounds=1", "eval.max_problems=2", "eval.k=2",
        "train.num_threads=1", "checkpoint.every_steps=0",
        env=quiet_env(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    gens = read_jsonl(tmp_path / "cd" / "generations.jsonl")
    truth = json.loads(gens[0]["ground_truth"])
    assert set(truth) == {"numbers", "target"}
    assert all(r["score"] in (0.0, 0.1, 1.0) for r in gens)  # the countdown reward scored them
