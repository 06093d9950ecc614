"""Asynchronous rollouts (docs/async.md): a rollout worker process makes the step batches ahead of
the trainer, at most ``async.max_staleness`` weight versions behind.

- :mod:`~dapo_rl.async_rollout.schedule`: versions, the fixed schedule and the staleness metrics;
- :mod:`~dapo_rl.async_rollout.producer`: the batch of a step (generation, rewards, dynamic sampling),
  the same code in the trainer's process and in the worker;
- :mod:`~dapo_rl.async_rollout.worker`: the worker (its own weights copy, engine and threads);
- :mod:`~dapo_rl.async_rollout.source`: the trainer's one interface to its batches, synchronous
  (:class:`SyncSource`) or asynchronous (:class:`AsyncSource`).
"""
