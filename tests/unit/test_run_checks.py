"""Problems caught when the config or the model loads and named for what they are (#19): a YAML key
or section given twice, a run name that is a path, sampling without randomness under dynamic
sampling, a head size vLLM's CPU attention lacks, a model folder without a tokenizer or with NaN
weights, and the paths a run saves absolute; the warm start takes ``train.num_threads``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dapo_rl import runtime
from dapo_rl.config import ConfigError, anchored_paths, load_config
from dapo_rl.errors import ModelFileError
from dapo_rl.models import sft
from dapo_rl.models.loading import load_model_and_tokenizer
from tests.helpers_model import make_tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    model, tok = make_tiny_model_and_tokenizer(hidden=32, layers=1)  # 4 heads of size 8
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("algorithm:\n  clip_ratio_high: 0.3\n  clip_ratio_high: 0.28\n", 3, "clip_ratio_high", 2),
        ("optim:\n  lr: 1.0e-6\ntrain:\n  total_steps: 5\noptim:\n  warmup_updates: 3\n", 5, "optim", 1),
    ],
)
def test_a_key_or_section_given_twice_is_refused_with_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, check_paths=False)
    assert f"{path}: line {line}: key {key!r} is given twice (first on line {first})" in str(info.value)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "a\\b"])
def test_a_run_name_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ConfigError, match="must be a plain name"):
        load_config(None, [f"logging.run_name={name!r}"], check_paths=False)
    load_config(None, ["logging.run_name=ok-name_1.2"], check_paths=False)


@pytest.mark.parametrize("setting", ["rollout.temperature=0", "rollout.top_k=1"])
def test_sampling_without_randomness_under_dynamic_sampling_is_refused(setting: str) -> None:
    with pytest.raises(ConfigError, match=r"samples without randomness.*never finds an informative group"):
        load_config(None, [setting], check_paths=False)
    load_config(None, [setting, "dynamic_sampling.enable=false"], check_paths=False)


def test_vllm_on_a_cpu_with_an_unsupported_head_size_is_one_line(model_dir: Path) -> None:
    overrides = [f"model.path={model_dir}", "rollout.engine=vllm", "train.device=cpu"]
    with pytest.raises(
        ConfigError, match="attention head size is 8, but vLLM's CPU attention supports only 32"
    ):
        load_config(None, overrides, check_paths=False)
    load_config(None, [*overrides[:1], "rollout.engine=hf", "train.device=cpu"], check_paths=False)


def test_a_model_folder_without_a_tokenizer_is_named(model_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((model_dir / f).read_bytes())
    with pytest.raises(ConfigError, match=f"{bare} has no tokenizer"):
        load_config(None, [f"model.path={bare}"])
    cfg = load_config(None, [f"model.path={model_dir}"])
    with pytest.raises(ModelFileError, match="has no tokenizer"):
        load_model_and_tokenizer(bare, cfg, torch.device("cpu"))


def test_nan_weights_in_a_model_file_are_caught_at_load(tmp_path: Path) -> None:
    model, tok = make_tiny_model_and_tokenizer(hidden=32, layers=1)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = load_config(None, [f"model.path={tmp_path}"])
    with pytest.raises(
        ModelFileError, match=r"NaN or infinite weights \(model.layers.0.mlp.up_proj.weight; 1"
    ):
        load_model_and_tokenizer(tmp_path, cfg, torch.device("cpu"), trainable=False)


def test_saved_config_names_absolute_paths(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.py").write_text("def f(response, ground_truth):\n    return 0.0\n")
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1", "answer": "2"}\n')
    cfg = load_config(None, ["reward.name=r.py:f", "data.train_files=[d.jsonl]", f"model.path={model_dir}"])
    fixed = anchored_paths(cfg)
    assert fixed.reward.name == f"{tmp_path / 'r.py'}:f"
    assert fixed.data.train_files == [str(tmp_path / "d.jsonl")] and fixed.model.path == str(model_dir)
    assert (
        anchored_paths(load_config(None, ["reward.name=synthetic"], check_paths=False)).reward.name
        == "synthetic"
    )


def test_the_warm_start_takes_train_num_threads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It fixed two threads: 20x slower than one on a busy 2-core machine."""
    seen = []
    monkeypatch.setattr(sft, "run_sft", lambda target, **kw: seen.append(kw["threads"]))
    monkeypatch.setenv("DAPO_RL_CACHE", str(tmp_path))
    runtime.model_dir(load_config(None, ["train.num_threads=1"], check_paths=False))
    runtime.model_dir(load_config(None, ["train.num_threads=3"], check_paths=False))
    assert seen == [1, 3]
