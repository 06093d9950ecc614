"""Starting training in this process: from the command line's arguments (a new run or a resumed
one: what ``dapo train`` runs, and what each torchrun process and each Ray worker
(:mod:`dapo_rl.launch_ray`) runs as its rank), or from Python (:func:`train`, ``dapo_rl.train``)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_rl import checkpoint as ckpt
from dapo_rl.algorithm.filtering import GroupView
from dapo_rl.config import DapoConfig, load_config
from dapo_rl.errors import CheckpointError, Interrupted, UsageError
from dapo_rl.lifecycle import created_run_dir, current_run_dir, note_run_dir
from dapo_rl.storage import LOCK_FILE, RUN_SIGNS, claim_run_dir, is_run_dir, lock_run_dir, unlock_run_dir
from dapo_rl.trainer import Trainer


def train_from_cli(
    config: str | None, overrides: list[str], resume: str | None, overwrite: bool = False
) -> dict[str, Any]:
    """``dapo train``: a new run from a preset, or ``--resume RUN_DIR`` (overrides apply on top).
    The run directory is locked by this process (rank 0) before anything else happens to it. A new
    run never takes a directory holding another run unless ``overwrite`` (which removes only what a
    run writes, :data:`~dapo_rl.storage.RUN_FILES`)."""
    main = _rank0()
    if resume:
        run_dir = Path(resume).expanduser()
        if config is not None:
            raise UsageError(
                f"--resume continues {run_dir} with its own config.yaml; --config {config} cannot "
                "change it (dotted overrides can: dapo train --resume RUN_DIR key=value)"
            )
        if overwrite:
            raise UsageError("--overwrite starts a new run; it cannot be combined with --resume")
        if not is_run_dir(run_dir):
            raise FileNotFoundError(f"{run_dir} is not a run directory (it holds no {', '.join(RUN_SIGNS)})")
        if main:
            lock_run_dir(run_dir)  # a second writer stops here, before it reads anything
            note_run_dir(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} has no config.yaml to resume with")
        if not ckpt.list_checkpoints(run_dir):  # fail early and clearly: nothing to resume
            raise CheckpointError(
                f"no complete checkpoint under {run_dir / 'checkpoints'} to resume from (the run was "
                "stopped before its first one): start it again with --overwrite, or under another name"
            )
        cfg = load_config(run_dir / "config.yaml", overrides)
        return Trainer(cfg, run_dir=run_dir, resume=True).fit()
    cfg = load_config(config, overrides)
    name = cfg.logging.run_name
    try:
        if overwrite and name and main:
            target = Path(cfg.logging.run_dir) / name
            existed = target.exists()
            note_run_dir(claim_run_dir(target, overwrite=True), fresh=not existed)
        return Trainer(cfg).fit()
    except BaseException:
        drop_unopened_run_dir()
        raise


def drop_unopened_run_dir() -> None:
    """A new run that failed before it opened its run directory (a config, model or data error)
    leaves no folder behind: the one this process created, holding only the lock file, goes."""
    run = current_run_dir()
    if run is None or not created_run_dir() or is_run_dir(run):
        return
    unlock_run_dir(run, every_hold=True)
    with contextlib.suppress(OSError):
        (run / LOCK_FILE).unlink(missing_ok=True)
        run.rmdir()  # only when empty


def _rank0() -> bool:
    """Rank 0 of the group (Ray Train starts the process group itself), or torchrun's RANK 0."""
    import torch.distributed as dist  # torch is imported by the trainer anyway

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def stopped_message(stop: Interrupted) -> str:
    """What ``dapo train`` prints when a signal stopped it outside the step loop: where the run
    stands and the command that continues it."""
    name = signal.Signals(stop.signum).name
    run = current_run_dir()
    if run is None or not is_run_dir(run):
        return f"stopped by {name} before the run wrote anything: run the same command again"
    done = ckpt.list_checkpoints(run)
    if done:
        return (
            f"stopped by {name}; the newest checkpoint of {run} is {done[-1].name}: continue with "
            f"dapo train --resume {run}"
        )
    return (
        f"stopped by {name} before the first checkpoint of {run}: nothing to resume; start it again "
        "with the same command and --overwrite (it removes only that run's files)"
    )


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
    try:
        trainer = Trainer(
            cfg, reward_fn=reward_fn, group_filter=group_filter, train_rows=train_rows, eval_rows=eval_rows,
            template=template,
        )  # fmt: skip
        return trainer.fit()
    except BaseException:
        drop_unopened_run_dir()
        raise
