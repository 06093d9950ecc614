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

from dapo_rl import metric_names as M
from dapo_rl.storage import storage_error

Series = tuple[list[float], list[float]]


@dataclass(frozen=True)
class _Line:
    key: str
    label: str
    style: str = "-"
    marker: str | None = None
    band: bool = False
    """Shade the 95% interval ``key_ci95_low`` .. ``key_ci95_high`` where it is logged."""


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
    """Draw every ``perf/time_<stage>_s`` key found in the records as stacked areas (the panel's own
    lines, e.g. the step total, are drawn on top as lines)."""
    stack: tuple[_Line, ...] = ()
    """Lines drawn as stacked areas under the panel's own lines (those never above 0 left out)."""


def _eval_line(name: str, label: str) -> _Line:
    return _Line(M.eval_key(name), label, style="--", marker="o", band=True)


FIGURES: tuple[_Figure, ...] = (
    _Figure(
        "reward.png",
        (
            _Panel("Reward", "reward", (_Line(M.REWARD_MEAN, "train reward (shaped)"),)),
            _Panel(
                "Accuracy",
                "accuracy",
                (_Line(M.REWARD_ACC, "train accuracy"), _eval_line(M.AVG_AT_K, "eval avg@k (95% interval)")),
            ),
        ),
    ),
    _Figure(
        "eval.png",
        (
            _Panel(
                "Held-out evaluation (95% intervals)",
                "accuracy",
                (
                    _eval_line(M.AVG_AT_K, "avg@k"),
                    _eval_line(M.PASS_AT_K, "pass@k"),
                    _eval_line(M.MAJ_AT_K, "maj@k"),
                ),
            ),
        ),
    ),
    _Figure(
        "length.png",
        (
            _Panel(
                "Response length", "tokens", (_Line(M.ROLLOUT_RESPONSE_LEN_MEAN, "mean response length"),)
            ),
            _Panel("Truncation", "fraction", (_Line(M.ROLLOUT_TRUNCATED_FRAC, "truncated (no EOS at cap)"),)),
        ),
    ),
    _Figure(
        "clip.png",
        (
            _Panel(
                "Clip fractions",
                "fraction of tokens",
                (
                    _Line(M.LOSS_CLIP_FRAC, "clipped"),
                    _Line(M.LOSS_CLIP_LOW_FRAC, "clipped low (A < 0)"),
                    _Line(M.LOSS_CLIP_HIGH_FRAC, "clipped high (A > 0)"),
                ),
            ),
        ),
    ),
    _Figure("entropy.png", (_Panel("Policy entropy", "nats / token", (_Line(M.LOSS_ENTROPY, "entropy"),)),)),
    _Figure(
        "dynamic_sampling.png",
        (
            _Panel(
                "Dynamic sampling keep rate",
                "fraction of groups",
                (_Line(M.SAMPLING_KEEP_RATE, "keep rate"),),
            ),
            _Panel("Generation rounds", "rounds per step", (_Line(M.SAMPLING_ROUNDS, "rounds"),)),
        ),
    ),
    _Figure(
        "ledger.png",
        (
            _Panel(
                "Learning-signal ledger",
                "response tokens per step",
                (_Line(M.LEDGER_TOKENS, "all", style="k--"),),
            ),
        ),
        stack=tuple(_Line(M.ledger_key(c), c.replace("_", " ")) for c in reversed(M.LEDGER_CATEGORIES)),
    ),
    _Figure(
        "async.png",  # asynchronous rollouts only (docs/async.md); no data, no figure
        (
            _Panel(
                "Staleness of trained groups",
                "policy versions",
                (_Line(M.ASYNC_STALENESS_MEAN, "mean"), _Line(M.ASYNC_STALENESS_MAX, "max", style="--")),
            ),
            _Panel(
                "Idle time",
                "fraction of the step",
                (
                    _Line(M.ASYNC_IDLE_RATIO_TRAINER, "trainer"),
                    _Line(M.ASYNC_IDLE_RATIO_ROLLOUT, "rollout worker"),
                ),
            ),
        ),
    ),
    _Figure(
        "time.png",
        (
            _Panel(
                "Time per stage", "seconds per step", (_Line(M.PERF_TIME_STEP, "whole step", style="k--"),)
            ),
        ),
        stacked=True,
    ),
)


def plotted_keys(records: list[dict[str, Any]] | None = None) -> set[str]:
    """Every metric key a figure reads: the fixed lines and their interval bounds, plus (given the
    records) the stage-time keys the time figure would stack."""
    keys = set()
    for fig in FIGURES:
        for panel in fig.panels:
            for line in (*panel.lines, *fig.stack):
                keys.add(line.key)
                if line.band:
                    keys |= {M.ci95_low(line.key), M.ci95_high(line.key)}
    return keys | set(_stage_keys(records or []))


