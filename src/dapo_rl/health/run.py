"""The trainer's health hook: one call per step (:meth:`RunHealth.after_step`) that counts the
learning-signal ledger, feeds the reward-signal guard, checks the engine's weights after a push, and
acts on a finding (docs/health.md).

Findings are printed once by rank 0 (``dapo health: ...``) and appended to ``health.jsonl`` in the
run directory (``dapo doctor`` reads it). With ``health.on_problem: stop`` the step is logged, a
checkpoint written, and :class:`~dapo_rl.health.guard.HealthStop` raised (exit code 2 or 3). Every
decision is taken on values reduced over ranks, so all ranks act alike.
"""

from __future__ import annotations

import json
import sys
import weakref
from typing import Any

from tqdm.auto import tqdm

from dapo_rl import metric_names as M
from dapo_rl.health.guard import Finding, HealthStop, RewardGuard, RunFacts, StepSignal, eval_findings
from dapo_rl.health.ledger import step_ledger
from dapo_rl.health.verify import verify_engine
from dapo_rl.storage import storage_error

FINDINGS_FILE = "health.jsonl"
_HEALTH: weakref.WeakKeyDictionary[Any, RunHealth] = weakref.WeakKeyDictionary()


def step_health(
    trainer: Any, collected: Any, samples: list[Any], metrics: dict[str, float]
) -> dict[str, float]:
    """The trainer's one call per step, at its end: :meth:`RunHealth.after_step` of the trainer's
    :class:`RunHealth` (made at its first step)."""
    health = _HEALTH.get(trainer)
    if health is None:
        health = _HEALTH[trainer] = RunHealth(trainer)
    return health.after_step(collected, samples, metrics)


class RunHealth:
    """Health of one :class:`~dapo_rl.trainer.Trainer` (read through ``trainer``: its config, ranks,
    collector, update, engine, policy, logger and ``save``)."""

    def __init__(self, trainer: Any) -> None:
        self.t = trainer
        cfg = trainer.cfg
        facts = RunFacts(
            cfg.rollout.max_response_tokens, cfg.reward.name, cfg.data.template, cfg.reward.timeout_s,
            cfg.data.max_prompt_tokens, reward_parses=":" not in cfg.reward.name,  # not a user's module:function
        )  # fmt: skip
        self.guard = RewardGuard(cfg.health, facts)
        self.rewards: list[tuple[int, float]] = []  # (step, reward/mean) for the hacking check
        self.evals: list[tuple[int, float, float]] = []
        self.first = True  # the first step this process runs (its weight push is verified)
        dataset = trainer.dataset
        self._act(self.guard.prompts_cut(getattr(dataset, "dropped_long", 0), len(dataset.rows)), None)

    def after_step(self, collected: Any, samples: list[Any], metrics: dict[str, float]) -> dict[str, float]:
        """This step's ledger and reward extremes (to log); may print findings or stop the run."""
        t = self.t
        step, ranks = t.step, t.dist
        tally = t.update.tally.counts if collected.total else None
        ledger = step_ledger(collected.generated, collected.groups, samples, t.collector.buffer, tally)
        scores = [s for g in collected.generated for s in g.scores]
        responses = len(scores)
        truncated = sum(r.truncated for g in collected.generated for r in g.responses)
        sums = ranks.sum_values(
            {**ledger, "n": responses, "truncated": truncated, "no_answer": t.counts.no_answer}
        )
        inf = float("inf")
        ext = ranks.max_values({"max": max(scores, default=-inf), "neg_min": -min(scores, default=inf)})
        n = int(sums.pop("n"))
        signal = StepSignal(
            step, n, int(sums.pop("truncated")), int(sums.pop("no_answer")),
            int(metrics.get(M.REWARD_TIMEOUTS, 0)), int(metrics.get(M.REWARD_ERRORS, 0)),
            -ext["neg_min"], ext["max"],
        )  # fmt: skip
        out = dict(sums)
        if n:
            out |= {M.REWARD_SCORE_MIN: signal.score_min, M.REWARD_SCORE_MAX: signal.score_max}
        findings = self.guard.observe(signal) + self._hacking(step, metrics)
        verify_engine(t, step, first=self.first)  # raises WeightPushError on a mismatch
        self.first = False
        self._act(findings, metrics | out)
        return out

    def _hacking(self, step: int, metrics: dict[str, float]) -> list[Finding]:
        """After each held-out evaluation (eval.every_steps), compare the training reward since the
        previous one with the held-out result (rank 0 reads it; every rank gets the verdict)."""
        if M.REWARD_MEAN in metrics:
            self.rewards.append((step, metrics[M.REWARD_MEAN]))
        every = self.t.cfg.eval.every_steps
        if not every or step < 2 or (step - 1) % every:
            return []
        value = None
        if self.t.dist.is_main:
            rows = [r for r in self.t.logger.history() or [] if r.get("step") == step - 1]
            value = next((r[M.EVAL_AVG_AT_K] for r in rows if M.EVAL_AVG_AT_K in r), None)
        value = self.t.dist.broadcast_object(value)
        since = self.evals[-1][0] if self.evals else 0
        recent = [r for s, r in self.rewards if since < s <= step - 1]
        if value is None or not recent:
            return []
        self.evals.append((step - 1, sum(recent) / len(recent), float(value)))
        return self.guard.hacking(self.evals, "avg@k")

    def _act(self, findings: list[Finding], metrics: dict[str, float] | None) -> None:
        """Print and record ``findings``; with on_problem=stop log ``metrics`` (the step's, None
        before the first step's were made), checkpoint, and stop."""
        t = self.t
        if not findings:
            return
        if t.dist.is_main:
            path = t.run_dir / FINDINGS_FILE
            for finding in findings:
                tqdm.write(f"dapo health: {finding.sentence}", file=sys.stderr)  # above the bar
            try:
                with path.open("a") as f:
                    f.writelines(json.dumps(finding.to_dict()) + "\n" for finding in findings)
            except OSError as exc:  # a full disk is a storage error (exit 4 naming the path)
                raise storage_error("the health findings", path, exc) from exc
        if t.cfg.health.on_problem == "stop":
            if metrics is not None:  # the step is logged and saved, so a resume continues after it
                t.logger.log(t.step, metrics)
                t.save()
            raise HealthStop(findings[0])


def check_eval(cfg: Any, result: dict[str, Any]) -> None:
    """The guard on ``dapo eval``'s result: each finding printed (``dapo health: ...``); with
    ``health.on_problem=stop`` the first ends the command with its exit code."""
    cap_key = "eval.max_response_tokens" if cfg.eval.max_response_tokens else "rollout.max_response_tokens"
    facts = RunFacts(
        cfg.eval_max_response_tokens, cfg.reward.name, cfg.data.template, cfg.reward.timeout_s,
        cfg.data.max_prompt_tokens, reward_parses=":" not in cfg.reward.name, cap_key=cap_key,
    )  # fmt: skip
    findings = eval_findings(result, cfg.health, facts)
    for finding in findings:
        print(f"dapo health: {finding.sentence}", file=sys.stderr)
    if findings and cfg.health.on_problem == "stop":
        raise HealthStop(findings[0])
