"""The DAPO training loop (Yu et al. 2025, arXiv 2503.14476), readable top to bottom.

Each rollout step: sample prompts -> roll out G responses each -> reward (+ overlong shaping) ->
keep informative groups (dynamic sampling, more rounds until the batch is full) -> group-relative
advantages -> optimizer updates over whole-group mini-batches with the clipped token-level loss
-> log -> checkpoint.

DAPO's four techniques and where they live:

1. Clip-Higher: decoupled bounds 1 - clip_ratio_low <= r <= 1 + clip_ratio_high,
   :func:`dapo_rl.algorithm.policy_loss.clipped_policy_loss`.
2. Dynamic Sampling: :class:`dapo_rl.sampling.GroupCollector` (rounds, admission gate, carry-over)
   with :func:`dapo_rl.algorithm.filtering.filter_groups`.
3. Token-Level Policy Gradient Loss: ``token-mean`` weights computed once per optimizer mini-batch,
   :func:`dapo_rl.algorithm.aggregation.aggregation_weights`, so micro-batching cannot change it.
4. Overlong Reward Shaping: :func:`dapo_rl.algorithm.overlong.overlong_penalty` (soft punishment)
   and the truncation mask (overlong filtering) in :meth:`Trainer._samples`.

Launch:
    dapo train                                          # one process, embedded tiny default
    dapo train --config gsm8k model.path=DIR            # a real model
    torchrun --nproc_per_node 4 -m dapo_rl train --config dapo_math model.path=DIR
    dapo train --launcher ray --num-workers 4 --config dapo_math model.path=DIR

Data parallelism (torchrun, Ray; :mod:`dapo_rl.distributed`, docs/distributed.md) runs this same
loop: each rank rolls out its share of every round, the collector counts informative groups
over all ranks, the loss weights are normalised over all ranks, gradients are summed, and every
metric is reduced over ranks before rank 0 logs it. The result is the single-process update.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dapo_rl import checkpoint as ckpt
from dapo_rl.algorithm.advantages import ADVANTAGE_ESTIMATORS
from dapo_rl.algorithm.aggregation import aggregate, aggregation_totals, aggregation_weights
from dapo_rl.algorithm.filtering import GroupView
from dapo_rl.algorithm.guards import importance_ratio_guard
from dapo_rl.algorithm.kl import kl_penalty
from dapo_rl.algorithm.overlong import overlong_penalty
from dapo_rl.algorithm.policy_loss import accumulate_policy_metrics, clipped_policy_loss
from dapo_rl.batch import (
    MicroBatch,
    TrainSample,
    collate,
    padding_sample,
    plan_micro_batches,
    sequence_logprobs,
    split_by_groups,
)
from dapo_rl.config import DapoConfig, load_config
from dapo_rl.distributed import (
    DistContext,
    clip_grad_norm,
    gathered,
    init_distributed,
    merge_evaluations,
    pad_plan,
    sync_gradients,
    wrap_policy,
)
from dapo_rl.lifecycle import GracefulStop, RunClock, print_summary, progress_bar
from dapo_rl.optim import build_optimizer
from dapo_rl.plugins import resolve_filter, resolve_reward, resolve_template
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout import ROLLOUT_ENGINES
from dapo_rl.rollout.base import SamplingParams
from dapo_rl.runtime import (
    PromptEncoder,
    build_datasets,
    eos_token_ids,
    load_model_and_tokenizer,
    model_dir,
    open_run,
)
from dapo_rl.sampling import Collected, Group, GroupCollector
from dapo_rl.step_metrics import perf_metrics, rollout_metrics, trained_metrics, update_metrics


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from (run seed, step, round, ...), the same after a resume."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


RUN_COUNTERS = ("reward/timeouts_total", "reward/errors_total")
"""Running totals logged every step (on every rank from the start, so ranks reduce the same keys)."""


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer updates had a non-finite loss or gradient."""


