"""Collapse detection: a run that has diverged stops with a :class:`~dapo_rl.errors.DivergedError`
(exit code 3) that names the likely cause, instead of skipping steps silently until the end.

Two signs, checked by :class:`CollapseGuard`:

- the weights are no longer finite after an optimizer update (``optim.lr=inf``, or a huge learning
  rate): stopped at once, before any rollout or checkpoint uses them;
- ``train.max_empty_steps`` consecutive rollout steps without a single trainable group (every group's
  responses scored alike, so dynamic sampling kept none): a step like that now and then is normal,
  a long streak means the policy collapsed (all wrong) or the data does not fit the model.

A non-finite loss or gradient streak is counted by the trainer (``train.max_nonfinite_updates``) and
reported with :func:`nonfinite_update_error`.
"""

from __future__ import annotations

from typing import Any

import torch

from dapo_rl.errors import DivergedError


def nonfinite_parameters(policy: torch.nn.Module) -> list[str]:
    """Names of this rank's parameters holding a NaN or an infinity (their local shards)."""
    bad = []
    for name, param in policy.named_parameters():
        data = param.detach()
        data = data.to_local() if hasattr(data, "to_local") else data  # an FSDP2 shard (DTensor)
        if data.numel() and not bool(torch.isfinite(data).all()):
            bad.append(name)
    return bad


def nonfinite_update_error(count: int, loss: float, grad_norm: float, lr: float) -> DivergedError:
    return DivergedError(
        f"the run diverged: {count} consecutive optimizer updates had a non-finite loss or gradient "
        f"(last loss {loss}, gradient norm {grad_norm}). Likely causes: optim.lr={lr:g} is too high, "
        "or a data row breaks the loss; lower optim.lr (or check the data) and resume an earlier "
        "checkpoint with dapo train --resume RUN_DIR optim.lr=..., or start over"
    )


class CollapseGuard:
    """Raises :class:`DivergedError` on non-finite weights or a streak of steps with nothing to
    train on. ``any_rank`` turns a local flag into the flag of every rank (``DistContext.any``), so
    all ranks stop together; its streak is part of the checkpoint (:meth:`state_dict`)."""

    def __init__(self, max_empty_steps: int, lr: float, any_rank: Any = bool) -> None:
        self.max_empty_steps = max_empty_steps
        self.lr = lr
        self.any_rank = any_rank
        self.empty_in_row = 0

    def check_weights(self, policy: torch.nn.Module, when: str) -> None:
        """Stop when any parameter is NaN or infinite (``when``: e.g. "after optimizer update 3")."""
        bad = nonfinite_parameters(policy)
        if self.any_rank(bool(bad)):
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise DivergedError(
                f"the run diverged: the weights are not finite {when} ({shown or 'on another rank'}). "
                f"Most likely optim.lr={self.lr:g} is too high; lower it and resume an earlier "
                "checkpoint (dapo train --resume RUN_DIR optim.lr=...) or start over. No checkpoint "
                "of these weights was written"
            )

    def after_step(self, step: int, trained_groups: int) -> None:
        """Count a step that had no group to train on; raise after ``max_empty_steps`` in a row."""
        self.empty_in_row = 0 if trained_groups else self.empty_in_row + 1
        if self.max_empty_steps and self.empty_in_row >= self.max_empty_steps:
            raise DivergedError(
                f"the run has collapsed: no informative group in the last {self.empty_in_row} steps "
                f"(up to step {step}), so nothing was trained. Every group's responses scored alike "
                f"(see reward/acc and sampling/keep_rate in metrics.jsonl): either the policy broke "
                f"(optim.lr={self.lr:g} too high: lower it and resume an earlier checkpoint) or the "
                "data is too hard or too easy for this model (check the reward function and the "
                "answers). train.max_empty_steps sets how long a streak is allowed (0: never stop)"
            )

    def state_dict(self) -> dict[str, int]:
        return {"empty_in_row": self.empty_in_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.empty_in_row = int(state.get("empty_in_row", 0))
