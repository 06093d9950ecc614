"""A run's life from the first line of ``dapo train`` to its exit, with real processes: signals at
named phases (setup, the first evaluation, the final evaluation), user code that ends its process,
storage errors on the generations file and the plots, resume from another working directory, and a
checkpoint without its manifest. Each case ends with a documented exit code and a message."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fault.test_faults import RUN, WRAP
from tests.helpers_run import SMALL, quiet_env, save_random_tiny_model, wait_until

pytestmark = pytest.mark.slow

USER_CODE = """
import os, sys, time
from pathlib import Path

def score(response, ground_truth):
    mode, mark = os.environ.get("T_MODE", ""), os.environ.get("T_MARK")
    if mark and mode == "slow_first" and not Path(os.environ["T_RUN"], "checkpoints").exists():
        Path(mark).touch()
        time.sleep(5)
    if mark and mode == "slow_final" and Path(os.environ["T_RUN"], "checkpoints", "step_000002").exists():
        Path(mark).touch()
        time.sleep(5)
    if mode == "sys_exit":
        sys.exit(3)
    if mode == "os_exit":
        os._exit(0)
    return float(len(response) % 3)

def rows(split):
    Path(os.environ["T_MARK"]).touch()
    time.sleep(60)
    return []
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("lifecycle")
    model = save_random_tiny_model(tmp / "model")
    proj = tmp / "proj"
    proj.mkdir()
    (proj / "user.py").write_text(USER_CODE)
    return {"tmp": tmp, "model": model, "proj": proj, "runs": tmp / "runs"}


def _args(world: dict, name: str, *extra: str) -> list[str]:
    return [
        "train", "model.path=../model", f"logging.run_dir={world['runs']}", f"logging.run_name={name}",
        "reward.name=user.py:score", *SMALL, *RUN, "train.total_steps=2", "checkpoint.every_steps=1",
        *extra,
    ]  # fmt: skip


def _env(world: dict, **extra: str) -> dict[str, str]:
    return {**quiet_env(world["tmp"]), **extra}


def _dapo(world: dict, args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dapo_rl", *args]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(world, **env), cwd=cwd or world["proj"], timeout=300
    )
    return out