class Trainer:
    """One DAPO run. Pass your own ``reward_fn`` (name or callable) or ``group_filter`` to extend.

    ``dist`` is the data-parallel context (default: :func:`dapo_rl.distributed.init_distributed`,
    which starts torch.distributed under torchrun and is a single process otherwise)."""

    def __init__(
        self,
        cfg: DapoConfig,
        run_dir: Path | None = None,
        resume: bool = False,
        reward_fn: str | Callable[..., Any] | None = None,
        group_filter: Callable[[GroupView], bool] | None = None,
        train_rows: list[Any] | None = None,
        eval_rows: list[Any] | None = None,
        template: str | Callable[[str], str] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.train.seed)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.owns_dist = dist is None
        self.dist = dist or init_distributed(cfg.train.device, cfg.distributed.timeout_s)
        self.device = self.dist.device
        with self.dist.main_first():  # rank 0 builds the cached warm-started model first
            path = model_dir(cfg) if not resume else ckpt.latest_checkpoint(run_dir) / "model"
        self.model, self.tokenizer = load_model_and_tokenizer(path, cfg, self.device)
        self.policy = wrap_policy(self.model, self.dist, cfg.distributed)  # what trains and samples
        d = cfg.data
        template = template or resolve_template(d.template)
        self.encode = PromptEncoder(self.tokenizer, template, d.use_chat_template, d.system_prompt)
        self.dataset, self.eval_rows = build_datasets(cfg, self.encode, train_rows, eval_rows)
        self.eos_ids = eos_token_ids(self.tokenizer, self.model)
        r = cfg.reward
        reward_fn = reward_fn or resolve_reward(r.name)
        self.reward = RewardRunner(reward_fn, r.timeout_s, r.num_workers, self.tokenizer.eos_token)
        self.engine = ROLLOUT_ENGINES.get(cfg.rollout.engine)(
            self.policy, self.tokenizer, cfg.rollout.max_batch_sequences
        )
        self.ref_policy = self._load_reference(model_dir(cfg)) if cfg.algorithm.kl_coef > 0 else None
        ds = cfg.dynamic_sampling
        self.collector = GroupCollector(
            cfg.batch.prompts_per_step, cfg.prompts_per_round, ds.max_rounds, ds.enable, ds.metric,
            group_filter or resolve_filter(ds.filter), ds.on_shortfall, ds.carry_over, ranks=self.dist,
        )  # fmt: skip
        self.optimizer, self.scheduler = build_optimizer(self.policy, cfg)
        self.step, self.updates, self.nonfinite_in_row = 0, 0, 0
        self.counters: dict[str, float] = defaultdict(float, dict.fromkeys(RUN_COUNTERS, 0.0))
        self.run_dir, self.logger = open_run(cfg, run_dir, self.dist)
        if resume:
            self._restore(ckpt.latest_checkpoint(self.run_dir))
        self.stop = GracefulStop()

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train for ``train.total_steps`` rollout steps; returns the run summary."""
        clock = RunClock()
        first_eval = self.evaluate() if self.step == 0 else None
        bar = progress_bar(
            self.cfg.train.total_steps, self.step, self.cfg.logging.progress and self.dist.is_main
        )
        with self.stop, bar:
            while self.step < self.cfg.train.total_steps and not self._stop_agreed():
                metrics = self.train_step()
                clock.add(metrics)
                self._after_step(metrics, bar)
            stopped = self._stop_agreed()
        final_eval = self.evaluate() if not stopped else None
        if self.cfg.checkpoint.save_final or stopped:
            self.save()
        summary = clock.summary(self, first_eval, final_eval)
        self._finish(summary)
        return summary

    def train_step(self) -> dict[str, float]:
        """One rollout step: collect informative groups, then update the policy on them."""
        self.step += 1
        self.timers: dict[str, float] = defaultdict(float)
        self.step_counts = {"reward/timeouts": 0.0, "reward/errors": 0.0, "reward/no_answer": 0.0}
        t0 = time.perf_counter()
        collected = self.collector.collect(self._generate_round)
        samples, metrics = self._samples(collected)
        metrics |= collected.metrics
        metrics |= rollout_metrics(collected.generated, self.step_counts, dict(self.counters), self.dist)
        fresh = not self.dist.any(any(g.age > 0 for g in collected.groups))
        if collected.total:
            metrics |= self._update(samples, collected.total, fresh)
        else:
            metrics["optim/skipped_empty_step"] = 1.0
        tokens = sum(g.num_tokens for g in collected.generated)
        metrics |= perf_metrics(self.timers, time.perf_counter() - t0, tokens, self.dist)
        metrics |= {"optim/lr": self.scheduler.get_last_lr()[0], "optim/updates": self.updates}
        return metrics

    def _generate_round(self, num_prompts: int, round_index: int) -> list[Group]:
        """Roll out G responses for this rank's share of ``num_prompts`` fresh prompts and score them.
        Every rank draws the same rows from its copy of the stream and keeps its own share."""
        cfg, r = self.cfg, self.cfg.rollout
        rows = self.dist.shard(self.dataset.next_batch(num_prompts))
        params = SamplingParams(
            max_new_tokens=r.max_response_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
            eos_token_ids=self.eos_ids, stop_strings=r.stop_strings,
            seed=derive_seed(cfg.train.seed, self.step, round_index, *self.dist.seed_parts),
        )  # fmt: skip
        t = time.perf_counter()
        prompt_ids = [self.encode(row) for row in rows]
        with gathered(self.policy):  # decode lengths differ across ranks: no collectives inside
            outs = self.engine.generate(prompt_ids, cfg.batch.samples_per_prompt, params)
        self.timers["rollout"] += time.perf_counter() - t
        return self._score(rows, prompt_ids, outs)

    def _score(self, rows: list, prompt_ids: list[list[int]], outs: list[list]) -> list[Group]:
        t = time.perf_counter()
        g_size = self.cfg.batch.samples_per_prompt
        texts = [resp.text for group in outs for resp in group]
        golds = [row.answer for row in rows for _ in range(g_size)]
        extras = [row.extra for row in rows for _ in range(g_size)]
        results, reward_metrics = self.reward.score_batch(texts, golds, extras)
        for key in ("reward/timeouts", "reward/errors"):  # per step, and the run's running total
            self.step_counts[key] += reward_metrics[key]
            self.counters[f"{key}_total"] += reward_metrics[key]
        self.step_counts["reward/no_answer"] += reward_metrics["reward/no_answer_rate"] * len(results)
        lengths = torch.tensor([resp.length for group in outs for resp in group], dtype=torch.float32)
        scores = torch.tensor([res.score for res in results], dtype=torch.float32)
        o = self.cfg.overlong
        shaped = scores
        if o.enable:
            shaped = scores + overlong_penalty(
                lengths, self.cfg.rollout.max_response_tokens, o.buffer_tokens, o.penalty_factor
            )
        groups = []
        for i, (row, ids, resp) in enumerate(zip(rows, prompt_ids, outs)):
            sl = slice(i * g_size, (i + 1) * g_size)
            groups.append(
                Group(row, ids, resp, scores[sl].tolist(), [x.acc for x in results[sl]], shaped[sl].tolist())
            )
        self.timers["reward"] += time.perf_counter() - t
        return groups

    def _samples(self, collected: Collected) -> tuple[list[TrainSample], dict[str, float]]:
        """Group-relative advantages and the overlong-filtering mask, one TrainSample per response;
        ``TrainSample.group`` is the group's position in the step's batch over all ranks."""
        if not collected.total:
            return [], {"sampling/groups_trained": 0}
        a, groups = self.cfg.algorithm, collected.groups
        rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
        index = torch.tensor(
            [p for p, g in zip(collected.positions, groups) for _ in g.responses], dtype=torch.long
        )
        adv = torch.zeros(0)
        if groups:
            adv, _ = ADVANTAGE_ESTIMATORS.get(a.advantage)(rewards, index, a.norm_adv_by_std, a.adv_eps)
        mask_trunc = self.cfg.overlong.mask_truncated
        responses = [(p, g, resp) for p, g in zip(collected.positions, groups) for resp in g.responses]
        samples = [
            TrainSample(g.prompt_ids, resp.token_ids, float(adv[k]), p, not (mask_trunc and resp.truncated))
            for k, (p, g, resp) in enumerate(responses)
        ]
        return samples, trained_metrics(rewards, adv, samples, self.dist)

    # ---- the update ----------------------------------------------------------------------------
    def _update(self, samples: list[TrainSample], total_groups: int, fresh: bool) -> dict[str, float]:
        """Optimizer updates over whole-group mini-batches, ``epochs_per_step`` passes. Old log-probs
        are skipped only for a single update on fresh data, where the ratio is exactly 1. Every rank
        runs the same mini-batches and the same (padded) number of micro-batches."""
        minibatches = split_by_groups(samples, self.cfg.batch.prompts_per_update, total_groups)
        plans = [self._plan(mb) for mb in minibatches]
        single = fresh and len(minibatches) == 1 and self.cfg.batch.epochs_per_step == 1
        t = time.perf_counter()
        old = None if single else self._frozen_logprobs(self.policy, minibatches, plans)
        ref = self._frozen_logprobs(self.ref_policy, minibatches, plans) if self.ref_policy else None
        self.timers["old_logprobs"] += time.perf_counter() - t
        t = time.perf_counter()
        policy, extra = None, defaultdict(float)
        for _ in range(self.cfg.batch.epochs_per_step):
            for i, (mb, plan) in enumerate(zip(minibatches, plans)):
                p, e = self._optimizer_update(mb, plan, old[i] if old else None, ref[i] if ref else None)
                policy = accumulate_policy_metrics(policy, p)
                for k, v in e.items():
                    extra[k] += v
        self.timers["update"] += time.perf_counter() - t
        n_updates = len(minibatches) * self.cfg.batch.epochs_per_step
        return update_metrics(policy, extra, n_updates, self.cfg.batch.epochs_per_step, self.dist)

    def _plan(self, samples: list[TrainSample]) -> list[list[int]]:
        """Micro-batches by token budget, padded with empty ones to the longest plan over ranks."""
        plan = plan_micro_batches([s.num_tokens for s in samples], self.cfg.batch.micro_batch_tokens)
        return pad_plan(plan, self.dist)

    def _micro_batch(self, samples: list[TrainSample], idx: list[int]) -> MicroBatch:
        """The micro-batch of rows ``idx``; an empty ``idx`` is a zero-weight padding micro-batch."""
        pad = self.tokenizer.pad_token_id
        if not idx:
            return collate([padding_sample(pad)], [0], pad, self.device)
        return collate(samples, idx, pad, self.device)

    @torch.no_grad()
    def _frozen_logprobs(
        self, model: torch.nn.Module, minibatches: list[list[TrainSample]], plans: list[list[list[int]]]
    ) -> list[list[torch.Tensor]]:
        """Log-probs under a frozen policy (the pre-update policy or the reference), per mini-batch
        and micro-batch."""
        t = self.cfg.rollout.temperature
        return [
            [sequence_logprobs(model, self._micro_batch(mb, idx), t)[0] for idx in plan]
            for mb, plan in zip(minibatches, plans)
        ]

    def _loss_weights(self, samples: list[TrainSample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token loss weights of the whole mini-batch, normalised over ALL ranks (semantics §7),
        and the per-response advantages."""
        if samples:
            mask = collate(
                samples, list(range(len(samples))), self.tokenizer.pad_token_id, self.device
            ).response_mask
        else:  # this rank holds no group of the mini-batch; it still counts in the all-reduce
            mask = torch.zeros((0, 1), device=self.device)
        group = torch.tensor([s.group for s in samples], dtype=torch.long, device=self.device)
        totals = aggregation_totals(mask, group, all_reduce=self.dist.all_reduce_sum)
        a = self.cfg.algorithm
        weights = aggregation_weights(mask, group, a.loss_agg_mode, totals, self.cfg.loss_norm_tokens)
        advantages = torch.tensor([s.advantage for s in samples], device=self.device)
        return weights, advantages

    def _optimizer_update(
        self,
        samples: list[TrainSample],
        plan: list[list[int]],
        old: list[torch.Tensor] | None,
        ref: list[torch.Tensor] | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One optimizer update: loss weights over the whole mini-batch, micro-batches accumulate,
        gradients are summed over ranks."""
        weights, advantages = self._loss_weights(samples)
        policy = None
        extra: dict[str, float] = defaultdict(float, {"loss/guard_skipped_microbatches": 0.0})
        self.policy.train()
        for j, idx in enumerate(plan):
            mb = self._micro_batch(samples, idx)
            w = weights[idx, : mb.response_mask.shape[1]] if idx else torch.zeros_like(mb.response_mask)
            adv = advantages[idx] if idx else torch.zeros(1, device=self.device)
            loss, m = self._micro_loss(mb, w, adv, old[j] if old else None, ref[j] if ref else None, extra)
            policy = accumulate_policy_metrics(policy, m)
            loss.backward()
            extra["loss"] += float(loss.detach())
        sync_gradients(self.policy, self.dist)
        extra |= self._step_optimizer(extra["loss"])
        return policy, extra

    def _micro_loss(
        self,
        mb: MicroBatch,
        w: torch.Tensor,
        adv: torch.Tensor,
        old_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        extra: dict[str, float],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss of one micro-batch (clipped policy loss + KL - entropy bonus)."""
        a = self.cfg.algorithm
        logp, entropy = sequence_logprobs(self.policy, mb, self.cfg.rollout.temperature, with_entropy=True)
        old_logp = old_logp if old_logp is not None else logp.detach()
        tok_loss, m = clipped_policy_loss(
            logp, old_logp, adv, mb.response_mask, a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c
        )
        loss = aggregate(tok_loss, w)
        extra["entropy_sum"] += float((entropy.detach() * mb.response_mask).sum())
        if ref_logp is not None:
            kl = kl_penalty(logp, ref_logp, a.kl_estimator)
            extra["kl_ref_sum"] += float((kl.detach() * mb.response_mask).sum())
            loss = loss + a.kl_coef * aggregate(kl, w)
        if a.entropy_coef:
            loss = loss - a.entropy_coef * aggregate(entropy, w)
        ok, _ = importance_ratio_guard(logp.detach(), old_logp, mb.response_mask, a.max_importance_ratio)
        if not ok:  # no gradient from this micro-batch; backward still runs (FSDP needs every rank)
            extra["loss/guard_skipped_microbatches"] += 1
            loss = loss * 0.0
        return loss, m

    def _step_optimizer(self, local_loss: float) -> dict[str, float]:
        """Clip, check finiteness (of the loss summed over ranks and the global gradient norm, so
        every rank decides alike), step; a non-finite update is skipped and counted."""
        total_loss = self.dist.sum_values({"loss": local_loss})["loss"]
        grad_norm = clip_grad_norm(self.policy, self.cfg.optim.grad_clip or float("inf"))
        finite = math.isfinite(grad_norm) and math.isfinite(total_loss)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.updates += 1
            self.nonfinite_in_row = 0
        else:
            self.nonfinite_in_row += 1
            self.counters["optim/nonfinite_skipped"] += 1
            if self.nonfinite_in_row >= self.cfg.train.max_nonfinite_updates:
                raise NonFiniteError(
                    f"{self.nonfinite_in_row} consecutive updates had a non-finite loss or gradient "
                    f"(last loss {total_loss}, grad norm {grad_norm}); lower optim.lr or check the data"
                )
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": grad_norm if finite else 0.0}

    def _load_reference(self, path: Path) -> torch.nn.Module:
        ref, _ = load_model_and_tokenizer(path, self.cfg, self.device)
        ref.requires_grad_(False)
        return wrap_policy(ref.eval(), self.dist, self.cfg.distributed)

    # ---- evaluation, logging, checkpoints, signals ---------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """avg@k / pass@k / maj@k on the held-out rows (None when there are none); each rank
        evaluates its share and the per-problem results are merged."""
        if not self.eval_rows:
            return None
        from dapo_rl.evaluation import evaluate, scalar_metrics

        e, rows = self.cfg.eval, self.dist.shard(self.eval_rows)
        part = None
        with gathered(self.policy):
            if rows:
                part = evaluate(
                    self.model, self.tokenizer, rows, self.reward, e.k, self.cfg.eval_max_response_tokens,
                    e.temperature, e.top_p, self.encode.template, self.cfg.data.use_chat_template,
                    self.cfg.data.system_prompt, progress=False, engine=self.engine,
                    seed=derive_seed(self.cfg.train.seed, "eval", self.step, *self.dist.seed_parts),
                    stop_strings=self.cfg.rollout.stop_strings,
                )  # fmt: skip
        result = merge_evaluations(self.dist.gather_objects(part), e.k)
        self.logger.log(self.step, {f"eval/{k}": v for k, v in scalar_metrics(result).items()})
        return result

    def _after_step(self, metrics: dict[str, float], bar: Any) -> None:
        self.logger.log(self.step, metrics)
        bar.update(1)
        bar.set_postfix(
            reward=f"{metrics.get('reward/mean', float('nan')):.2f}",
            acc=f"{metrics.get('reward/acc', float('nan')):.2f}",
            keep=f"{metrics.get('sampling/keep_rate', float('nan')):.2f}",
        )
        c, e = self.cfg.checkpoint, self.cfg.eval
        if e.every_steps and self.step % e.every_steps == 0 and self.step < self.cfg.train.total_steps:
            self.evaluate()
        if c.every_steps and self.step % c.every_steps == 0 and self.step < self.cfg.train.total_steps:
            self.save()

    def _stop_agreed(self) -> bool:
        """A SIGINT/SIGTERM seen by any rank stops every rank after the same step."""
        self.stop.requested = self.dist.any(self.stop.requested)
        return self.stop.requested

    def state_dict(self) -> dict[str, Any]:
        """What every rank holds alike (the optimizer is saved by the checkpoint module)."""
        return {
            "scheduler": self.scheduler.state_dict(),
            "dataset": self.dataset.state_dict(),
            "updates": self.updates,
            "nonfinite_in_row": self.nonfinite_in_row,
        }

    def local_state_dict(self) -> dict[str, Any]:
        """What is this rank's own: its carry-over buffer and its counters."""
        return {"collector": self.collector.state_dict(), "counters": dict(self.counters)}

    def save(self) -> Path:
        path = ckpt.save_checkpoint(
            self.run_dir, self.step, self.policy, self.optimizer, self.tokenizer, self.state_dict(),
            self.local_state_dict(), self.cfg.checkpoint.keep_last, self.dist,
        )  # fmt: skip
        if self.cfg.logging.plots and self.dist.is_main:
            from dapo_rl.plots import plot_run

            plot_run(self.run_dir)
        return path

    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, self.policy, self.optimizer, self.dist)
        self.scheduler.load_state_dict(state["scheduler"])
        self.dataset.load_state_dict(state["dataset"])
        self.collector.load_state_dict(state["collector"])
        self.counters = defaultdict(float, state["counters"])
        self.step, self.updates = state["step"], state["updates"]
        self.nonfinite_in_row = state["nonfinite_in_row"]
        ckpt.set_rng_state(state["rng"])
        self.logger.truncate_after(self.step)

    def _finish(self, summary: dict[str, Any]) -> None:
        import json

        self.logger.close()
        self.reward.close()
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            if self.cfg.logging.plots:
                from dapo_rl.plots import plot_run

                plot_run(self.run_dir)
            if self.cfg.logging.progress:
                print_summary(summary)
        self.dist.barrier()
        if self.owns_dist:
            self.dist.close()


