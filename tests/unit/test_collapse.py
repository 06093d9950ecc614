"""Collapse detection: non-finite weights stop the run at once, a streak of steps with nothing to
train stops it after ``max_empty_steps``, and the streak survives a resume."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.collapse import CollapseGuard, nonfinite_parameters
from dapo_rl.errors import EXIT_DIVERGED, DivergedError


def test_empty_streak_raises_at_the_limit_and_resets_on_a_trained_step() -> None:
    guard = CollapseGuard(max_empty_steps=3, lr=10.0)
    for step, groups in enumerate([0, 0, 4, 0, 0], start=1):  # a trained step resets the streak
        guard.after_step(step, groups)
    assert guard.empty_in_row == 2
    with pytest.raises(
        DivergedError, match=r"no informative group in the last 3 steps \(up to step 6\)"
    ) as exc:
        guard.after_step(6, 0)
    assert "optim.lr=10 too high" in str(exc.value) and exc.value.exit_code == EXIT_DIVERGED == 3


def test_zero_means_never() -> None:
    guard = CollapseGuard(max_empty_steps=0, lr=1e-3)
    for step in range(1, 100):
        guard.after_step(step, 0)
    assert guard.empty_in_row == 99


def test_streak_is_restored() -> None:
    guard = CollapseGuard(3, 1e-3)
    guard.after_step(1, 0)
    guard.after_step(2, 0)
    again = CollapseGuard(3, 1e-3)
    again.load_state_dict(guard.state_dict())
    with pytest.raises(DivergedError):
        again.after_step(3, 0)


def test_nonfinite_weights_are_named() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    guard = CollapseGuard(3, float("1e9"))
    guard.check_weights(model, "after optimizer update 1")  # finite: nothing happens
    with torch.no_grad():
        model[1].bias.fill_(float("inf"))
    assert nonfinite_parameters(model) == ["1.bias"]
    with pytest.raises(
        DivergedError, match=r"not finite after optimizer update 2 \(1\.bias\).*optim\.lr=1e\+09"
    ):
        guard.check_weights(model, "after optimizer update 2")
