"""Configurations that would train nothing or diverge at once are refused at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_rl.config import ConfigError, load_config


@pytest.mark.parametrize("lr", ["inf", ".inf", "nan", "-inf"])
def test_non_finite_learning_rate_is_refused(lr: str) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(None, [f"optim.lr={lr}"])


def test_one_sample_per_prompt_is_refused_without_dynamic_sampling() -> None:
    with pytest.raises(ConfigError, match=r"samples_per_prompt=1 must be >= 2: .*always 0"):
        load_config(None, ["batch.samples_per_prompt=1", "dynamic_sampling.enable=false"])


def test_corrupt_safetensors_in_model_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ConfigError, match=r"model.safetensors is corrupt: 7 bytes, too short"):
        load_config(None, [f"model.path={tmp_path}"])


def test_max_empty_steps_default_and_off() -> None:
    assert load_config(None, []).train.max_empty_steps == 10
    assert load_config(None, ["train.max_empty_steps=0"]).train.max_empty_steps == 0


def test_prompt_cap_above_the_model_positions_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 256}')
    (tmp_path / "tokenizer.json").write_text("{}")  # a model folder has its tokenizer (checked too)
    load_config(None, [f"model.path={tmp_path}", "data.max_prompt_tokens=192"])
    with pytest.raises(
        ConfigError, match=r"data.max_prompt_tokens=300 is more than the model's 256 positions"
    ):
        load_config(None, [f"model.path={tmp_path}", "data.max_prompt_tokens=300"])
