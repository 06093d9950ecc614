"""The ``async`` section of the configuration: asynchronous rollouts (docs/async.md).

``async`` is a Python keyword, so :class:`~dapo_rl.config_schema.DapoConfig` holds this section as
``cfg.async_`` with the alias ``async``: YAML files, dotted overrides (``async.max_staleness=1``),
``dapo config show`` and docs/config.md all use ``async``. The checks across sections that concern
it are :func:`async_problems`, called by :mod:`dapo_rl.config`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AsyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    max_staleness: int = Field(0, ge=0)
    """eta, the most policy versions (weight publications, one per step) a trained group may lag
    behind the policy it trains: the batch of step s is generated with the weights of version
    max(0, s - 1 - eta) by a rollout worker process while the trainer trains. 0: the synchronous
    trainer, unchanged. > 0 needs ``rollout.importance_correction`` tis (what ``auto`` gives) or
    mask; ``none`` is refused (docs/async.md)."""
    enable: bool | None = None
    """Use the rollout worker. ``null``: when ``max_staleness > 0``. ``true`` at ``max_staleness: 0``
    runs the synchronous schedule through the worker (no overlap; equal to the synchronous trainer)."""
    pin_versions: bool = True
    """The fixed schedule (what is trained depends on the config and seed only, never on timing;
    exact resume). ``false``: the worker starts each batch with the freshest published weights that
    keep the bound (fresher data, but timing decides which: runs do not repeat exactly)."""
    overlap: bool = True
    """Run the worker in its own process, concurrently with training. ``false``: the same schedule
    run serially in the trainer's process (a test oracle: the results are identical)."""
    worker_threads: int | None = Field(None, ge=1)
    """torch CPU threads of the rollout worker (``null``: the cores ``train.num_threads`` leaves,
    at least 1)."""
    decoupled_loss: bool = True
    """With ``max_staleness > 0``: the decoupled loss (the clipped ratio against log-probs the trainer
    recomputes before its first update, times the capped behaviour weight pi_prox / pi_behave).
    ``false``: the plain ratio against the behaviour (rollout) log-probs, no recompute and no weight:
    the baseline the decoupled loss is measured against (docs/async.md); needs
    ``rollout.importance_correction`` none (what ``auto`` gives then)."""
    heartbeat_s: float = Field(300.0, gt=0)
    """A worker silent for this long (no batch, no heartbeat) ends the run with a message and a
    checkpoint that resumes (exit code 5)."""

    @property
    def active(self) -> bool:
        """Whether batches come from the rollout worker (rather than the trainer's own engine)."""
        return self.enable if self.enable is not None else self.max_staleness > 0


def resolve_importance_correction(cfg: Any) -> None:
    """``rollout.importance_correction: auto`` becomes ``tis`` with stale batches (eta > 0: the
    behaviour weight is what makes the update off-policy PPO) and ``none`` without."""
    if cfg.rollout.importance_correction == "auto":
        decoupled = cfg.async_.max_staleness > 0 and cfg.async_.decoupled_loss
        cfg.rollout.importance_correction = "tis" if decoupled else "none"


def plain_behaviour_ratio(cfg: Any) -> bool:
    """Whether the update takes its ratio against the behaviour log-probs (``async.decoupled_loss:
    false`` with stale batches) instead of recomputed proximal ones."""
    return cfg.async_.max_staleness > 0 and not cfg.async_.decoupled_loss


def async_problems(cfg: Any) -> list[str]:
    """Rules between ``async`` and the other sections (``cfg`` is a DapoConfig)."""
    a, r = cfg.async_, cfg.rollout
    problems = []
    if a.max_staleness > 0 and not a.decoupled_loss and r.importance_correction != "none":
        problems.append(
            f"async.decoupled_loss=false with rollout.importance_correction={r.importance_correction}: "
            "the plain loss takes its ratio against the behaviour log-probs directly, so there is no "
            "proximal policy for a behaviour weight to correct; set rollout.importance_correction=none "
            "(or auto), or async.decoupled_loss=true"
        )
    if a.max_staleness > 0 and a.decoupled_loss and r.importance_correction == "none":
        problems.append(
            f"async.max_staleness={a.max_staleness} needs rollout.importance_correction=tis or mask: the "
            "trainer recomputes the proximal log-probs under its current policy, and a ratio against "
            "those alone ignores that the data came from an older policy (it is 1 at the first update: "
            "not off-policy PPO); the behaviour weight pi_prox / pi_behave corrects for it"
        )
    if a.enable is False and a.max_staleness > 0:
        problems.append(
            f"async.enable=false with async.max_staleness={a.max_staleness}: stale batches come only "
            "from the rollout worker; set async.max_staleness=0 or drop async.enable"
        )
    return problems
