"""The two extension examples run end to end in a CI-sized configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_run import SMALL, quiet_env, save_random_tiny_model

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_tiny_model(tmp_path_factory.mktemp("model"))


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=quiet_env(tmp_path), timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _trained(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward/mean" in r]


def test_python_custom_reward_and_filter(model_dir: Path, tmp_path: Path) -> None:
    overrides = [*SMALL, f"model.path={model_dir}", "train.total_steps=2", f"logging.run_dir={tmp_path}"]
    out = _run([sys.executable, str(EXAMPLES / "custom_reward.py"), *overrides], tmp_path)
    assert "held-out before" in out.stdout
    steps = _trained(tmp_path / "custom_reward")
    assert [r["step"] for r in steps] == [1, 2]
    # the user's filter ran: a random model is never right, so no group is "mixed" and none is kept
    assert all(r["sampling/groups_trained"] == 0 for r in steps)


def test_python_example_functions_follow_their_contract() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import custom_reward as ex
    finally:
        sys.path.remove(str(EXAMPLES))
    from dapo_rl import GroupView

    assert ex.partial_credit("1+2=3\nAnswer: 27", "27").score == 1.0
    assert ex.partial_credit("Answer: 17", "27").score == 0.5  # last digit right
    assert ex.partial_credit("Answer: 12", "27").score == -1.0
    assert ex.partial_credit("no answer", "27").pred is None
    view = GroupView(rewards=[1, -1], accs=[True, False], scores=[1, -1], lengths=[10, 64], texts=["", ""])
    assert ex.mixed_and_finished(view)
    assert not ex.mixed_and_finished(GroupView([1, 1], [True, True], [1, 1], [10, 10], ["", ""]))


def test_yaml_only_run_with_user_module(model_dir: Path, tmp_path: Path) -> None:
    overrides = [*SMALL, f"model.path={model_dir}", "train.total_steps=2", f"logging.run_dir={tmp_path}"]
    cmd = [sys.executable, "-m", "dapo_rl", "train", "--config", str(EXAMPLES / "yaml_only" / "config.yaml")]
    _run([*cmd, *overrides], tmp_path)
    run = tmp_path / "yaml_only"
    saved = (run / "config.yaml").read_text()
    assert "my_task.py:exact" in saved and "my_task.py:load" in saved
    steps = _trained(run)
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["reward/score_mean"] == -1.0 for r in steps)  # ±1 reward, random model never right
    # the user's acc-based filter ran (the SMALL overrides' reward-metric std filter would keep groups)
    assert all(r["sampling/groups_trained"] == 0 for r in steps)


def test_yaml_only_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"base: {EXAMPLES / 'yaml_only' / 'config.yaml'}\nreward:\n  name: my_task.py:no_such_fn\n"
    )
    (tmp_path / "my_task.py").write_text((EXAMPLES / "yaml_only" / "my_task.py").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "train", "--config", str(bad)],
        capture_output=True, text=True, env=quiet_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert "reward.name=" in out.stderr and "no_such_fn" in out.stderr and "has no attribute" in out.stderr
