"""The config schema: presets, overrides, errors that name the problem, docs that cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dapo_rl.config import (
    PRESET_DIR,
    ConfigError,
    DapoConfig,
    build_config,
    config_to_yaml,
    load_config,
    parse_overrides,
    read_yaml,
)
from dapo_rl.config_docs import render

REPO = Path(__file__).resolve().parents[2]


def _all_config_files() -> list[Path]:
    files = {p.resolve() for p in (REPO / "configs").rglob("*.yaml")}
    files |= {p.resolve() for p in PRESET_DIR.rglob("*.yaml")}
    files |= {p.resolve() for p in (REPO / "examples").rglob("*.yaml")}
    return sorted(files)


def test_there_are_presets() -> None:
    names = {p.stem for p in _all_config_files()}
    assert {"tiny", "paper_32b", "grpo_baseline", "gsm8k", "dapo_math"} <= names


@pytest.mark.parametrize("path", _all_config_files(), ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path) -> None:
    cfg = load_config(path, check_paths=False)
    assert isinstance(cfg, DapoConfig)
    # round trip: the printed config loads back to the same values
    again = build_config(__import__("yaml").safe_load(config_to_yaml(cfg)), check_paths=False)
    assert again == cfg


def test_paper_preset_matches_semantics_section_11() -> None:
    cfg = load_config("paper_32b", check_paths=False)
    assert cfg.batch.prompts_per_step == 512 and cfg.batch.samples_per_prompt == 16
    assert cfg.updates_per_step == 16
    assert cfg.dynamic_sampling.oversample == 3 and cfg.dynamic_sampling.max_rounds == 10
    assert cfg.rollout.max_response_tokens == 20480
    assert cfg.overlong.buffer_tokens == 4096 and cfg.overlong.penalty_factor == 1.0
    a = cfg.algorithm
    assert (a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert a.loss_agg_mode == "token-mean" and a.kl_coef == 0 and a.entropy_coef == 0
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.grad_clip, o.schedule) == (1e-6, 0.1, 1.0, "constant")
    assert o.warmup_updates == 320  # 20 rollout steps x 16 updates
    assert (cfg.rollout.temperature, cfg.rollout.top_p) == (1.0, 1.0)
    assert (cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p) == (32, 1.0, 0.7)
    assert cfg.data.template == "dapo" and cfg.reward.name == "math_dapo"


def test_grpo_baseline_inherits_and_changes_only_grpo_knobs() -> None:
    paper = load_config("paper_32b", check_paths=False)
    grpo = load_config("grpo_baseline", check_paths=False)
    assert grpo.algorithm.clip_ratio_high == grpo.algorithm.clip_ratio_low == 0.2
    assert not grpo.dynamic_sampling.enable and not grpo.overlong.enable
    assert not grpo.overlong.mask_truncated
    assert grpo.algorithm.loss_agg_mode == "seq-mean-token-mean"
    assert grpo.batch == paper.batch and grpo.optim == paper.optim and grpo.model == paper.model


def test_schema_defaults_are_the_papers() -> None:
    d = DapoConfig()
    assert (d.algorithm.clip_ratio_low, d.algorithm.clip_ratio_high) == (0.2, 0.28)
    assert d.algorithm.clip_ratio_c is None and d.algorithm.loss_agg_mode == "token-mean"
    assert d.dynamic_sampling.metric == "acc"


def test_dotted_overrides_apply_with_yaml_types() -> None:
    cfg = load_config(
        None,
        [
            "algorithm.clip_ratio_high=0.3",
            "algorithm.clip_ratio_c=null",
            "rollout.stop_strings=[x, '\\n\\n']",
            "train.seed=7",
        ],
    )
    assert cfg.algorithm.clip_ratio_high == 0.3 and cfg.algorithm.clip_ratio_c is None
    assert cfg.rollout.stop_strings == ["x", "\\n\\n"]
    assert cfg.train.seed == 7


def test_derived_values() -> None:
    cfg = load_config(
        None, ["batch.prompts_per_step=32", "batch.prompts_per_update=8", "batch.epochs_per_step=2"]
    )
    assert cfg.updates_per_step == 8
    assert cfg.prompts_per_round == int(32 * cfg.dynamic_sampling.oversample)
    assert cfg.total_updates == cfg.train.total_steps * 8
    assert cfg.loss_norm_tokens == cfg.rollout.max_response_tokens
    off = load_config(None, ["dynamic_sampling.enable=false"])
    assert off.prompts_per_round == off.batch.prompts_per_step


def test_unknown_key_names_the_closest_valid_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["algorithm.clip_ratio_hgh=0.3"])
    msg = str(e.value)
    assert "unknown key 'algorithm.clip_ratio_hgh'" in msg and "algorithm.clip_ratio_high" in msg
    with pytest.raises(ConfigError) as e:
        load_config(None, ["algoritm.clip_ratio_high=0.3"])
    assert "did you mean 'algorithm'" in str(e.value)


def test_wrong_type_names_key_and_type() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["batch.prompts_per_step=many"])
    msg = str(e.value)
    assert "batch.prompts_per_step" in msg and "integer" in msg and "'many'" in msg


def test_cross_field_rules_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(
            None,
            [
                "overlong.buffer_tokens=64",  # == max_response_tokens (64): must be smaller
                "algorithm.clip_ratio_low=1.0",
                "algorithm.clip_ratio_high=-0.1",
                "algorithm.clip_ratio_c=1.0",
                "batch.prompts_per_step=10",  # not divisible by prompts_per_update=8
                "batch.samples_per_prompt=1",
                "algorithm.loss_agg_mode=token_mean",
            ],
        )
    problems = e.value.problems
    assert len(problems) == 7, problems
    joined = "\n".join(problems)
    for needle in (
        "overlong.buffer_tokens=64",
        "clip_ratio_low=1.0",
        "clip_ratio_high=-0.1",
        "clip_ratio_c=1.0",
        "divisible",
        "samples_per_prompt=1",
        "did you mean 'token-mean'",
    ):
        assert needle in joined


def test_field_errors_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["batch.prompts_per_step=x", "optim.lr=-1", "nope.key=1"])
    assert len(e.value.problems) == 3


def test_missing_paths_are_errors_when_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"model.path={tmp_path / 'absent'}", f"data.train_files=[{tmp_path / 'x.jsonl'}]"])
    assert "not a directory" in str(e.value) and "file not found" in str(e.value)


def test_bad_override_syntax_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_overrides(["novalue"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(lst)
    with pytest.raises(ConfigError, match="built-in presets"):
        load_config(tmp_path / "nope.yaml")


def test_base_inheritance_and_cycle(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny\ntrain:\n  seed: 5\n")
    cfg = load_config(child)
    assert cfg.train.seed == 5 and cfg.batch == load_config(None).batch
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(a)


def test_every_field_has_a_docstring() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing += walk(ann, f"{prefix}{name}.")
            elif not (info.description or "").strip():
                missing.append(prefix + name)
        return missing

    assert walk(DapoConfig, "") == []


def test_config_docs_do_not_drift() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    assert text == render(), "docs/config.md is stale: run `make docs`"


def test_cli_config_show_and_error_exit_code() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "config", "show", "algorithm.clip_ratio_high=0.31"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "clip_ratio_high: 0.31" in out
    bad = subprocess.run(
        [sys.executable, "-m", "dapo_rl", "config", "show", "batch.prompts_per_stp=3"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "batch.prompts_per_step" in bad.stderr
    assert "Traceback" not in bad.stderr
