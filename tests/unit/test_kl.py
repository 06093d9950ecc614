"""KL estimators by hand, clamps, gradients, and the unknown-name error."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm.kl import KL_ESTIMATORS, kl_penalty

# d = logp - ref_logp for these tokens:
D = [0.0, 1.0, -2.0, 30.0, -30.0]


def run(estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.tensor([D], dtype=torch.float64, requires_grad=True)
    out = kl_penalty(logp, torch.zeros_like(logp), estimator)
    out.sum().backward()
    return out.detach(), logp.grad


def test_k1_and_abs_and_k2() -> None:
    k1, g1 = run("k1")
    torch.testing.assert_close(k1, torch.tensor([D], dtype=torch.float64))
    torch.testing.assert_close(g1, torch.ones(1, 5, dtype=torch.float64))
    kabs, _ = run("abs")
    torch.testing.assert_close(kabs, torch.tensor([[0.0, 1.0, 2.0, 30.0, 30.0]], dtype=torch.float64))
    # k2 = d^2 / 2 -> [0, 0.5, 2, 450, 450]; gradient d -> D
    k2, g2 = run("k2")
    torch.testing.assert_close(k2, torch.tensor([[0.0, 0.5, 2.0, 450.0, 450.0]], dtype=torch.float64))
    torch.testing.assert_close(g2, torch.tensor([D], dtype=torch.float64))


def test_k3_values_clamps_and_gradient() -> None:
    k3, g3 = run("k3")
    # d=0: 1 + 0 - 1 = 0; d=1: e^-1 + 0 = 0.36787944; d=-2: e^2 - 3 = 4.38905610
    # d=30 -> clamp 20: e^-20 + 19 = 19.000000002 -> output clamp 10
    # d=-30 -> clamp -20: e^20 - 21 = 4.85e8 -> output clamp 10
    expected = torch.tensor([[0.0, math.exp(-1), math.exp(2) - 3, 10.0, 10.0]], dtype=torch.float64)
    torch.testing.assert_close(k3, expected, rtol=0, atol=1e-12)
    # d k3 / d d = 1 - e^-d: 0 at d=0, 1 - e^-1 = 0.63212056 at 1, 1 - e^2 = -6.3890561 at -2;
    # clamped positions have zero gradient.
    grad = torch.tensor([[0.0, 1 - math.exp(-1), 1 - math.exp(2), 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(g3, grad, rtol=0, atol=1e-12)


def test_reference_is_treated_as_constant() -> None:
    ref = torch.tensor([[0.5, -0.5]], requires_grad=True)
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    kl_penalty(logp, ref, "k3").sum().backward()
    assert ref.grad is None
    assert logp.grad is not None


def test_unknown_estimator_lists_valid_names() -> None:
    assert sorted(KL_ESTIMATORS) == ["abs", "k1", "k2", "k3"]
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="abs, k1, k2, k3"):
        kl_penalty(x, x, "low_var_kl")
    with pytest.raises(ValueError, match="shape"):
        kl_penalty(x, torch.zeros(1, 3), "k1")
