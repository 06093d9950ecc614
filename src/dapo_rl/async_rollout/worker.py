"""The rollout worker: its own copy of the policy's weights and its own rollout engine, making step
batches with :class:`~dapo_rl.async_rollout.producer.BatchProducer` (prompt sampling, generation,
rewards, overlong shaping, dynamic sampling) ahead of the trainer.

:class:`RolloutWorker` is the worker itself; :func:`worker_main` runs one in a spawned process (its
own ``torch.set_num_threads``), talking to :class:`~dapo_rl.async_rollout.source.AsyncSource` over
two queues:

- trainer -> worker ``commands``: ``("weights", version, {name: tensor})`` (shared memory, loaded
  between batches, never mid-batch) and ``("stop",)``;
- worker -> trainer ``results``: ``("ready",)``, ``("beat", waiting_for)`` every second (the
  heartbeat, with the weights version it is blocked on, if any),
  ``("batch", StepBatch, state_after)`` and ``("error", exception, traceback_text)``.

The batch of step ``b`` is generated with the weights of :func:`~dapo_rl.async_rollout.schedule.
version_for_step` (pinned) or the freshest published version that keeps the bound; the worker waits
for that version, so it is never more than ``max_staleness + 1`` batches ahead (the queue's bound).
A worker whose trainer is gone (SIGKILL) notices within a second and exits.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dapo_rl import metric_names as M
from dapo_rl.async_rollout.producer import BatchProducer, StepBatch
from dapo_rl.async_rollout.schedule import version_for_step
from dapo_rl.batch import PolicyModule
from dapo_rl.distributed import DistContext
from dapo_rl.models.loading import compute_dtype, load_model_and_tokenizer
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout.factory import build_engine

BEAT_S = 1.0


@dataclass
class WorkerSpec:
    """Everything a worker is built from (pickled into the spawned process)."""

    cfg: Any
    model_path: str
    device: str
    dataset: Any
    encode: Any
    reward_fn: Any
    collector: Any
    eos_ids: list[int]
    state: dict[str, Any] | None
    start_batch: int
    threads: int


class RolloutWorker:
    """A copy of the policy (float32 weights, the trainer's compute dtype) with its own engine and
    producer; ``version`` is the weights version it holds (-1 before the first)."""

    def __init__(self, spec: WorkerSpec) -> None:
        cfg = spec.cfg
        self.cfg, self.eta = cfg, cfg.async_.max_staleness
        base = cfg.model_copy(deep=True)  # the architecture only: weights arrive as versions
        base.model.lora.rank, base.model.gradient_checkpointing = 0, False
        model, tokenizer = load_model_and_tokenizer(Path(spec.model_path), base, torch.device(spec.device))
        model.requires_grad_(False)
        self.model = model
        self.policy = PolicyModule(model, compute_dtype(cfg))
        self.engine = build_engine(self.policy, tokenizer, cfg)
        reward = RewardRunner(
            spec.reward_fn, cfg.reward.timeout_s, cfg.reward.num_workers, tokenizer.eos_token
        )
        self.producer = BatchProducer(
            cfg, self.engine, self.policy, spec.encode, spec.dataset, reward, spec.collector, spec.eos_ids,
            DistContext(device=torch.device(spec.device)), max_staleness=self.eta,
        )  # fmt: skip
        if spec.state is not None:
            self.producer.load_state_dict(spec.state)
        self.version, self.next_batch = -1, spec.start_batch

    def needed_version(self) -> int:
        """The least version the next batch may be generated with."""
        return version_for_step(self.next_batch, self.eta)

    def load_weights(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """Hold the weights of ``version`` (the engine takes them: a push for vllm)."""
        with torch.no_grad():
            for name, param in self.model.named_parameters(remove_duplicate=False):
                param.copy_(weights[name])
        self.engine.sync_weights()
        self.version = version

    def produce(self) -> StepBatch:
        """The next step's batch, with the weights held now."""
        batch = self.producer.produce(self.next_batch, self.version)
        self.next_batch += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.producer.state_dict()

    def close(self) -> None:
        self.producer.reward.close()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def worker_main(spec: WorkerSpec, commands: Any, results: Any, parent: int, total_steps: int) -> None:
    """The worker process: make batches ``spec.start_batch .. total_steps`` in order."""
    torch.set_num_threads(spec.threads)
    for signum in (signal.SIGINT, signal.SIGTERM):  # the trainer stops gracefully and then stops us
        signal.signal(signum, signal.SIG_IGN)
    done = threading.Event()
    waiting: list[int | None] = [None]  # the version the worker is blocked on (sent with each beat)
    threading.Thread(target=_beat, args=(results, parent, done, waiting), daemon=True).start()
    worker = None
    try:
        worker = RolloutWorker(spec)
        results.put(("ready",))
        pin = spec.cfg.async_.pin_versions
        waited = 0.0
        while worker.next_batch <= total_steps:
            start = time.perf_counter()
            while worker.version < worker.needed_version():
                waiting[0] = worker.needed_version()
                _take(worker, commands.get())
            waiting[0] = None
            while not pin:  # the freshest version published so far
                try:
                    _take(worker, commands.get_nowait())
                except queue.Empty:
                    break
            waited += time.perf_counter() - start
            start = time.perf_counter()
            batch = worker.produce()
            work = time.perf_counter() - start
            batch.metrics[M.ASYNC_ROLLOUT_WAIT] = waited
            batch.metrics[M.ASYNC_IDLE_RATIO_ROLLOUT] = waited / max(waited + work, 1e-9)
            results.put(("batch", batch, worker.state_dict()))
            waited = 0.0
        while True:
            _take(worker, commands.get())
    except _Stop:
        pass
    except BaseException as exc:  # the trainer raises it again: the same error and exit code
        results.put(("error", _picklable(exc), traceback.format_exc()))
    finally:
        done.set()
        if worker is not None:
            worker.close()


class _Stop(Exception):
    pass


def _take(worker: RolloutWorker, message: tuple) -> None:
    if message[0] == "stop":
        raise _Stop
    _, version, weights = message
    worker.load_weights(version, weights)


def _beat(results: Any, parent: int, done: threading.Event, waiting: list[int | None]) -> None:
    """The heartbeat (with the version the worker waits for, if any); a worker whose trainer died
    (re-parented) exits at once."""
    while not done.wait(BEAT_S):
        if os.getppid() != parent:
            os._exit(0)
        results.put(("beat", waiting[0]))


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
