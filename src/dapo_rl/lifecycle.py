"""A run's life: the progress bar, SIGINT/SIGTERM from the first line of ``dapo train`` to its exit
(:func:`stop_on_signals`, :class:`GracefulStop`), and the summary at the end."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dapo_rl import metric_names as M
from dapo_rl.errors import Interrupted
from dapo_rl.health.ledger import format_shares, ledger_shares


def quiet_third_party() -> None:
    """Our progress bar is the only one: transformers' "Loading weights" / "Writing model shards"
    bars are switched off (its warnings stay)."""
    from transformers.utils import logging as hf_logging  # deferred: lifecycle stays light to import

    hf_logging.disable_progress_bar()


def _heldout(mean: float | None, ci95: list[float] | None, k: int | None) -> dict | None:
    return None if mean is None else {"metric": f"avg@{k}", "mean": mean, "ci95": ci95}


def run_story(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run's ``metrics.jsonl`` says over ALL its processes (a resumed run included): total
    generated and trained tokens, and the first held-out evaluation."""
    first = next((r for r in records if isinstance(r.get(M.EVAL_AVG_AT_K), (int, float))), None)
    before = None
    if first is not None:
        lo, hi = first.get(M.ci95_low(M.EVAL_AVG_AT_K)), first.get(M.ci95_high(M.EVAL_AVG_AT_K))
        ci95 = [lo, hi] if lo is not None and hi is not None else None
        before = _heldout(first[M.EVAL_AVG_AT_K], ci95, first.get(M.eval_key("k")))
    return {
        "tokens_generated": sum(r.get(M.PERF_TOKENS_GENERATED, 0.0) for r in records),
        "tokens_trained": sum(r.get(M.PERF_TOKENS_TRAINED, 0.0) for r in records),
        "heldout_before": before,
        "ledger_shares": ledger_shares(records),
    }


def finished_summary(run_dir: Path, step: int, total_steps: int, announce: bool) -> dict[str, Any] | None:
    """The summary of a resumed run that already reached ``total_steps`` and wrote it (None when
    there is training left); ``announce`` prints that there is nothing to do."""
    path = Path(run_dir) / "summary.json"
    if step < total_steps or not path.is_file():
        return None
    done = json.loads(path.read_text())
    if done.get("steps") != step or done.get("stopped_early"):
        return None
    if announce:
        print(
            f"{run_dir} already finished at step {step} (train.total_steps={total_steps}): "
            "nothing to do; raise train.total_steps to train further"
        )
    return done


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc="dapo train", unit="step", disable=not enabled, dynamic_ncols=True
    )


class RunClock:
    """Wall time and token counts of the steps run in this process."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps = 0
        self.tokens_generated = 0.0
        self.tokens_trained = 0.0

    def add(self, metrics: dict[str, float]) -> None:
        self.steps += 1
        self.tokens_generated += metrics.get(M.PERF_TOKENS_GENERATED, 0.0)
        self.tokens_trained += metrics.get(M.PERF_TOKENS_TRAINED, 0.0)

    def summary(
        self,
        trainer: Any,
        first_eval: dict | None,
        final_eval: dict | None,
        history: list[dict] | None = None,
    ) -> dict[str, Any]:
        """The run's summary. ``history`` (the records of ``metrics.jsonl``, all processes of a
        resumed run) gives the token totals and the first evaluation; without it, this process's."""

        def acc(result: dict | None) -> dict | None:
            if not result:
                return None
            return _heldout(result["avg_at_k"]["mean"], result["avg_at_k"]["ci95"], result["k"])

        story = run_story(history) if history else None
        generated = story["tokens_generated"] if story else self.tokens_generated
        trained = story["tokens_trained"] if story else self.tokens_trained
        before = acc(first_eval) or (story["heldout_before"] if story else None)

        return {
            "run_dir": str(trainer.run_dir),
            "steps": trainer.step,
            "steps_this_process": self.steps,
            "optimizer_updates": trainer.updates,
            "seconds": round(time.perf_counter() - self.start, 1),
            "tokens_generated": int(generated),
            "tokens_trained": int(trained),
            "heldout_before": before,
            "heldout_after": acc(final_eval),
            "stopped_early": trainer.stop.requested,
            "stopped_by": signal.Signals(trainer.stop.signum).name if trainer.stop.signum else None,
            "ledger_shares": story["ledger_shares"] if story else {},  # docs/health.md
        }


def _fmt(acc: dict | None) -> str:
    if not acc:
        return "n/a"
    if not acc["ci95"]:  # fewer than two problems
        return f"{100 * acc['mean']:.1f}%  ({acc['metric']})"
    lo, hi = acc["ci95"]
    return f"{100 * acc['mean']:.1f}%  (95% CI {100 * lo:.1f}-{100 * hi:.1f}, {acc['metric']})"


def print_summary(summary: dict[str, Any]) -> None:
    lines = [
        "",
        "DAPO run finished"
        + (" (stopped by signal, checkpoint written)" if summary["stopped_early"] else ""),
        f"  run directory      {summary['run_dir']}",
        f"  steps              {summary['steps']} ({summary['optimizer_updates']} optimizer updates)",
        f"  time               {summary['seconds']:.0f} s",
        f"  tokens             {summary['tokens_generated']:,} generated, {summary['tokens_trained']:,} trained",
        f"  held-out before    {_fmt(summary['heldout_before'])}",
        f"  held-out after     {_fmt(summary['heldout_after'])}",
    ]
    if summary.get("ledger_shares"):
        lines.append(f"  response tokens    {format_shares(summary['ledger_shares'], 0.0005)}")
    print("\n".join(lines))


class GracefulStop:
    """While active, SIGINT/SIGTERM set ``requested`` instead of killing the process, so the loop can
    finish its step, write a checkpoint and exit cleanly. A no-op outside the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal seen by this process (another rank's: None)
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.signum = signum
        print(
            f"\nreceived {signal.Signals(signum).name}: finishing this step, then checkpointing", flush=True
        )

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


_RUN: dict[str, Any] = {}


def note_run_dir(path: Path, fresh: bool = False) -> None:
    """Remember this process's run directory (what a stop message points to); ``fresh``: this
    process created it (a run that fails before opening it leaves nothing behind)."""
    _RUN["dir"], _RUN["fresh"] = Path(path), fresh or (_RUN.get("dir") == Path(path) and _RUN.get("fresh"))


def created_run_dir() -> bool:
    """Whether this process created its run directory."""
    return bool(_RUN.get("fresh"))


def current_run_dir() -> Path | None:
    """The run directory this process opened, if any."""
    return _RUN.get("dir")


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise :class:`~dapo_rl.errors.Interrupted` (a ``BaseException``:
    user code's ``except Exception`` does not swallow it), which ``dapo train`` reports in one line
    with exit code 130/143. Inside the step loop :class:`GracefulStop` takes over and the step ends
    with a checkpoint instead. The previous handlers come back at the end."""
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            old[sig] = signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
