"""The policy update of a DAPO step: optimizer updates over whole-group mini-batches with the
clipped token-level loss (Clip-Higher and the token-level policy-gradient loss of the paper).

Per mini-batch (``batch.prompts_per_update`` groups), :class:`PolicyUpdate` computes the loss
weights once over the whole mini-batch and over all ranks
(:func:`dapo_rl.algorithm.aggregation.aggregation_weights`, so micro-batching cannot change the
loss), accumulates micro-batch gradients (clipped policy loss + KL - entropy bonus), sums them over
ranks, clips, and steps AdamW and the schedule. A non-finite loss or gradient skips the update;
``train.max_nonfinite_updates`` of them in a row raise :class:`NonFiniteError`.
"""

from __future__ import annotations

import math

import torch

from dapo_rl.algorithm.aggregation import aggregate, aggregation_totals, aggregation_weights
from dapo_rl.algorithm.guards import importance_ratio_guard
from dapo_rl.algorithm.kl import kl_penalty
from dapo_rl.algorithm.policy_loss import accumulate_policy_metrics, clipped_policy_loss
from dapo_rl.batch import (
    MicroBatch,
    TrainSample,
    collate,
    forward_only_logprobs,
    padding_sample,
    plan_micro_batches,
    sequence_logprobs,
    split_by_groups,
)
from dapo_rl.collapse import nonfinite_update_error
from dapo_rl.config import DapoConfig
from dapo_rl.config_async import plain_behaviour_ratio
from dapo_rl.distributed import DistContext, clip_grad_norm, pad_plan, sync_gradients
from dapo_rl.errors import DivergedError
from dapo_rl.health.ledger import UpdateTally
from dapo_rl.mismatch import MismatchTracker
from dapo_rl.step_metrics import RunTotals, StageTimes, UpdateSums, update_metrics


class NonFiniteError(DivergedError):
    """Too many consecutive optimizer updates had a non-finite loss or gradient (exit code 3)."""


