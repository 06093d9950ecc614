"""Extension points from YAML: import paths resolved and checked at config time, with errors that
name the key, the path and what was expected; user return values and extra fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_rl.config import ConfigError, load_config
from dapo_rl.errors import UserCodeError
from dapo_rl.plugins import (
    PluginError,
    is_import_path,
    resolve_filter,
    resolve_loader,
    resolve_reward,
    resolve_template,
)
from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.runner import NO_EXTRACTED_ANSWER, RewardRunner, as_reward_result
from dapo_rl.runtime import rows_from_user

USER_CODE = """
from dapo_rl.rewards.base import RewardResult

TEMPLATE = "Q: {problem}"
BAD_TEMPLATE = "no placeholder"
NOT_CALLABLE = 3

def reward(response, ground_truth, **extra):
    return RewardResult(score=float(response == ground_truth), acc=response == ground_truth)

def reward_one_arg(response):
    return 1.0

def keep(group):
    return True

def keep_two(group, other):
    return True

def load(split):
    return [{"prompt": "1+1=", "answer": 2, "level": 1}]
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_code.py"
    path.write_text(USER_CODE)
    return path


def test_is_import_path() -> None:
    assert is_import_path("pkg.mod:fn") and is_import_path("a/b.py:fn")
    assert not is_import_path("math_dapo") and not is_import_path("Q: {problem}")
    assert not is_import_path("pkg.mod:") and not is_import_path(":fn")


def test_resolves_functions_from_a_file(user_file: Path) -> None:
    fn = resolve_reward(f"{user_file}:reward")
    assert fn("a", "a").acc and not fn("a", "b").acc
    assert callable(resolve_filter(f"{user_file}:keep"))
    assert resolve_filter("std") is None
    assert resolve_reward("math_dapo") == "math_dapo"
    assert resolve_template(f"{user_file}:TEMPLATE") == "Q: {problem}"
    assert resolve_template("Plain {problem} here") == "Plain {problem} here"
    assert resolve_loader(f"{user_file}:load")("train")[0]["answer"] == 2


def test_resolves_module_paths() -> None:
    fn = resolve_reward("dapo_rl.rewards.math_dapo:math_dapo_reward")
    assert fn("...\nAnswer: 4", "4").acc


@pytest.mark.parametrize(
    ("spec", "key", "resolver", "needles"),
    [
        ("no_such_module_xyz:fn", "reward.name", resolve_reward, ["reward.name", "no_such_module_xyz", "cannot import"]),
        ("{file}:missing", "reward.name", resolve_reward, ["reward.name", "has no attribute 'missing'", "reward"]),
        ("{file}:reward_one_arg", "reward.name", resolve_reward, ["signature (response)", "fn(response: str, ground_truth: str"]),
        ("{file}:keep_two", "dynamic_sampling.filter", resolve_filter, ["dynamic_sampling.filter", "fn(group: GroupView) -> bool"]),
        ("{file}:NOT_CALLABLE", "dynamic_sampling.filter", resolve_filter, ["is a int, expected a function"]),
        ("{file}:BAD_TEMPLATE", "data.template", resolve_template, ["exactly one {problem}"]),
        ("/nonexistent/dir/code.py:fn", "data.loader", resolve_loader, ["data.loader", "file not found", "/nonexistent/dir/code.py"]),
    ],
)  # fmt: skip
def test_bad_import_paths_name_key_path_and_expectation(
    user_file: Path, spec: str, key: str, resolver, needles: list[str]
) -> None:
    spec = spec.replace("{file}", str(user_file))
    with pytest.raises(PluginError) as e:
        resolver(spec, key)
    msg = str(e.value)
    assert spec in msg
    for needle in needles:
        assert needle in msg


def test_import_errors_inside_user_code_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('user module is broken')\n")
    with pytest.raises(PluginError, match="user module is broken"):
        resolve_reward(f"{broken}:fn")


def test_unknown_builtin_name_suggests() -> None:
    with pytest.raises(KeyError, match="math_dapo"):
        resolve_reward("math_dpao")


def test_config_time_validation_reports_all_plugin_problems(user_file: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(
            None,
            [
                f"reward.name={user_file}:nope",
                f"dynamic_sampling.filter={user_file}:keep_two",
                f"data.loader={user_file}:missing_loader",
            ],
        )
    assert len(e.value.problems) == 3
    joined = "\n".join(e.value.problems)
    assert "reward.name" in joined and "dynamic_sampling.filter" in joined and "data.loader" in joined


def test_yaml_file_specs_are_relative_to_the_yaml(tmp_path: Path, user_file: Path, monkeypatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "run.yaml").write_text("base: tiny\nreward:\n  name: ../user_code.py:reward\n")
    monkeypatch.chdir("/")
    cfg = load_config(sub / "run.yaml")
    assert cfg.reward.name == f"{user_file.resolve()}:reward"


def test_user_reward_return_values() -> None:
    plain = {NO_EXTRACTED_ANSWER: True}  # a bare score carries no extracted answer
    assert as_reward_result(0.5) == RewardResult(0.5, True, info=plain)
    assert as_reward_result(-1) == RewardResult(-1.0, False, info=plain)
    assert as_reward_result(0.0).acc is False
    assert as_reward_result((0.0, True)) == RewardResult(0.0, True, info=plain)
    assert as_reward_result({"score": 2, "acc": False}) == RewardResult(2.0, False, info=plain)
    assert as_reward_result(True) == RewardResult(1.0, True, info=plain)
    assert as_reward_result(RewardResult(1.0, True, "7")) == RewardResult(1.0, True, "7")
    with pytest.raises(TypeError, match="expected RewardResult, a float"):
        as_reward_result("1")


def test_runner_passes_only_the_extras_a_function_names() -> None:
    seen = []

    def named(response: str, ground_truth: str, level: int = 0) -> float:
        seen.append(level)
        return 1.0

    def star(response: str, ground_truth: str, **extra: object) -> float:
        seen.append(sorted(extra))
        return 1.0

    for fn in (named, star):
        with RewardRunner(fn, isolate=False) as runner:
            results, metrics = runner.score_batch(["a"], ["a"], [{"level": 3, "source": "x"}])
        assert results[0].acc and metrics["reward/errors"] == 0
    assert seen == [3, ["level", "source"]]


def test_always_crashing_reward_stops_with_first_traceback() -> None:
    calls = []

    def crash(response: str, ground_truth: str) -> float:
        calls.append(response)
        raise ZeroDivisionError(f"bad input {response}")

    with RewardRunner(crash, isolate=False) as runner, pytest.raises(UserCodeError) as e:
        runner.score_batch(["first", "second"], ["1", "1"])
    assert "ZeroDivisionError: bad input first" in str(e.value)


def test_rows_from_user_dicts_and_errors() -> None:
    rows = rows_from_user([{"prompt": "1+1=", "answer": 2, "level": 1}], "data.loader('train')")
    assert rows[0].answer == "2" and rows[0].extra == {"level": 1} and rows[0].uid == "data.loader('train'):0"
    with pytest.raises(
        ValueError, match=r"item 1 is dict .* expected a PromptRow or a dict with 'prompt' and 'answer'"
    ):
        rows_from_user([{"prompt": "a", "answer": "b"}, {"question": "no"}], "data.loader('train')")
