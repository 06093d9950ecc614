"""Metric sinks: ``metrics.jsonl`` always, TensorBoard and wandb when asked for and installed.

Every key is namespaced (``rollout/``, ``reward/``, ``sampling/``, ``loss/``, ``optim/``, ``perf/``,
``eval/``) and documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dapo_rl.storage import atomic_write_lines


def _lines_up_to(path: Path, step: int) -> Iterator[str]:
    """The lines of ``path`` whose step is at most ``step``, read lazily (the file may be large);
    stops at a half-written line left by a killed run."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                if json.loads(line).get("step", 0) > step:
                    continue
            except json.JSONDecodeError:
                return
            yield line if line.endswith("\n") else line + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible
    return value


class MetricsLogger:
    """Writes one JSON object per step to ``run_dir/metrics.jsonl`` and mirrors it to trackers."""

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "dapo-rl",
        config: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:
                warnings.warn(
                    "logging.tensorboard is on but the tensorboard package is missing: "
                    "pip install 'dapo-rl[tracking]' (continuing without TensorBoard)",
                    stacklevel=2,
                )
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError as exc:
                raise RuntimeError("logging.wandb=true needs wandb: pip install 'dapo-rl[tracking]'") from exc
            self._wandb = wandb_mod.init(project=wandb_project, config=config, dir=str(run_dir))

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (used on resume so the file has no duplicate steps).
        The file is rewritten atomically (temp + fsync + rename): a kill during the rewrite leaves
        the old file whole, never an empty or half-written one."""
        if not self.enabled or not self.path.exists():
            return
        atomic_write_lines(self.path, _lines_up_to(self.path, step))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
