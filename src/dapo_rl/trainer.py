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
from dapo_rl.algorithm.policy_loss import (
    accumulate_policy_metrics,
    clipped_policy_loss,
    finalize_policy_metrics,
)
from dapo_rl.batch import TrainSample, collate, plan_micro_batches, sequence_logprobs, split_by_groups
from dapo_rl.config import DapoConfig, config_to_yaml, load_config
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
    new_run_dir,
    resolve_device,
)
from dapo_rl.sampling import Group, GroupCollector
from dapo_rl.tracking import MetricsLogger


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from (run seed, step, round, ...), the same after a resume."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer updates had a non-finite loss or gradient."""


class Trainer:
    """One DAPO run. Pass your own ``reward_fn`` (name or callable) or ``group_filter`` to extend."""

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
    ) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.train.seed)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.device = resolve_device(cfg.train.device)
        path = model_dir(cfg) if not resume else ckpt.latest_checkpoint(run_dir) / "model"
        self.model, self.tokenizer = load_model_and_tokenizer(path, cfg, self.device)
        d = cfg.data
        template = template or resolve_template(d.template)
        self.encode = PromptEncoder(self.tokenizer, template, d.use_chat_template, d.system_prompt)
        self.dataset, self.eval_rows = build_datasets(cfg, self.encode, train_rows, eval_rows)
        self.eos_ids = eos_token_ids(self.tokenizer, self.model)
        r = cfg.reward
        reward_fn = reward_fn or resolve_reward(r.name)
        self.reward = RewardRunner(reward_fn, r.timeout_s, r.num_workers, self.tokenizer.eos_token)
        self.engine = ROLLOUT_ENGINES.get(cfg.rollout.engine)(
            self.model, self.tokenizer, cfg.rollout.max_batch_sequences
        )
        self.ref_model = self._load_reference(model_dir(cfg)) if cfg.algorithm.kl_coef > 0 else None
        ds = cfg.dynamic_sampling
        self.collector = GroupCollector(
            cfg.batch.prompts_per_step, cfg.prompts_per_round, ds.max_rounds, ds.enable, ds.metric,
            group_filter or resolve_filter(ds.filter), ds.on_shortfall, ds.carry_over,
        )  # fmt: skip
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        self.step, self.updates, self.nonfinite_in_row = 0, 0, 0
        self.counters: dict[str, float] = defaultdict(float)
        self.run_dir = run_dir or new_run_dir(cfg)
        (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        lg = cfg.logging
        self.logger = MetricsLogger(
            self.run_dir, lg.tensorboard, lg.wandb, lg.wandb_project, cfg.model_dump()
        )
        if resume:
            self._restore(ckpt.latest_checkpoint(self.run_dir))
        self.stop = GracefulStop()

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train for ``train.total_steps`` rollout steps; returns the run summary."""
        clock = RunClock()
        first_eval = self.evaluate() if self.step == 0 else None
        bar = progress_bar(self.cfg.train.total_steps, self.step, self.cfg.logging.progress)
        with self.stop, bar:
            while self.step < self.cfg.train.total_steps and not self.stop.requested:
                metrics = self.train_step()
                clock.add(metrics)
                self._after_step(metrics, bar)
        final_eval = self.evaluate() if not self.stop.requested else None
        if self.cfg.checkpoint.save_final or self.stop.requested:
            self.save()
        summary = clock.summary(self, first_eval, final_eval)
        self._finish(summary)
        return summary

    def train_step(self) -> dict[str, float]:
        """One rollout step: collect informative groups, then update the policy on them."""
        self.step += 1
        self.timers: dict[str, float] = defaultdict(float)
        self.step_counts: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        collected = self.collector.collect(self._generate_round)
        samples, metrics = self._samples(collected.groups)
        metrics |= collected.metrics | self._rollout_metrics(collected.generated)
        fresh = all(g.age == 0 for g in collected.groups)
        metrics |= self._update(samples, fresh) if samples else {"optim/skipped_empty_step": 1.0}
        metrics |= {f"perf/time_{k}_s": v for k, v in self.timers.items()}
        metrics["perf/time_step_s"] = time.perf_counter() - t0
        metrics["perf/tokens_generated"] = sum(g.num_tokens for g in collected.generated)
        metrics["perf/tokens_per_s"] = metrics["perf/tokens_generated"] / metrics["perf/time_step_s"]
        metrics |= {"optim/lr": self.scheduler.get_last_lr()[0], "optim/updates": self.updates}
        return metrics

    def _generate_round(self, num_prompts: int, round_index: int) -> list[Group]:
        """Roll out G responses for ``num_prompts`` fresh prompts and score them."""
        cfg, r = self.cfg, self.cfg.rollout
        rows = self.dataset.next_batch(num_prompts)
        params = SamplingParams(
            max_new_tokens=r.max_response_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
            eos_token_ids=self.eos_ids, stop_strings=r.stop_strings,
            seed=derive_seed(cfg.train.seed, self.step, round_index),
        )  # fmt: skip
        t = time.perf_counter()
        prompt_ids = [self.encode(row) for row in rows]
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

    def _samples(self, groups: list[Group]) -> tuple[list[TrainSample], dict[str, float]]:
        """Group-relative advantages and the overlong-filtering mask, one TrainSample per response."""
        if not groups:
            return [], {"sampling/groups_trained": 0}
        a = self.cfg.algorithm
        rewards = torch.tensor([r for g in groups for r in g.rewards])
        index = torch.tensor([i for i, g in enumerate(groups) for _ in g.responses])
        adv, metrics = ADVANTAGE_ESTIMATORS.get(a.advantage)(rewards, index, a.norm_adv_by_std, a.adv_eps)
        mask_trunc = self.cfg.overlong.mask_truncated
        samples = [
            TrainSample(g.prompt_ids, resp.token_ids, float(adv[k]), gi, not (mask_trunc and resp.truncated))
            for k, (gi, g, resp) in enumerate((gi, g, r) for gi, g in enumerate(groups) for r in g.responses)
        ]
        metrics["reward/trained_mean"] = float(rewards.mean())
        metrics["rollout/masked_truncated_frac"] = sum(not s.loss_mask for s in samples) / len(samples)
        return samples, metrics

    def _rollout_metrics(self, generated: list[Group]) -> dict[str, float]:
        """What the policy did this step, over every generated response (kept or not)."""
        if not generated:
            return {}
        resp = [r for g in generated for r in g.responses]
        lengths = torch.tensor([r.length for r in resp], dtype=torch.float32)
        metrics = {
            "reward/mean": sum(sum(g.rewards) for g in generated) / len(resp),
            "reward/score_mean": sum(sum(g.scores) for g in generated) / len(resp),
            "reward/acc": sum(sum(g.accs) for g in generated) / len(resp),
            "rollout/response_len_mean": float(lengths.mean()),
            "rollout/response_len_max": float(lengths.max()),
            "rollout/truncated_frac": sum(r.truncated for r in resp) / len(resp),
        }
        metrics |= {k: v for k, v in self.step_counts.items() if k != "reward/no_answer"}
        metrics["reward/no_answer_rate"] = self.step_counts["reward/no_answer"] / len(resp)
        return metrics | dict(self.counters)

    # ---- the update ----------------------------------------------------------------------------
    def _update(self, samples: list[TrainSample], fresh: bool) -> dict[str, float]:
        """Optimizer updates over whole-group mini-batches, ``epochs_per_step`` passes. Old log-probs
        are skipped only for a single update on fresh data, where the ratio is exactly 1."""
        minibatches = split_by_groups(samples, self.cfg.batch.prompts_per_update)
        single = fresh and len(minibatches) == 1 and self.cfg.batch.epochs_per_step == 1
        t = time.perf_counter()
        old = None if single else [self._frozen_logprobs(self.model, mb) for mb in minibatches]
        ref = [self._frozen_logprobs(self.ref_model, mb) for mb in minibatches] if self.ref_model else None
        self.timers["old_logprobs"] += time.perf_counter() - t
        t = time.perf_counter()
        policy, extra = None, defaultdict(float)
        for _ in range(self.cfg.batch.epochs_per_step):
            for i, mb in enumerate(minibatches):
                p, e = self._optimizer_update(mb, old[i] if old else None, ref[i] if ref else None)
                policy = accumulate_policy_metrics(policy, p)
                for k, v in e.items():
                    extra[k] += v
        self.timers["update"] += time.perf_counter() - t
        tokens = max(float(policy["num_tokens"]), 1.0)
        n_updates = len(minibatches) * self.cfg.batch.epochs_per_step
        metrics = finalize_policy_metrics(policy)
        metrics["loss/entropy"] = extra.pop("entropy_sum") / tokens
        if "kl_ref_sum" in extra:
            metrics["loss/kl_ref"] = extra.pop("kl_ref_sum") / tokens
        metrics["loss/total"] = extra.pop("loss") / n_updates
        metrics["optim/grad_norm"] = extra.pop("grad_norm") / n_updates
        metrics |= extra
        metrics["perf/tokens_trained"] = tokens / self.cfg.batch.epochs_per_step
        return metrics

    @torch.no_grad()
    def _frozen_logprobs(self, model: torch.nn.Module, samples: list[TrainSample]) -> list[torch.Tensor]:
        """Log-probs under a frozen policy (the pre-update policy or the reference), per micro-batch."""
        out = []
        for idx in plan_micro_batches([s.num_tokens for s in samples], self.cfg.batch.micro_batch_tokens):
            mb = collate(samples, idx, self.tokenizer.pad_token_id, self.device)
            out.append(sequence_logprobs(model, mb, self.cfg.rollout.temperature)[0])
        return out

    def _optimizer_update(
        self, samples: list[TrainSample], old: list[torch.Tensor] | None, ref: list[torch.Tensor] | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One optimizer update: loss weights over the whole mini-batch, micro-batches accumulate."""
        cfg, a = self.cfg, self.cfg.algorithm
        full = collate(samples, list(range(len(samples))), self.tokenizer.pad_token_id, self.device)
        group = torch.tensor([s.group for s in samples], device=self.device)
        totals = aggregation_totals(full.response_mask, group)
        weights = aggregation_weights(
            full.response_mask, group, a.loss_agg_mode, totals, cfg.loss_norm_tokens
        )
        advantages = torch.tensor([s.advantage for s in samples], device=self.device)
        policy, extra = None, defaultdict(float)
        self.model.train()
        plan = plan_micro_batches([s.num_tokens for s in samples], cfg.batch.micro_batch_tokens)
        for j, idx in enumerate(plan):
            mb = collate(samples, idx, self.tokenizer.pad_token_id, self.device)
            w = weights[idx, : mb.response_mask.shape[1]]
            logp, entropy = sequence_logprobs(self.model, mb, cfg.rollout.temperature, with_entropy=True)
            old_logp = old[j] if old is not None else logp.detach()
            tok_loss, m = clipped_policy_loss(
                logp,
                old_logp,
                advantages[idx],
                mb.response_mask,
                a.clip_ratio_low,
                a.clip_ratio_high,
                a.clip_ratio_c,
            )
            policy = accumulate_policy_metrics(policy, m)
            loss = aggregate(tok_loss, w)
            extra["entropy_sum"] += float((entropy.detach() * mb.response_mask).sum())
            if ref is not None:
                kl = kl_penalty(logp, ref[j], a.kl_estimator)
                extra["kl_ref_sum"] += float((kl.detach() * mb.response_mask).sum())
                loss = loss + a.kl_coef * aggregate(kl, w)
            if a.entropy_coef:
                loss = loss - a.entropy_coef * aggregate(entropy, w)
            ok, _ = importance_ratio_guard(logp.detach(), old_logp, mb.response_mask, a.max_importance_ratio)
            if not ok:  # no gradient from this micro-batch; backward still runs (FSDP needs every rank)
                extra["loss/guard_skipped_microbatches"] += 1
                loss = loss * 0.0
            loss.backward()
            extra["loss"] += float(loss.detach())
        extra |= self._step_optimizer(extra["loss"])
        return policy, extra

    def _step_optimizer(self, total_loss: float) -> dict[str, float]:
        """Clip, check finiteness, step; a non-finite update is skipped and counted."""
        clip = self.cfg.optim.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
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
        return ref.eval()

    # ---- evaluation, logging, checkpoints, signals ---------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """avg@k / pass@k / maj@k on the held-out rows (None when there are none)."""
        if not self.eval_rows:
            return None
        from dapo_rl.evaluation import evaluate, scalar_metrics

        e = self.cfg.eval
        result = evaluate(
            self.model, self.tokenizer, self.eval_rows, self.reward, e.k, self.cfg.eval_max_response_tokens,
            e.temperature, e.top_p, self.encode.template, self.cfg.data.use_chat_template,
            self.cfg.data.system_prompt, seed=derive_seed(self.cfg.train.seed, "eval", self.step), progress=False,
            engine=self.engine, stop_strings=self.cfg.rollout.stop_strings,
        )  # fmt: skip
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "dataset": self.dataset.state_dict(),
            "collector": self.collector.state_dict(),
            "counters": dict(self.counters),
            "updates": self.updates,
            "nonfinite_in_row": self.nonfinite_in_row,
        }

    def save(self) -> Path:
        path = ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.tokenizer,
            self.state_dict(),
            self.cfg.checkpoint.keep_last,
        )
        if self.cfg.logging.plots:
            from dapo_rl.plots import plot_run

            plot_run(self.run_dir)
        return path

    def _restore(self, path: Path) -> None:
        state = ckpt.load_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
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

        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        self.logger.close()
        self.reward.close()
        if self.cfg.logging.plots:
            from dapo_rl.plots import plot_run

            plot_run(self.run_dir)
        if self.cfg.logging.progress:
            print_summary(summary)


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
