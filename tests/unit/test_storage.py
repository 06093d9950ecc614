"""Atomic rewrites (a process killed mid-write loses nothing), corrupt safetensors named, and run
directories that are never shared and are checked for writability up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_rl.errors import ModelFileError, RunDirError
from dapo_rl.storage import (
    atomic_write_text,
    check_safetensors,
    check_writable,
    claim_run_dir,
    run_dir_in_use,
)
from dapo_rl.tracking import MetricsLogger

KILLED_BY_FILE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from dapo_rl.tracking import MetricsLogger
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writing past 4 KiB kills us (SIGXFSZ)
MetricsLogger(Path(sys.argv[1]), tensorboard=False).truncate_after(int(sys.argv[2]))
"""

WRITE_PAST_FILE_LIMIT = """
import resource, sys
from pathlib import Path
from dapo_rl.errors import StorageError
from dapo_rl.storage import atomic_write_text
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writes past 4 KiB fail (EFBIG)
try:
    atomic_write_text(Path(sys.argv[1]), "x" * 10000)
except StorageError as exc:
    print(exc)
"""


def _metrics_file(run: Path, steps: int) -> str:
    text = "".join(
        json.dumps({"step": s, "reward/mean": s / 7, "pad": "x" * 80}) + "\n" for s in range(steps)
    )
    (run / "metrics.jsonl").write_text(text)
    return text


def test_truncate_after_keeps_earlier_steps_and_drops_a_torn_line(tmp_path: Path) -> None:
    text = _metrics_file(tmp_path, 10)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 10, "rew')  # the half-written line of a killed run
    MetricsLogger(tmp_path, tensorboard=False).truncate_after(6)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(text.splitlines(True)[:7])
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_process_killed_while_truncating_metrics_loses_nothing(tmp_path: Path) -> None:
    """The issue's 76 MB file left at 0 bytes: here the kill comes from the kernel when the rewrite
    passes a 4 KiB file-size limit, at the same byte every time."""
    text = _metrics_file(tmp_path, 200)  # about 22 KB
    out = subprocess.run([sys.executable, "-c", KILLED_BY_FILE_LIMIT, str(tmp_path), "150"], timeout=120)
    assert out.returncode == -signal.SIGXFSZ
    assert (tmp_path / "metrics.jsonl").read_text() == text  # the old file, whole


def test_atomic_write_failure_names_the_path_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    out = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_FILE_LIMIT, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"could not write {target}: File too large")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_atomic_write_replaces(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and len(list(tmp_path.iterdir())) == 1


def _safetensors(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(path / "model.safetensors"))
    return path / "model.safetensors"


def test_corrupt_safetensors_is_named(tmp_path: Path) -> None:
    f = _safetensors(tmp_path)
    check_safetensors(tmp_path)  # a good file passes
    data = f.read_bytes()
    f.write_bytes(data[:-16])
    with pytest.raises(ModelFileError, match=r"model.safetensors is corrupt: .*truncated"):
        check_safetensors(tmp_path)
    f.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ModelFileError, match="invalid header length"):
        check_safetensors(tmp_path)


def test_run_dir_in_use_is_refused_without_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_run_dir(run)  # new: fine
    claim_run_dir(run)  # still empty: fine
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    assert run_dir_in_use(run) == ["metrics.jsonl"]
    with pytest.raises(RunDirError, match=r"already holds another run \(metrics.jsonl\).*--resume"):
        claim_run_dir(run)
    claim_run_dir(run, overwrite=True)
    assert [p.name for p in run.iterdir()] == [".dapo_run.lock"]  # held by this process


def test_unwritable_or_not_a_directory_run_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="is not a directory"):
        check_writable(blocker / "run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user that ignores permissions")
    with pytest.raises(RunDirError, match="cannot write to the run directory"):
        check_writable(locked / "run")
