"""The decoupled loss of asynchronous rollouts, by hand: l_t = w_t * max(-A r_t, -A clip(r_t)),
r_t = pi_theta / pi_prox, w_t = pi_prox / pi_behave (detached, capped: tis clamps, mask drops the
token from the numerator but not from the token-mean denominator)."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm.aggregation import aggregate, aggregation_totals, aggregation_weights
from dapo_rl.algorithm.importance import capped_importance_weights, truncated_importance_weights
from dapo_rl.algorithm.policy_loss import clipped_policy_loss
from dapo_rl.distributed import DistContext
from dapo_rl.mismatch import MismatchTracker

LOW, HIGH, CAP = 0.2, 0.28, 2.0
THETA = [[-1.0, -0.5, -2.0, 0.0], [-0.3, -1.2, -0.7, -0.9]]
PROX = [[-1.1, -0.9, -1.0, 0.0], [-0.3, -1.0, -0.6, -1.5]]
BEHAVE = [[-1.3, -2.0, -0.8, 0.0], [-0.3, -0.2, -0.6, -1.4]]
MASK = [[1, 1, 1, 0], [1, 1, 1, 1]]
ADV = [1.5, -0.5]


def _hand(mode: str) -> float:
    """Sum_t w_t * max(-A r, -A clip(r)) / N with N = every valid token (7), in plain floats."""
    total, n = 0.0, sum(map(sum, MASK))
    for row in range(2):
        a = ADV[row]
        for t in range(4):
            if not MASK[row][t]:
                continue
            r = math.exp(THETA[row][t] - PROX[row][t])
            w = math.exp(PROX[row][t] - BEHAVE[row][t])
            if w > CAP:
                w = CAP if mode == "tis" else 0.0
            total += w * max(-a * r, -a * min(max(r, 1 - LOW), 1 + HIGH))
    return total / n


def _loss(mode: str, behave: list = BEHAVE) -> torch.Tensor:
    theta, mask = torch.tensor(THETA, dtype=torch.float64), torch.tensor(MASK, dtype=torch.float64)
    old = torch.tensor(PROX, dtype=torch.float64)
    tok, _ = clipped_policy_loss(theta, old, torch.tensor(ADV, dtype=torch.float64), mask, LOW, HIGH)
    if mode != "none":
        tok = MismatchTracker(mode, CAP, torch.device("cpu")).apply(
            tok, old, torch.tensor(behave, dtype=torch.float64), mask
        )
    group = torch.tensor([0, 1])
    weights = aggregation_weights(mask, group, "token-mean", aggregation_totals(mask, group))
    return aggregate(tok, weights)


@pytest.mark.parametrize("mode", ["tis", "mask"])
def test_decoupled_loss_by_hand(mode: str) -> None:
    assert float(_loss(mode)) == pytest.approx(_hand(mode), rel=1e-12)


def test_mask_drops_over_cap_tokens_but_keeps_the_denominator() -> None:
    mask = torch.tensor(MASK, dtype=torch.float64)
    prox, behave = torch.tensor(PROX, dtype=torch.float64), torch.tensor(BEHAVE, dtype=torch.float64)
    w, over = capped_importance_weights(prox, behave, mask, CAP, "mask")
    # token (0, 1): exp(-0.9 + 2.0) = 3.0 > 2, token (1, 1): exp(-1.0 + 0.2) = 0.45; the rest by hand
    assert over.tolist() == [[False, True, False, False], [False, False, False, False]]
    assert float(w[0, 1]) == 0.0 and float(w[0, 3]) == 0.0  # dropped; padding
    assert float(w[1, 1]) == pytest.approx(math.exp(-0.8), rel=1e-12)
    tis, over_tis = capped_importance_weights(prox, behave, mask, CAP, "tis")
    assert torch.equal(tis, truncated_importance_weights(prox, behave, mask, CAP))
    assert torch.equal(over, over_tis) and float(tis[0, 1]) == CAP
    # the dropped token still counts in N: the loss is the hand sum over the other 6 tokens / 7
    assert float(_loss("mask")) * 7 == pytest.approx(_hand("mask") * 7, rel=1e-12)
    assert float(_loss("mask")) != pytest.approx(_hand("mask") * 7 / 6, rel=1e-6)


@pytest.mark.parametrize("mode", ["tis", "mask"])
def test_with_prox_equal_behave_it_is_todays_loss(mode: str) -> None:
    """pi_prox = pi_behave: every weight is 1, the loss is the plain clipped loss (bit for bit)."""
    assert torch.equal(_loss(mode, behave=PROX), _loss("none"))
    assert not torch.equal(_loss(mode), _loss("none"))


def test_weight_metrics_and_gradient_flow() -> None:
    """The weight is detached (the gradient is w * d clipped / d theta) and its metrics are logged."""
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True)
    mask, prox = torch.tensor(MASK, dtype=torch.float64), torch.tensor(PROX, dtype=torch.float64)
    tracker = MismatchTracker("mask", CAP, torch.device("cpu"))
    tok, _ = clipped_policy_loss(theta, prox, torch.tensor(ADV, dtype=torch.float64), mask, LOW, HIGH)
    out = tracker.apply(tok, prox, torch.tensor(BEHAVE, dtype=torch.float64), mask)
    out.sum().backward()
    assert float(theta.grad[0, 1]) == 0.0  # the dropped token gives no gradient
    metrics = tracker.metrics(DistContext())
    w, _ = capped_importance_weights(prox, torch.tensor(BEHAVE, dtype=torch.float64), mask, CAP, "mask")
    assert metrics["rollout/is_weight_mean"] == pytest.approx(float(w.sum()) / 7, rel=1e-12)
    assert metrics["rollout/is_capped_frac"] == pytest.approx(1 / 7, rel=1e-12)
