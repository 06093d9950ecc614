"""Training-inference mismatch in the update: the rollout engine's log-probs against the trainer's.

When the step's responses carry the engine's log-probs of their tokens (the vllm engine always
gives them; any engine when ``rollout.importance_correction`` asks), :class:`MismatchTracker`
compares them with the trainer's old log-probs on every micro-batch, logs
``rollout/logprob_abs_diff_mean``, ``..._max`` and ``rollout/logprob_kl_k3`` (reduced over ranks),
and with ``importance_correction: tis`` or ``mask`` multiplies the per-token policy loss by the
capped importance weights (clamped, or over-cap tokens dropped), logging ``rollout/is_weight_mean``
and ``rollout/is_capped_frac``. With asynchronous rollouts the old log-probs are the proximal
policy's and the engine's are the behaviour policy's: this is the decoupled loss's weight
(docs/algorithm.md). The formulas are :mod:`dapo_rl.algorithm.importance`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dapo_rl import metric_names as M
from dapo_rl.algorithm.importance import (
    MISMATCH_MAXES,
    MISMATCH_SUMS,
    capped_importance_weights,
    finalize_mismatch,
    mismatch_sums,
    truncated_importance_weights,
)
from dapo_rl.batch import TrainSample
from dapo_rl.config import RolloutConfig
from dapo_rl.distributed import DistContext


class MismatchTracker:
    """Accumulates one step's mismatch sums; applies the capped weights when ``correction`` is
    ``tis`` or ``mask``."""

    def __init__(self, correction: str, cap: float, device: torch.device) -> None:
        self.correction, self.cap, self.device = correction, cap, device
        self.sums: dict[str, Tensor] = {}
        self.dropped: Tensor | None = None  # the last micro-batch's tokens dropped by ``mask`` (the ledger)

    @classmethod
    def for_step(
        cls, samples: list[TrainSample], rollout: RolloutConfig, dist: DistContext
    ) -> MismatchTracker | None:
        """A tracker when any rank's samples carry rollout log-probs (every rank then gets one, so
        the reductions match), else None; TIS without log-probs is an error."""
        if not dist.any(any(s.rollout_logprobs is not None for s in samples)):
            if rollout.importance_correction != "none":
                raise ValueError(
                    f"rollout.importance_correction={rollout.importance_correction} needs the rollout "
                    f"engine's log-probs, and engine {rollout.engine!r} returned none: use "
                    "rollout.engine=vllm or hf, or set rollout.importance_correction=none"
                )
            return None
        return cls(rollout.importance_correction, rollout.importance_cap, dist.device)

    def rollout_logprobs(self, samples: list[TrainSample], idx: list[int], width: int) -> Tensor | None:
        """The engine's log-probs of rows ``idx``, ``[len(idx), width]``, 0 past each response
        (None for a padding micro-batch)."""
        if not idx:
            return None
        out = torch.zeros((len(idx), width), dtype=torch.float32)
        for row, i in enumerate(idx):
            logprobs = samples[i].rollout_logprobs
            if logprobs is None:
                raise ValueError("a response without rollout log-probs in a step whose others have them")
            out[row, : len(logprobs)] = torch.tensor(logprobs, dtype=torch.float32)
        return out.to(self.device)

    def apply(self, token_loss: Tensor, old_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> Tensor:
        """Count the micro-batch's mismatch; return the per-token loss, TIS-weighted if asked."""
        new = mismatch_sums(old_logp, rollout_logp, mask)
        for key, value in new.items():
            held = self.sums.get(key)
            if held is None:
                self.sums[key] = value
            else:
                self.sums[key] = torch.maximum(held, value) if key in MISMATCH_MAXES else held + value
        if self.correction == "tis":
            weights = truncated_importance_weights(old_logp, rollout_logp, mask, self.cap)
            _, over = capped_importance_weights(old_logp, rollout_logp, mask, self.cap, "tis")
        elif self.correction == "mask":
            weights, over = capped_importance_weights(old_logp, rollout_logp, mask, self.cap, "mask")
            self.dropped = over
        else:
            return token_loss
        for key, value in (("is_weight_sum", weights.detach().sum()), ("is_capped", over.sum())):
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        return token_loss * weights

    def metrics(self, dist: DistContext) -> dict[str, float]:
        """The step's ``rollout/logprob_*`` metrics over all ranks (every rank must call it)."""
        local = {k: float(self.sums[k]) if k in self.sums else 0.0 for k in (*MISMATCH_SUMS, *MISMATCH_MAXES)}
        sums = dist.sum_values({k: local[k] for k in MISMATCH_SUMS})
        maxes = dist.max_values({k: local[k] for k in MISMATCH_MAXES})
        out = finalize_mismatch({k: torch.tensor(v) for k, v in (sums | maxes).items()})
        if self.correction != "none":
            weighted = dist.sum_values(
                {k: float(self.sums.get(k, 0.0)) for k in ("is_weight_sum", "is_capped")}
            )
            inv = 1.0 / sums["num_tokens"] if sums["num_tokens"] else 0.0
            out[M.ROLLOUT_IS_WEIGHT_MEAN] = weighted["is_weight_sum"] * inv
            out[M.ROLLOUT_IS_CAPPED_FRAC] = weighted["is_capped"] * inv
        return out
