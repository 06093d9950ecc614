"""Reward worker processes: each imports the reward function once, warms it up, reports ready, then
scores one item at a time over a pipe. :class:`WorkerPool` hands items to ready workers with a
deadline each, kills (SIGKILL) a worker that passes its deadline or dies and starts a fresh one,
so a hanging verifier costs at most the timeout. See :mod:`dapo_rl.rewards.runner` for the
guarantees and the failure accounting."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from dapo_rl.errors import UserCodeError
from dapo_rl.rewards.builtin import RewardFn
from dapo_rl.rewards.calling import Outcome, call_reward, resolve_reward_fn
from dapo_rl.rewards.traits import get_traits


def worker_main(conn: Connection, fn_ref: str | RewardFn) -> None:
    """Worker process: resolve and warm up the function, then score items until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        fn = resolve_reward_fn(fn_ref)
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
            reply: tuple[Any, ...] = ("ok", idx, call_reward(fn, response, ground_truth, extra))
            conn.send(reply)
        except UserCodeError as exc:  # broke the contract (wrong type, exit): the run stops
            conn.send(("contract", idx, str(exc)))
        except Exception:
            conn.send(("err", idx, traceback.format_exc()))


@dataclass
class _Slot:
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    item: int | None = None
    deadline: float = math.inf


class WorkerPool:
    """``num_workers`` reward worker processes (started with ``start_method``) for ``fn_ref``."""

    def __init__(
        self,
        fn_ref: str | RewardFn,
        name: str,
        num_workers: int,
        timeout_s: float | None,
        startup_timeout_s: float,
        start_method: str = "spawn",
    ) -> None:
        self.fn_ref, self.name = fn_ref, name
        self.timeout_s, self.startup_timeout_s = timeout_s, startup_timeout_s
        self._ctx = mp.get_context(start_method)
        self.slots = [self._start_worker() for _ in range(num_workers)]

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        for slot in self.slots:
            self._stop_worker(slot, graceful=True)
        self.slots = []

    def _start_worker(self) -> _Slot:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(child_conn, self.fn_ref), daemon=True, name="dapo-reward-worker"
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
        self._stop_worker(self.slots[index], graceful=False)
        self.slots[index] = self._start_worker()

    def run(
        self, items: list[tuple[str, str, dict[str, Any]]], record: Callable[[Outcome], None]
    ) -> list[Outcome]:
        """Score ``items`` on the workers; ``record`` sees each outcome as it arrives (and may raise,
        which abandons the batch: busy workers are restarted)."""
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = deque(range(len(items)))
        remaining = len(items)
        try:
            while remaining:
                self._dispatch(items, pending)
                self._wait_for_events()
                for k in range(len(self.slots)):
                    for idx, outcome in self._collect(k):
                        outcomes[idx] = outcome
                        remaining -= 1
                        record(outcome)
                    for idx in self._check_deadlines(k):
                        outcomes[idx] = Outcome("timeout")
                        remaining -= 1
                        record(outcomes[idx])  # type: ignore[arg-type]
        except BaseException:
            # leave no worker busy with an item of an abandoned batch
            for k, slot in enumerate(self.slots):
                if slot.item is not None:
                    self._restart(k)
            raise
        return [o if o is not None else Outcome("error", error="lost item") for o in outcomes]

    def _dispatch(self, items: list[tuple[str, str, dict[str, Any]]], pending: deque[int]) -> None:
        for k, slot in enumerate(self.slots):
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
        deadlines = [s.deadline if s.ready else s.started + self.startup_timeout_s for s in self.slots]
        timeout = max(0.0, min(deadlines) - now) if deadlines else 0.0
        handles: list[Any] = [s.conn for s in self.slots] + [s.process.sentinel for s in self.slots]
        wait(handles, timeout=None if math.isinf(timeout) else timeout)

    def _collect(self, k: int) -> list[tuple[int, Outcome]]:
        """Read every message waiting from worker ``k``; handle its death."""
        slot = self.slots[k]
        done: list[tuple[int, Outcome]] = []
        try:
            while slot.conn.poll():
                msg = slot.conn.recv()
                if msg[0] == "ready":
                    slot.ready = True
                elif msg[0] == "fatal":
                    raise UserCodeError(
                        f"reward function {self.name!r} failed to start in its worker:\n{msg[1]}"
                    )
                elif msg[0] == "contract":
                    raise UserCodeError(msg[2])
                else:
                    kind, idx, payload = msg
                    if idx != slot.item:
                        continue  # cannot happen with one pipe per process; ignore defensively
                    slot.item = None
                    slot.deadline = math.inf
                    done.append(
                        (
                            idx,
                            Outcome("ok", result=payload)
                            if kind == "ok"
                            else Outcome("error", error=payload),
                        )
                    )
        except (EOFError, OSError):
            pass  # the pipe closed: handled as a death below
        if not slot.process.is_alive() or slot.conn.closed:
            code = slot.process.exitcode
            if not slot.ready:
                raise UserCodeError(
                    f"reward worker for {self.name!r} exited during start-up (exit code {code}); its "
                    "traceback is on stderr. With the 'spawn' start method the worker re-imports the "
                    "main script: guard its entry point with `if __name__ == '__main__':`"
                )
            if slot.item is not None and code is not None and code >= 0:  # not a signal: it chose to
                raise UserCodeError(
                    f"reward function {self.name!r} ended its worker process (exit code {code}) while "
                    "scoring: user code must return a value, not end the process"
                )
            if slot.item is not None:  # killed by a signal (a crash, the OOM killer): that item's error
                done.append((slot.item, Outcome("error", error=f"reward worker exited with code {code}")))
                slot.item = None
            self._restart(k)
        return done

    def _check_deadlines(self, k: int) -> list[int]:
        slot = self.slots[k]
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
