"""The reward-signal guard on hand-made steps: each finding's sentence names the cause and the
setting, appears once, and stays quiet on a healthy signal (the real runs: test_health_runs.py)."""

from __future__ import annotations

from dapo_rl.config_health import HealthConfig
from dapo_rl.errors import EXIT_DIVERGED, EXIT_USAGE
from dapo_rl.health.guard import RewardGuard, RunFacts, StepSignal, eval_findings

FACTS = RunFacts(
    max_response_tokens=256, reward_name="math_dapo", template="dapo", timeout_s=10.0, max_prompt_tokens=512
)


def _guard(**cfg: object) -> RewardGuard:
    return RewardGuard(HealthConfig(**cfg), FACTS)


def _signal(step: int, n: int = 100, *, trunc: int = 5, no_answer: int = 10, to: int = 0, err: int = 0,
            lo: float = 0.0, hi: float = 1.0) -> StepSignal:  # fmt: skip
    return StepSignal(step, n, trunc, no_answer, to, err, lo, hi)


def test_healthy_steps_raise_nothing() -> None:
    guard = _guard()
    assert [f for s in range(1, 20) for f in guard.observe(_signal(s))] == []


def test_every_response_truncated_and_every_reward_zero_is_one_sentence_once() -> None:
    guard = _guard()
    found = guard.observe(_signal(1, trunc=100, no_answer=100, lo=0.0, hi=0.0))
    assert [f.kind for f in found] == ["truncated", "no_answer"]
    assert found[0].sentence == (
        "every response in step 1 hit rollout.max_response_tokens=256 and every reward is 0: "
        "raise rollout.max_response_tokens (or ask for shorter answers in the prompt)"
    )
    assert found[0].exit_code == EXIT_USAGE and found[0].step == 1
    later = [
        f for s in (2, 3, 4) for f in guard.observe(_signal(s, trunc=100, no_answer=100, lo=0.0, hi=0.0))
    ]
    assert later == []  # once, and the constant reward was already said


def test_constant_reward_needs_the_whole_window() -> None:
    guard = _guard(window_steps=3)
    assert guard.observe(_signal(1, lo=-1.0, hi=-1.0)) == []
    assert guard.observe(_signal(2, lo=-1.0, hi=-1.0)) == []
    (found,) = guard.observe(_signal(3, lo=-1.0, hi=-1.0))
    assert (
        found.kind == "constant_reward"
        and "every reward in steps 1-3 was -1 (300 responses)" in found.sentence
    )
    assert "reward.name=math_dapo" in found.sentence and "data.template=dapo" in found.sentence
    assert _guard(window_steps=2).observe(_signal(1, lo=0.0, hi=0.0)) == []
    guard = _guard(window_steps=2)
    guard.observe(_signal(1, lo=0.0, hi=0.0))
    assert guard.observe(_signal(2, lo=0.0, hi=1.0)) == []  # one step with a spread breaks it


def test_truncation_rate_over_the_window() -> None:
    guard = _guard(window_steps=2)
    assert guard.observe(_signal(1, trunc=85)) == []
    (found,) = guard.observe(_signal(2, trunc=97))
    assert found.sentence.startswith(
        "91% of the responses in steps 1-2 hit rollout.max_response_tokens=256: raise"
    )


def test_reward_failures_are_their_own_finding() -> None:
    (found,) = _guard().observe(_signal(1, to=4, err=3))
    assert found.kind == "reward_failures"
    assert found.sentence.startswith("4 reward call(s) timed out and 3 raised in step 1 (7% of 100")
    assert "raise reward.timeout_s=10" in found.sentence
    assert _guard().observe(_signal(1, to=5)) == []  # 5% is the limit, not over it


def test_no_answer_of_a_user_reward_is_judged_once_it_has_answered() -> None:
    facts = RunFacts(256, "mod:fn", "plain", 10.0, 512, reward_parses=False)
    guard = RewardGuard(HealthConfig(), facts)
    assert guard.observe(_signal(1, no_answer=100)) == []  # a bare-number reward never extracts one
    (found,) = guard.observe(_signal(2, no_answer=80))
    assert found.kind == "no_answer" and found.sentence.startswith(
        "90% of the responses in steps 1-2 had no answer"
    )


def test_prompts_cut_and_hacking() -> None:
    guard = _guard()
    assert guard.prompts_cut(5, 95) == []
    (found,) = guard.prompts_cut(40, 60)
    assert found.sentence.startswith(
        "40 of 100 training prompts (40%) are longer than data.max_prompt_tokens=512"
    )
    assert guard.hacking([(10, 0.2, 0.5), (20, 0.4, 0.48)], "avg@k") == []  # within hacking_drop
    (found,) = guard.hacking([(10, 0.2, 0.5), (20, 0.4, 0.3)], "avg@k")
    assert found.exit_code == EXIT_DIVERGED and found.step == 20
    assert (
        "rose from 0.200 to 0.400 while held-out avg@k fell from 0.500 to 0.300 (steps 10-20)"
        in found.sentence
    )


def test_the_guard_on_an_evaluation() -> None:
    facts = RunFacts(64, "synthetic", "plain", 10.0, 512, cap_key="eval.max_response_tokens")
    result = {"num_problems": 10, "num_samples": 4, "truncation_rate": 0.95, "invalid_rate": 0.2,
              "reward": {"timeouts": 0, "errors": 0}}  # fmt: skip
    (found,) = eval_findings(result, HealthConfig(), facts)
    assert found.sentence.startswith(
        "95% of the responses in the evaluation hit eval.max_response_tokens=64: raise"
    )
    healthy = {**result, "truncation_rate": 0.1, "invalid_rate": None, "reward": {"timeouts": 1, "errors": 0}}
    assert eval_findings(healthy, HealthConfig(), facts) == []  # 1 of 40 is within the 5% limit
