"""Registries only where they are real: registered names are checked when the config loads (with the
valid names in the message), against the registry itself, and a registered group-filter criterion
named in the config is the one dynamic sampling runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torch import Tensor

from dapo_rl.algorithm.filtering import GROUP_FILTERS, filter_groups
from dapo_rl.config import ConfigError, load_config
from dapo_rl.registry import Registry
from dapo_rl.rollout import ROLLOUT_ENGINES, HFRolloutEngine
from dapo_rl.sampling import GroupCollector
from tests.unit.test_sampling import MIXED, RIGHT, Script, make_group


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.advantage=grpoo", "algorithm.advantage: unknown advantage estimator 'grpoo'. Did you mean 'grpo'? Valid names: grpo"),
        ("rollout.engine=hff", "rollout.engine: unknown rollout engine 'hff'. Did you mean 'hf'? Valid names: hf"),
        ("dynamic_sampling.filter=stdd", "dynamic_sampling.filter: unknown group filter 'stdd'. Did you mean 'std'? Valid names: "),
        ("reward.name=synthetc", "reward.name: unknown reward function 'synthetc'. Did you mean 'synthetic'? Valid names: "),
        ("data.template=dapp", "data.template: unknown prompt template 'dapp'. Did you mean 'dapo'? Valid names: boxed, dapo, plain"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("check_paths", [True, False])
def test_unknown_names_fail_when_the_config_loads(override: str, message: str, check_paths: bool) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override], check_paths=check_paths)
    assert message in str(info.value)
    assert str(info.value).count(override.split("=")[0] + ":") == 1  # reported once


def test_names_are_checked_against_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name registered from Python (as the vllm engine registers itself) is accepted; the
    message lists every registered name."""
    name = "test_registries_engine"
    with pytest.raises(ConfigError, match=f"unknown rollout engine '{name}'"):
        load_config("tiny", [f"rollout.engine={name}"], check_paths=False)
    monkeypatch.setitem(ROLLOUT_ENGINES._items, name, HFRolloutEngine)  # removed after the test
    assert load_config("tiny", [f"rollout.engine={name}"], check_paths=False).rollout.engine == name
    with pytest.raises(ConfigError) as info:
        load_config("tiny", ["rollout.engine=nope"], check_paths=False)
    assert name in str(info.value) and "hf" in str(info.value)


def _keep_none(values: Tensor, group_of: Tensor, num_groups: int) -> Tensor:
    return values.new_zeros(num_groups, dtype=bool)


@pytest.fixture
def keep_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered criterion that keeps no group (removed after the test)."""
    monkeypatch.setitem(GROUP_FILTERS._items, "keep_none", _keep_none)


@pytest.mark.usefixtures("keep_none")
def test_the_filter_name_reaches_filter_groups() -> None:
    views = [make_group(MIXED).view(), make_group(RIGHT).view()]
    assert filter_groups(views)[0] == [True, False]  # "std": the mixed group is informative
    keep, counts = filter_groups(views, criterion="keep_none")
    assert keep == [False, False] and counts["kept"] == 0
    assert load_config("tiny", ["dynamic_sampling.filter=keep_none"], check_paths=False)


@pytest.mark.usefixtures("keep_none")
def test_the_collector_runs_the_named_criterion() -> None:
    rounds = [[make_group(MIXED, "a"), make_group(MIXED, "b")]] * 2
    assert len(GroupCollector(1, 2, 2).collect(Script(rounds)).groups) == 1
    out = GroupCollector(1, 2, 2, criterion="keep_none").collect(Script(rounds))
    assert out.groups == [] and out.metrics["sampling/rounds"] == 2


def test_register_path_imports_on_first_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lazy_registry_entry.py").write_text("ENGINE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("thing")
    registry.register_path("lazy", "lazy_registry_entry:ENGINE")
    assert "lazy" in registry and registry.names() == ["lazy"]
    assert "lazy_registry_entry" not in sys.modules  # nothing imported yet
    entry = registry.get("lazy")
    assert entry is sys.modules["lazy_registry_entry"].ENGINE and registry.get("lazy") is entry
    monkeypatch.delitem(sys.modules, "lazy_registry_entry")


def test_loading_a_config_does_not_import_the_engines() -> None:
    """Rollout engine names are checked from the registry without importing transformers."""
    code = (
        "import sys; from dapo_rl.config import load_config; "
        "load_config('tiny', ['rollout.engine=vllm'], check_paths=False); "
        "print(sorted(m for m in ('transformers', 'vllm', 'dapo_rl.rollout.hf_engine') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
