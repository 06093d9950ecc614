"""Overlong reward shaping (paper eq. 13) and overlong filtering (paper §3.4), semantics §2-3.

Soft overlong punishment, with E = L_max - L_buf and l the response length in tokens::

    penalty(l) = 0                          l <= E
               = -(l - E) / L_buf * f       E < l      (floored at -f)

Overlong filtering: a truncated response (hit L_max without EOS) gets loss mask 0, but keeps its
reward in its group's statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor


def overlong_penalty(
    lengths: Tensor,
    max_response_tokens: int,
    buffer_tokens: int,
    penalty_factor: float,
) -> Tensor:
    """Length penalty to add to each response's score.

    Args:
        lengths: ``[B]`` response lengths in tokens (the EOS token counts), int or float.
        max_response_tokens: L_max, the generation cap.
        buffer_tokens: L_buf, 0 < L_buf < L_max.
        penalty_factor: f >= 0, the penalty at (and beyond) L_max.

    Returns:
        ``[B]`` penalties in ``[-f, 0]``; float32, or the lengths' dtype when it is floating.

    Raises:
        ValueError: on ``buffer_tokens`` outside (0, max_response_tokens) or a negative factor.
    """
    if not 0 < buffer_tokens < max_response_tokens:
        raise ValueError(
            "overlong shaping needs 0 < buffer_tokens < max_response_tokens, got "
            f"buffer_tokens={buffer_tokens}, max_response_tokens={max_response_tokens}"
        )
    if penalty_factor < 0:
        raise ValueError(f"overlong penalty_factor must be >= 0, got {penalty_factor}")
    dtype = lengths.dtype if lengths.dtype.is_floating_point else torch.float32
    expected = max_response_tokens - buffer_tokens
    excess = (lengths.to(torch.float64) - expected).clamp(min=0)
    penalty = (-excess / buffer_tokens * penalty_factor).clamp(min=-float(penalty_factor))
    return penalty.to(dtype)


def truncation_loss_mask(truncated: Tensor) -> Tensor:
    """Row multiplier for overlong filtering: ``[B]`` bool -> ``[B]`` float32, 0 where truncated.

    Multiply each row of the token mask by it (``mask * truncation_loss_mask(t)[:, None]``) when
    ``mask_truncated`` is on.
    """
    if truncated.dim() != 1:
        raise ValueError(f"truncated must be [B], got shape {tuple(truncated.shape)}")
    return (~truncated.bool()).to(torch.float32)
