"""The run directory with real processes: ``--overwrite`` removes only what a run writes, a run
name is a plain name, and one trainer at a time writes a run directory (a second ``dapo train`` on
it, ``--resume`` or ``--overwrite``, exits 2 naming the first one's pid and host and changes
nothing). The lock goes with the process: every SIGKILL test of test_faults.py resumes a run whose
killed process left its lock file behind."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fault.test_faults import _args, _dapo
from tests.helpers_run import quiet_env, save_random_tiny_model, wait_until

pytestmark = pytest.mark.slow

USER_CONFIG = "algorithm:\n  clip_ratio_high: 0.3\n"  # a user's own config file: a few keys


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rundir")
    return {"tmp": tmp, "model": save_random_tiny_model(tmp / "model"), "runs": tmp / "runs"}


def _user_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": USER_CONFIG, "reward.py": "def f(r, g):\n    return 0.0\n", "notes.txt": "mine\n"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(world: dict) -> None:
    """An experiment folder (the user's config.yaml, reward module, notes) named as the run: the
    old code took the config.yaml for a run, advised --overwrite and then deleted all three."""
    runs, tmp = world["runs"], world["tmp"]
    files = _user_files(runs / "experiment")
    out = _dapo([*_args(world["model"], runs, "experiment"), "--overwrite"], tmp)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "is not a run directory but holds config.yaml" in out.stderr
    assert "--overwrite" not in out.stderr and "delete" not in out.stderr
    assert {p.name: p.read_text() for p in (runs / "experiment").iterdir()} == files  # nothing added


def test_overwrite_removes_only_what_the_earlier_run_wrote(world: dict) -> None:
    runs, tmp = world["runs"], world["tmp"]
    first = _dapo(_args(world["model"], runs, "again", "train.total_steps=2"), tmp)
    assert first.returncode == 0, first.stderr[-2000:]
    run = runs / "again"
    (run / "notes.txt").write_text("mine\n")  # the user's files beside the run's
    (run / "analysis").mkdir()
    (run / "analysis" / "fig.py").write_text("print(1)\n")
    out = _dapo([*_args(world["model"], runs, "again", "train.total_steps=1"), "--overwrite"], tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "notes.txt").read_text() == "mine\n"
    assert (run / "analysis" / "fig.py").read_text() == "print(1)\n"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 1]  # the new run's alone: eval at 0, step 1, final eval at 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001"]


def test_a_run_name_must_be_a_plain_name(world: dict) -> None:
    name = "../victim"  # the old code claimed runs/../victim and, with --overwrite, emptied it
    runs, tmp = world["runs"], world["tmp"]
    runs.mkdir(parents=True, exist_ok=True)
    victim = world["tmp"] / "victim"
    files = _user_files(victim)
    out = _dapo([*_args(world["model"], runs, name), "--overwrite"], tmp, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"logging.run_name={name!r} must be a plain name" in out.stderr
    assert {p.name: p.read_text() for p in victim.iterdir() if p.is_file()} == files


def test_a_second_trainer_on_a_run_directory_exits_2_naming_the_first(world: dict) -> None:
    """A requeued ``--resume`` (and an ``--overwrite``) while the first process still trains."""
    runs, tmp, name = world["runs"], world["tmp"], "busy"
    run = runs / name
    cmd = [sys.executable, "-m", "dapo_rl", *_args(world["model"], runs, name, "train.total_steps=100000", "train.max_empty_steps=0",
                                                    "checkpoint.every_steps=1")]  # fmt: skip
    first = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=quiet_env(tmp)
    )
    try:
        wait_until(first, lambda: (run / "checkpoints" / "step_000001" / "COMPLETE").exists())
        assert first.poll() is None, first.communicate()[1][-2000:]
        holder = f"pid {first.pid} on host {socket.gethostname()}"
        seconds = [  # started together: a requeued --resume and an --overwrite of the same name
            subprocess.Popen(
                [sys.executable, "-m", "dapo_rl", *second],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=quiet_env(tmp),
            )
            for second in (
                ["train", "--resume", str(run)],
                [*_args(world["model"], runs, name), "--overwrite"],
            )
        ]
        for second in seconds:
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err[-2000:]
            assert f"run directory {run} is in use by another dapo process: {holder}" in err
            assert "Traceback" not in err
        assert first.poll() is None  # untouched: still training
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=240)
    assert first.returncode == 143, err[-2000:]
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "reward/mean" in r]  # fmt: skip
    assert steps == list(range(1, len(steps) + 1))  # one writer: no step twice, none out of order
