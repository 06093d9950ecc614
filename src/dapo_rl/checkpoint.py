"""Checkpoints: ``run_dir/checkpoints/step_000010/`` holding the model in Hugging Face format
(safetensors + tokenizer) and ``trainer_state.pt`` (scheduler, RNG states, data position, the
dynamic-sampling buffer, counters; in one process also the optimizer). Written under a temporary
name and renamed, so a killed run never leaves a half-written checkpoint that looks complete. The
last ``keep_last`` are kept.

With torch.distributed running (torchrun, Ray), every rank takes part:

- ``model/``: the full model in HF format, gathered and written by rank 0 (``dapo eval --model``
  reads it);
- ``sharded/``: model and optimizer through ``torch.distributed.checkpoint`` (each rank writes its
  own shards; ``get_model_state_dict`` / ``get_optimizer_state_dict``), the source of truth on resume;
- ``trainer_state.pt``: the shared state plus rank 0's own, and ``trainer_state_rank00001.pt``...
  for the other ranks (their RNG states, carry-over buffers and counters).

A distributed checkpoint resumes at the same world size. The run directory must be on a file
system that every node sees.

Checkpoints verify themselves: ``MANIFEST.json`` records the size and sha256 of every file, written
(with every file fsynced) before the ``COMPLETE`` marker and the rename. On resume
:func:`resume_checkpoint` takes the newest checkpoint that verifies and names each newer one it
skipped and why. A checkpoint whose weights are not finite is never written
(:class:`~dapo_rl.errors.DivergedError`), and a failed write (disk full, permissions) is a
:class:`~dapo_rl.errors.StorageError` naming the path that leaves no ``step_N.tmp`` behind. Old
checkpoints are renamed to ``step_N.trash`` before they are deleted, so a kill during the deletion
never leaves a directory that looks complete.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dapo_rl.collapse import nonfinite_parameters
from dapo_rl.distributed import DistContext, is_sharded
from dapo_rl.errors import CheckpointError, DivergedError, StorageError
from dapo_rl.storage import (
    atomic_write_text,
    fsync_dir,
    is_write_error,
    storage_error,
    verify_manifest,
    write_manifest,
)

STATE_FILE = "trainer_state.pt"
DONE_FILE = "COMPLETE"
SHARDED_DIR = "sharded"
TRASH_SUFFIX = ".trash"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def rank_state_file(rank: int) -> str:
    return f"trainer_state_rank{rank:05d}.pt"


def save_checkpoint(
    run_dir: Path,
    step: int,
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    shared: dict[str, Any],
    local: dict[str, Any],
    keep_last: int,
    ctx: DistContext | None = None,
) -> Path:
    """Write the checkpoint for ``step`` atomically and prune old ones; returns its directory.

    ``policy`` is a :class:`dapo_rl.batch.PolicyModule` (FSDP2-sharded or not); ``shared`` is the
    trainer state that every rank holds alike, ``local`` this rank's own. Collective when several
    ranks run: every rank must call it.
    """
    ctx = ctx or DistContext()
    bad = nonfinite_parameters(policy)
    if ctx.any(bool(bad)):
        raise DivergedError(
            f"not writing the checkpoint of step {step}: the weights are not finite "
            f"({', '.join(bad[:3]) or 'on another rank'}...). The run diverged, most likely because "
            "optim.lr is too high (or the data holds a broken row); the earlier checkpoints are kept"
        )
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    main = ctx.is_main
    _guarded(ctx, tmp, (lambda: _fresh_dir(tmp)) if main else None)
    _guarded(ctx, tmp, lambda: export_model(tmp / "model", policy, tokenizer, ctx))
    state = {**shared, **local, "rng": rng_state(), "step": step}
    if ctx.group:
        _guarded(ctx, tmp, lambda: _sharded(policy, optimizer, tmp / SHARDED_DIR, save=True))
        state["world_size"] = ctx.world_size
    else:
        state["optimizer"] = optimizer.state_dict()
    own = state if main else {**local, "rng": state["rng"]}
    _guarded(ctx, tmp, lambda: torch.save(own, tmp / (STATE_FILE if main else rank_state_file(ctx.rank))))
    _guarded(ctx, tmp, (lambda: _seal(tmp, final, step)) if main else None)
    if main:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            _remove(old)
        for junk in [*final.parent.glob(f"step_*{TRASH_SUFFIX}"), *final.parent.glob("step_*.tmp")]:
            shutil.rmtree(junk, ignore_errors=True)  # left by a run killed while pruning or writing
    ctx.barrier()
    return final


def _guarded(ctx: DistContext, tmp: Path, write: Any) -> None:
    """Run one write of the checkpoint (``None``: nothing to write on this rank, but take part);
    when it fails on any rank, every rank raises a :class:`StorageError` naming the path (rank 0
    removes the temporary directory first). Collective: every rank calls it alike."""
    error = None
    try:
        if write is not None:
            write()
    except Exception as exc:  # every rank must learn of it before anyone raises
        error = exc
    if ctx.any(error is not None):
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if error is None:
            raise StorageError(f"could not write the checkpoint {tmp.with_suffix('')}: another rank failed")
        if is_write_error(error):
            raise storage_error("the checkpoint", tmp.with_suffix(""), error) from error
        raise error


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _seal(tmp: Path, final: Path, step: int) -> None:
    """Manifest (every file fsynced), COMPLETE marker, then the rename that makes it visible."""
    write_manifest(tmp, {"step": step})
    atomic_write_text(tmp / DONE_FILE, str(step))
    if final.exists():  # a checkpoint of the same step from an earlier attempt
        _remove(final)
    tmp.rename(final)
    fsync_dir(final.parent)


def _remove(path: Path) -> None:
    """Delete a checkpoint: renamed first (atomic), so it never looks complete while half deleted."""
    trash = path.with_name(path.name + TRASH_SUFFIX)
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def export_model(directory: Path, policy: torch.nn.Module, tokenizer: Any, ctx: DistContext) -> None:
    """The full model in Hugging Face format, written by rank 0 (gathered first when sharded)."""
    full = None
    if is_sharded(policy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(policy.module, options=options)
        saved = {n for n, _ in policy.module.named_parameters()} | {
            n for n, _ in policy.module.named_buffers()
        }
        full = {k: v for k, v in full.items() if k in saved}  # tied weights once, as in one process
    if ctx.is_main:
        policy.module.save_pretrained(directory, state_dict=full, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        if hasattr(policy.module, "peft_config"):  # LoRA: directory holds the adapters (resume)
            from dapo_rl.models.lora import save_merged  # wraps peft, an optional dependency

            save_merged(policy.module, directory.parent / "merged", tokenizer)  # a plain HF model


def _sharded(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path, save: bool) -> None:
    """Save or load model + optimizer through torch.distributed.checkpoint (every rank its shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as sd

    state = {
        "model": sd.get_model_state_dict(policy),
        "optimizer": sd.get_optimizer_state_dict(policy, optimizer),
    }
    if save:
        dcp.save(state, checkpoint_id=directory)
        return
    dcp.load(state, checkpoint_id=directory)
    sd.set_model_state_dict(policy, state["model"])
    sd.set_optimizer_state_dict(policy, optimizer, state["optimizer"])


def load_checkpoint(
    ckpt: Path, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext | None = None
) -> dict[str, Any]:
    """Restore model (sharded checkpoints) and optimizer in place; return this rank's trainer state
    (the shared state with this rank's own on top). The world size must match the saved one."""
    ctx = ctx or DistContext()
    state = load_state(ckpt)
    saved_world = state.get("world_size")
    if ctx.group != (saved_world is not None) or (ctx.group and saved_world != ctx.world_size):
        saved = f"{saved_world} ranks" if saved_world else "one process without torch.distributed"
        now = f"{ctx.world_size} ranks" if ctx.group else "one process without torch.distributed"
        raise ValueError(
            f"{ckpt} was written by {saved} but this run has {now}; resume at the same world size"
            + (f" (torchrun --nproc_per_node {saved_world} ...)" if saved_world else "")
        )
    if ctx.group:
        _sharded(policy, optimizer, ckpt / SHARDED_DIR, save=False)
        if not ctx.is_main:
            state |= torch.load(ckpt / rank_state_file(ctx.rank), weights_only=False)
    else:
        optimizer.load_state_dict(state["optimizer"])
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints marked complete, oldest first (temporary and trashed directories are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and "." not in p.name and (p / DONE_FILE).exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def checkpoint_problem(ckpt: Path) -> str | None:
    """None when ``ckpt`` can be resumed from; otherwise why not, in words. Every file must match
    the checkpoint's manifest; a missing or unreadable manifest is a reason to skip it too (what
    is in it could not be checked)."""
    if not (ckpt / DONE_FILE).exists():
        return f"no {DONE_FILE} marker (the write did not finish)"
    return verify_manifest(ckpt)


def resume_checkpoint(run_dir: Path, ctx: DistContext | None = None, report: Any = print) -> Path:
    """The newest checkpoint of ``run_dir`` that verifies; each newer one skipped is reported
    (``report(message)``) with its reason. Raises :class:`CheckpointError` when none verifies. With
    several ranks, rank 0 checks the files and every rank gets its answer."""
    ctx = ctx or DistContext()
    found: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        found = _newest_valid(run_dir, report)
    path, error = ctx.broadcast_object(found)
    if error is not None:
        raise CheckpointError(error)
    return Path(path)


def _newest_valid(run_dir: Path, report: Any) -> tuple[str | None, str | None]:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return None, f"no complete checkpoint under {run_dir / 'checkpoints'} to resume from"
    skipped = []
    for path in reversed(ckpts):
        problem = checkpoint_problem(path)
        if problem is None:
            for name, why in skipped:
                report(f"skipping checkpoint {name}: {why}; resuming from {path.name} instead")
            return str(path), None
        skipped.append((path.name, problem))
    listed = "; ".join(f"{name}: {why}" for name, why in skipped)
    return None, (
        f"no checkpoint of {run_dir} verifies ({listed}). Start a new run, or restore the "
        "checkpoints directory from a backup"
    )


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint that verifies (see :func:`resume_checkpoint`; reports go to stdout)."""
    return resume_checkpoint(run_dir)


def load_state(ckpt: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (our own file: it holds Python objects, so not weights-only)."""
    return torch.load(ckpt / STATE_FILE, weights_only=False)
