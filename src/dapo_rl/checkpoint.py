"""Checkpoints: ``run_dir/checkpoints/step_000010/`` holding the model in Hugging Face format
(safetensors + tokenizer) and ``trainer_state.pt`` (optimizer, scheduler, RNG states, data position,
the dynamic-sampling buffer, counters). Written under a temporary name and renamed, so a killed
run never leaves a half-written checkpoint that looks complete. The last ``keep_last`` are kept.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
DONE_FILE = "COMPLETE"


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


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, tokenizer: Any, state: dict[str, Any], keep_last: int
) -> Path:
    """Write the checkpoint for ``step`` atomically and prune old ones; returns its directory."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    torch.save({**state, "rng": rng_state(), "step": step}, tmp / STATE_FILE)
    (tmp / DONE_FILE).write_text(str(step))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
