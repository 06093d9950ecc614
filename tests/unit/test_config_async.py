"""The ``async`` section: a keyword as a YAML key (overrides, config show, round trip, docs), and the
rules that refuse stale batches without the behaviour importance weight."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dapo_rl.config import ConfigError, build_config, config_to_yaml, load_config
from dapo_rl.config_docs import render


def test_overrides_reach_the_section_and_round_trip() -> None:
    cfg = load_config(
        None, ["async.max_staleness=2", "rollout.importance_correction=mask", "async.heartbeat_s=7"]
    )
    assert cfg.async_.max_staleness == 2 and cfg.async_.heartbeat_s == 7.0 and cfg.async_.active
    text = config_to_yaml(cfg)
    assert "\nasync:\n  max_staleness: 2\n" in text and "async_" not in text
    import yaml

    again = build_config(yaml.safe_load(text))
    assert again == cfg
    assert not load_config(None, []).async_.active
    assert load_config(None, ["async.enable=true"]).async_.active  # the worker at eta = 0


def test_docs_name_the_section_async() -> None:
    page = render()
    assert "## `async`" in page and "| `async.max_staleness` |" in page and "async_" not in page


def test_auto_importance_correction_is_tis_with_stale_batches_only() -> None:
    assert load_config(None, []).rollout.importance_correction == "none"
    assert load_config(None, ["async.max_staleness=1"]).rollout.importance_correction == "tis"
    pinned = load_config(None, ["async.max_staleness=2", "rollout.importance_correction=mask"])
    assert pinned.rollout.importance_correction == "mask"


def test_stale_batches_without_the_behaviour_weight_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["async.max_staleness=1", "rollout.importance_correction=none"])
    msg = str(err.value)
    assert "async.max_staleness=1 needs rollout.importance_correction=tis or mask" in msg
    assert "not off-policy PPO" in msg
    for mode in ("tis", "mask"):
        load_config(None, ["async.max_staleness=1", f"rollout.importance_correction={mode}"])
    with pytest.raises(ConfigError, match=r"async\.enable=false"):
        load_config(
            None, ["async.max_staleness=1", "async.enable=false", "rollout.importance_correction=tis"]
        )


def test_plain_loss_resolves_to_no_behaviour_weight_and_refuses_one() -> None:
    plain = load_config(None, ["async.max_staleness=2", "async.decoupled_loss=false"])
    assert plain.rollout.importance_correction == "none"
    assert load_config(None, ["async.decoupled_loss=false"]).rollout.importance_correction == "none"
    with pytest.raises(ConfigError) as err:
        load_config(
            None, ["async.max_staleness=1", "async.decoupled_loss=false", "rollout.importance_correction=tis"]
        )
    msg = str(err.value)
    assert "async.decoupled_loss=false with rollout.importance_correction=tis" in msg
    assert "set rollout.importance_correction=none" in msg


def test_unknown_async_key_names_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean .async\.max_staleness."):
        load_config(None, ["async.max_stale=1"])


def test_cli_config_show_prints_async() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "config", "show", "async.max_staleness=1", "rollout.importance_correction=tis"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "async:\n  max_staleness: 1" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "config", "show", "async.max_staleness=1",
         "rollout.importance_correction=none"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "importance_correction" in bad.stderr
