"""The reward-signal guard: recognises a run that cannot learn and says why in one sentence, with the
likely cause and the setting to change, once (docs/health.md).

:class:`RewardGuard` sees one :class:`StepSignal` per step (counts already summed over ranks) and
judges the last ``health.window_steps`` steps together. Each kind of finding is reported once per
process. What a finding does (``health.on_problem``: warn or stop) is the caller's business
(:mod:`dapo_rl.health.run`); each carries the exit code a stop ends with.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from dapo_rl.config_health import HealthConfig
from dapo_rl.errors import EXIT_DIVERGED, EXIT_USAGE, DapoError

KINDS = ("truncated", "constant_reward", "no_answer", "reward_failures", "prompts_cut", "hacking")
"""Every kind of finding (docs/health.md explains each)."""


@dataclass
class Finding:
    """One problem: ``kind`` (one of :data:`KINDS`), the step it was seen at, the sentence, and the
    exit code of a stop (2: a configuration cause, 3: a diverging run)."""

    kind: str
    step: int
    sentence: str
    exit_code: int = EXIT_USAGE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HealthStop(DapoError):
    """A guard finding with ``health.on_problem: stop`` (a checkpoint was written first)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"stopped by the health guard (health.on_problem=stop): {finding.sentence}")
        self.exit_code = finding.exit_code
        self.finding = finding


@dataclass
class StepSignal:
    """What the guard needs of one step, over all ranks: responses generated, how many were
    truncated, had no parsable answer, timed out or raised in the reward, and the lowest and highest
    task score."""

    step: int
    responses: int
    truncated: int
    no_answer: int
    timeouts: int
    errors: int
    score_min: float
    score_max: float

    @property
    def constant(self) -> bool:
        return self.responses > 0 and self.score_min == self.score_max


@dataclass
class RunFacts:
    """The settings the sentences name."""

    max_response_tokens: int
    reward_name: str
    template: str
    timeout_s: float
    max_prompt_tokens: int
    reward_parses: bool = True
    cap_key: str = "rollout.max_response_tokens"
    """The setting the truncation sentence names (``dapo eval``: ``eval.max_response_tokens``)."""
    """The reward extracts answers (a built-in one); for a user function the no-answer rate is judged
    only once it returned an answer (one returning a bare number never does)."""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


EVAL_STEP = -1
"""The step of a :class:`StepSignal` made of an evaluation (:func:`eval_findings`)."""


def _steps(window: list[StepSignal]) -> str:
    a, b = window[0].step, window[-1].step
    if a == EVAL_STEP:
        return "the evaluation"
    return f"step {a}" if a == b else f"steps {a}-{b}"


