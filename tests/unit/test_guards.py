"""Importance-ratio guard."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm.guards import importance_ratio_guard


def test_mean_ratio_over_valid_tokens_only() -> None:
    # valid ratios 2 and 1 -> mean 1.5; the masked token (ratio e^5) is ignored
    logp = torch.tensor([[math.log(2.0), 0.0, 5.0]])
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    assert importance_ratio_guard(logp, old, mask, None) == (True, pytest.approx(1.5))
    assert importance_ratio_guard(logp, old, mask, 1.5)[0] is True  # threshold is inclusive
    passes, mean = importance_ratio_guard(logp, old, mask, 1.4)
    assert passes is False and mean == pytest.approx(1.5)


def test_equal_policies_pass() -> None:
    x = torch.randn(2, 4)
    assert importance_ratio_guard(x, x, torch.ones(2, 4), 1.01) == (True, 1.0)


def test_ratio_is_clamped_and_nan_fails() -> None:
    logp = torch.tensor([[100.0]], dtype=torch.float64)
    passes, mean = importance_ratio_guard(logp, torch.zeros_like(logp), torch.ones(1, 1), 10.0)
    assert not passes and mean == pytest.approx(math.exp(20), rel=1e-12)
    nan = torch.tensor([[float("nan")]])
    passes, mean = importance_ratio_guard(nan, torch.zeros(1, 1), torch.ones(1, 1), 10.0)
    assert passes is False and math.isnan(mean)


def test_no_valid_tokens_and_errors() -> None:
    x = torch.zeros(1, 2)
    assert importance_ratio_guard(x + 3, x, torch.zeros(1, 2), 1.5) == (True, 1.0)
    with pytest.raises(ValueError, match="max_ratio"):
        importance_ratio_guard(x, x, torch.ones(1, 2), 0.0)
    with pytest.raises(ValueError, match="shape"):
        importance_ratio_guard(x, x, torch.ones(1, 3), 2.0)
