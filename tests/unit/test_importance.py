"""Mismatch metrics and truncated importance sampling, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl import metric_names as M
from dapo_rl.algorithm.aggregation import aggregate, aggregation_totals, aggregation_weights
from dapo_rl.algorithm.importance import finalize_mismatch, mismatch_sums, truncated_importance_weights
from dapo_rl.algorithm.policy_loss import clipped_policy_loss

L = math.log


def test_mismatch_metrics_by_hand() -> None:
    # d = train - rollout = [log 2, log 0.5, 0, (masked)]
    # |d| = [0.6931, 0.6931, 0]            -> mean 2 log 2 / 3, max log 2
    # k3 = e^d - 1 - d = [1 - log 2, -0.5 + log 2, 0] -> sum 0.5, mean 1/6
    train = torch.tensor([[L(0.5), L(0.2), L(0.9), 0.0]], dtype=torch.float64)
    rollout = torch.tensor([[L(0.25), L(0.4), L(0.9), 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    sums = mismatch_sums(train, rollout, mask)
    assert sums["num_tokens"].item() == 3
    assert sums["k3_sum"].item() == pytest.approx(0.5, abs=1e-12)
    out = finalize_mismatch(sums)
    assert out == pytest.approx(
        {
            "rollout/logprob_abs_diff_mean": 2 * math.log(2) / 3,
            "rollout/logprob_abs_diff_max": math.log(2),
            "rollout/logprob_kl_k3": 1 / 6,
        },
        abs=1e-12,
    )
    assert set(out) == {
        M.ROLLOUT_LOGPROB_ABS_DIFF_MEAN,
        M.ROLLOUT_LOGPROB_ABS_DIFF_MAX,
        M.ROLLOUT_LOGPROB_KL_K3,
    }
    empty = finalize_mismatch(mismatch_sums(train, rollout, torch.zeros_like(mask)))
    assert set(empty.values()) == {0.0}


def test_tis_weights_by_hand() -> None:
    train = torch.tensor([[L(0.5), L(0.2), L(0.9), 0.0]])
    rollout = torch.tensor([[L(0.25), L(0.4), L(0.9), 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = truncated_importance_weights(train.requires_grad_(), rollout, mask, cap=1.5)
    # ratios [2, 0.5, 1] capped at 1.5; masked token 0
    torch.testing.assert_close(w, torch.tensor([[1.5, 0.5, 1.0, 0.0]]), rtol=0, atol=1e-6)
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap must be >= 1"):
        truncated_importance_weights(train, rollout, mask, cap=0.5)


def test_tis_changes_the_token_mean_loss_as_computed_by_hand() -> None:
    # Two responses; current policy = old (trainer) policy, so r = 1 and pg = -A per token.
    #   row 0: A = +1, d = [log 2, log 0.5, 0]   -> w = [1.5, 0.5, 1]   pg * w = [-1.5, -0.5, -1]
    #   row 1: A = -2, d = [log 4, 0, (pad)]     -> w = [1.5, 1]        pg * w = [3, 2]
    # token-mean over 5 tokens: plain (-3 + 4) / 5 = 0.2; with TIS (-3 + 5) / 5 = 0.4
    # d loss / d logp = w * (-A) * r / 5 (every ratio is inside the clip range)
    old = torch.tensor([[L(0.5), L(0.2), L(0.9)], [L(0.8), L(0.3), 0.0]], dtype=torch.float64)
    rollout = torch.tensor([[L(0.25), L(0.4), L(0.9)], [L(0.2), L(0.3), 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    groups = torch.tensor([0, 1])
    weights = aggregation_weights(mask, groups, "token-mean", aggregation_totals(mask, groups))

    def loss_and_grad(tis: bool) -> tuple[float, torch.Tensor]:
        logp = old.clone().requires_grad_()
        pg, _ = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28)
        if tis:
            pg = pg * truncated_importance_weights(old, rollout, mask, cap=1.5)
        loss = aggregate(pg, weights)
        loss.backward()
        return loss.item(), logp.grad

    plain, plain_grad = loss_and_grad(False)
    tis, tis_grad = loss_and_grad(True)
    assert plain == pytest.approx(0.2, abs=1e-12)
    assert tis == pytest.approx(0.4, abs=1e-12)
    expected = torch.tensor([[-1.5, -0.5, -1.0], [3.0, 2.0, 0.0]], dtype=torch.float64) / 5
    torch.testing.assert_close(tis_grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(plain_grad, torch.tensor([[-1.0, -1, -1], [2, 2, 0]], dtype=torch.float64) / 5)
