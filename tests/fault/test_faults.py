"""Fault injection: runs killed at seeded points of a step and of a checkpoint write, a full disk,
a corrupt newest checkpoint, an unwritable run directory and a diverging run.

Each case ends either with a resumed run whose records equal an uninterrupted run's (every line of
metrics.jsonl, perf/ timings aside) or with a clear error, its documented exit code, and no record
lost. Kills land on numbered file-system operations (``faultwrap.py``: the run is deterministic,
so operation N is the same in every run) or a seeded delay into a step.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_run import SMALL, logged_step, quiet_env, save_random_tiny_model, wait_until

pytestmark = pytest.mark.slow

WRAP = Path(__file__).with_name("faultwrap.py")
RUN = [
    "train.total_steps=4",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=2",
    "eval.every_steps=0",
    "logging.plots=false",
    "logging.tensorboard=false",
    "logging.progress=false",
]


def _args(model: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return [
        "train", f"model.path={model}", f"logging.run_dir={runs}", f"logging.run_name={name}", *SMALL, *RUN,
        *extra,
    ]  # fmt: skip


def _dapo(args: list[str], tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dapo_rl", *args],
        capture_output=True,
        text=True,
        env=quiet_env(tmp),
        timeout=timeout,
    )


def _wrapped(
    mode: str, index: int, log: Path, args: list[str], tmp: Path, only: str | None = None
) -> subprocess.CompletedProcess:
    """``dapo`` under faultwrap.py: operation ``index`` (of those matching ``only``, OP:SUFFIX)."""
    cmd = [sys.executable, str(WRAP), mode, str(index), str(log), *([only] if only else []), "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=quiet_env(tmp), timeout=300)


def _records(run: Path) -> list[dict]:
    """metrics.jsonl without timings, in order (a torn or duplicated line shows up as a difference)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "reward/seconds"} for r in rows]


def _assert_same_records(ref: Path, run: Path) -> None:
    a, b = _records(ref), _records(run)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys(), ra["step"]
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (ra["step"], key)


