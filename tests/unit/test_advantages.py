"""Group-relative advantages: hand-computed values, edge cases, reference-loop equivalence."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm.advantages import ADVANTAGE_ESTIMATORS, group_advantages


def reference_advantages(
    rewards: list[float], groups: list[int], norm_by_std: bool, eps: float
) -> list[float]:
    """Plain Python loop over groups (semantics §5)."""
    out = [0.0] * len(rewards)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        vals = [rewards[i] for i in idx]
        if len(vals) < 2 or max(vals) == min(vals):
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        for i in idx:
            out[i] = (rewards[i] - mean) / (std + eps) if norm_by_std else rewards[i] - mean
    return out


def test_hand_computed_unsorted_noncontiguous_groups() -> None:
    # group 7 = rows 0,1,3 rewards [1, 0, 5]: mean 2, centered [-1, -2, 3],
    #   unbiased var (1 + 4 + 9) / 2 = 7, std = sqrt(7) = 2.6457513
    #   A = [-1, -2, 3] / (2.6457513 + 1e-6)
    # group 3 = rows 2,4 rewards [1, 2]: mean 1.5, var (0.25 + 0.25) / 1 = 0.5, std 0.70710678
    #   A = [-0.5, 0.5] / (0.70710678 + 1e-6)
    rewards = torch.tensor([1.0, 0.0, 1.0, 5.0, 2.0], dtype=torch.float64)
    groups = torch.tensor([7, 7, 3, 7, 3])
    adv, metrics = group_advantages(rewards, groups)
    s7, s3 = math.sqrt(7) + 1e-6, math.sqrt(0.5) + 1e-6
    expected = torch.tensor([-1 / s7, -2 / s7, -0.5 / s3, 3 / s7, 0.5 / s3], dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    assert adv.dtype == torch.float64
    assert metrics["adv/zero_frac"] == 0.0
    assert metrics["adv/max"] == pytest.approx(3 / s7, abs=1e-12)


def test_without_std_normalisation() -> None:
    # Dr. GRPO: A = R - mean_g. group 0: [1, 0, 5] mean 2 -> [-1, -2, 3]; group 1: [4] alone -> 0
    adv, _ = group_advantages(
        torch.tensor([1.0, 0.0, 5.0, 4.0]), torch.tensor([0, 0, 0, 1]), norm_by_std=False
    )
    torch.testing.assert_close(adv, torch.tensor([-1.0, -2.0, 3.0, 0.0]), rtol=0, atol=1e-6)


def test_eps_enters_the_denominator() -> None:
    # rewards [0, 1]: std = sqrt(0.5) = 0.70710678; eps 0.5 -> A = -/+ 0.5 / 1.20710678 = -/+ 0.41421356
    adv, _ = group_advantages(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0, 0]), eps=0.5)
    torch.testing.assert_close(
        adv, torch.tensor([-0.41421356, 0.41421356], dtype=torch.float64), atol=1e-8, rtol=0
    )


def test_all_equal_rewards_and_singletons_are_exactly_zero() -> None:
    # group 0 all equal (0.7 x 3), group 5 a single response, group 2 informative [0, 1]
    rewards = torch.tensor([0.7, 0.7, 0.7, 3.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 5, 2, 2])
    adv, metrics = group_advantages(rewards, groups)
    assert torch.equal(adv[:4], torch.zeros(4))
    assert adv[4] < 0 < adv[5]
    assert metrics["adv/zero_frac"] == pytest.approx(4 / 6)
    adv_nostd, _ = group_advantages(rewards, groups, norm_by_std=False)
    assert torch.equal(adv_nostd[:4], torch.zeros(4))


def test_integer_rewards_give_float32() -> None:
    adv, _ = group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert adv.dtype == torch.float32
    # [1, 0]: mean 0.5, std sqrt(0.5) -> +/- 0.5 / 0.7071078 = +/- 0.7071058
    torch.testing.assert_close(adv, torch.tensor([0.7071058, -0.7071058]), atol=1e-6, rtol=0)


def test_empty_batch() -> None:
    adv, metrics = group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert adv.shape == (0,)
    assert metrics["adv/mean"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_vectorised_matches_reference_loop(seed: int, norm_by_std: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    num_groups = 9
    sizes = torch.randint(1, 6, (num_groups,), generator=gen)
    ids = torch.randperm(1000, generator=gen)[:num_groups] * 3 - 500  # sparse, some negative
    groups = torch.repeat_interleave(ids, sizes)
    perm = torch.randperm(groups.numel(), generator=gen)
    groups = groups[perm]
    rewards = torch.randn(groups.numel(), generator=gen, dtype=torch.float64)
    rewards[groups == groups[0]] = 1.0  # one constant group
    adv, metrics = group_advantages(rewards, groups, norm_by_std=norm_by_std)
    ref = reference_advantages(rewards.tolist(), groups.tolist(), norm_by_std, 1e-6)
    torch.testing.assert_close(adv, torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-12)
    assert metrics["adv/abs_mean"] == pytest.approx(sum(abs(a) for a in ref) / len(ref), abs=1e-12)


def test_registry_and_input_checks() -> None:
    assert ADVANTAGE_ESTIMATORS.get("grpo") is group_advantages
    with pytest.raises(KeyError, match="Valid names: grpo"):
        ADVANTAGE_ESTIMATORS.get("gpro")
    with pytest.raises(ValueError, match="group_index shape"):
        group_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        group_advantages(torch.zeros(3), torch.zeros(3))