def train(
    config: DapoConfig | str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    reward_fn: str | Callable[..., Any] | None = None,
    group_filter: Callable[[GroupView], bool] | None = None,
    train_rows: list[Any] | None = None,
    eval_rows: list[Any] | None = None,
    template: str | Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Train from Python: a DapoConfig (or a preset name / YAML path plus overrides) and your own
    reward function, group filter, rows and template (see docs/extending.md). Returns the summary."""
    cfg = config if isinstance(config, DapoConfig) else load_config(config, overrides)
    trainer = Trainer(
        cfg, reward_fn=reward_fn, group_filter=group_filter, train_rows=train_rows, eval_rows=eval_rows,
        template=template,
    )  # fmt: skip
    return trainer.fit()


def train_from_cli(config: str | None, overrides: list[str], resume: str | None) -> dict[str, Any]:
    """``dapo train``: a new run from a preset, or ``--resume RUN_DIR`` (overrides apply on top)."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
        ckpt.latest_checkpoint(run_dir)  # fail early and clearly when there is nothing to resume
        cfg = load_config(run_dir / "config.yaml", overrides)
        return Trainer(cfg, run_dir=run_dir, resume=True).fit()
    cfg = load_config(config, overrides)
    name = cfg.logging.run_name
    if name and ckpt.list_checkpoints(Path(cfg.logging.run_dir) / name):
        raise ValueError(
            f"run directory {Path(cfg.logging.run_dir) / name} already has checkpoints: "
            "resume it with --resume, or choose another logging.run_name"
        )
    return Trainer(cfg).fit()
