"""Score a batch of responses with a reward function, under a per-item timeout that cannot stall
training, and count every failure.

Two execution modes, chosen by ``isolate`` (default: the function's traits, i.e. True for
``math_verify`` and False for the cheap regex checkers and undecorated user functions):

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
- if every item of a batch raised, :meth:`RewardRunner.score_batch` raises ``RuntimeError`` with
  the first traceback; after ``max_consecutive_failures`` failed items in a row (timeouts or errors,
  across batches) it raises as well.

EOS: when ``eos_text`` is given, trailing copies of it are stripped from each response before
scoring. Extras: ``fn(response, ground_truth, **extra)``; keys named ``response`` or
``ground_truth`` in an extra dict are dropped, since those names are the positional parameters.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import multiprocessing as mp
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import get_traits

RewardFn = Callable[..., RewardResult]
_RESERVED_EXTRA_KEYS = frozenset({"response", "ground_truth"})


def _resolve(fn: str | RewardFn) -> RewardFn:
    if isinstance(fn, str):
        from dapo_rl.rewards import REWARDS  # deferred: the package imports this module

        return REWARDS.get(fn)
    if not callable(fn):
        raise TypeError(f"reward function must be a registered name or a callable, got {fn!r}")
    return fn


def _accepted_extras(fn: RewardFn) -> frozenset[str] | None:
    """Names of the extra fields ``fn`` takes, or None when it takes ``**extra`` (all of them)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


NO_EXTRACTED_ANSWER = "no_extracted_answer"
"""``info`` key of a result converted from a bare number, pair or dict: the reward function extracts
no answer, so evaluation reports maj@k and the invalid rate as unavailable rather than 0 and 1."""


def as_reward_result(value: Any) -> RewardResult:
    """Accept what a user reward may return: RewardResult, a number (acc = score > 0), a
    ``(score, acc)`` pair or a ``{"score", "acc"}`` dict (the last three marked
    :data:`NO_EXTRACTED_ANSWER`)."""
    if isinstance(value, RewardResult):
        return value
    plain = {NO_EXTRACTED_ANSWER: True}
    if isinstance(value, bool):
        return RewardResult(score=float(value), acc=value, info=plain)
    if isinstance(value, (int, float)):
        return RewardResult(score=float(value), acc=float(value) > 0, info=plain)
    if isinstance(value, tuple) and len(value) == 2:
        return RewardResult(score=float(value[0]), acc=bool(value[1]), info=plain)
    if isinstance(value, dict) and "score" in value:
        acc = bool(value.get("acc", value["score"] > 0))
        return RewardResult(score=float(value["score"]), acc=acc, info=plain)
    raise TypeError(
        f"reward function returned {type(value).__name__} {value!r:.80}; expected RewardResult, a float, "
        "a (score, acc) tuple or a dict with 'score' and 'acc'"
    )


def _call(fn: RewardFn, response: str, ground_truth: str, extra: dict[str, Any]) -> RewardResult:
    """Call ``fn`` and check what it returned (raises on a bad return value)."""
    accepted = _accepted_extras(fn)
    kwargs = {
        k: v
        for k, v in extra.items()
        if k not in _RESERVED_EXTRA_KEYS and (accepted is None or k in accepted)
    }
    result = as_reward_result(fn(response, ground_truth, **kwargs))
    if not math.isfinite(result.score):
        raise ValueError(f"reward function returned a non-finite score {result.score!r}")
    return result


