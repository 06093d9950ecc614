"""Run health end to end on a tiny random model: each reward-signal finding provoked by a real run
built to cause it (a cap so short every answer is truncated, a reward that is always 0, a reward
that always times out, a prompt limit that cuts prompts) prints its one sentence once, and with
``health.on_problem=stop`` ends with its exit code and a checkpoint; a healthy run raises none and
prints the ledger's shares. ``dapo doctor`` reads each of these run directories."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_rl import metric_names as M
from tests.helpers_run import SMALL, logged_step, quiet_env, save_random_tiny_model, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REWARD = "reward.name=tests.helpers_health:"
FAST = [
    "logging.tensorboard=false",
    "logging.plots=false",
    "health.window_steps=1",
    "data.synthetic.num_train=400",
]
RUNS = {
    # every response cut at 2 tokens, every reward 0: one sentence, then stop (exit 2) with a checkpoint
    "truncated": [f"{REWARD}zero_reward", "rollout.max_response_tokens=2", "overlong.buffer_tokens=1",
                  "health.on_problem=stop", "train.total_steps=3"],
    # every reward call times out (0.1 s), and a third of the prompts are longer than 8 tokens
    "timeouts": [f"{REWARD}slow_reward", "reward.timeout_s=0.1", "data.max_prompt_tokens=8", "train.total_steps=1"],
    # the built-in reward wants "Answer: N", which a random model never writes: every reward -1
    "no_answer": ["reward.name=synthetic", "health.window_steps=2", "train.total_steps=2"],
    "healthy": [f"{REWARD}varied_reward", "train.total_steps=3", "batch.epochs_per_step=2"],
}  # fmt: skip


def _env(tmp: Path) -> dict[str, str]:
    return {**quiet_env(tmp), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _dapo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dapo_rl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def runs(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    root = tmp_path_factory.mktemp("health")
    out = {}
    for name, extra in RUNS.items():
        args = ["train", f"model.path={model}", f"logging.run_dir={root}", f"logging.run_name={name}"]
        out[name] = (root / name, _dapo(*args, *SMALL, *FAST, *extra, env=_env(root)))
    return out


def _findings(run: Path) -> list[dict]:
    path = run / "health.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_cap_that_truncates_everything_stops_with_its_sentence_and_a_checkpoint(runs) -> None:
    run, proc = runs["truncated"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    # a random model ends a few responses with EOS at once: "every response" or "9x% of the responses"
    said = [line for line in proc.stderr.splitlines() if line.startswith("dapo health: ")]
    assert len(said) == 1, proc.stderr[-3000:]
    sentence = said[0].removeprefix("dapo health: ")
    assert re.fullmatch(
        r"(every response|9\d% of the responses) in step 1 hit rollout.max_response_tokens=2 and every reward "
        r"is 0: raise rollout.max_response_tokens \(or ask for shorter answers in the prompt\)",
        sentence,
    )
    assert (
        f"dapo train: error: stopped by the health guard (health.on_problem=stop): {sentence}" in proc.stderr
    )
    assert [f["kind"] for f in _findings(run)] == ["truncated"]
    assert (run / "checkpoints" / "step_000001" / "COMPLETE").exists()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 1 and any(M.LEDGER_TOKENS in r for r in logged)
    assert not (run / "summary.json").exists()


def test_timeouts_and_cut_prompts_are_named_once_and_the_run_goes_on(runs) -> None:
    run, proc = runs["timeouts"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if line.startswith("dapo health: ")]
    assert [f["kind"] for f in _findings(run)] == ["prompts_cut", "reward_failures"]
    assert len(said) == 2, said
    assert said[0] == (  # num_train=400 rows, 140 with more than 8 prompt tokens
        "dapo health: 140 of 400 training prompts (35%) are longer than data.max_prompt_tokens=8 and were "
        "dropped (health.max_prompt_cut_frac=0.05): raise data.max_prompt_tokens, or shorten the prompts or "
        "the template"
    )
    assert "reward call(s) timed out and 0 raised in step 1 (100% of " in said[1]
    assert (
        "raise reward.timeout_s=0.1 or fix the reward function reward.name=tests.helpers_health:slow_reward"
        in said[1]
    )


def test_unparsed_answers_and_a_constant_reward_over_the_window(runs) -> None:
    run, proc = runs["no_answer"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [
        line.removeprefix("dapo health: ")
        for line in proc.stderr.splitlines()
        if line.startswith("dapo health: ")
    ]
    assert said == [
        "100% of the responses in step 1 had no answer the reward could parse (health.max_no_answer_rate=0.5): "
        "the model does not write the format reward.name=synthetic expects; check data.template=plain and the "
        "system prompt, or raise rollout.max_response_tokens if the answers are cut off",
        "every reward in steps 1-2 was -1 (64 responses): the reward function (reward.name=synthetic) never "
        "tells the answers apart, so nothing can be learned; check that it parses the answer format the prompt "
        "(data.template=plain) asks for, reading the answers with dapo samples RUN_DIR",
    ]
    assert [(f["kind"], f["step"]) for f in _findings(run)] == [("no_answer", 1), ("constant_reward", 2)]


def test_a_healthy_run_raises_nothing_and_prints_the_ledger(runs) -> None:
    run, proc = runs["healthy"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dapo health:" not in proc.stderr and not (run / "health.jsonl").exists()
    assert "  response tokens    live " in proc.stdout
    shares = json.loads((run / "summary.json").read_text())["ledger_shares"]
    assert sum(shares.values()) == pytest.approx(1.0) and shares["live"] > 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if M.LEDGER_TOKENS in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:  # the ledger adds up: tokens generated, and the loss denominator
        cats = [r[M.ledger_key(c)] for c in M.LEDGER_CATEGORIES]
        assert sum(cats) == r[M.LEDGER_TOKENS] == r[M.PERF_TOKENS_GENERATED]
        assert sum(cats[M.LEDGER_CATEGORIES.index("zero_advantage") :]) == r[M.PERF_TOKENS_TRAINED]
    assert sum(r[M.LEDGER_CLIPPED_LOW] + r[M.LEDGER_CLIPPED_HIGH] for r in steps) > 0  # two epochs clip


def test_a_prompt_limit_that_cuts_every_prompt_is_a_config_error(model: Path, tmp_path: Path) -> None:
    args = [
        "train",
        f"model.path={model}",
        f"logging.run_dir={tmp_path}",
        *SMALL,
        *FAST,
        "data.max_prompt_tokens=2",
    ]
    proc = _dapo(*args, env=_env(tmp_path))
    assert proc.returncode == 2
    assert "are longer than data.max_prompt_tokens=2" in proc.stderr


def _doctor(run: Path) -> subprocess.CompletedProcess[str]:
    return _dapo("doctor", str(run), env=_env(run.parent))


def test_doctor_on_a_healthy_run(runs) -> None:
    run, _ = runs["healthy"]
    out = _doctor(run)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"dapo doctor {run}"
    assert lines[1] == "  state      finished at step 3 of 3 (newest checkpoint step 3)"
    assert lines[2].startswith("  ledger     live ") and lines[2].endswith("(over 3 steps)")
    assert "  findings   none from the health guard" in lines
    for label in ("entropy", "length", "keep rate", "mismatch"):
        assert any(line.startswith(f"  {label:<11}") for line in lines), label
    assert lines[-1] == "  verdict    healthy: nothing found that stops this run from learning"


def test_doctor_on_the_provoked_runs(runs) -> None:
    run, _ = runs["truncated"]
    out = _doctor(run)
    assert out.returncode == 6, out.stdout + out.stderr
    assert "  state      not finished: last logged step 1 of 3, newest checkpoint step 1" in out.stdout
    assert "  findings   step 1: " in out.stdout and "hit rollout.max_response_tokens=2" in out.stdout
    assert "  verdict    " in out.stdout and "guard: truncated" in out.stdout
    run, _ = runs["timeouts"]
    out = _doctor(run)
    assert out.returncode == 6
    assert "  findings   step 0: 140 of 400 training prompts" in out.stdout
    assert "step 1: " in out.stdout and "guard: prompts_cut; guard: reward_failures" in out.stdout


def test_doctor_on_a_run_killed_mid_step(model: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    args = [
        "train",
        f"model.path={model}",
        f"logging.run_dir={tmp_path}",
        "logging.run_name=killed",
        *SMALL,
        *FAST,
    ]
    args += [f"{REWARD}varied_reward", "train.total_steps=40", "checkpoint.every_steps=1"]
    cmd = [sys.executable, "-m", "dapo_rl", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path), cwd=ROOT
    )
    wait_until(proc, logged_step(run / "metrics.jsonl", '"step": 2,'))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward/me')  # killed while writing a line
    out = _doctor(run)
    assert out.returncode == 0, out.stdout + out.stderr
    state = out.stdout.splitlines()[1]
    assert (
        state.startswith("  state      not finished: last logged step ")
        and " of 40, newest checkpoint step " in state
    )
    assert (
        "(killed, stopped by an error, or still running; dapo train --resume RUN_DIR continues it)" in state
    )
    assert out.stdout.splitlines()[-1].startswith("  verdict    healthy")


def test_dapo_eval_shares_the_guard(model: Path, tmp_path: Path) -> None:
    args = ["eval", "--model", str(model), "--reward", "tests.helpers_health:zero_reward", "-k", "2"]
    args += [
        "--max-problems",
        "8",
        "eval.max_response_tokens=2",
        "train.num_threads=1",
        "health.on_problem=stop",
    ]
    out = _dapo(*args, env=_env(tmp_path))
    assert out.returncode == 2, out.stderr[-2000:]
    said = [line for line in out.stderr.splitlines() if line.startswith("dapo health: ")]
    assert len(said) == 1 and " in the evaluation hit eval.max_response_tokens=2: raise eval.max_" in said[0]
    assert json.loads(out.stdout)["num_problems"] == 8  # the result is printed before it stops
