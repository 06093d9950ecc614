"""Starting training in this process from the command line's arguments: a new run or a resumed one.
This is what ``dapo train`` runs, and what each torchrun process and each Ray worker
(:mod:`dapo_rl.launch_ray`) runs as its rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dapo_rl import checkpoint as ckpt
from dapo_rl.config import load_config
from dapo_rl.trainer import Trainer


def train_from_cli(config: str | None, overrides: list[str], resume: str | None) -> dict[str, Any]:
    """``dapo train``: a new run from a preset, or ``--resume RUN_DIR`` (overrides apply on top)."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
        ckpt.latest_checkpoint(run_dir)  # fail early and clearly when there is nothing to resume
        cfg = load_config(run_dir / "config.yaml", overrides)
        return Trainer(cfg, run_dir=run_dir, resume=True).fit()
    cfg = load_config(config, overrides)
    name = cfg.logging.run_name
    if name and ckpt.list_checkpoints(Path(cfg.logging.run_dir) / name):
        raise ValueError(
            f"run directory {Path(cfg.logging.run_dir) / name} already has checkpoints: "
            "resume it with --resume, or choose another logging.run_name"
        )
    return Trainer(cfg).fit()