def _worker_main(conn: Connection, fn_ref: str | RewardFn) -> None:
    """Worker process: resolve and warm up the function, then score items until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        fn = _resolve(fn_ref)
        warmup = get_traits(fn).warmup
        if warmup is not None:
            warmup()
    except BaseException:
        conn.send(("fatal", traceback.format_exc()))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if msg is None:
            return
        idx, response, ground_truth, extra = msg
        try:
            reply: tuple[Any, ...] = ("ok", idx, _call(fn, response, ground_truth, extra))
            conn.send(reply)
        except Exception:
            conn.send(("err", idx, traceback.format_exc()))


class _ItemTimeout(BaseException):
    """Raised by the in-process SIGALRM guard; a BaseException so ``except Exception`` misses it."""


def _raise_item_timeout(signum: int, frame: Any) -> None:
    raise _ItemTimeout


@dataclass
class _Outcome:
    kind: str  # "ok" | "error" | "timeout"
    result: RewardResult | None = None
    error: str | None = None


@dataclass
class _Slot:
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    item: int | None = None
    deadline: float = math.inf


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
        self._fn = _resolve(fn)
        self._fn_ref: str | RewardFn = fn
        self.name = fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))
        traits = get_traits(self._fn)
        self.isolate = traits.isolate if isolate is None else bool(isolate)
        self.wrong_score = traits.wrong_score if wrong_score is None else float(wrong_score)
        self.timeout_s = timeout_s if timeout_s is not None and timeout_s > 0 else None
        self.num_workers = num_workers
        self.eos_text = eos_text or None
        self.max_consecutive_failures = max_consecutive_failures
        self.startup_timeout_s = startup_timeout_s
        self.total_timeouts = 0
        self.total_errors = 0
        self._consecutive_failures = 0
        self._closed = False
        self._slots: list[_Slot] = []
        if self.isolate:
            if not isinstance(fn, str):
                try:
                    pickle.dumps(fn)
                except Exception as exc:
                    raise ValueError(
                        f"reward function {self.name!r} cannot be pickled for worker processes "
                        "(define it at module level), or pass isolate=False"
                    ) from exc
            self._ctx = mp.get_context(start_method)
            self._slots = [self._start_worker() for _ in range(num_workers)]

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
        outcomes = self._run_isolated(items) if self.isolate else self._run_in_process(items)
        return self._assemble(outcomes, time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            self._stop_worker(slot, graceful=True)
        self._slots = []

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

    def _record(self, outcome: _Outcome) -> None:
        """Update the consecutive-failure counter; raise when it reaches the limit."""
        if outcome.kind == "ok":
            self._consecutive_failures = 0
            return
        self._consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit is not None and self._consecutive_failures >= limit:
            self._consecutive_failures = 0
            detail = outcome.error or f"timed out after {self.timeout_s} s"
            raise RuntimeError(
                f"reward function {self.name!r}: {limit} items in a row timed out or raised; "
                f"the last one: {detail}"
            )

    def _assemble(
        self, outcomes: list[_Outcome], seconds: float
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
        self.total_timeouts += timeouts
        self.total_errors += errors
        n = len(results)
        if n and errors == n:
            raise RuntimeError(
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
    def _run_in_process(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[_Outcome]:
        guard = (
            self.timeout_s is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0  # never clobber someone else's timer
        )
        previous = signal.signal(signal.SIGALRM, _raise_item_timeout) if guard else None
        outcomes: list[_Outcome] = []
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

    def _plain_call(self, response: str, ground_truth: str, extra: dict[str, Any]) -> _Outcome:
        try:
            return _Outcome("ok", _call(self._fn, response, ground_truth, extra))
        except Exception:
            return _Outcome("error", error=traceback.format_exc())

    def _guarded_call(self, response: str, ground_truth: str, extra: dict[str, Any]) -> _Outcome:
        """One call under an ITIMER_REAL alarm (the SIGALRM handler is installed by the caller)."""
        assert self.timeout_s is not None
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                return self._plain_call(response, ground_truth, extra)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0.0)
        except _ItemTimeout:
            return _Outcome("timeout")

    # -------------------------------------------------------------------------------- isolated path
    def _start_worker(self) -> _Slot:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main, args=(child_conn, self._fn_ref), daemon=True, name="dapo-reward-worker"
        )
        process.start()
        child_conn.close()  # the child holds its own copy
        return _Slot(process=process, conn=parent_conn, started=time.monotonic())

    @staticmethod
    def _stop_worker(slot: _Slot, graceful: bool) -> None:
        if graceful and slot.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
            slot.process.join(timeout=1.0)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(timeout=5.0)
        slot.conn.close()

    def _restart(self, index: int) -> None:
        self._stop_worker(self._slots[index], graceful=False)
        self._slots[index] = self._start_worker()

    def _run_isolated(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(items)
        pending = deque(range(len(items)))
        remaining = len(items)
        try:
            while remaining:
                self._dispatch(items, pending)
                self._wait_for_events()
                for k in range(len(self._slots)):
                    for idx, outcome in self._collect(k):
                        outcomes[idx] = outcome
                        remaining -= 1
                        self._record(outcome)
                    for idx in self._check_deadlines(k, pending):
                        outcomes[idx] = _Outcome("timeout")
                        remaining -= 1
                        self._record(outcomes[idx])  # type: ignore[arg-type]
        except BaseException:
            # leave no worker busy with an item of an abandoned batch
            for k, slot in enumerate(self._slots):
                if slot.item is not None:
                    self._restart(k)
            raise
        return [o if o is not None else _Outcome("error", error="lost item") for o in outcomes]

    def _dispatch(self, items: list[tuple[str, str, dict[str, Any]]], pending: deque[int]) -> None:
        for k, slot in enumerate(self._slots):
            if not (pending and slot.ready and slot.item is None):
                continue
            idx = pending.popleft()
            try:
                slot.conn.send((idx, *items[idx]))
            except (OSError, ValueError):
                pending.appendleft(idx)  # the worker died while idle: restart, retry the item
                self._restart(k)
                continue
            slot.item = idx
            slot.deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else math.inf

    def _wait_for_events(self) -> None:
        now = time.monotonic()
        deadlines = [s.deadline if s.ready else s.started + self.startup_timeout_s for s in self._slots]
        timeout = max(0.0, min(deadlines) - now) if deadlines else 0.0
        handles: list[Any] = [s.conn for s in self._slots] + [s.process.sentinel for s in self._slots]
        wait(handles, timeout=None if math.isinf(timeout) else timeout)

    def _collect(self, k: int) -> list[tuple[int, _Outcome]]:
        """Read every message waiting from worker ``k``; handle its death."""
        slot = self._slots[k]
        done: list[tuple[int, _Outcome]] = []
        try:
            while slot.conn.poll():
                msg = slot.conn.recv()
                if msg[0] == "ready":
                    slot.ready = True
                elif msg[0] == "fatal":
                    raise RuntimeError(f"reward worker for {self.name!r} failed to start:\n{msg[1]}")
                else:
                    kind, idx, payload = msg
                    if idx != slot.item:
                        continue  # cannot happen with one pipe per process; ignore defensively
                    slot.item = None
                    slot.deadline = math.inf
                    done.append(
                        (
                            idx,
                            _Outcome("ok", result=payload)
                            if kind == "ok"
                            else _Outcome("error", error=payload),
                        )
                    )
        except (EOFError, OSError):
            pass  # the pipe closed: handled as a death below
        if not slot.process.is_alive() or slot.conn.closed:
            code = slot.process.exitcode
            if not slot.ready:
                raise RuntimeError(
                    f"reward worker for {self.name!r} exited during start-up (exit code {code}); its "
                    "traceback is on stderr. With the 'spawn' start method the worker re-imports the "
                    "main script: guard its entry point with `if __name__ == '__main__':`"
                )
            if slot.item is not None:
                done.append((slot.item, _Outcome("error", error=f"reward worker exited with code {code}")))
                slot.item = None
            self._restart(k)
        return done

    def _check_deadlines(self, k: int, pending: deque[int]) -> list[int]:
        slot = self._slots[k]
        now = time.monotonic()
        if not slot.ready and now - slot.started > self.startup_timeout_s:
            raise RuntimeError(
                f"reward worker for {self.name!r} did not start within {self.startup_timeout_s} s"
            )
        if slot.item is not None and now >= slot.deadline:
            idx = slot.item
            slot.item = None
            self._restart(k)
            return [idx]
        return []
