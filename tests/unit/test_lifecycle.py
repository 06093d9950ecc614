"""A run's life: the summary (also with a one-problem evaluation, which has no interval), the
summary table, graceful stop on SIGTERM/SIGINT, and the token counts of this process."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from dapo_rl.eval_metrics import summarize
from dapo_rl.lifecycle import GracefulStop, RunClock, print_summary, progress_bar


def _trainer(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(run_dir=tmp_path, step=3, updates=6, stop=GracefulStop())


def _result(correct: list[list[bool]]) -> dict:
    return summarize(correct, [["1" if c else "2" for c in row] for row in correct], k=len(correct[0]))


def test_summary_and_table_with_a_one_problem_evaluation(tmp_path: Path, capsys) -> None:
    """`dapo train eval.max_problems=1`: one problem has a mean but no interval; the table says so
    instead of crashing after summary.json is written."""
    first, final = _result([[False, False]]), _result([[True, False]])
    assert final["avg_at_k"]["ci95"] is None
    summary = RunClock().summary(_trainer(tmp_path), first, final)
    assert summary["heldout_before"]["mean"] == 0.0
    assert summary["heldout_after"] == {"metric": "avg@2", "mean": 0.5, "ci95": None}
    print_summary(summary)
    out = capsys.readouterr().out
    assert "held-out before    0.0%  (avg@2)" in out
    assert "held-out after     50.0%  (avg@2)" in out


def test_summary_table_with_an_interval(tmp_path: Path, capsys) -> None:
    final = _result([[True, True], [False, False], [True, False], [True, True]])  # per problem 1, 0, .5, 1
    summary = RunClock().summary(_trainer(tmp_path), None, final)
    lo, hi = summary["heldout_after"]["ci95"]
    print_summary(summary)
    out = capsys.readouterr().out
    assert "held-out before    n/a" in out
    assert f"held-out after     62.5%  (95% CI {100 * lo:.1f}-{100 * hi:.1f}, avg@2)" in out
    assert "steps              3 (6 optimizer updates)" in out
    assert "stopped by signal" not in out


def test_run_clock_counts_this_process_tokens(tmp_path: Path) -> None:
    clock = RunClock()
    clock.add({"perf/tokens_generated": 100.0, "perf/tokens_trained": 40.0})
    clock.add({"perf/tokens_generated": 50.0})  # a skipped step trains nothing
    summary = clock.summary(_trainer(tmp_path), None, None)
    assert (summary["steps_this_process"], summary["tokens_generated"], summary["tokens_trained"]) == (
        2,
        150,
        40,
    )
    assert summary["steps"] == 3 and summary["optimizer_updates"] == 6
    assert summary["heldout_before"] is None and summary["heldout_after"] is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_catches_the_signal_and_restores_the_handler(sig: signal.Signals, capsys) -> None:
    before = signal.getsignal(sig)
    stop = GracefulStop()
    with stop:
        assert not stop.requested
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill returns
        assert stop.requested
    assert signal.getsignal(sig) is before
    assert sig.name in capsys.readouterr().out


def test_progress_bar_disabled_and_enabled() -> None:
    with progress_bar(10, 4, enabled=False) as bar:
        assert bar.disable
    with progress_bar(10, 4, enabled=True) as bar:
        assert not bar.disable and bar.n == 4 and bar.total == 10
