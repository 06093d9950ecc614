"""Metric sinks: ``metrics.jsonl`` always, TensorBoard and wandb when asked for and installed.

Every key is namespaced (``rollout/``, ``reward/``, ``sampling/``, ``loss/``, ``optim/``, ``perf/``,
``eval/``) and documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import math
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dapo_rl import metric_names as M
from dapo_rl.generations import GENERATIONS_FILE, append_jsonl, eval_path
from dapo_rl.plots import read_metrics
from dapo_rl.storage import atomic_write_lines, storage_error

WANDB_ID_FILE = "wandb_id.txt"
"""The W&B run id, kept in the run directory so that ``--resume`` continues the same W&B run."""

TEXT_SUMMARY_ROWS = 32
"""Responses per TensorBoard text summary."""

SAMPLE_COLUMNS = (
    "step", "uid", "kept", "sample", "prompt", "response", "ground_truth", "pred", "score", "acc", "reward",
    "advantage", "length", "finish_reason",
)  # fmt: skip


class TrackingError(ValueError):
    """A tracker that was asked for cannot be used; the message says what to install or set."""


def check_trackers(wandb: bool) -> None:
    """Fail before anything is written when ``logging.wandb=true`` and wandb is not installed."""
    if not wandb:
        return
    try:
        import wandb as _  # noqa: F401  heavy optional dependency: imported only when asked for
    except ImportError:
        raise TrackingError(
            "logging.wandb=true but the wandb package is not installed: pip install 'dapo-rl[tracking]' "
            "(or set logging.wandb=false)"
        ) from None


def _wandb_init(run_dir: Path, project: str, config: dict[str, Any] | None) -> Any:
    """``wandb.init`` named after the run directory, with the config; the run id is saved in the
    run directory and reused, so a resumed run continues the same W&B run."""
    check_trackers(True)
    import wandb as wandb_mod  # heavy optional dependency: only with logging.wandb=true

    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
    run = wandb_mod.init(
        project=project, name=run_dir.name, id=run_id, resume="allow", config=config, dir=str(run_dir)
    )
    id_file.write_text(run.id + "\n")
    return run


def _eval_interval_layout() -> dict[str, Any]:
    """TensorBoard custom-scalar layout: each eval estimate as a margin chart with its 95% interval."""
    charts = {
        f"{name} (95% interval)": [
            "Margin",
            [M.eval_key(name), M.ci95_low(M.eval_key(name)), M.ci95_high(M.eval_key(name))],
        ]
        for name in M.EVAL_ESTIMATES
    }
    return {"eval": charts}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def _markdown_table(records: list[dict[str, Any]]) -> str:
    """Records as a markdown table (TensorBoard renders text summaries as markdown)."""
    cols = [c for c in SAMPLE_COLUMNS if c in records[0]] if records else []

    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in records]
    return "\n".join(lines)


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
        self.run_dir = run_dir
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
        if self._tb is not None:
            self._tb.add_custom_scalars(_eval_interval_layout())
        if wandb:
            self._wandb = _wandb_init(run_dir, wandb_project, config)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (used on resume so the file has no duplicate steps).
        The file is rewritten atomically (temp + fsync + rename): a kill during the rewrite leaves
        the old file whole, never an empty or half-written one."""
        if not self.enabled:
            return
        for path in (self.path, self.run_dir / GENERATIONS_FILE):
            if path.exists():
                atomic_write_lines(path, _lines_up_to(path, step))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk: exit code 4, the lines already written stay
            raise storage_error("the metrics file", self.path, exc) from exc
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def history(self) -> list[dict[str, Any]] | None:
        """The records of ``metrics.jsonl`` so far, over every process of the run (None on ranks
        that do not log, or before anything was logged)."""
        if not self.enabled or not self.path.is_file():
            return None
        return read_metrics(self.path)

    def log_generations(self, step: int, records: list[dict[str, Any]]) -> None:
        """Append a step's sampled generations to ``generations.jsonl``; TensorBoard gets them as a
        text summary, wandb as a table (see :mod:`dapo_rl.generations`)."""
        if not self.enabled or not records:
            return
        append_jsonl(self.run_dir / GENERATIONS_FILE, records)
        self._mirror_samples("generations", step, records)

    def log_eval_samples(self, step: int, records: list[dict[str, Any]]) -> None:
        """Write every response of the evaluation at ``step`` to ``eval/step_<step>.jsonl``."""
        if not self.enabled or not records:
            return
        append_jsonl(eval_path(self.run_dir, step), records, mode="w")
        self._mirror_samples("eval_samples", step, records[:TEXT_SUMMARY_ROWS])

    def _mirror_samples(self, tag: str, step: int, records: list[dict[str, Any]]) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, _markdown_table(records[:TEXT_SUMMARY_ROWS]), step)
            self._tb.flush()
        if self._wandb is not None:
            import wandb as wandb_mod  # heavy optional dependency, present when self._wandb is set

            cols = [c for c in SAMPLE_COLUMNS if c in records[0]]
            table = wandb_mod.Table(columns=cols, data=[[_cell(r.get(c)) for c in cols] for r in records])
            self._wandb.log({tag: table}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
