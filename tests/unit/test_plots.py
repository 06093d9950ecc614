"""plot_run writes valid PNGs from metrics.jsonl and skips panels without data; every key a plot reads
is a key the trainer really logs (checked on the output of a real 2-step training run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dapo_rl import metric_names as M
from dapo_rl import plots
from dapo_rl.plots import plot_run, read_metrics
from tests.helpers_run import SMALL, save_random_tiny_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a real 2-step training (tiny random model, evaluation before and after)."""
    import dapo_rl

    tmp = tmp_path_factory.mktemp("run")
    model = save_random_tiny_model(tmp / "model")
    overrides = [
        *SMALL,
        f"model.path={model}",
        f"logging.run_dir={tmp}",
        "logging.run_name=two_steps",
        "logging.plots=false",
        "logging.progress=false",
        "logging.tensorboard=false",
        "train.total_steps=2",
        "checkpoint.save_final=false",
        "checkpoint.every_steps=0",
        "batch.epochs_per_step=2",  # the old-log-prob stage does real work
    ]
    dapo_rl.train(dapo_rl.load_config("tiny", overrides))
    return tmp / "two_steps"


def _write_metrics(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _record(step: int) -> dict:
    rec = {
        "step": step,
        M.REWARD_MEAN: -0.5 + 0.05 * step,
        M.REWARD_ACC: 0.2 + 0.03 * step,
        M.ROLLOUT_RESPONSE_LEN_MEAN: 20.0 + step,
        M.ROLLOUT_TRUNCATED_FRAC: 0.1,
        M.LOSS_CLIP_FRAC: 0.02,
        M.LOSS_CLIP_LOW_FRAC: 0.01,
        M.LOSS_CLIP_HIGH_FRAC: 0.01,
        M.LOSS_ENTROPY: 1.5 - 0.01 * step,
        M.SAMPLING_KEEP_RATE: 0.6,
        M.SAMPLING_ROUNDS: 2,
        M.perf_time("rollout"): 1.0,
        M.perf_time("update"): 0.5,
        M.perf_time("reward"): 0.1,
    }
    if step % 5 == 0:
        rec[M.EVAL_AVG_AT_K] = 0.3 + 0.01 * step
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
        [
            "reward.png",
            "eval.png",
            "length.png",
            "clip.png",
            "entropy.png",
            "dynamic_sampling.png",
            "time.png",
        ]
    )
    for p in paths:
        assert p.parent == tmp_path / "plots"
        _assert_png(p)


def test_missing_metric_skips_its_panel(tmp_path: Path) -> None:
    records = [_record(s) for s in range(1, 8)]
    for rec in records:
        del rec[M.LOSS_ENTROPY]  # whole figure has no data
        del rec[M.SAMPLING_ROUNDS]  # one of two panels has no data
        rec.pop(M.EVAL_AVG_AT_K, None)
    _write_metrics(tmp_path / "metrics.jsonl", records)
    full = {p.name: p.stat().st_size for p in plot_run(tmp_path)}
    assert "entropy.png" not in full
    assert not (tmp_path / "plots" / "entropy.png").exists()
    assert "dynamic_sampling.png" in full

    # The same records with rounds present draw a second panel: a wider figure, so a larger file.
    other = tmp_path / "other"
    other.mkdir()
    for rec in records:
        rec[M.SAMPLING_ROUNDS] = 2
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


def _keys_read_by_plots(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every key plot_run looks up, recorded by wrapping the one function that reads a series."""
    asked: set[str] = set()
    read = plots._series

    def recording(records: list[dict], key: str) -> tuple[list[float], list[float]]:
        asked.add(key)
        return read(records, key)

    monkeypatch.setattr(plots, "_series", recording)
    plot_run(run_dir)
    return asked


def test_every_key_a_plot_reads_is_logged_by_the_trainer(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "two_steps"
    shutil.copytree(trained_run, run)
    records = read_metrics(run / "metrics.jsonl")
    logged = {k for rec in records for k in rec} - {"step"}
    asked = _keys_read_by_plots(run, monkeypatch)
    # failed before: loss/clip_frac_low and loss/clip_frac_high. async/* only with the rollout worker
    # (tests/integration/test_async.py checks those against an asynchronous run)
    assert sorted(k for k in asked - logged if not k.startswith("async/")) == []
    stages = {k for k in logged if M.stage_of(k)}
    assert M.perf_time("old_logprobs") in stages
    assert sorted(stages - asked) == []  # every timed stage is drawn (the old plots left out old_logprobs)
    bands = {k for k in logged if k.endswith(("_ci95_low", "_ci95_high"))}
    assert bands and sorted(bands - asked) == []  # eval intervals are drawn as bands
    names = {p.name for p in (run / "plots").glob("*.png")}
    assert {"reward.png", "eval.png", "clip.png", "time.png"} <= names


def test_figures_are_titled_with_the_run_name(trained_run: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    titles: list[str] = []
    real_suptitle = plt.Figure.suptitle

    def record(fig: plt.Figure, text: str, **kw: object) -> object:
        titles.append(text)
        return real_suptitle(fig, text, **kw)

    run = tmp_path / "my_named_run"
    shutil.copytree(trained_run, run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "suptitle", record)
        written = plot_run(run)
    assert titles == ["my_named_run"] * len(written)
