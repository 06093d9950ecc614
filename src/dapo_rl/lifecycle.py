"""A run's life: the progress bar, graceful stop on SIGINT/SIGTERM, and the summary at the end."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

from tqdm.auto import tqdm


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
        self.tokens_generated += metrics.get("perf/tokens_generated", 0.0)
        self.tokens_trained += metrics.get("perf/tokens_trained", 0.0)

    def summary(self, trainer: Any, first_eval: dict | None, final_eval: dict | None) -> dict[str, Any]:
        def acc(result: dict | None) -> dict | None:
            if not result:
                return None
            key = f"avg@{result['k']}"
            return {"metric": key, "mean": result["avg_at_k"]["mean"], "ci95": result["avg_at_k"]["ci95"]}

        return {
            "run_dir": str(trainer.run_dir),
            "steps": trainer.step,
            "steps_this_process": self.steps,
            "optimizer_updates": trainer.updates,
            "seconds": round(time.perf_counter() - self.start, 1),
            "tokens_generated": int(self.tokens_generated),
            "tokens_trained": int(self.tokens_trained),
            "heldout_before": acc(first_eval),
            "heldout_after": acc(final_eval),
            "stopped_early": trainer.stop.requested,
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
    print("\n".join(lines))


class GracefulStop:
    """While active, SIGINT/SIGTERM set ``requested`` instead of killing the process, so the loop can
    finish its step, write a checkpoint and exit cleanly. A no-op outside the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
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
