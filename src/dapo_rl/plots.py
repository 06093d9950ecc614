"""PNG plots of a run's ``metrics.jsonl`` (``dapo plot RUN_DIR``; also written by the trainer).

Each line of ``metrics.jsonl`` is one JSON object with a ``"step"`` key and namespaced metrics
(``reward/mean``, ``loss/clip_frac``...). Lines may lack any metric; a panel whose metrics never
appear is skipped, and a figure with no panel is not written. A truncated last line (a run killed
mid-write) is ignored. Figures go to ``RUN_DIR/plots/`` and are drawn with matplotlib's Agg backend,
so no display is needed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Series = tuple[list[float], list[float]]


@dataclass(frozen=True)
class _Line:
    key: str
    label: str
    style: str = "-"
    marker: str | None = None


@dataclass(frozen=True)
class _Panel:
    title: str
    ylabel: str
    lines: tuple[_Line, ...]


@dataclass(frozen=True)
class _Figure:
    filename: str
    panels: tuple[_Panel, ...]
    stacked: bool = False


FIGURES: tuple[_Figure, ...] = (
    _Figure(
        "reward.png",
        (
            _Panel("Reward", "reward", (_Line("reward/mean", "train reward (shaped)"),)),
            _Panel(
                "Accuracy",
                "accuracy",
                (
                    _Line("reward/acc", "train accuracy"),
                    _Line("eval/avg_at_k", "eval avg@k", style="--", marker="o"),
                ),
            ),
        ),
    ),
    _Figure(
        "length.png",
        (
            _Panel(
                "Response length", "tokens", (_Line("rollout/response_len_mean", "mean response length"),)
            ),
            _Panel("Truncation", "fraction", (_Line("rollout/truncated_frac", "truncated (no EOS at cap)"),)),
        ),
    ),
    _Figure(
        "clip.png",
        (
            _Panel(
                "Clip fractions",
                "fraction of tokens",
                (
                    _Line("loss/clip_frac", "clipped"),
                    _Line("loss/clip_frac_low", "clipped low (A < 0)"),
                    _Line("loss/clip_frac_high", "clipped high (A > 0)"),
                ),
            ),
        ),
    ),
    _Figure("entropy.png", (_Panel("Policy entropy", "nats / token", (_Line("loss/entropy", "entropy"),)),)),
    _Figure(
        "dynamic_sampling.png",
        (
            _Panel(
                "Dynamic sampling keep rate",
                "fraction of groups",
                (_Line("sampling/keep_rate", "keep rate"),),
            ),
            _Panel("Generation rounds", "rounds per step", (_Line("sampling/rounds", "rounds"),)),
        ),
    ),
    _Figure(
        "time.png",
        (
            _Panel(
                "Time per stage",
                "seconds per step",
                (
                    _Line("perf/time_rollout_s", "rollout"),
                    _Line("perf/time_reward_s", "reward"),
                    _Line("perf/time_update_s", "update"),
                ),
            ),
        ),
        stacked=True,
    ),
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order.

    Blank lines are skipped; an unparsable LAST line (a run killed mid-write) is ignored, while an
    unparsable line elsewhere raises ``ValueError`` naming the file and line.
    """
    lines = Path(path).read_text().splitlines()
    records: list[dict[str, Any]] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last:
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({exc.msg})") from exc
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _series(records: list[dict[str, Any]], key: str) -> Series:
    """(steps, values) of one metric over the records that hold a finite number for it."""
    xs: list[float] = []
    ys: list[float] = []
    for i, rec in enumerate(records):
        value = rec.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        step = rec.get("step", i)
        xs.append(float(step) if isinstance(step, (int, float)) else float(i))
        ys.append(float(value))
    return xs, ys


def _draw_stacked(ax: Any, data: list[tuple[_Line, Series]]) -> None:
    """Stacked areas over the steps common to every stage that has data."""
    steps = sorted(set.intersection(*(set(xs) for _, (xs, _) in data)))
    if not steps:  # stages logged at disjoint steps: draw plain lines instead
        for line, (xs, ys) in data:
            ax.plot(xs, ys, label=line.label)
        return
    stacks = []
    for _, (xs, ys) in data:
        by_step = dict(zip(xs, ys))
        stacks.append([by_step[s] for s in steps])
    ax.stackplot(steps, *stacks, labels=[line.label for line, _ in data], alpha=0.8)


def _draw_figure(fig_spec: _Figure, records: list[dict[str, Any]], out_path: Path) -> bool:
    """Draw one figure; return False (and write nothing) when none of its panels has data."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = []
    for panel in fig_spec.panels:
        data = [(line, _series(records, line.key)) for line in panel.lines]
        data = [(line, s) for line, s in data if s[0]]
        if data:
            panels.append((panel, data))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    try:
        for ax, (panel, data) in zip(axes[0], panels):
            if fig_spec.stacked:
                _draw_stacked(ax, data)
            else:
                for line, (xs, ys) in data:
                    ax.plot(xs, ys, line.style, marker=line.marker, label=line.label)
            ax.set_title(panel.title)
            ax.set_xlabel("step")
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(out_path, dpi=100)
    finally:
        plt.close(fig)
    return True


def plot_run(run_dir: Path) -> list[Path]:
    """Write the PNG plots of ``run_dir/metrics.jsonl`` into ``run_dir/plots/``; return their paths.

    Figures: reward and accuracy (with eval avg@k points), response length and truncation rate, clip
    fractions, entropy, dynamic-sampling keep rate and rounds, stacked time per stage. Panels without
    data are skipped. Raises ``FileNotFoundError`` naming the file when ``metrics.jsonl`` is missing.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics file: {metrics_path}")
    records = read_metrics(metrics_path)
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in FIGURES:
        path = out_dir / spec.filename
        if _draw_figure(spec, records, path):
            written.append(path)
    return written
