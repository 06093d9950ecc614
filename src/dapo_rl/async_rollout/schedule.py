"""Policy versions and the staleness bound (pure functions).

A version is one weight publication: version v is the policy after v training steps, so step s
trains version s - 1. The batch of step s is generated with the weights of
``version_for_step(s, eta) = max(0, s - 1 - eta)`` (the fixed schedule), so a group's staleness at
training, (s - 1) - its version, is at most eta and equals eta once s > eta + 1.
"""

from __future__ import annotations

from collections.abc import Iterable

from dapo_rl import metric_names as M


def version_for_step(step: int, max_staleness: int) -> int:
    """The weights version that generates the batch of ``step`` (the oldest the bound allows)."""
    return max(0, step - 1 - max_staleness)


def needed(version: int, max_staleness: int, total_steps: int, pinned: bool) -> bool:
    """Whether a batch of the run (steps 1..total_steps) can be generated with ``version``
    (version 0 makes the first batches whatever the run's length)."""
    last = max(0, total_steps - 1 - max_staleness) if pinned else total_steps - 1
    return version <= last


def staleness_metrics(step: int, versions: Iterable[int], max_staleness: int) -> dict[str, float]:
    """``async/staleness_*`` over the trained groups of ``step`` (``versions``: each group's)."""
    ages = [step - 1 - v for v in versions]
    out: dict[str, float] = {M.staleness_hist(k): 0.0 for k in range(max_staleness + 1)}
    for age in ages:
        out[M.staleness_hist(age)] = out.get(M.staleness_hist(age), 0.0) + 1
    out[M.ASYNC_STALENESS_MEAN] = sum(ages) / len(ages) if ages else 0.0
    out[M.ASYNC_STALENESS_MAX] = float(max(ages, default=0))
    return out
