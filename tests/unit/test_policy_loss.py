"""Clipped policy loss: every clip branch by hand, dual-clip on/off, clamps, masking, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm.policy_loss import (
    accumulate_policy_metrics,
    clipped_policy_loss,
    finalize_policy_metrics,
)

LOW, HIGH = 0.2, 0.28  # ratio clipped to [0.8, 1.28]


def one_row(ratios: list[float], advs: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaf logp [1, T] with old_logp = 0, so r = exp(logp) = the given ratios; per-token A [1, T]."""
    logp = torch.tensor([[math.log(r) for r in ratios]], dtype=torch.float64, requires_grad=True)
    return logp, torch.zeros_like(logp), torch.tensor([advs], dtype=torch.float64)


def test_every_clip_branch_by_hand() -> None:
    # token  r     A    pg1 = -A r   pg2 = -A clip(r)      max     branch               d pg / d logp
    #   0   1.5   +1     -1.5        -1.28                 -1.28   high clip            0
    #   1   0.5   +1     -0.5        -0.8                  -0.5    unclipped            -A r = -0.5
    #   2   0.5   -1      0.5         0.8                   0.8    low clip             0
    #   3   1.5   -1      1.5         1.28                  1.5    unclipped            -A r = 1.5
    #   4   1.1   +1     -1.1        -1.1                  -1.1    inside range         -1.1
    #   5   1.5    0      0           0                     0      A = 0                0
    logp, old, adv = one_row([1.5, 0.5, 0.5, 1.5, 1.1, 1.5], [1, 1, -1, -1, 1, 0])
    mask = torch.ones_like(logp)
    loss, m = clipped_policy_loss(logp, old, adv, mask, LOW, HIGH)
    expected = torch.tensor([[-1.28, -0.5, 0.8, 1.5, -1.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    loss.sum().backward()
    grad = torch.tensor([[0.0, -0.5, 0.0, 1.5, -1.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, grad, rtol=0, atol=1e-12)
    # clip (pg2 > pg1): tokens 0 and 2; low clip (r < 0.8, A < 0): token 2; high (r > 1.28, A > 0): 0
    assert m["num_tokens"].item() == 6
    assert m["clip_count"].item() == 2
    assert m["clip_low_count"].item() == 1
    assert m["clip_high_count"].item() == 1
    assert m["dual_clip_count"].item() == 0
    # ratio sum 1.5 + 0.5 + 0.5 + 1.5 + 1.1 + 1.5 = 6.6; approx kl sum = -sum(log r)
    assert m["ratio_sum"].item() == pytest.approx(6.6, abs=1e-12)
    assert m["ratio_max"].item() == pytest.approx(1.5, abs=1e-12)
    assert m["approx_kl_sum"].item() == pytest.approx(-math.log(1.5 * 0.5 * 0.5 * 1.5 * 1.1 * 1.5), abs=1e-12)


def test_dual_clip_on_and_off() -> None:
    # token  r    A    pg (no dual)   -A c (c=3)   with dual   grad with dual
    #   0    5   -1       5              3            3           0 (dual active)
    #   1    2   -1       2              3            2           -A r = 2
    #   2    5   -2      10              6            6           0 (dual active)
    #   3    5   +1     -1.28            -            -1.28       0 (A > 0: dual-clip never applies)
    logp, old, adv = one_row([5.0, 2.0, 5.0, 5.0], [-1, -1, -2, 1])
    mask = torch.ones_like(logp)
    loss_off, m_off = clipped_policy_loss(logp, old, adv, mask, LOW, HIGH, None)
    torch.testing.assert_close(loss_off, torch.tensor([[5.0, 2.0, 10.0, -1.28]], dtype=torch.float64))
    assert m_off["dual_clip_count"].item() == 0
    loss_on, m_on = clipped_policy_loss(logp, old, adv, mask, LOW, HIGH, 3.0)
    torch.testing.assert_close(loss_on, torch.tensor([[3.0, 2.0, 6.0, -1.28]], dtype=torch.float64))
    assert m_on["dual_clip_count"].item() == 2
    loss_on.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0, 0.0, 0.0]], dtype=torch.float64))


def test_huge_and_tiny_ratios_are_clamped() -> None:
    # log-ratio +100 -> clamp 20 -> r = e^20; -100 -> r = e^-20. Gradient is 0 beyond the clamp.
    logp = torch.tensor([[100.0, 100.0, -100.0, -100.0]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(logp)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    loss, m = clipped_policy_loss(logp, old, adv, torch.ones_like(logp), LOW, HIGH)
    big, tiny = math.exp(20), math.exp(-20)
    # A=+1, r=e^20: max(-e^20, -1.28) = -1.28      A=-1, r=e^20: max(e^20, 1.28) = e^20
    # A=+1, r=e^-20: max(-e^-20, -0.8) = -e^-20    A=-1, r=e^-20: max(e^-20, 0.8) = 0.8
    expected = torch.tensor([[-1.28, big, -tiny, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))
    assert m["ratio_max"].item() == pytest.approx(big, rel=1e-12)


def test_masked_positions_are_zero_and_ignored_even_if_nan() -> None:
    logp = torch.tensor(
        [[math.log(1.5), float("nan"), -float("inf")]], dtype=torch.float64, requires_grad=True
    )
    old = torch.tensor([[0.0, 0.0, -float("inf")]], dtype=torch.float64)
    mask = torch.tensor([[True, False, False]])
    loss, m = clipped_policy_loss(logp, old, torch.tensor([-1.0], dtype=torch.float64), mask, LOW, HIGH)
    # valid token: A=-1, r=1.5 -> max(1.5, 1.28) = 1.5
    torch.testing.assert_close(loss, torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64))
    assert m["num_tokens"].item() == 1
    assert m["ratio_sum"].item() == pytest.approx(1.5)
    assert m["approx_kl_sum"].item() == pytest.approx(-math.log(1.5))


def test_sequence_advantages_broadcast_like_token_advantages() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 5, generator=gen, dtype=torch.float64) * 0.3
    old = torch.randn(3, 5, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    mask = torch.rand(3, 5, generator=gen) > 0.3
    a, ma = clipped_policy_loss(logp, old, adv, mask, LOW, HIGH, 3.0)
    b, mb = clipped_policy_loss(logp, old, adv[:, None].expand(3, 5), mask, LOW, HIGH, 3.0)
    assert torch.equal(a, b)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_metrics_accumulate_exactly_over_micro_batches() -> None:
    gen = torch.Generator().manual_seed(1)
    logp = torch.randn(7, 6, generator=gen, dtype=torch.float64) * 0.5
    old = torch.randn(7, 6, generator=gen, dtype=torch.float64) * 0.5
    adv = torch.randn(7, generator=gen, dtype=torch.float64)
    mask = torch.rand(7, 6, generator=gen) > 0.25
    _, full = clipped_policy_loss(logp, old, adv, mask, LOW, HIGH, 2.0)
    total = None
    for rows in (slice(0, 2), slice(2, 3), slice(3, 7)):
        _, m = clipped_policy_loss(logp[rows], old[rows], adv[rows], mask[rows], LOW, HIGH, 2.0)
        total = accumulate_policy_metrics(total, m)
    for k in full:
        torch.testing.assert_close(total[k], full[k], rtol=0, atol=1e-12)
    logged = finalize_policy_metrics(total)
    n = full["num_tokens"].item()
    assert logged["loss/clip_frac"] == pytest.approx(full["clip_count"].item() / n)
    assert logged["loss/approx_kl"] == pytest.approx(full["approx_kl_sum"].item() / n)
    assert logged["loss/ratio_max"] == full["ratio_max"].item()
    assert 0 < logged["loss/clip_frac"] < 1  # the data exercise clipping


def test_no_valid_tokens() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, m = clipped_policy_loss(logp, logp.detach(), torch.ones(2), torch.zeros(2, 3), LOW, HIGH)
    assert torch.equal(loss, torch.zeros(2, 3))
    logged = finalize_policy_metrics(m)
    assert logged["loss/clip_frac"] == 0.0 and logged["loss/ratio_max"] == 0.0


@pytest.mark.parametrize(
    ("low", "high", "c", "match"),
    [
        (1.0, 0.28, None, "clip_ratio_low"),
        (-0.1, 0.28, None, "clip_ratio_low"),
        (0.2, -1.0, None, "clip_ratio_high"),
        (0.2, 0.28, 1.0, "clip_ratio_c"),
    ],
)
def test_invalid_clip_settings(low: float, high: float, c: float | None, match: str) -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=match):
        clipped_policy_loss(x, x, torch.ones(1), torch.ones(1, 2), low, high, c)


def test_shape_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        clipped_policy_loss(x, x, torch.ones(3), torch.ones(2, 3), LOW, HIGH)
    with pytest.raises(ValueError, match="share"):
        clipped_policy_loss(x, x, torch.ones(2), torch.ones(2, 4), LOW, HIGH)
