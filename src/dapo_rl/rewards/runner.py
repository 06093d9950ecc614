"""Score a batch of responses with a reward function, under a per-item timeout that cannot stall
training, and count every failure.

Two execution modes, chosen by ``isolate`` (default: True for ``math_verify`` and for user code
named by import path in the config or on the command line, which opts in to the calling process
with ``reward_traits(isolate=False)``; False for the cheap regex checkers and for Python callables
passed to the runner, unless their traits say otherwise):

- **Isolated** (``isolate=True``): ``num_workers`` persistent worker processes, started with the
  ``spawn`` method (safe next to torch and threads). Each worker imports the function once, runs its
  warm-up, reports ready, then scores one item at a time over a pipe. The parent waits on all pipes
  with a deadline per busy worker; a worker that passes its deadline is killed (SIGKILL) and a fresh
  one is started in the background, so a hanging sympy call costs at most ``timeout_s``. A worker
  that dies (segfault, ``os._exit``) counts as an error for its item and is restarted. The per-item
  clock starts when the item is handed to a ready worker, so start-up and imports are never charged
  to an item. A function given as a callable must be picklable (defined at module level).
- **In-process** (``isolate=False``): the function runs in the calling thread, no IPC. When that is
  the main thread on a POSIX system, each item is guarded by ``signal.setitimer``: the alarm raises
  an exception (derived from ``BaseException``, so ``except Exception`` in the function cannot
  swallow it) that ends the item as a timeout. Elsewhere (another thread, Windows) there is no
  guard, so only cheap, non-hanging functions belong here. Pure-C work that never returns to the
  interpreter cannot be interrupted this way.

Failure accounting (habit 8 of docs/architecture.md, "rewards fail loudly"):

- a timeout is a wrong answer (``score`` = the function's wrong-answer score: -1 for ``math_dapo``
  and ``synthetic``, 0 for ``math_verify`` and ``gsm8k``, 0 for user functions unless they are
  decorated with :func:`~dapo_rl.rewards.traits.reward_traits` or ``wrong_score`` is passed) and is
  counted in ``reward/timeouts``;
- an exception (or a return value that is not a :class:`RewardResult` with a finite score) is a
  wrong answer counted in ``reward/errors``, its traceback kept in ``info["error"]``;
- if every item of a batch raised, :meth:`RewardRunner.score_batch` raises
  :class:`~dapo_rl.errors.UserCodeError` (exit code 2) with the first traceback; after
  ``max_consecutive_failures`` failed items in a row (timeouts or errors, across batches) it
  raises as well;
- a broken contract stops the run at once with a ``UserCodeError`` naming the function: a return
  value of the wrong type, a score beyond float32, ``sys.exit``/``os._exit`` (in a worker: the
  worker ending with an exit code rather than a signal). numpy/torch scalars are numbers.

EOS: when ``eos_text`` is given, trailing copies of it are stripped from each response before
scoring. Extras: ``fn(response, ground_truth, **extra)``; keys named ``response`` or
``ground_truth`` in an extra dict are dropped, since those names are the positional parameters.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from dapo_rl.errors import UserCodeError
from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.builtin import RewardFn
from dapo_rl.rewards.calling import (
    NO_EXTRACTED_ANSWER,
    Outcome,
    as_reward_result,
    call_reward,
    resolve_reward_fn,
)
from dapo_rl.rewards.traits import _ATTR as TRAITS_ATTR
from dapo_rl.rewards.traits import get_traits
from dapo_rl.rewards.workers import WorkerPool
from dapo_rl.usercode import UserFunction

__all__ = ["NO_EXTRACTED_ANSWER", "RewardRunner", "as_reward_result"]


def _isolate_by_default(fn: str | RewardFn, traits_isolate: bool) -> bool:
    """User code named by import path (config, command line) runs in worker processes unless its
    ``reward_traits(isolate=False)`` opts in to the calling process; a registered reward or a
    Python callable follows its traits."""
    if isinstance(fn, UserFunction):
        return traits_isolate if hasattr(fn.fn, TRAITS_ATTR) else True
    return traits_isolate


class _ItemTimeout(BaseException):
    """Raised by the in-process SIGALRM guard; a BaseException so ``except Exception`` misses it."""


def _raise_item_timeout(signum: int, frame: Any) -> None:
    raise _ItemTimeout


class RewardRunner:
    """Scores batches with one reward function; see the module docstring for the guarantees.

    Args:
        fn: a registered name (see ``dapo_rl.rewards.REWARDS``) or a callable
            ``fn(response, ground_truth, **extra) -> RewardResult``.
        timeout_s: per-item time limit in seconds (None or <= 0: no limit).
        num_workers: worker processes when isolated (ignored in-process).
        eos_text: text stripped from the end of every response before scoring.
        max_consecutive_failures: raise after this many failed items in a row (None: never).
        isolate: run in worker subprocesses; None takes the function's default.
        wrong_score: the score given to timed-out or failed items; None takes the function's.
        start_method: multiprocessing start method for workers ("spawn" or "forkserver").
        startup_timeout_s: how long a worker may take to import and warm up before it is an error.
    """

    def __init__(
        self,
        fn: str | RewardFn,
        timeout_s: float | None = 10.0,
        num_workers: int = 1,
        eos_text: str | None = None,
        max_consecutive_failures: int | None = 64,
        isolate: bool | None = None,
        wrong_score: float | None = None,
        start_method: str = "spawn",
        startup_timeout_s: float = 120.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if max_consecutive_failures is not None and max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be >= 1 or None, got {max_consecutive_failures}")
        self._fn = resolve_reward_fn(fn)
        self._fn_ref: str | RewardFn = fn
        self.name = fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))
        traits = get_traits(self._fn)
        self.isolate = _isolate_by_default(fn, traits.isolate) if isolate is None else bool(isolate)
        self.wrong_score = traits.wrong_score if wrong_score is None else float(wrong_score)
        self.timeout_s = timeout_s if timeout_s is not None and timeout_s > 0 else None
        self.num_workers = num_workers
        self.eos_text = eos_text or None
        self.max_consecutive_failures = max_consecutive_failures
        self.startup_timeout_s = startup_timeout_s
        self._consecutive_failures = 0
        self._closed = False
        self._pool: WorkerPool | None = None
        if self.isolate:
            if not isinstance(fn, str):
                try:
                    pickle.dumps(fn)
                except Exception as exc:
                    raise ValueError(
                        f"reward function {self.name!r} cannot be pickled for worker processes "
                        "(define it at module level), or pass isolate=False"
                    ) from exc
            self._pool = WorkerPool(
                fn, self.name, num_workers, self.timeout_s, startup_timeout_s, start_method
            )

    # ----------------------------------------------------------------------------------- public API
    def score_batch(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        extras: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[RewardResult], dict[str, float]]:
        """Score ``responses[i]`` against ``ground_truths[i]`` (with ``extras[i]`` as keywords).

        Returns one :class:`RewardResult` per response, in order, and batch metrics:
        ``reward/score_mean``, ``reward/acc_mean``, ``reward/no_answer_rate`` (pred None, failures
        included), ``reward/timeouts``, ``reward/errors`` (counts) and ``reward/seconds``.
        Raises ``RuntimeError`` when every item raised or too many items failed in a row.
        """
        if self._closed:
            raise RuntimeError("RewardRunner is closed")
        n = len(responses)
        if len(ground_truths) != n or (extras is not None and len(extras) != n):
            raise ValueError(
                f"score_batch got {n} responses, {len(ground_truths)} ground truths and "
                f"{'no' if extras is None else len(extras)} extras; the lengths must match"
            )
        t0 = time.perf_counter()
        items = [
            (self._strip_eos(r), str(g), dict(extras[i]) if extras is not None else {})
            for i, (r, g) in enumerate(zip(responses, ground_truths))
        ]
        if self._pool is not None:
            outcomes = self._pool.run(items, self._record)
        else:
            outcomes = self._run_in_process(items)
        return self._assemble(outcomes, time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> RewardRunner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------------------------- helpers
    def _strip_eos(self, response: str) -> str:
        if self.eos_text:
            while response.endswith(self.eos_text):
                response = response[: -len(self.eos_text)]
        return response

    def _record(self, outcome: Outcome) -> None:
        """Update the consecutive-failure counter; raise when it reaches the limit."""
        if outcome.kind == "ok":
            self._consecutive_failures = 0
            return
        self._consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit is not None and self._consecutive_failures >= limit:
            self._consecutive_failures = 0
            detail = outcome.error or f"timed out after {self.timeout_s} s"
            raise UserCodeError(
                f"reward function {self.name!r}: {limit} items in a row timed out or raised; "
                f"the last one: {detail}"
            )

    def _assemble(
        self, outcomes: list[Outcome], seconds: float
    ) -> tuple[list[RewardResult], dict[str, float]]:
        results: list[RewardResult] = []
        timeouts = errors = 0
        first_error: str | None = None
        for out in outcomes:
            if out.kind == "ok" and out.result is not None:
                results.append(out.result)
            elif out.kind == "timeout":
                timeouts += 1
                results.append(RewardResult(self.wrong_score, False, None, {"timeout": True}))
            else:
                errors += 1
                first_error = first_error or out.error
                results.append(RewardResult(self.wrong_score, False, None, {"error": out.error}))
        n = len(results)
        if n and errors == n:
            raise UserCodeError(
                f"reward function {self.name!r} raised on every one of the {n} items of the batch; "
                f"first traceback:\n{first_error}"
            )
        metrics = {
            "reward/score_mean": sum(r.score for r in results) / n if n else 0.0,
            "reward/acc_mean": sum(bool(r.acc) for r in results) / n if n else 0.0,
            "reward/no_answer_rate": sum(r.pred is None for r in results) / n if n else 0.0,
            "reward/timeouts": float(timeouts),
            "reward/errors": float(errors),
            "reward/seconds": seconds,
        }
        return results, metrics

    # ------------------------------------------------------------------------------ in-process path
    def _run_in_process(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[Outcome]:
        guard = (
            self.timeout_s is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0  # never clobber someone else's timer
        )
        previous = signal.signal(signal.SIGALRM, _raise_item_timeout) if guard else None
        outcomes: list[Outcome] = []
        try:
            for response, ground_truth, extra in items:
                outcome = (
                    self._guarded_call(response, ground_truth, extra)
                    if guard
                    else self._plain_call(response, ground_truth, extra)
                )
                outcomes.append(outcome)
                self._record(outcome)
        finally:
            if guard:
                signal.signal(signal.SIGALRM, previous)
        return outcomes

    def _plain_call(self, response: str, ground_truth: str, extra: dict[str, Any]) -> Outcome:
        try:
            return Outcome("ok", call_reward(self._fn, response, ground_truth, extra))
        except UserCodeError:
            raise  # a broken contract stops the run (exit code 2), it is no item's error
        except Exception:
            return Outcome("error", error=traceback.format_exc())

    def _guarded_call(self, response: str, ground_truth: str, extra: dict[str, Any]) -> Outcome:
        """One call under an ITIMER_REAL alarm (the SIGALRM handler is installed by the caller)."""
        assert self.timeout_s is not None
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                return self._plain_call(response, ground_truth, extra)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0.0)
        except _ItemTimeout:
            return Outcome("timeout")
