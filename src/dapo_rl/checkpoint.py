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
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dapo_rl.distributed import DistContext, is_sharded

STATE_FILE = "trainer_state.pt"
DONE_FILE = "COMPLETE"
SHARDED_DIR = "sharded"


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
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ctx.barrier()
    export_model(tmp / "model", policy, tokenizer, ctx)
    state = {**shared, **local, "rng": rng_state(), "step": step}
    if ctx.group:
        _sharded(policy, optimizer, tmp / SHARDED_DIR, save=True)
        state["world_size"] = ctx.world_size
    else:
        state["optimizer"] = optimizer.state_dict()
    if ctx.is_main:
        torch.save(state, tmp / STATE_FILE)
    else:
        torch.save({**local, "rng": state["rng"]}, tmp / rank_state_file(ctx.rank))
    ctx.barrier()
    if ctx.is_main:
        (tmp / DONE_FILE).write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    ctx.barrier()
    return final


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
    """Complete checkpoints, oldest first (temporary and incomplete directories are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and (p / DONE_FILE).exists() and p.suffix != ".tmp"]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"no complete checkpoint under {run_dir / 'checkpoints'} to resume from")
    return ckpts[-1]


def load_state(ckpt: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (our own file: it holds Python objects, so not weights-only)."""
    return torch.load(ckpt / STATE_FILE, weights_only=False)
