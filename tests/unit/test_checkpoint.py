"""Checkpoints verify themselves, fall back past a corrupt one, are never written with non-finite
weights, and leave no temporary directory behind when a write fails."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from dapo_rl import checkpoint as ckpt
from dapo_rl.batch import PolicyModule
from dapo_rl.errors import CheckpointError, DivergedError, StorageError
from tests.helpers_model import make_tiny_model_and_tokenizer


@pytest.fixture()
def parts() -> tuple[PolicyModule, torch.optim.Optimizer, object]:
    model, tok = make_tiny_model_and_tokenizer(seed=0, hidden=16, layers=1)
    policy = PolicyModule(model)
    return policy, torch.optim.AdamW(policy.parameters(), lr=1e-3), tok


def _save(run: Path, step: int, parts: tuple, keep_last: int = 5) -> Path:
    policy, opt, tok = parts
    return ckpt.save_checkpoint(run, step, policy, opt, tok, {"updates": step}, {"counters": {}}, keep_last)


def test_manifest_lists_every_file_with_size_and_hash(tmp_path: Path, parts: tuple) -> None:
    path = _save(tmp_path, 1, parts)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    on_disk = {
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and p.name not in ("MANIFEST.json", "COMPLETE")
    }
    assert set(manifest["files"]) == on_disk
    assert {"trainer_state.pt", "model/model.safetensors", "model/config.json"} <= on_disk
    st = manifest["files"]["model/model.safetensors"]
    assert st["size"] == (path / "model" / "model.safetensors").stat().st_size
    assert manifest["step"] == 1
    assert ckpt.checkpoint_problem(path) is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip", "does not match its sha256"),
        ("truncate", "bytes"),
        ("delete", "is missing"),
        ("only_marker", "is missing"),
    ],
)
def test_resume_skips_a_corrupt_newest_checkpoint(
    tmp_path: Path, parts: tuple, damage: str, reason: str
) -> None:
    _save(tmp_path, 1, parts)
    newest = _save(tmp_path, 2, parts)
    weights = newest / "model" / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "delete":
        (newest / "trainer_state.pt").unlink()
    else:  # what a SIGKILL during the old in-place deletion left: the marker and little else
        for p in newest.iterdir():
            if p.name not in ("COMPLETE", "MANIFEST.json"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    reports: list[str] = []
    chosen = ckpt.resume_checkpoint(tmp_path, report=reports.append)
    assert chosen.name == "step_000001"
    assert len(reports) == 1 and "step_000002" in reports[0] and reason in reports[0], reports


def test_no_valid_checkpoint_is_a_clear_error(tmp_path: Path, parts: tuple) -> None:
    path = _save(tmp_path, 3, parts)
    (path / "trainer_state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"step_000003: trainer_state.pt has 7 bytes"):
        ckpt.resume_checkpoint(tmp_path, report=lambda _: None)


def test_non_finite_weights_are_never_written(tmp_path: Path, parts: tuple) -> None:
    _save(tmp_path, 1, parts)
    with torch.no_grad():
        next(parts[0].parameters()).fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"not finite.*optim.lr"):
        _save(tmp_path, 2, parts)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000001"]


def test_disk_full_names_the_path_and_leaves_no_tmp(
    tmp_path: Path, parts: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path, 1, parts)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(StorageError, match=r"step_000002: No space left on device; the disk is full"):
        _save(tmp_path, 2, parts)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000001"]


def test_pruning_renames_before_deleting(
    tmp_path: Path, parts: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill while an old checkpoint is deleted must not leave a directory that looks complete."""
    _save(tmp_path, 1, parts, keep_last=1)
    real_rmtree = shutil.rmtree

    def killed_midway(path: Path, *a: object, **k: object) -> None:
        path = Path(path)
        if path.name.startswith("step_000001") and path.exists():
            (path / "trainer_state.pt").unlink()  # part of the tree is gone...
            raise KeyboardInterrupt  # ...and the process dies here
        real_rmtree(path, *a, **k)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, parts, keep_last=1)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_000002"]
    (tmp_path / "checkpoints" / "step_000009.tmp").mkdir()  # a write killed at another step
    _save(tmp_path, 3, parts, keep_last=1)  # the next save clears the leftovers
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000003"]