def _resume_to_end(runs: Path, name: str, model: Path, tmp: Path) -> subprocess.CompletedProcess:
    """``--resume``; when the kill came before the first checkpoint, start over with --overwrite."""
    out = _dapo(["train", "--resume", str(runs / name)], tmp)
    if out.returncode == 2 and "no complete checkpoint" in out.stderr:
        out = _dapo([*_args(model, runs, name), "--overwrite"], tmp)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model and the uninterrupted reference run, with its numbered file operations."""
    tmp = tmp_path_factory.mktemp("faults")
    model = save_random_tiny_model(tmp / "model")
    runs = tmp / "runs"
    log = tmp / "census.log"
    out = _wrapped("census", -1, log, _args(model, runs, "ref"), tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    ops = [line.split(" ", 2) for line in log.read_text().splitlines()]
    return {"tmp": tmp, "model": model, "runs": runs, "ref": runs / "ref", "ops": ops}


def _ops(world: dict, where: str) -> list[int]:
    return [int(n) for n, _op, path in world["ops"] if where in path]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_during_a_checkpoint_write_then_resume(world: dict, seed: int) -> None:
    points = _ops(world, "/checkpoints")
    index = random.Random(seed).choice(points)
    name = f"ckpt_kill_{seed}"
    runs, tmp = world["runs"], world["tmp"]
    killed = _wrapped("kill", index, tmp / f"{name}.log", _args(world["model"], runs, name), tmp)
    assert killed.returncode == -signal.SIGKILL, (index, killed.stderr[-2000:])
    out = _resume_to_end(runs, name, world["model"], tmp)
    assert out.returncode == 0, (index, out.stderr[-3000:])
    _assert_same_records(world["ref"], runs / name)
    assert not list((runs / name / "checkpoints").glob("*.tmp")) and not list(
        (runs / name / "checkpoints").glob("*.trash")
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_moment_of_a_step_then_resume(world: dict, seed: int) -> None:
    rng = random.Random(100 + seed)
    step, delay = rng.randint(1, 3), rng.uniform(0.0, 0.3)
    name = f"step_kill_{seed}"
    runs, tmp = world["runs"], world["tmp"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dapo_rl", *_args(world["model"], runs, name)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=quiet_env(tmp),
    )  # fmt: skip
    wait_until(proc, logged_step(runs / name / "metrics.jsonl", f'"step": {step},'))
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = _resume_to_end(runs, name, world["model"], tmp)
    assert out.returncode == 0, ((step, delay), out.stderr[-3000:])
    _assert_same_records(world["ref"], runs / name)


def test_sigkill_while_resume_rewrites_metrics_loses_nothing(world: dict) -> None:
    runs, tmp, name = world["runs"], world["tmp"], "truncate_kill"
    logs = [int(n) for n, op, path in world["ops"] if op == "open" and path.endswith("metrics.jsonl")]
    step4_log = logs[4]  # eval at step 0, steps 1-3 logged; checkpoint at step 2
    killed = _wrapped("kill", step4_log, tmp / f"{name}.log", _args(world["model"], runs, name), tmp)
    assert killed.returncode == -signal.SIGKILL
    before = (runs / name / "metrics.jsonl").read_text()
    assert [json.loads(x)["step"] for x in before.splitlines()] == [0, 1, 2, 3]
    resume = ["train", "--resume", str(runs / name)]
    resumed = _wrapped("kill", 0, tmp / f"{name}.2.log", resume, tmp, only="replace:metrics.jsonl")
    assert resumed.returncode == -signal.SIGKILL
    assert (runs / name / "metrics.jsonl").read_text() == before  # killed before the rename: old file whole
    out = _dapo(["train", "--resume", str(runs / name)], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_records(world["ref"], runs / name)


def test_write_error_during_checkpoint_is_a_storage_error_then_resume(world: dict) -> None:
    runs, tmp, name = world["runs"], world["tmp"], "enospc"
    second = [int(n) for n, op, path in world["ops"] if op == "torch.save"][1]  # step 4's trainer state
    out = _wrapped("enospc", second, tmp / f"{name}.log", _args(world["model"], runs, name), tmp)
    assert out.returncode == 4, out.stderr[-3000:]
    assert "could not write the checkpoint" in out.stderr and "step_000004" in out.stderr
    assert "disk is full" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in (runs / name / "checkpoints").iterdir()) == ["step_000002"]
    resumed = _dapo(["train", "--resume", str(runs / name)], tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_records(world["ref"], runs / name)


def _in_mount_namespace(script: str, tmp: Path) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode:
        pytest.skip("needs unshare -m (root or user namespaces) to mount a small tmpfs")
    return subprocess.run(
        ["unshare", "-m", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=quiet_env(tmp),
        timeout=600,
    )


def test_full_disk_is_a_clear_error_then_resume_after_freeing_space(world: dict) -> None:
    """A real ENOSPC from a 600 KiB tmpfs: one checkpoint (about 390 KiB) fits, the second does not."""
    tmp, name = world["tmp"], "disk_full"
    small = tmp / "small"
    small.mkdir()
    args = " ".join(_args(world["model"], small, name))
    py = sys.executable
    script = f"""
