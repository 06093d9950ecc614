"""`dapo doctor`'s judgements on hand-written run directories (the real runs: test_health_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dapo_rl import metric_names as M
from dapo_rl.health.doctor import EXIT_UNHEALTHY, diagnose


def _run(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "config.yaml").write_text("train:\n  total_steps: 8\nrollout:\n  max_response_tokens: 64\n")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _step(step: int, **over: float) -> dict:
    row = {
        "step": step, M.REWARD_MEAN: 0.1 * step, M.LOSS_ENTROPY: 1.0, M.ROLLOUT_RESPONSE_LEN_MEAN: 20.0,
        M.ROLLOUT_TRUNCATED_FRAC: 0.05, M.SAMPLING_KEEP_RATE: 0.6, M.LEDGER_LIVE: 80.0,
        M.LEDGER_FILTERED_ALL_WRONG: 20.0, M.LEDGER_TOKENS: 100.0,
    }  # fmt: skip
    return row | over


def test_a_healthy_history(tmp_path: Path) -> None:
    report, code = diagnose(_run(tmp_path, [_step(s) for s in range(1, 9)]))
    assert code == 0, report
    assert "  state      not finished: last logged step 8 of 8, no checkpoint" in report
    assert "  ledger     live 80.0% · filtered: all wrong 20.0%  (over 8 steps)" in report
    assert "  entropy    1 -> 1 nats/token: steady" in report


@pytest.mark.parametrize(
    ("late", "needle"),
    [
        ({M.LOSS_ENTROPY: 0.1}, "entropy collapsed from 1 to 0.1 nats/token"),
        ({M.LOSS_ENTROPY: 5.0}, "entropy exploded from 1 to 5 nats/token"),
        ({M.ROLLOUT_TRUNCATED_FRAC: 0.95}, "95% of the responses hit the cap at the end"),
        ({M.SAMPLING_KEEP_RATE: 0.05, M.SAMPLING_GROUPS_ALL_CORRECT: 9, M.SAMPLING_GROUPS_ALL_WRONG: 1},
         "keep rate 0.05 at the end: the task is getting saturated (more all-correct groups)"),
        ({M.ROLLOUT_LOGPROB_ABS_DIFF_MEAN: 0.2}, "differ from the trainer's by 0.2 on average"),
        ({M.LEDGER_LIVE: 0.0, M.LEDGER_FILTERED_ALL_WRONG: 10000.0}, "of the response tokens carried gradient"),
    ],
)  # fmt: skip
def test_each_problem_is_named_in_the_verdict(tmp_path: Path, late: dict, needle: str) -> None:
    rows = [_step(s) for s in range(1, 5)] + [_step(s, **late) for s in range(5, 9)]
    report, code = diagnose(_run(tmp_path, rows))
    assert code == EXIT_UNHEALTHY
    assert report.splitlines()[-1].startswith("  verdict    1 problem(s): ") and needle in report


def test_reward_up_held_out_down(tmp_path: Path) -> None:
    rows = [
        {"step": 0, M.EVAL_AVG_AT_K: 0.5},
        *(_step(s) for s in range(1, 9)),
        {"step": 8, M.EVAL_AVG_AT_K: 0.3},
    ]
    report, code = diagnose(_run(tmp_path, rows))
    assert code == EXIT_UNHEALTHY
    assert "  held-out   avg@k 0.500 (step 0) -> 0.300 (step 8); training reward 0.150 -> 0.750:" in report


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        diagnose(tmp_path)


def test_a_folder_with_only_a_users_config_is_not_a_run(tmp_path: Path) -> None:
    """A bare config.yaml (the user's own experiment folder) does not make a run directory."""
    (tmp_path / "config.yaml").write_text("train:\n  total_steps: 8\n")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        diagnose(tmp_path)
