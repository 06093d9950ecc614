"""Soft overlong punishment (paper eq. 13) and the truncation loss mask."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.algorithm.overlong import overlong_penalty, truncation_loss_mask


def test_penalty_by_hand() -> None:
    # L_max = 20, L_buf = 4 -> E = 16; penalty = -(l - 16) / 4 * f for l > 16, floored at -f
    lengths = torch.tensor([0, 16, 17, 18, 19, 20, 24])
    got = overlong_penalty(lengths, max_response_tokens=20, buffer_tokens=4, penalty_factor=1.0)
    # l=17 -> -0.25, 18 -> -0.5, 19 -> -0.75, 20 -> -1, 24 -> -2 floored to -1
    torch.testing.assert_close(
        got, torch.tensor([0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0]), rtol=0, atol=1e-7
    )
    assert got.dtype == torch.float32


def test_penalty_factor_scales_and_zero_disables() -> None:
    lengths = torch.tensor([17.0, 20.0], dtype=torch.float64)
    half = overlong_penalty(lengths, 20, 4, 0.5)
    torch.testing.assert_close(half, torch.tensor([-0.125, -0.5], dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(overlong_penalty(lengths, 20, 4, 0.0), torch.zeros(2, dtype=torch.float64))


def test_paper_recipe_values() -> None:
    # L_max 20480, L_buf 4096: E = 16384; l = 18432 -> -(2048 / 4096) = -0.5
    got = overlong_penalty(torch.tensor([16384, 18432, 20480]), 20480, 4096, 1.0)
    torch.testing.assert_close(got, torch.tensor([0.0, -0.5, -1.0]))


@pytest.mark.parametrize("buffer", [0, -1, 20, 25])
def test_invalid_buffer(buffer: int) -> None:
    with pytest.raises(ValueError, match="0 < buffer_tokens < max_response_tokens"):
        overlong_penalty(torch.tensor([1]), 20, buffer, 1.0)


def test_negative_factor() -> None:
    with pytest.raises(ValueError, match="penalty_factor"):
        overlong_penalty(torch.tensor([1]), 20, 4, -1.0)


def test_truncation_loss_mask() -> None:
    m = truncation_loss_mask(torch.tensor([True, False, True]))
    assert torch.equal(m, torch.tensor([0.0, 1.0, 0.0]))
    token_mask = torch.ones(3, 2) * m[:, None]
    assert token_mask.sum().item() == 2
    with pytest.raises(ValueError):
        truncation_loss_mask(torch.zeros(2, 2, dtype=torch.bool))