mount -t tmpfs -o size=600k tmpfs {small}
{py} -m dapo_rl {args} > {tmp}/full.out 2> {tmp}/full.err; echo $? > {tmp}/full.rc
ls {small}/{name}/checkpoints > {tmp}/full.ls
mount -o remount,size=64m {small}
{py} -m dapo_rl train --resume {small}/{name} > {tmp}/resume.out 2> {tmp}/resume.err; echo $? > {tmp}/resume.rc
cp -r {small}/{name} {tmp}/{name}
"""
    _in_mount_namespace(script, tmp)
    err = (tmp / "full.err").read_text()
    assert (tmp / "full.rc").read_text().strip() == "4", err[-3000:]
    assert "could not write" in err and "disk is full" in err and "Traceback" not in err
    assert ".tmp" not in (tmp / "full.ls").read_text()
    assert (tmp / "resume.rc").read_text().strip() == "0", (tmp / "resume.err").read_text()[-3000:]
    _assert_same_records(world["ref"], tmp / name)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(world: dict) -> None:
    runs, tmp = world["runs"], world["tmp"]
    run = runs / "corrupt"
    shutil.copytree(world["ref"], run)
    (run / "summary.json").unlink()
    weights = run / "checkpoints" / "step_000004" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = _dapo(["train", "--resume", str(run)], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "skipping checkpoint step_000004: model/model.safetensors does not match its sha256" in out.stdout
    assert "resuming from step_000002" in out.stdout
    _assert_same_records(world["ref"], run)


def test_unwritable_run_dir_is_found_before_the_model_loads(world: dict) -> None:
    tmp = world["tmp"]
    blocker = tmp / "a_file"
    blocker.write_text("")
    out = _dapo(_args(world["model"], blocker, "x"), tmp)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"{blocker} exists and is not a directory" in out.stderr and "Traceback" not in out.stderr
    assert "Loading weights" not in out.stderr
    ro = tmp / "ro"
    ro.mkdir()
    args = " ".join(_args(world["model"], ro, "x"))
    script = f"mount -t tmpfs -o ro tmpfs {ro}\n{sys.executable} -m dapo_rl {args}"
    out = _in_mount_namespace(script, tmp)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "cannot write to the run directory" in out.stderr and "Read-only file system" in out.stderr
    assert "Loading weights" not in out.stderr


def test_a_run_with_nothing_to_train_stops_as_diverged(world: dict) -> None:
    """A random model is never right: with dynamic sampling on accuracy no group is informative."""
    runs, tmp = world["runs"], world["tmp"]
    out = _dapo(
        _args(world["model"], runs, "collapse", "dynamic_sampling.metric=acc", "train.max_empty_steps=2"), tmp
    )
    assert out.returncode == 3, out.stderr[-3000:]
    assert "no informative group in the last 2 steps" in out.stderr and "Traceback" not in out.stderr
    assert [r["step"] for r in _records(runs / "collapse") if "reward/mean" in r] == [1, 2]
    assert not (runs / "collapse" / "checkpoints").exists() or not list(
        (runs / "collapse" / "checkpoints").iterdir()
    )


def test_a_reused_run_name_is_refused(world: dict) -> None:
    runs, tmp = world["runs"], world["tmp"]
    run = runs / "reused"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
    out = _dapo(_args(world["model"], runs, "reused"), tmp)
    assert out.returncode == 2 and "already holds another run (metrics.jsonl)" in out.stderr
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "reward/mean": 0.5}\n'
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_a_failed_resume_leaves_config_yaml_alone(world: dict) -> None:
    run = world["runs"] / "no_valid_checkpoint"
    shutil.copytree(world["ref"], run)
    before = (run / "config.yaml").read_text()
    for state in (run / "checkpoints").glob("step_*/trainer_state.pt"):
        state.write_bytes(b"garbage")
    out = _dapo(["train", "--resume", str(run), "train.total_steps=9"], world["tmp"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert "no checkpoint of" in out.stderr and "trainer_state.pt has 7 bytes" in out.stderr
    assert (run / "config.yaml").read_text() == before  # not rewritten with total_steps=9


def test_resume_with_another_config_is_refused(world: dict) -> None:
    out = _dapo(["train", "--resume", str(world["ref"]), "--config", "gsm8k"], world["tmp"])
    assert out.returncode == 2 and "--config gsm8k cannot change it" in out.stderr
    assert "Traceback" not in out.stderr


def test_sigint_checkpoints_exits_130_and_resumes_exactly(world: dict) -> None:
    runs, tmp, name = world["runs"], world["tmp"], "sigint"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dapo_rl", *_args(world["model"], runs, name)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=quiet_env(tmp),
    )  # fmt: skip
    wait_until(proc, logged_step(runs / name / "metrics.jsonl", '"step": 1,'))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr[-3000:]
    summary = json.loads((runs / name / "summary.json").read_text())
    assert summary["stopped_early"] and summary["stopped_by"] == "SIGINT" and "SIGINT" in stdout
    assert (runs / name / "checkpoints" / f"step_{summary['steps']:06d}" / "COMPLETE").exists()
    out = _dapo(["train", "--resume", str(runs / name)], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_records(world["ref"], runs / name)
