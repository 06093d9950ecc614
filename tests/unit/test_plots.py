"""plot_run writes valid PNGs from metrics.jsonl and skips panels without data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo_rl.plots import plot_run, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _record(step: int) -> dict:
    rec = {
        "step": step,
        "reward/mean": -0.5 + 0.05 * step,
        "reward/acc": 0.2 + 0.03 * step,
        "rollout/response_len_mean": 20.0 + step,
        "rollout/truncated_frac": 0.1,
        "loss/clip_frac": 0.02,
        "loss/clip_frac_low": 0.01,
        "loss/clip_frac_high": 0.01,
        "loss/entropy": 1.5 - 0.01 * step,
        "sampling/keep_rate": 0.6,
        "sampling/rounds": 2,
        "perf/time_rollout_s": 1.0,
        "perf/time_update_s": 0.5,
        "perf/time_reward_s": 0.1,
    }
    if step % 5 == 0:
        rec["eval/avg_at_k"] = 0.3 + 0.01 * step
    return rec


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))


def test_plot_run_writes_all_figures(tmp_path: Path) -> None:
    _write_metrics(tmp_path / "metrics.jsonl", [_record(s) for s in range(1, 11)], tail='{"step": 11, "rew')
    paths = plot_run(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["reward.png", "length.png", "clip.png", "entropy.png", "dynamic_sampling.png", "time.png"]
    )
    for p in paths:
        assert p.parent == tmp_path / "plots"
        _assert_png(p)


def test_missing_metric_skips_its_panel(tmp_path: Path) -> None:
    records = [_record(s) for s in range(1, 8)]
    for rec in records:
        del rec["loss/entropy"]  # whole figure has no data
        del rec["sampling/rounds"]  # one of two panels has no data
        rec.pop("eval/avg_at_k", None)
    _write_metrics(tmp_path / "metrics.jsonl", records)
    full = {p.name: p.stat().st_size for p in plot_run(tmp_path)}
    assert "entropy.png" not in full
    assert not (tmp_path / "plots" / "entropy.png").exists()
    assert "dynamic_sampling.png" in full

    # The same records with rounds present draw a second panel: a wider figure, so a larger file.
    other = tmp_path / "other"
    other.mkdir()
    for rec in records:
        rec["sampling/rounds"] = 2
    _write_metrics(other / "metrics.jsonl", records)
    with_rounds = {p.name: p for p in plot_run(other)}
    from PIL import Image  # matplotlib depends on pillow

    with (
        Image.open(tmp_path / "plots" / "dynamic_sampling.png") as one,
        Image.open(with_rounds["dynamic_sampling.png"]) as two,
    ):
        assert two.width > one.width


def test_sparse_lines_and_bad_values(tmp_path: Path) -> None:
    records = [
        {"step": 1, "reward/mean": 0.1},
        {"step": 2, "loss/entropy": float("nan"), "reward/acc": 0.5},
        {"step": 3},
        {"step": 4, "perf/time_rollout_s": 2.0},
    ]
    # json.dumps writes NaN, which json.loads accepts; it must not be plotted as data.
    _write_metrics(tmp_path / "metrics.jsonl", records)
    names = {p.name for p in plot_run(tmp_path)}
    assert names == {"reward.png", "time.png"}


def test_truncated_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/mean": 0.1}\n{"step": 2, "rew\n{"step": 3, "reward/mean": 0.2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)
    path.write_text('{"step": 1, "reward/mean": 0.1}\n{"step": 2, "reward/mean": 0.2}\n{"step": 3, "re')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_missing_metrics_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope[/\\]metrics\.jsonl"):
        plot_run(tmp_path / "nope")
