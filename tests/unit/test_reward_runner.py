"""RewardRunner: timeouts that do not stall, counted errors, loud failure, math_verify scoring."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from dapo_rl.errors import UserCodeError
from dapo_rl.registry import RegistryError
from dapo_rl.rewards import RewardResult, RewardRunner, reward_traits


def behave(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """A user reward whose behaviour the response picks: hang, raise, kill its process, or check."""
    if response == "hang":
        time.sleep(60)
    if response == "boom":
        raise ValueError("boom: this reward always crashes")
    if response == "die":
        os._exit(3)
    if response == "crash":  # killed by a signal, as a segfault or the OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
    if response == "exit":
        sys.exit(4)
    if response == "numpy":
        return np.float32(0.5)  # type: ignore[return-value]
    if response == "not a result":
        return "1.0"  # type: ignore[return-value]  (a number is fine; a string is not)
    ok = response == ground_truth
    return RewardResult(score=1.0 if ok else 0.0, acc=ok, pred=response)


@reward_traits(wrong_score=-1.0)
def behave_pm1(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """Same, with +1/-1 scores declared through the traits decorator."""
    return behave(response, ground_truth)


def uses_extra(response: str, ground_truth: str, **extra: object) -> RewardResult:
    ok = extra.get("target") == int(ground_truth) and "response" not in extra
    return RewardResult(score=float(ok), acc=ok, pred=response)


@pytest.fixture(scope="module")
def isolated() -> Iterator[RewardRunner]:
    with RewardRunner(behave, timeout_s=0.5, isolate=True, num_workers=2) as runner:
        runner.score_batch(["warm", "warm"], ["warm", "warm"])  # workers started and ready
        yield runner


def test_isolated_timeout_is_wrong_counted_and_fast(isolated: RewardRunner) -> None:
    start = time.perf_counter()
    results, metrics = isolated.score_batch(["a", "hang", "b", "c"], ["a", "a", "b", "x"])
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"a hanging item stalled the batch for {elapsed:.1f} s"
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert results[1].info == {"timeout": True} and results[1].pred is None and not results[1].acc
    assert metrics["reward/timeouts"] == 1.0 and metrics["reward/errors"] == 0.0
    # the killed worker was replaced: the runner keeps working
    results, metrics = isolated.score_batch(["d", "e", "f"], ["d", "e", "f"])
    assert all(r.acc for r in results) and metrics["reward/timeouts"] == 0.0


def test_isolated_two_hangs_run_in_parallel(isolated: RewardRunner) -> None:
    start = time.perf_counter()
    _, metrics = isolated.score_batch(["hang", "hang"], ["a", "a"])
    assert metrics["reward/timeouts"] == 2.0
    assert time.perf_counter() - start < 3.0


def test_isolated_error_counted_with_traceback(isolated: RewardRunner) -> None:
    results, metrics = isolated.score_batch(["a", "boom", "numpy"], ["a", "a", "a"])
    assert metrics["reward/errors"] == 1.0 and metrics["reward/timeouts"] == 0.0
    assert results[0].acc
    assert results[1].score == 0.0 and "ValueError: boom" in results[1].info["error"]
    assert results[2].score == 0.5 and results[2].acc  # a numpy scalar is a number


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ("not a result", "reward function 'behave': returned str '1.0'; expected RewardResult"),
        ("exit", "reward function 'behave' called sys.exit(4)"),
        ("die", "reward function 'behave' called os._exit(3)"),
    ],
)
def test_isolated_broken_contract_stops_naming_the_function(
    isolated: RewardRunner, response: str, message: str
) -> None:
    with pytest.raises(UserCodeError, match=re.escape(message)):
        isolated.score_batch(["a", response], ["a", "a"])
    results, _ = isolated.score_batch(["a", "b"], ["a", "b"])  # the pool is whole again
    assert all(r.acc for r in results)


def test_isolated_worker_killed_by_a_signal_is_an_error_and_worker_restarts(isolated: RewardRunner) -> None:
    results, metrics = isolated.score_batch(["crash", "a"], ["a", "a"])
    assert metrics["reward/errors"] == 1.0
    assert "exited with code -9" in results[0].info["error"]
    results, _ = isolated.score_batch(["a", "b", "c"], ["a", "b", "c"])
    assert all(r.acc for r in results)


def test_isolated_always_crash_raises_with_first_traceback(isolated: RewardRunner) -> None:
    with pytest.raises(UserCodeError, match="every one of the 3 items") as info:
        isolated.score_batch(["boom"] * 3, ["a"] * 3)
    assert "Traceback" in str(info.value) and "ValueError: boom" in str(info.value)
    results, _ = isolated.score_batch(["a"], ["a"])  # still usable afterwards
    assert results[0].acc


def test_in_process_timeout_guard() -> None:
    with RewardRunner(behave, timeout_s=0.3) as runner:
        assert not runner.isolate  # user functions run in-process unless told otherwise
        start = time.perf_counter()
        results, metrics = runner.score_batch(["a", "hang", "b"], ["a", "a", "b"])
    assert time.perf_counter() - start < 2.0
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    assert metrics["reward/timeouts"] == 1.0 and metrics["reward/errors"] == 0.0


def test_in_process_broken_contract_stops_naming_the_function() -> None:
    with RewardRunner(behave) as runner:
        with pytest.raises(UserCodeError, match=re.escape("reward function 'behave' called sys.exit(4)")):
            runner.score_batch(["a", "exit"], ["a", "a"])
        with pytest.raises(UserCodeError, match=re.escape("reward function 'behave' called os._exit(3)")):
            runner.score_batch(["die"], ["a"])  # in-process: os._exit is refused during the call
        huge = lambda r, g: 1e39  # noqa: E731
        with pytest.raises(UserCodeError, match="beyond float32"):
            RewardRunner(huge).score_batch(["a"], ["a"])
        results, _ = runner.score_batch(["numpy"], ["a"])
        assert results[0].score == 0.5


def test_in_process_errors_and_always_crash() -> None:
    with RewardRunner(behave) as runner:
        results, metrics = runner.score_batch(["boom", "a"], ["a", "a"])
        assert metrics["reward/errors"] == 1.0 and "boom" in results[0].info["error"]
        with pytest.raises(UserCodeError, match="Traceback") as info:
            runner.score_batch(["boom", "boom"], ["a", "a"])
        assert "raised on every one of the 2 items" in str(info.value)  # both errors of the batch counted


def test_wrong_score_comes_from_traits_or_argument() -> None:
    with RewardRunner(behave_pm1, timeout_s=0.3) as runner:
        results, _ = runner.score_batch(["hang", "boom", "a"], ["a", "a", "a"])
    assert [r.score for r in results] == [-1.0, -1.0, 1.0]
    with RewardRunner(behave, timeout_s=0.3, wrong_score=-0.5) as runner:
        results, _ = runner.score_batch(["hang", "a"], ["a", "a"])
    assert results[0].score == -0.5


def test_registered_wrong_scores() -> None:
    expected = {"math_dapo": -1.0, "synthetic": -1.0, "math_verify": 0.0, "gsm8k": 0.0}
    for name, wrong in expected.items():
        runner = RewardRunner(name, isolate=False)
        assert runner.wrong_score == wrong, name
        runner.close()


def test_max_consecutive_failures() -> None:
    with RewardRunner(behave, max_consecutive_failures=3) as runner:
        runner.score_batch(["boom", "boom", "a"], ["a"] * 3)  # two in a row, then a success resets
        runner.score_batch(["boom", "a"], ["a"] * 2)
        with pytest.raises(UserCodeError, match="3 items in a row"):
            runner.score_batch(["a", "boom", "boom", "boom", "a"], ["a"] * 5)


def test_extras_passed_and_reserved_keys_dropped() -> None:
    with RewardRunner(uses_extra) as runner:
        results, _ = runner.score_batch(
            ["x", "y"], ["5", "5"], [{"target": 5, "response": "clash"}, {"target": 6}]
        )
    assert [r.acc for r in results] == [True, False]


def test_argument_errors() -> None:
    with pytest.raises(RegistryError, match="Valid names"):
        RewardRunner("math_dapoo")
    with pytest.raises(ValueError, match="cannot be pickled"):
        RewardRunner(lambda r, g: RewardResult(0.0, False), isolate=True)
    runner = RewardRunner("math_dapo")
    with pytest.raises(ValueError, match="lengths must match"):
        runner.score_batch(["a", "b"], ["a"])
    assert runner.score_batch([], [])[1]["reward/errors"] == 0.0
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.score_batch(["a"], ["a"])


def test_math_verify_scores_boxed_answers() -> None:
    responses = [
        "So the answer is \\boxed{\\frac{1}{2}}.",
        "Hence \\boxed{0.5}",
        "\\boxed{3}",
        "We get \\boxed{2\\sqrt{2}}",
        "\\boxed{(1, 2)}",
        "I give up.",
    ]
    gts = ["1/2", "\\frac12", "4", "\\sqrt{8}", "(1,2)", "7"]
    with RewardRunner("math_verify", timeout_s=10.0) as runner:
        assert runner.isolate
        results, metrics = runner.score_batch(responses, gts)
    assert [r.score for r in results] == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert [r.acc for r in results] == [True, True, False, True, True, False]
    assert results[-1].pred is None
    assert metrics["reward/timeouts"] == 0.0 and metrics["reward/errors"] == 0.0