def _signal_at(world: dict, args: list[str], mark: Path, sig: int, **env: str) -> tuple[int, str]:
    """Start ``dapo`` (in the project folder), send ``sig`` once ``mark`` appears, return its exit code and stderr."""
    cmd = [sys.executable, "-m", "dapo_rl", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world["proj"],
        env=_env(world, T_MARK=str(mark), **env),
    )  # fmt: skip
    wait_until(proc, mark.exists)
    assert mark.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_resume_from_another_directory_finds_relative_user_code_and_model(world: dict) -> None:
    """``reward.name=user.py:score`` and ``model.path=../model`` given relative to the project
    folder; the old code saved them as written and ``--resume`` from elsewhere exited 2."""
    out = _dapo(world, _args(world, "rel"))
    assert out.returncode == 0, out.stderr[-3000:]
    run = world["runs"] / "rel"
    saved = (run / "config.yaml").read_text()
    assert f"name: {world['proj'] / 'user.py'}:score" in saved and f"path: {world['model']}" in saved
    elsewhere = world["tmp"] / "elsewhere"
    elsewhere.mkdir()
    out = _dapo(world, ["train", "--resume", str(run), "train.total_steps=3"], cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_a_checkpoint_without_its_manifest_is_skipped_for_an_older_one(world: dict) -> None:
    run = world["runs"] / "no_manifest"
    shutil.copytree(world["runs"] / "rel", run)
    (run / "summary.json").unlink(missing_ok=True)
    config = run / "config.yaml"  # absolute already; so that only the manifest differs on old code too
    text = config.read_text().replace("name: user.py:score", f"name: {world['proj'] / 'user.py'}:score")
    config.write_text(text.replace("path: ../model", f"path: {world['model']}"))
    newest = sorted((run / "checkpoints").iterdir())[-1]  # step_000003, then step_000002
    (newest / "MANIFEST.json").unlink()
    (newest / "trainer_state.pt").write_bytes(b"damaged")  # the old code loaded it and crashed
    out = _dapo(world, ["train", "--resume", str(run)])
    assert out.returncode == 0, out.stderr[-3000:]
    older = sorted((run / "checkpoints").iterdir())[-2].name
    assert f"skipping checkpoint {newest.name}: no MANIFEST.json" in out.stdout, out.stdout[-2000:]
    assert f"resuming from {older} instead" in out.stdout


def test_sigterm_during_setup_exits_143_with_a_message(world: dict) -> None:
    mark = world["tmp"] / "setup.mark"
    code, err = _signal_at(world, _args(world, "setup", "data.loader=user.py:rows"), mark, signal.SIGTERM)
    assert code == 143, err[-3000:]
    assert "stopped by SIGTERM before the run wrote anything: run the same command again" in err
    assert "Traceback" not in err


def test_sigint_during_the_first_evaluation_exits_130_and_says_how_to_start_again(world: dict) -> None:
    mark, run = world["tmp"] / "first.mark", world["runs"] / "first"
    args = _args(world, "first")
    code, err = _signal_at(world, args, mark, signal.SIGINT, T_MODE="slow_first", T_RUN=str(run))
    assert code == 130, err[-3000:]
    assert f"stopped by SIGINT before the first checkpoint of {run}: nothing to resume" in err
    assert "start it again with the same command and --overwrite" in err and "Traceback" not in err
    out = _dapo(world, [*args, "--overwrite"])  # what the message says
    assert out.returncode == 0, out.stderr[-3000:]


def test_sigterm_during_the_final_evaluation_keeps_the_final_checkpoint(world: dict) -> None:
    """The final checkpoint is written before the final evaluation; the old code evaluated first,
    so a signal there left no checkpoint of the last steps."""
    mark, run = world["tmp"] / "final.mark", world["runs"] / "final"
    code, err = _signal_at(
        world, _args(world, "final"), mark, signal.SIGTERM, T_MODE="slow_final", T_RUN=str(run)
    )
    assert code == 143, err[-3000:]
    assert f"the newest checkpoint of {run} is step_000002: continue with dapo train --resume {run}" in err
    assert (run / "checkpoints" / "step_000002" / "COMPLETE").exists() and not (run / "summary.json").exists()
    out = _dapo(world, ["train", "--resume", str(run)])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["steps_this_process"] == 0 and summary["heldout_after"]


@pytest.mark.parametrize(("mode", "call"), [("sys_exit", "sys.exit(3)"), ("os_exit", "os._exit(0)")])
def test_a_reward_that_ends_its_process_stops_the_run_with_exit_2_naming_it(
    world: dict, mode: str, call: str
) -> None:
    """The old code ran user rewards in the trainer's process: sys.exit(3) ended the run with 3 and
    os._exit(0) with 0, without a word."""
    out = _dapo(world, _args(world, f"exits_{mode}"), T_MODE=mode)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"reward.name='user.py:score' called {call}: user code must return a value" in out.stderr


@pytest.mark.parametrize(
    ("only", "what"), [("open:generations.jsonl", "records file"), ("open:.png.tmp", "plot")]
)
def test_a_full_disk_on_generations_or_plots_is_exit_4_naming_the_path(
    world: dict, only: str, what: str
) -> None:
    name = f"enospc_{what.split()[0]}"
    args = [
        *_args(world, name),
        "logging.plots=true",
        "reward.name=synthetic",
        "model.path=" + str(world["model"]),
    ]
    cmd = [sys.executable, str(WRAP), "enospc", "0", str(world["tmp"] / f"{name}.log"), only, "--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(world), timeout=300)
    assert out.returncode == 4, out.stderr[-3000:]
    assert f"could not write the {what} {world['runs'] / name}" in out.stderr and "disk is full" in out.stderr
    assert "Traceback" not in out.stderr
