"""Where the trainer's batches come from: ONE small interface, two sources.

:class:`BatchSource`: ``next_batch(step)`` returns the step's :class:`StepBatch`; ``publish(version,
changed)`` hands the weights after step ``version`` to whatever generates; ``state_dict`` /
``local_state_dict`` / ``load_state_dict`` go into and come out of checkpoints; ``start`` and ``close``.

- :class:`SyncSource` (``async.max_staleness: 0``): today's loop. The trainer's own engine generates
  each batch from the live policy; publishing is ``engine.sync_weights()``.
- :class:`AsyncSource`: a :class:`~dapo_rl.async_rollout.worker.RolloutWorker` makes the batches
  ahead, in a spawned process (``async.overlap``) or serially in this one (the same schedule, the
  test oracle). It retains each published version until the worker has moved past it, so a
  checkpoint holds everything to continue exactly: the batches already generated for later steps,
  the worker's state after the last of them, and any older weights the next batches still need.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import pickle
import queue
import sys
import time
from typing import Any, Protocol

import torch

from dapo_rl import metric_names as M
from dapo_rl.async_rollout.producer import BatchProducer, StepBatch
from dapo_rl.async_rollout.schedule import needed, staleness_metrics, version_for_step
from dapo_rl.async_rollout.worker import RolloutWorker, WorkerSpec, worker_main
from dapo_rl.errors import RolloutWorkerError, UsageError
from dapo_rl.models.lora import merged_weights

POLL_S = 0.2


class BatchSource(Protocol):
    def start(self, step: int) -> None: ...
    def next_batch(self, step: int) -> StepBatch: ...
    def publish(self, version: int, changed: bool) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def local_state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def close(self, force: bool = False) -> None: ...


def build_source(t: Any, reward_fn: Any, model_path: str) -> BatchSource:
    """The source for trainer ``t`` (its config, engine, data, reward runner, collector, ranks)."""
    if t.cfg.async_.active and (t.dist.world_size > 1 or t.dist.group):
        raise UsageError(
            "asynchronous rollouts (async.max_staleness > 0 or async.enable) run in one process plus its "
            f"rollout worker; this run has {t.dist.world_size} rank(s) under torch.distributed (torchrun or "
            "Ray). Set async.max_staleness=0, or run in one process (docs/async.md)"
        )
    producer = BatchProducer(
        t.cfg, t.engine, t.policy, t.encode, t.dataset, t.reward, t.collector, t.eos_ids, t.dist
    )
    if not t.cfg.async_.active:
        return SyncSource(producer, t.engine)
    return AsyncSource(t.cfg, t.model, producer, reward_fn, model_path, str(t.device))


def trainer_engine_config(cfg: Any) -> Any:
    """The config of the trainer's own engine: with the rollout worker the trainer only evaluates,
    with the hf engine on its live policy (a vllm engine lives in the worker, not colocated)."""
    if not cfg.async_.active or cfg.rollout.engine == "hf":
        return cfg
    out = cfg.model_copy(deep=True)
    out.rollout.engine = "hf"
    return out


class SyncSource:
    """Today's synchronous loop: generate with the trainer's engine, then train, then sync."""

    def __init__(self, producer: BatchProducer, engine: Any) -> None:
        self.producer, self.engine = producer, engine

    def start(self, step: int) -> None:
        pass

    def next_batch(self, step: int) -> StepBatch:
        return self.producer.produce(step, step - 1)

    def publish(self, version: int, changed: bool) -> None:
        if changed:
            self.engine.sync_weights()

    def state_dict(self) -> dict[str, Any]:
        return {"dataset": self.producer.dataset.state_dict()}

    def local_state_dict(self) -> dict[str, Any]:
        return {"collector": self.producer.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "async" in state and state["async"]["pending"]:
            raise UsageError(
                "this checkpoint holds batches the rollout worker generated ahead (async.max_staleness="
                f"{state['async']['max_staleness']}); resume it with the same async.max_staleness"
            )
        self.producer.load_state_dict(state["async"]["worker"] if "async" in state else state)

    def close(self, force: bool = False) -> None:
        pass


class AsyncSource:
    """Batches from a rollout worker, at most ``async.max_staleness`` versions behind."""

    def __init__(
        self,
        cfg: Any,
        model: torch.nn.Module,
        producer: BatchProducer,
        reward_fn: Any,
        model_path: str,
        device: str,
    ) -> None:
        a = cfg.async_
        self.cfg, self.eta, self.model, self.collector = cfg, a.max_staleness, model, producer.collector
        self.total = cfg.train.total_steps
        threads = a.worker_threads or max(1, (os.cpu_count() or 2) - (cfg.train.num_threads or 1))
        self.spec = WorkerSpec(
            cfg, model_path, device, producer.dataset, producer.encode, reward_fn, producer.collector,
            producer.eos_ids, producer.state_dict(), 1, threads,
        )  # fmt: skip
        self.pending: dict[int, StepBatch] = {}
        self.received = 0  # the last batch received (or generated serially)
        self.published: dict[int, dict[str, torch.Tensor]] = {}  # retained until the worker moved past
        self.worker: RolloutWorker | None = None  # serial mode
        self.serial_versions: dict[int, dict[str, torch.Tensor]] = {}  # serial mode: the worker's inbox
        self.proc: Any = None
        self.started, self.trained, self.lost = False, 0, None

    # ---- the interface -------------------------------------------------------------------------
    def start(self, step: int) -> None:
        """Start the worker after a (re)start at ``step``: it continues after the last batch received,
        with the retained older versions, then the current weights as version ``step``."""
        if self.started:
            return
        self.started, self.trained = True, step
        self.spec.start_batch = self.received + 1
        if self.cfg.async_.overlap:
            _check_picklable(self.spec)
            ctx = multiprocessing.get_context("spawn")
            self.commands, self.results = ctx.Queue(), ctx.Queue()
            self.proc = ctx.Process(
                target=worker_main, args=(self.spec, self.commands, self.results, os.getpid(), self.total),
                name="dapo-rollout-worker", daemon=True,
            )  # fmt: skip
            self.proc.start()
            self.last_heard = time.monotonic()
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.spec.threads)
            try:
                self.worker = RolloutWorker(copy.deepcopy(self.spec))  # as the process gets a copy
            finally:
                torch.set_num_threads(threads)
        for version in sorted(self.published):
            self._send(version, self.published[version])
        self.publish(step, True)

    def next_batch(self, step: int) -> StepBatch:
        self.start(step - 1)
        start = time.perf_counter()
        self._until(step)
        wait = time.perf_counter() - start
        batch = self.pending.pop(step)
        self.collector.buffer = list(batch.carried)  # the worker's carry-over after it (ledger)
        for version in [v for v in self.published if v < batch.version]:
            del self.published[version]  # the worker never goes back to it
        batch.metrics |= staleness_metrics(step, (g.version for g in batch.collected.groups), self.eta)
        batch.metrics |= {
            M.ASYNC_VERSION: float(batch.version),
            M.ASYNC_TRAINER_WAIT: wait,
            M.ASYNC_QUEUE_DEPTH: float(len(self.pending)),
        }
        return batch

    def publish(self, version: int, changed: bool) -> None:
        """Hand the weights after step ``version`` to the worker (every version the run can use)."""
        self.trained = version
        if not needed(version, self.eta, self.total, self.cfg.async_.pin_versions):
            return
        with torch.no_grad():
            weights = {name: p.detach().to("cpu", copy=True) for name, p in merged_weights(self.model)}
        self.published[version] = weights
        if self.started:
            self._send(version, weights)

    def state_dict(self) -> dict[str, Any]:
        """The batches generated for later steps (first waiting for those the next step's version
        allows, so a regular checkpoint needs no older weights), the worker's state after the last
        of them, and the older versions the next batches still need (only after a worker loss)."""
        step = self.trained
        if self.started and self.lost is None:
            with contextlib.suppress(RolloutWorkerError):  # save what there is, with older weights
                self._until(min(step + self.eta, self.total))
        first = version_for_step(self.received + 1, self.eta)
        versions = {v: w for v, w in self.published.items() if first <= v < step}
        return {
            "async": {
                "max_staleness": self.eta,
                "pending": dict(self.pending),
                "received": self.received,
                "worker": self.spec.state,
                "versions": versions,
            }
        }

    def local_state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("async")
        if saved is None:  # a synchronous run's checkpoint: continue from its data position
            self.spec.state = {"dataset": state["dataset"], "collector": state["collector"]}
            self.received = state["step"]
            return
        if saved["pending"] and saved["max_staleness"] != self.eta:
            raise UsageError(
                f"this checkpoint holds batches generated ahead under async.max_staleness="
                f"{saved['max_staleness']}; resume it with the same value (not {self.eta})"
            )
        self.pending, self.received = dict(saved["pending"]), saved["received"]
        self.spec.state, self.published = saved["worker"], dict(saved["versions"])

    def close(self, force: bool = False) -> None:
        """Stop the worker: asked to stop and given 30 s, or with ``force`` (the trainer failed, the
        worker may be hung or stopped) killed at once."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.proc is not None:
            if force and self.proc.is_alive():
                self.proc.kill()
                self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.commands.put(("stop",))
                deadline = time.monotonic() + 30
                while self.proc.is_alive() and time.monotonic() < deadline:
                    with contextlib.suppress(queue.Empty):  # a child exits once its queue is read
                        self.results.get(timeout=POLL_S)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout=10)
            self.proc = None

    # ---- the worker ----------------------------------------------------------------------------
    def _send(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        if self.worker is not None:
            self.serial_versions[version] = weights
        elif self.proc is not None:
            self.commands.put(("weights", version, weights))

    def _until(self, step: int) -> None:
        """Receive (or, serially, generate) batches until the one of ``step`` is here."""
        while self.received < step:
            if self.worker is not None:
                self._generate_serially()
            else:
                self._receive()

    def _generate_serially(self) -> None:
        w = self.worker
        assert w is not None
        held = self.serial_versions
        usable = [v for v in held if v >= w.needed_version()]
        version = min(usable) if self.cfg.async_.pin_versions else max(usable)
        if version != w.version:
            w.load_weights(version, held[version])
        for v in [v for v in held if v < version]:
            del held[v]
        threads = torch.get_num_threads()
        torch.set_num_threads(self.spec.threads)
        try:
            batch = w.produce()
        finally:
            torch.set_num_threads(threads)
        batch.metrics |= {M.ASYNC_ROLLOUT_WAIT: 0.0, M.ASYNC_IDLE_RATIO_ROLLOUT: 0.0}
        self._arrived(batch, w.state_dict())

    def _arrived(self, batch: StepBatch, state: dict[str, Any]) -> None:
        batch.carried = state["collector"]["buffer"]
        self.pending[batch.step] = batch
        self.received, self.spec.state = batch.step, state

    def _receive(self) -> None:
        """One message from the worker process; raises when it died or fell silent."""
        heartbeat = self.cfg.async_.heartbeat_s
        try:
            message = self.results.get(timeout=min(POLL_S, heartbeat))
        except queue.Empty:
            message = None
        if message is None:
            code = self.proc.exitcode
            silent = time.monotonic() - self.last_heard
            if code is not None or silent > heartbeat:
                self.lost = self._loss_message(code, silent)
                raise RolloutWorkerError(self.lost)
            return
        self.last_heard = time.monotonic()
        kind = message[0]
        if kind == "beat" and message[1] is not None and message[1] > self.trained:
            raise RuntimeError(  # cannot happen: batch s needs a version <= s - 1, published already
                f"internal error: the trainer waits for the batch of step {self.received + 1} while the "
                f"rollout worker waits for weights version {message[1]}, not published yet (step {self.trained})"
            )
        if kind == "batch":
            self._arrived(message[1], message[2])
        elif kind == "error":
            print(f"rollout worker failed:\n{message[2]}", file=sys.stderr, flush=True)
            self.lost = "failed"
            raise message[1]

    def _loss_message(self, code: int | None, silent: float) -> str:
        step = self.received + 1
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            what = f"the rollout worker (pid {self.proc.pid}) died ({how})"
        else:
            what = (
                f"the rollout worker (pid {self.proc.pid}) sent nothing for {silent:.0f} s "
                f"(async.heartbeat_s={self.cfg.async_.heartbeat_s:g}): it is hung"
            )
            self.proc.kill()
        return (
            f"{what} while generating the batch of step {step}; the run stops with a checkpoint that "
            "resumes exactly: dapo train --resume RUN_DIR"
        )


def _check_picklable(spec: WorkerSpec) -> None:
    """The worker process gets its reward function, filter and template by pickling: a lambda or a
    function defined inside another cannot travel; say so instead of a pickling traceback."""
    for what, obj in (("reward function", spec.reward_fn), ("group filter", spec.collector.user_filter),
                      ("prompt template", getattr(spec.encode, "template", None))):  # fmt: skip
        try:
            pickle.dumps(obj)
        except Exception as exc:
            raise UsageError(
                f"the rollout worker process cannot receive the {what} {obj!r} ({exc}): pass a function "
                "defined at the top level of a module (or a registered name / module:function), or run "
                "the schedule in this process with async.overlap=false"
            ) from None
