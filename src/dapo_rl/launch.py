"""Starting training in this process: from the command line's arguments (a new run or a resumed
one: what ``dapo train`` runs, and what each torchrun process and each Ray worker
(:mod:`dapo_rl.launch_ray`) runs as its rank), or from Python (:func:`train`, ``dapo_rl.train``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_rl import checkpoint as ckpt
from dapo_rl.algorithm.filtering import GroupView
from dapo_rl.config import DapoConfig, load_config
from dapo_rl.errors import CheckpointError, UsageError
from dapo_rl.storage import claim_run_dir
from dapo_rl.trainer import Trainer


def train_from_cli(
    config: str | None, overrides: list[str], resume: str | None, overwrite: bool = False
) -> dict[str, Any]:
    """``dapo train``: a new run from a preset, or ``--resume RUN_DIR`` (overrides apply on top).
    A new run never takes a directory holding another run's files unless ``overwrite`` (which
    deletes them); the Trainer checks that before it loads anything."""
    if resume:
        run_dir = Path(resume)
        if config is not None:
            raise UsageError(
                f"--resume continues {run_dir} with its own config.yaml; --config {config} cannot "
                "change it (dotted overrides can: dapo train --resume RUN_DIR key=value)"
            )
        if overwrite:
            raise UsageError("--overwrite starts a new run; it cannot be combined with --resume")
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
        if not ckpt.list_checkpoints(run_dir):  # fail early and clearly: nothing to resume
            raise CheckpointError(
                f"no complete checkpoint under {run_dir / 'checkpoints'} to resume from (the run was "
                "stopped before its first one): start it again with --overwrite, or under another name"
            )
        cfg = load_config(run_dir / "config.yaml", overrides)
        return Trainer(cfg, run_dir=run_dir, resume=True).fit()
    cfg = load_config(config, overrides)
    name = cfg.logging.run_name
    if overwrite and name and int(os.environ.get("RANK", "0")) == 0:
        claim_run_dir(Path(cfg.logging.run_dir) / name, overwrite=True)
    return Trainer(cfg).fit()


def train(
    config: DapoConfig | str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    reward_fn: str | Callable[..., Any] | None = None,
    group_filter: Callable[[GroupView], bool] | None = None,
    train_rows: list[Any] | None = None,
    eval_rows: list[Any] | None = None,
    template: str | Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Train from Python: a DapoConfig (or a preset name / YAML path plus overrides) and your own
    reward function, group filter, rows and template (see docs/extending.md). Returns the summary."""
    cfg = config if isinstance(config, DapoConfig) else load_config(config, overrides)
    trainer = Trainer(
        cfg, reward_fn=reward_fn, group_filter=group_filter, train_rows=train_rows, eval_rows=eval_rows,
        template=template,
    )  # fmt: skip
    return trainer.fit()