class RewardGuard:
    """Judges each step's :class:`StepSignal` with the ones before it; :meth:`observe` returns the
    findings not reported before."""

    def __init__(self, cfg: HealthConfig, facts: RunFacts) -> None:
        self.cfg, self.facts = cfg, facts
        self.window: deque[StepSignal] = deque(maxlen=cfg.window_steps)
        self.reported: set[str] = set()
        self.seen_answer = facts.reward_parses

    def _new(self, kind: str, step: int, sentence: str, code: int = EXIT_USAGE) -> list[Finding]:
        if kind in self.reported:
            return []
        self.reported.add(kind)
        return [Finding(kind, step, sentence, code)]

    def observe(self, s: StepSignal) -> list[Finding]:
        self.window.append(s)
        self.seen_answer = self.seen_answer or s.no_answer < s.responses
        w, cfg, f = list(self.window), self.cfg, self.facts
        n = sum(x.responses for x in w)
        if not n:
            return []
        out: list[Finding] = []
        constant = all(x.constant for x in w)  # so far; a finding of its own only over a full window
        values = sorted({x.score_min for x in w})
        value = f"{values[0]:g}" if len(values) == 1 else "/".join(f"{v:g}" for v in values) + " (by step)"
        truncated = sum(x.truncated for x in w) / n
        if truncated >= cfg.max_truncated_frac:
            who = "every response" if truncated == 1.0 else f"{_pct(truncated)} of the responses"
            also = f" and every reward is {value}" if constant else ""
            sentence = (
                f"{who} in {_steps(w)} hit {f.cap_key}={f.max_response_tokens}{also}: "
                f"raise {f.cap_key} (or ask for shorter answers in the prompt)"
            )
            out += self._new("truncated", s.step, sentence)
            if constant:
                self.reported.add("constant_reward")
        timeouts, errors = sum(x.timeouts for x in w), sum(x.errors for x in w)
        failed = (timeouts + errors) / n
        if failed > cfg.max_reward_failure_rate:
            out += self._new(
                "reward_failures",
                s.step,
                f"{timeouts} reward call(s) timed out and {errors} raised in {_steps(w)} ({_pct(failed)} of "
                f"{n}, health.max_reward_failure_rate={cfg.max_reward_failure_rate:g}); they are scored as "
                f"wrong answers without being judged: raise reward.timeout_s={f.timeout_s:g} or fix the reward "
                f"function reward.name={f.reward_name} (reward/timeouts and reward/errors count them)",
            )
            if failed == 1.0:  # every reward the failure score, no answer read: this says it all
                self.reported |= {"constant_reward", "no_answer"}
        if constant and len(w) == cfg.window_steps:
            out += self._new(
                "constant_reward",
                s.step,
                f"every reward in {_steps(w)} was {value} ({n} responses): the reward function "
                f"(reward.name={f.reward_name}) never tells the answers apart, so nothing can be learned; "
                f"check that it parses the answer format the prompt (data.template={f.template}) asks "
                "for, reading the answers with dapo samples RUN_DIR",
            )
        no_answer = sum(x.no_answer for x in w) / n
        if no_answer > cfg.max_no_answer_rate and self.seen_answer:
            out += self._new(
                "no_answer",
                s.step,
                f"{_pct(no_answer)} of the responses in {_steps(w)} had no answer the reward could parse "
                f"(health.max_no_answer_rate={cfg.max_no_answer_rate:g}): the model does not write the "
                f"format reward.name={f.reward_name} expects; check data.template={f.template} and the "
                "system prompt, or raise rollout.max_response_tokens if the answers are cut off",
            )
        return out

    def prompts_cut(self, dropped: int, kept: int) -> list[Finding]:
        """The start-up check: training prompts dropped for being longer than data.max_prompt_tokens."""
        total = dropped + kept
        if not total or dropped / total <= self.cfg.max_prompt_cut_frac:
            return []
        return self._new(
            "prompts_cut",
            0,
            f"{dropped} of {total} training prompts ({_pct(dropped / total)}) are longer than "
            f"data.max_prompt_tokens={self.facts.max_prompt_tokens} and were dropped "
            f"(health.max_prompt_cut_frac={self.cfg.max_prompt_cut_frac:g}): raise "
            "data.max_prompt_tokens, or shorten the prompts or the template",
        )

    def hacking(self, points: list[tuple[int, float, float]], metric: str) -> list[Finding]:
        """``points``: (step, mean training reward since the previous evaluation, held-out value) per
        evaluation. A rise of the first with a fall of the second beyond ``health.hacking_drop``
        between the last two evaluations is a finding."""
        if len(points) < 2:
            return []
        (s0, r0, e0), (s1, r1, e1) = points[-2], points[-1]
        if not (r1 > r0 and e0 - e1 > self.cfg.hacking_drop):
            return []
        return self._new(
            "hacking",
            s1,
            f"the training reward rose from {r0:.3f} to {r1:.3f} while held-out {metric} fell from "
            f"{e0:.3f} to {e1:.3f} (steps {s0}-{s1}): the policy may be exploiting the reward function "
            f"(reward.name={self.facts.reward_name}) rather than solving the task; read its answers "
            "with dapo samples RUN_DIR",
            EXIT_DIVERGED,
        )


def eval_findings(result: dict[str, Any], cfg: HealthConfig, facts: RunFacts) -> list[Finding]:
    """The guard on one held-out evaluation (``dapo eval``'s result): truncation, answers the reward
    could not parse, reward timeouts and errors, over all its responses."""
    n = int(result.get("num_problems", 0)) * int(result.get("num_samples", 0))
    invalid, failures = result.get("invalid_rate"), result.get("reward") or {}
    guard = RewardGuard(cfg.model_copy(update={"window_steps": 1}), facts)
    guard.seen_answer = invalid is not None  # None: the reward extracts no answers
    signal = StepSignal(
        EVAL_STEP, n, round((result.get("truncation_rate") or 0.0) * n), round((invalid or 0.0) * n),
        int(failures.get("timeouts", 0)), int(failures.get("errors", 0)), 0.0, 1.0,
    )  # fmt: skip
    return guard.observe(signal)