class PolicyUpdate:
    """Updates ``policy`` with ``optimizer`` / ``scheduler`` on a step's samples. ``updates`` counts
    the optimizer updates taken; skipped non-finite updates count in ``totals``."""

    def __init__(
        self,
        cfg: DapoConfig,
        policy: torch.nn.Module,
        ref_policy: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        pad_token_id: int,
        dist: DistContext,
        totals: RunTotals,
    ) -> None:
        self.cfg, self.policy, self.ref_policy = cfg, policy, ref_policy
        self.optimizer, self.scheduler = optimizer, scheduler
        self.pad_token_id, self.dist, self.totals = pad_token_id, dist, totals
        self.device = dist.device
        self.updates, self.nonfinite_in_row = 0, 0
        self.behaviour_ratio = plain_behaviour_ratio(cfg)  # async.decoupled_loss=false: old = rollout
        self.mismatch: MismatchTracker | None = None  # set per step, when responses carry log-probs
        self.tally = UpdateTally()  # the step's token states for the ledger (health/ledger.py)

    def __call__(
        self, samples: list[TrainSample], total_groups: int, fresh: bool, stages: StageTimes
    ) -> dict[str, float]:
        """Optimizer updates over whole-group mini-batches, ``epochs_per_step`` passes. Old log-probs
        are skipped only for a single update on fresh data, where the ratio is exactly 1, and with
        ``async.decoupled_loss: false``, where the rollout's own log-probs are the old ones. Every rank
        runs the same mini-batches and the same (padded) number of micro-batches."""
        epochs = self.cfg.batch.epochs_per_step
        minibatches = split_by_groups(samples, self.cfg.batch.prompts_per_update, total_groups)
        plans = [self._plan(mb) for mb in minibatches]
        self.mismatch = MismatchTracker.for_step(samples, self.cfg.rollout, self.dist)
        with stages.time("old_logprobs"):
            single = fresh and len(minibatches) == 1 and epochs == 1
            skip = single or self.behaviour_ratio
            old = None if skip else self._frozen_logprobs(self.policy, minibatches, plans)
            ref = self._frozen_logprobs(self.ref_policy, minibatches, plans) if self.ref_policy else None
        policy_sums, sums = None, UpdateSums(kl_ref=0.0 if self.ref_policy else None)
        self.tally = UpdateTally()
        with stages.time("update"):
            for epoch in range(epochs):
                self.tally.counting = epoch == epochs - 1  # a token's state in its last update
                for i, (mb, plan) in enumerate(zip(minibatches, plans)):
                    frozen = (old[i] if old else None, ref[i] if ref else None)
                    policy_sums = accumulate_policy_metrics(
                        policy_sums, self._optimizer_update(mb, plan, *frozen, sums)
                    )
        metrics = update_metrics(policy_sums, sums, len(minibatches) * epochs, epochs, self.dist)
        return metrics | (self.mismatch.metrics(self.dist) if self.mismatch else {})

    def _plan(self, samples: list[TrainSample]) -> list[list[int]]:
        """Micro-batches by token budget, padded with empty ones to the longest plan over ranks."""
        plan = plan_micro_batches([s.num_tokens for s in samples], self.cfg.batch.micro_batch_tokens)
        return pad_plan(plan, self.dist)

    def _micro_batch(self, samples: list[TrainSample], idx: list[int]) -> MicroBatch:
        """The micro-batch of rows ``idx``; an empty ``idx`` is a zero-weight padding micro-batch."""
        if not idx:
            return collate([padding_sample(self.pad_token_id)], [0], self.pad_token_id, self.device)
        return collate(samples, idx, self.pad_token_id, self.device)

    @torch.no_grad()
    def _frozen_logprobs(
        self, model: torch.nn.Module, minibatches: list[list[TrainSample]], plans: list[list[list[int]]]
    ) -> list[list[torch.Tensor]]:
        """Log-probs under a frozen policy (the pre-update policy or the reference), per mini-batch
        and micro-batch."""
        temperature, batch = self.cfg.rollout.temperature, self.cfg.batch
        budget = batch.forward_micro_batch_tokens or 2 * batch.micro_batch_tokens  # no activations kept
        out = []
        for mb, plan in zip(minibatches, plans):
            forward_plan = pad_plan(plan_micro_batches([s.num_tokens for s in mb], budget), self.dist)
            out.append(forward_only_logprobs(model, mb, forward_plan, plan, self._micro_batch, temperature))
        return out

    def _loss_weights(self, samples: list[TrainSample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token loss weights of the whole mini-batch, normalised over ALL ranks (semantics §7),
        and the per-response advantages."""
        if samples:
            every = list(range(len(samples)))
            mask = collate(samples, every, self.pad_token_id, self.device).response_mask
        else:  # this rank holds no group of the mini-batch; it still counts in the all-reduce
            mask = torch.zeros((0, 1), device=self.device)
        group = torch.tensor([s.group for s in samples], dtype=torch.long, device=self.device)
        totals = aggregation_totals(mask, group, all_reduce=self.dist.all_reduce_sum)
        mode = self.cfg.algorithm.loss_agg_mode
        weights = aggregation_weights(mask, group, mode, totals, self.cfg.loss_norm_tokens)
        advantages = torch.tensor([s.advantage for s in samples], device=self.device)
        return weights, advantages

    def _optimizer_update(
        self,
        samples: list[TrainSample],
        plan: list[list[int]],
        old: list[torch.Tensor] | None,
        ref: list[torch.Tensor] | None,
        sums: UpdateSums,
    ) -> dict[str, torch.Tensor]:
        """One optimizer update: loss weights over the whole mini-batch, micro-batches accumulate,
        gradients are summed over ranks. Returns the policy-loss metric sums; adds to ``sums``."""
        weights, advantages = self._loss_weights(samples)
        policy_sums, local_loss = None, 0.0
        self.policy.train()
        for j, idx in enumerate(plan):
            mb = self._micro_batch(samples, idx)
            w = weights[idx, : mb.response_mask.shape[1]] if idx else torch.zeros_like(mb.response_mask)
            adv = advantages[idx] if idx else torch.zeros(1, device=self.device)
            rollout = self.mismatch.rollout_logprobs(samples, idx, w.shape[1]) if self.mismatch else None
            old_j = old[j] if old else (rollout if self.behaviour_ratio else None)
            loss, m = self._micro_loss(mb, w, adv, old_j, ref[j] if ref else None, sums, rollout)
            policy_sums = accumulate_policy_metrics(policy_sums, m)
            loss.backward()
            local_loss += float(loss.detach())
        sync_gradients(self.policy, self.dist)
        sums.loss += local_loss
        sums.grad_norm += self._step_optimizer(local_loss)
        return policy_sums

    def _micro_loss(
        self,
        mb: MicroBatch,
        w: torch.Tensor,
        adv: torch.Tensor,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        sums: UpdateSums,
        rollout_logp: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss of one micro-batch (clipped policy loss, TIS-weighted when asked, + KL
        - entropy bonus); ``rollout_logp``: the engine's log-probs, for the mismatch metrics."""
        algo = self.cfg.algorithm
        logp, entropy = sequence_logprobs(self.policy, mb, self.cfg.rollout.temperature, with_entropy=True)
        old_logp = old_logp if old_logp is not None else logp.detach()
        states: dict[str, torch.Tensor] = {}  # per-token clip states, for the ledger
        tok_loss, m = clipped_policy_loss(
            logp,
            old_logp,
            adv,
            mb.response_mask,
            algo.clip_ratio_low,
            algo.clip_ratio_high,
            algo.clip_ratio_c,
            token_states=states,
        )
        if rollout_logp is not None and self.mismatch is not None:
            self.mismatch.dropped = None
            tok_loss = self.mismatch.apply(tok_loss, old_logp, rollout_logp, mb.response_mask)
            states["dropped"] = self.mismatch.dropped
        loss = aggregate(tok_loss, w)
        sums.entropy += float((entropy.detach() * mb.response_mask).sum())
        if ref_logp is not None:
            kl = kl_penalty(logp, ref_logp, algo.kl_estimator)
            sums.kl_ref += float((kl.detach() * mb.response_mask).sum())
            loss = loss + algo.kl_coef * aggregate(kl, w)
        if algo.entropy_coef:
            loss = loss - algo.entropy_coef * aggregate(entropy, w)
        ok, _ = importance_ratio_guard(logp.detach(), old_logp, mb.response_mask, algo.max_importance_ratio)
        self.tally.micro(mb.response_mask, adv, ok, states)
        if not ok:  # no gradient from this micro-batch; backward still runs (FSDP needs every rank)
            sums.guard_skipped += 1
            loss = loss * 0.0
        return loss, m

    def _step_optimizer(self, local_loss: float) -> float:
        """Clip, check finiteness (of the loss summed over ranks and the global gradient norm, so
        every rank decides alike), step; a non-finite update is skipped and counted. Returns the
        gradient norm (0 for a skipped update)."""
        total_loss = self.dist.sum_values({"loss": local_loss})["loss"]
        grad_norm = clip_grad_norm(self.policy, self.cfg.optim.grad_clip or float("inf"))
        finite = math.isfinite(grad_norm) and math.isfinite(total_loss)
        self.tally.end_update(finite)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.updates += 1
            self.nonfinite_in_row = 0
        else:
            self.nonfinite_in_row += 1
            self.totals.nonfinite_skipped += 1
            if self.nonfinite_in_row >= self.cfg.train.max_nonfinite_updates:
                why = nonfinite_update_error(self.nonfinite_in_row, total_loss, grad_norm, self.cfg.optim.lr)
                raise NonFiniteError(str(why))
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm if finite else 0.0
