"""The DAPO training loop (Yu et al. 2025, arXiv 2503.14476), readable top to bottom.

Each rollout step: sample prompts -> roll out G responses each -> reward (+ overlong shaping) ->
keep informative groups (dynamic sampling, more rounds until the batch is full) -> group-relative
advantages -> optimizer updates over whole-group mini-batches with the clipped token-level loss
(:class:`dapo_rl.update.PolicyUpdate`) -> the rollout engine takes the new weights
(``engine.sync_weights()``) -> log -> checkpoint.

DAPO's four techniques and where they live:

1. Clip-Higher: decoupled bounds 1 - clip_ratio_low <= r <= 1 + clip_ratio_high,
   :func:`dapo_rl.algorithm.policy_loss.clipped_policy_loss` (called by :mod:`dapo_rl.update`).
2. Dynamic Sampling: :class:`dapo_rl.sampling.GroupCollector` (rounds, admission gate, carry-over)
   with :func:`dapo_rl.algorithm.filtering.filter_groups`.
3. Token-Level Policy Gradient Loss: ``token-mean`` weights computed once per optimizer mini-batch,
   :func:`dapo_rl.algorithm.aggregation.aggregation_weights`, so micro-batching cannot change it.
4. Overlong Reward Shaping: :func:`dapo_rl.algorithm.overlong.overlong_penalty` (soft punishment)
   and overlong filtering, :func:`dapo_rl.algorithm.overlong.truncation_loss_mask` (applied in
   :meth:`Trainer._samples`).

Where batches come from (:mod:`dapo_rl.async_rollout.source`, one interface): by default the
trainer's own engine generates each step's batch from the live policy (synchronous); with
``async.max_staleness`` eta > 0 a rollout worker process makes them ahead, the batch of step s with the
weights of version max(0, s - 1 - eta), while the trainer trains (docs/async.md).

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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dapo_rl import checkpoint as ckpt
from dapo_rl import metric_names as M
from dapo_rl.algorithm.advantages import ADVANTAGE_ESTIMATORS
from dapo_rl.algorithm.filtering import GroupView
from dapo_rl.algorithm.overlong import truncation_loss_mask
from dapo_rl.async_rollout.producer import derive_seed
from dapo_rl.async_rollout.source import build_source, trainer_engine_config
from dapo_rl.batch import TrainSample
from dapo_rl.collapse import CollapseGuard
from dapo_rl.config import DapoConfig
from dapo_rl.data.encoder import PromptEncoder
from dapo_rl.distributed import DistContext, gathered, init_distributed, wrap_policy
from dapo_rl.errors import RolloutWorkerError
from dapo_rl.eval_metrics import merge_evaluations, scalar_metrics
from dapo_rl.evaluation import EvalSpec, evaluate
from dapo_rl.generations import eval_records, step_records
from dapo_rl.health.run import step_health
from dapo_rl.lifecycle import (
    GracefulStop,
    RunClock,
    finished_summary,
    print_summary,
    progress_bar,
    quiet_third_party,
)
from dapo_rl.models.loading import compute_dtype, load_model_and_tokenizer
from dapo_rl.models.lora import AdaptersDisabled
from dapo_rl.optim import build_optimizer
from dapo_rl.plots import plot_run
from dapo_rl.plugins import resolve_filter, resolve_reward, resolve_template
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout.factory import build_engine
from dapo_rl.runtime import (
    build_datasets,
    check_run_dir,
    eos_token_ids,
    model_dir,
    open_run,
    release_run_dir,
    save_config,
)
from dapo_rl.sampling import Collected, GroupCollector
from dapo_rl.step_metrics import (
    RunTotals,
    perf_metrics,
    rollout_metrics,
    trained_metrics,
)
from dapo_rl.storage import atomic_write_text
from dapo_rl.tracking import check_trackers
from dapo_rl.update import PolicyUpdate


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
        check_trackers(cfg.logging.wandb)  # before anything is loaded or written
        quiet_third_party()
        torch.manual_seed(cfg.train.seed)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.owns_dist = dist is None
        self.dist = dist or init_distributed(cfg.train.device, cfg.distributed.timeout_s)
        self.device = self.dist.device
        run_dir = check_run_dir(cfg, run_dir, resume, self.dist)  # locked, before the model loads
        resume_from = ckpt.resume_checkpoint(run_dir, self.dist) if resume else None  # newest valid
        with self.dist.main_first():  # rank 0 builds the cached warm-started model first
            path = model_dir(cfg) if resume_from is None else resume_from / "model"
        self.model, self.tokenizer = load_model_and_tokenizer(path, cfg, self.device)
        # what trains and samples: float32 master weights, forward and backward in model.dtype
        self.policy = wrap_policy(self.model, self.dist, cfg.distributed, compute_dtype(cfg))
        data = cfg.data
        template = template or resolve_template(data.template)
        self.encode = PromptEncoder(self.tokenizer, template, data.use_chat_template, data.system_prompt)
        self.dataset, self.eval_rows = build_datasets(cfg, self.encode, train_rows, eval_rows)
        self.eos_ids = eos_token_ids(self.tokenizer, self.model)
        reward_fn = reward_fn or resolve_reward(cfg.reward.name)
        self.reward = RewardRunner(
            reward_fn, cfg.reward.timeout_s, cfg.reward.num_workers, self.tokenizer.eos_token
        )
        self.engine = build_engine(self.policy, self.tokenizer, trainer_engine_config(cfg))
        self.ref_policy = self._load_reference(model_dir(cfg)) if cfg.algorithm.kl_coef > 0 else None
        ds = cfg.dynamic_sampling
        user_filter = group_filter or resolve_filter(ds.filter)  # None: the registered criterion
        self.collector = GroupCollector(
            cfg.batch.prompts_per_step, cfg.prompts_per_round, ds.max_rounds, ds.enable, ds.metric,
            user_filter=user_filter, criterion="std" if user_filter else ds.filter,
            on_shortfall=ds.on_shortfall, carry_over=ds.carry_over, ranks=self.dist,
        )  # fmt: skip
        self.source = build_source(self, reward_fn, str(model_dir(cfg)))  # sync, or the rollout worker
        self.optimizer, self.scheduler = build_optimizer(self.policy, cfg)
        self.step, self.totals = 0, RunTotals()
        self.collapse = CollapseGuard(cfg.train.max_empty_steps, cfg.optim.lr, self.dist.any)
        self.update = PolicyUpdate(
            cfg, self.policy, self.ref_policy, self.optimizer, self.scheduler, self.tokenizer.pad_token_id,
            self.dist, self.totals,
        )  # fmt: skip
        self.run_dir, self.logger = open_run(cfg, run_dir, self.dist, write_config=not resume)
        if resume_from is not None:
            self._restore(resume_from)
            self.engine.sync_weights()  # an engine holding its own weights takes the restored ones
        self.stop = GracefulStop()

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train for ``train.total_steps`` rollout steps; returns the run summary."""
        clock = RunClock()
        main = self.dist.is_main
        done = finished_summary(self.run_dir, self.step, self.cfg.train.total_steps, main) if main else None
        done = self.dist.broadcast_object(done)
        if done is not None:  # a resumed run that already finished: change nothing, say so
            self.logger.close()
            self.reward.close()
            if self.owns_dist:
                self.dist.close()
            return done
        self.source.start(self.step)  # the rollout worker starts while the first evaluation runs
        try:
            first_eval = self.evaluate() if self.step == 0 else None
            bar = progress_bar(
                self.cfg.train.total_steps, self.step, self.cfg.logging.progress and self.dist.is_main
            )
            with self.stop, bar:
                while self.step < self.cfg.train.total_steps and not self._stop_agreed():
                    try:
                        metrics = self.train_step()
                    except RolloutWorkerError:  # dead or hung: a checkpoint that resumes exactly, exit 5
                        self.save()
                        raise
                    clock.add(metrics)
                    self._after_step(metrics, bar)
                stopped = self._stop_agreed()
                if self.cfg.checkpoint.save_final or stopped:  # before the final evaluation (signals)
                    self.save()
            stopped = self._stop_agreed()  # a signal during that save stops here too
            final_eval = self.evaluate() if not stopped else None
        except BaseException:
            self.source.close(force=True)  # no rollout worker outlives a failed fit (in-process callers)
            raise
        summary = clock.summary(self, first_eval, final_eval, self.logger.history())
        self._finish(summary)
        return summary

    def train_step(self) -> dict[str, float]:
        """One rollout step: take the step's batch from the source (generated, scored, dynamically
        sampled), update the policy on it, and publish the new weights to whatever generates."""
        step_start = time.perf_counter()
        batch = self.source.next_batch(self.step + 1)
        self.step += 1
        self.stages, self.counts, collected = batch.stages, batch.counts, batch.collected
        self.totals.add_step(self.counts)
        samples, metrics = self._samples(collected)
        if self.cfg.logging.generations_per_step:
            n, seed = self.cfg.logging.generations_per_step, self.cfg.train.seed
            self.logger.log_generations(self.step, step_records(self.step, collected, samples, n, seed))
        metrics |= collected.metrics | batch.metrics
        metrics |= rollout_metrics(collected.generated, self.counts, self.totals, self.dist)
        carried = self.dist.any(any(g.age > 0 for g in collected.groups))
        fresh = not carried and not self.cfg.async_.max_staleness  # stale (async): recompute pi_prox
        self.trained_groups = collected.total
        if collected.total:
            metrics |= self.update(samples, collected.total, fresh, self.stages)
        else:
            metrics["optim/skipped_empty_step"] = 1.0
        with self.stages.time("weight_sync"):
            self.source.publish(self.step, changed=bool(collected.total))
        tokens = sum(g.num_tokens for g in collected.generated)
        metrics |= perf_metrics(self.stages, time.perf_counter() - step_start, tokens, self.dist)
        if M.ASYNC_TRAINER_WAIT in metrics:
            metrics[M.ASYNC_IDLE_RATIO_TRAINER] = metrics[M.ASYNC_TRAINER_WAIT] / metrics[M.PERF_TIME_STEP]
        metrics |= {"optim/lr": self.scheduler.get_last_lr()[0], "optim/updates": self.update.updates}
        return metrics | step_health(self, collected, samples, metrics)  # ledger, guard, weights

    def _samples(self, collected: Collected) -> tuple[list[TrainSample], dict[str, float]]:
        """Group-relative advantages and the overlong-filtering mask, one TrainSample per response;
        ``TrainSample.group`` is the group's position in the step's batch over all ranks."""
        if not collected.total:
            return [], {"sampling/groups_trained": 0}
        algo, groups = self.cfg.algorithm, collected.groups
        rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
        flat = [(pos, g, resp) for pos, g in zip(collected.positions, groups) for resp in g.responses]
        index = torch.tensor([pos for pos, _, _ in flat], dtype=torch.long)
        adv = torch.zeros(0)
        if groups:
            estimator = ADVANTAGE_ESTIMATORS.get(algo.advantage)
            adv, _ = estimator(rewards, index, algo.norm_adv_by_std, algo.adv_eps)
        truncated = torch.tensor([resp.truncated for _, _, resp in flat], dtype=torch.bool)
        keep = truncation_loss_mask(truncated) if self.cfg.overlong.mask_truncated else torch.ones(len(flat))
        samples = [
            TrainSample(g.prompt_ids, resp.token_ids, float(adv[i]), pos, bool(keep[i]), resp.logprobs)
            for i, (pos, g, resp) in enumerate(flat)
        ]
        return samples, trained_metrics(rewards, adv, samples, self.dist)

    def _load_reference(self, path: Path) -> Any:
        """The frozen KL reference: with LoRA the live policy with its adapters off (no copy),
        else the initial model again, stored in the compute dtype."""
        if self.cfg.model.lora.rank > 0:
            return AdaptersDisabled(self.policy)
        ref, _ = load_model_and_tokenizer(path, self.cfg, self.device, trainable=False)
        return wrap_policy(ref, self.dist, self.cfg.distributed, compute_dtype(self.cfg))

    @property
    def updates(self) -> int:
        """Optimizer updates taken so far in the run."""
        return self.update.updates

    # ---- evaluation, logging, checkpoints, signals ---------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """avg@k / pass@k / maj@k on the held-out rows (None when there are none); each rank
        evaluates its share with the rollout engine and the per-problem results are merged."""
        if not self.eval_rows:
            return None
        cfg = self.cfg
        spec = EvalSpec(
            k=cfg.eval.k, max_response_tokens=cfg.eval_max_response_tokens, eos_token_ids=self.eos_ids,
            temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, stop_strings=cfg.rollout.stop_strings,
            seed=derive_seed(cfg.train.seed, "eval", self.step, *self.dist.seed_parts), keep_texts=True,
        )  # fmt: skip
        rows, part = self.dist.shard(self.eval_rows), None
        with gathered(self.policy, getattr(self.engine, "samples_from_policy", True)):
            if rows:
                part = evaluate(self.engine, self.encode, self.reward, rows, spec)
        result = merge_evaluations(self.dist.gather_objects(part), spec.k)
        self.logger.log(self.step, {M.eval_key(k): v for k, v in scalar_metrics(result).items()})
        self.logger.log_eval_samples(self.step, eval_records(result, self.step))
        return result

    def _after_step(self, metrics: dict[str, float], bar: Any) -> None:
        self.logger.log(self.step, metrics)
        if self.trained_groups:  # a diverged run stops here, before it evaluates or saves
            self.collapse.check_weights(self.policy, f"after the updates of step {self.step}")
        self.collapse.after_step(self.step, self.trained_groups)
        bar.update(1)
        bar.set_postfix(
            reward=f"{metrics.get(M.REWARD_MEAN, float('nan')):.2f}",
            acc=f"{metrics.get(M.REWARD_ACC, float('nan')):.2f}",
            keep=f"{metrics.get(M.SAMPLING_KEEP_RATE, float('nan')):.2f}",
        )
        not_last = self.step < self.cfg.train.total_steps
        every_eval, every_save = self.cfg.eval.every_steps, self.cfg.checkpoint.every_steps
        if every_eval and self.step % every_eval == 0 and not_last:
            self.evaluate()
        if every_save and self.step % every_save == 0 and not_last:
            self.save()

    def _stop_agreed(self) -> bool:
        """A SIGINT/SIGTERM seen by any rank stops every rank after the same step."""
        self.stop.requested = self.dist.any(self.stop.requested)
        return self.stop.requested

    def state_dict(self) -> dict[str, Any]:
        """What every rank holds alike (the optimizer is saved by the checkpoint module)."""
        return {
            "scheduler": self.scheduler.state_dict(),
            **self.source.state_dict(),  # the data position (async: also the batches made ahead)
            "updates": self.update.updates,
            "nonfinite_in_row": self.update.nonfinite_in_row,
            "collapse": self.collapse.state_dict(),
        }

    def local_state_dict(self) -> dict[str, Any]:
        """What is this rank's own: its carry-over buffer and its counters."""
        return {**self.source.local_state_dict(), "counters": self.totals.to_dict()}

    def save(self) -> Path:
        path = ckpt.save_checkpoint(
            self.run_dir, self.step, self.policy, self.optimizer, self.tokenizer, self.state_dict(),
            self.local_state_dict(), self.cfg.checkpoint.keep_last, self.dist,
        )  # fmt: skip
        if self.cfg.logging.plots and self.dist.is_main:
            plot_run(self.run_dir)
        return path

    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, self.policy, self.optimizer, self.dist)
        self.scheduler.load_state_dict(state["scheduler"])
        self.source.load_state_dict(state)
        self.totals.load(state["counters"])
        self.step, self.update.updates = state["step"], state["updates"]
        self.update.nonfinite_in_row = state["nonfinite_in_row"]
        self.collapse.load_state_dict(state.get("collapse", {}))
        ckpt.set_rng_state(state["rng"])
        self.logger.truncate_after(self.step)
        if self.dist.is_main:  # the resume overrides, now that the checkpoint has loaded
            save_config(self.cfg, self.run_dir)

    def _finish(self, summary: dict[str, Any]) -> None:
        self.logger.close()
        self.reward.close()
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
            if self.cfg.logging.plots:
                plot_run(self.run_dir)
            if self.cfg.logging.progress:
                print_summary(summary)
        self.dist.barrier()
        self.source.close()
        release_run_dir(self.run_dir, self.dist)
        close = getattr(self.engine, "close", None)  # an engine holding resources (vllm) frees them
        if close is not None:
            close()
        if self.owns_dist:
            self.dist.close()