def _stage_keys(records: list[dict[str, Any]]) -> list[str]:
    """The ``perf/time_<stage>_s`` keys in the records: known stages in loop order, then others."""
    found = {k for rec in records for k in rec if M.stage_of(k) is not None}
    known = [M.perf_time(s) for s in M.STAGES if M.perf_time(s) in found]
    return known + sorted(found - set(known))


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


def _draw_line(ax: Any, line: _Line, series: Series, records: list[dict[str, Any]]) -> None:
    xs, ys = series
    (drawn,) = ax.plot(xs, ys, line.style, marker=line.marker, label=line.label)
    if not line.band:
        return
    lo, hi = _series(records, M.ci95_low(line.key)), _series(records, M.ci95_high(line.key))
    bounds = {x: [y] for x, y in zip(*lo)}
    for x, y in zip(*hi):
        bounds.get(x, []).append(y)
    steps = [x for x in xs if len(bounds.get(x, [])) == 2]
    if steps:
        ax.fill_between(
            steps,
            [bounds[x][0] for x in steps],
            [bounds[x][1] for x in steps],
            color=drawn.get_color(),
            alpha=0.2,
        )
        if len(steps) == 1:  # a single evaluation: an error bar, since a band of one point is invisible
            x = steps[0]
            y = dict(zip(xs, ys))[x]
            ax.errorbar(
                [x], [y], yerr=[[y - bounds[x][0]], [bounds[x][1] - y]], color=drawn.get_color(), capsize=4
            )


def _panel_data(
    fig_spec: _Figure, panel: _Panel, records: list[dict[str, Any]]
) -> list[tuple[_Line, Series]]:
    lines = list(panel.lines)
    if fig_spec.stacked:
        lines = [_Line(k, M.stage_of(k) or k) for k in _stage_keys(records)] + lines
    data = [(line, _series(records, line.key)) for line in lines]
    stack = [(line, s) for line in fig_spec.stack if any((s := _series(records, line.key))[1])]
    return stack + [(line, s) for line, s in data if s[0]]


def _draw_figure(fig_spec: _Figure, records: list[dict[str, Any]], out_path: Path, title: str = "") -> bool:
    """Draw one figure; return False (and write nothing) when none of its panels has data."""
    import matplotlib  # heavy optional dependency: only when plotting

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = [(panel, data) for panel in fig_spec.panels if (data := _panel_data(fig_spec, panel, records))]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.4), squeeze=False)
    try:
        for ax, (panel, data) in zip(axes[0], panels):
            stacked = fig_spec.stacked or fig_spec.stack
            stages = [(line, s) for line, s in data if stacked and line not in panel.lines]
            if stages:
                _draw_stacked(ax, stages)
            for line, series in data:
                if (line, series) not in stages:
                    _draw_line(ax, line, series, records)
            ax.set_title(panel.title)
            ax.set_xlabel("step")
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        tmp = out_path.with_name(f".{out_path.name}.tmp")  # renamed when whole: never a partial PNG
        try:
            fig.savefig(tmp, dpi=100, format="png")
            tmp.replace(out_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error("the plot", out_path, exc) from exc
    finally:
        plt.close(fig)
    return True


def plot_run(run_dir: Path) -> list[Path]:
    """Write the PNG plots of ``run_dir/metrics.jsonl`` into ``run_dir/plots/``; return their paths.

    Figures (each titled with the run directory's name): reward and accuracy (with eval avg@k points
    and their 95% interval band), held-out avg@k / pass@k / maj@k with bands, response length and
    truncation rate, clip fractions, entropy, dynamic-sampling keep rate and rounds, the learning-signal
    ledger's tokens per reason stacked under the step's total (docs/health.md), with asynchronous
    rollouts the staleness and the idle ratios of trainer and worker (docs/async.md), and the time of
    every timed stage (``perf/time_<stage>_s``) stacked under the whole step's time. Panels without
    data are skipped. Raises ``FileNotFoundError`` naming the file when ``metrics.jsonl`` is missing.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics file: {metrics_path}")
    records = read_metrics(metrics_path)
    out_dir = run_dir / "plots"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error("the plots folder", out_dir, exc) from exc
    title = run_dir.resolve().name
    written = []
    for spec in FIGURES:
        path = out_dir / spec.filename
        if _draw_figure(spec, records, path, title):
            written.append(path)
    return written
