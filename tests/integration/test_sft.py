"""SFT warm start: a short run writes a loadable model directory; the cache is reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo_rl.data import synthetic
from dapo_rl.models import sft
from dapo_rl.models.sft import INFO_FILE, SFTConfig, ensure_warm_model, run_sft
from dapo_rl.models.tiny import build_tokenizer

pytestmark = pytest.mark.slow

SHORT = dict(steps=12, batch_size=8, hidden=32, layers=1, eval_problems=8, progress=False)


def test_short_sft_writes_a_loadable_model(tmp_path: Path):
    out = tmp_path / "warm"
    info = run_sft(out, seed=0, **SHORT)
    assert info["steps"] == 12 and info["final_loss"] < info["initial_loss"]
    assert json.loads((out / INFO_FILE).read_text()) == json.loads(json.dumps(info))
    for key in (
        "sampled_accuracy",
        "greedy_accuracy",
        "groups_mixed",
        "sampled_forgotten_carry_rate",
        "seconds",
        "task_version",
    ):
        assert key in info
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dirs must be gone"
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = torch.tensor([tok("12+34=")["input_ids"]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))
    assert (
        tok.decode(tok("7+5=12\nAnswer: 12")["input_ids"], skip_special_tokens=True) == "7+5=12\nAnswer: 12"
    )
    # Overwriting an existing directory is atomic too.
    run_sft(out, seed=1, **SHORT)
    assert json.loads((out / INFO_FILE).read_text())["config"]["seed"] == 1


def test_ensure_warm_model_reuses_the_cache(tmp_path: Path, monkeypatch):
    kwargs = {k: v for k, v in SHORT.items() if k != "steps"}
    first = ensure_warm_model(cache_dir=tmp_path, steps=12, **kwargs)
    stamp = (first / INFO_FILE).stat().st_mtime_ns

    def no_training(*args, **kw):
        raise AssertionError("the cached model should have been reused")

    monkeypatch.setattr(sft, "run_sft", no_training)
    again = ensure_warm_model(cache_dir=tmp_path, steps=12, **kwargs)
    assert again == first and (again / INFO_FILE).stat().st_mtime_ns == stamp
    # A different configuration is a different cache entry.
    with pytest.raises(AssertionError, match="reused"):
        ensure_warm_model(cache_dir=tmp_path, steps=13, **kwargs)
    # force retrains.
    with pytest.raises(AssertionError, match="reused"):
        ensure_warm_model(cache_dir=tmp_path, steps=12, force=True, **kwargs)
    # An incomplete directory is not reused.
    (first / "model.safetensors").unlink()
    with pytest.raises(AssertionError, match="reused"):
        ensure_warm_model(cache_dir=tmp_path, steps=12, **kwargs)


def test_ensure_warm_model_at_an_explicit_directory(tmp_path: Path):
    kwargs = {k: v for k, v in SHORT.items() if k != "steps"}
    out = tmp_path / "mine"
    assert ensure_warm_model(output_dir=out, steps=12, **kwargs) == out
    stamp = (out / INFO_FILE).stat().st_mtime_ns
    assert ensure_warm_model(output_dir=out, steps=12, **kwargs) == out
    assert (out / INFO_FILE).stat().st_mtime_ns == stamp
    ensure_warm_model(output_dir=out, steps=12, force=True, **kwargs)
    assert (out / INFO_FILE).stat().st_mtime_ns != stamp


def test_sft_targets_are_the_fallible_teachers_and_reproducible():
    tok = build_tokenizer()
    rows = synthetic.make_rows(600, seed=0, split="train")

    def responses(forget: float, seed: int) -> list[str]:
        examples = sft._encode_examples(tok, rows, forget, seed)
        return [tok.decode(ids[start:-1]) for ids, start in examples]

    clean = responses(0.0, 0)
    assert clean == [synthetic.format_solution(r) for r in rows]
    taught = responses(0.4, 0)
    assert taught == responses(0.4, 0) and taught != responses(0.4, 1)
    carries = [synthetic.forgotten_carries(t) for t in taught]
    rate = sum(f for _, f in carries) / sum(d for d, _ in carries)
    assert abs(rate - 0.4) < 0.05
    wrong = [synthetic.extract_answer(t) != int(r.answer) for t, r in zip(taught, rows)]
    assert wrong == [f > 0 for _, f in carries] and 0.2 < sum(wrong) / len(rows) < 0.6
    # the teacher's habit is part of the cached model's identity
    assert SFTConfig(forget_carry=0.4).digest() != SFTConfig(forget_carry=0.0).digest()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--forget-carry", "1.5"], "--forget-carry must be in [0, 1], got 1.5"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_sft_cli_rejects_a_bad_recipe_before_training(argv, message, tmp_path: Path, capsys):
    from dapo_rl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--output", str(tmp_path / "warm"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "warm").exists()


def test_sft_cli_recipe_reaches_the_model(tmp_path: Path, capsys):
    from dapo_rl.cli import main

    out = tmp_path / "warm"
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--output", str(out), "--forget-carry", "0", "--steps", "2"])
    assert exit_info.value.code == 0
    config = json.loads((out / INFO_FILE).read_text())["config"]
    assert config["forget_carry"] == 0.0 and config["steps"] == 2
    assert f"dapo train model.path={out}" in capsys.readouterr().out
