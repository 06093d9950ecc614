"""LoRA through peft: only the adapters train and hold optimizer state, the KL reference is the
base model with the adapters off, and the merged export is a plain Hugging Face model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dapo_rl.batch import PolicyModule, TrainSample, collate, sequence_logprobs
from dapo_rl.config import load_config
from dapo_rl.models.loading import load_model_and_tokenizer
from dapo_rl.optim import build_optimizer
from tests.helpers_run import save_random_tiny_model

pytest.importorskip("peft")

from dapo_rl.models.lora import AdaptersDisabled, is_peft_model, save_merged

LORA = ["model.lora.rank=4", "model.lora.alpha=8"]


def _setup(tmp_path: Path, *extra: str) -> tuple[object, object, object]:
    path = save_random_tiny_model(tmp_path / "base")
    cfg = load_config(None, [f"model.path={path}", *LORA, *extra])
    model, tok = load_model_and_tokenizer(path, cfg, torch.device("cpu"))
    return cfg, model, tok


def _mb() -> object:
    g = torch.Generator().manual_seed(0)
    samples = [
        TrainSample(torch.randint(3, 20, (5,), generator=g).tolist(), torch.randint(3, 20, (n,), generator=g).tolist(), 1.0, 0)
        for n in (4, 9, 6)
    ]  # fmt: skip
    return collate(samples, [0, 1, 2], pad_id=0, device=torch.device("cpu"))


def _nudge_adapters(model: torch.nn.Module) -> None:
    """LoRA's B starts at zero (adapters = identity); give it values so adapters matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_only_adapters_get_gradients_and_optimizer_state(tmp_path: Path) -> None:
    cfg, model, _ = _setup(tmp_path)
    assert is_peft_model(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 master weights
    _nudge_adapters(model)
    optimizer, _ = build_optimizer(model, cfg)
    logp, _ = PolicyModule(model).response_logprobs(_mb(), 1.0)
    logp.sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    optimizer.step()
    state_params = {id(p) for p in optimizer.state}
    assert state_params == {id(p) for p in model.parameters() if p.requires_grad}
    n_adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    assert n_adapter < 0.3 * n_all


def test_reference_is_the_base_model_without_a_copy(tmp_path: Path) -> None:
    """With adapters disabled, the live policy's log-probs equal the base model's exactly."""
    cfg, model, _ = _setup(tmp_path)
    _nudge_adapters(model)
    base, _ = load_model_and_tokenizer(Path(cfg.model.path), load_config(None, []), torch.device("cpu"))
    mb = _mb()
    policy = PolicyModule(model)
    with torch.no_grad():
        ref = sequence_logprobs(AdaptersDisabled(policy), mb, 1.0)[0]
        expected = sequence_logprobs(PolicyModule(base), mb, 1.0)[0]
        adapted = sequence_logprobs(policy, mb, 1.0)[0]
    assert torch.equal(ref, expected)
    assert not torch.allclose(adapted, expected, atol=1e-4)  # the adapters do change the policy
    # no second copy: the reference shares every parameter with the policy
    assert AdaptersDisabled(policy).policy is policy


def test_merged_export_loads_as_a_plain_model_and_matches(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    _, model, tok = _setup(tmp_path)
    _nudge_adapters(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    save_merged(model, tmp_path / "merged", tok)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # live model untouched
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert not is_peft_model(merged)
    mb = _mb()
    with torch.no_grad():
        a = sequence_logprobs(PolicyModule(model), mb, 1.0)[0]
        b = sequence_logprobs(PolicyModule(merged), mb, 1.0)[0]
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_adapter_checkpoint_reloads_exactly(tmp_path: Path) -> None:
    """``save_pretrained`` of the peft model writes adapters; loading that directory restores the
    base named in it plus the adapters (trainable), with identical log-probs."""
    cfg, model, tok = _setup(tmp_path)
    _nudge_adapters(model)
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()  # adapters only
    again, _ = load_model_and_tokenizer(tmp_path / "ckpt", cfg, torch.device("cpu"))
    assert {n for n, p in again.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    mb = _mb()
    with torch.no_grad():
        a = sequence_logprobs(PolicyModule(model), mb, 1.0)[0]
        b = sequence_logprobs(PolicyModule(again), mb, 1.0)[0]
    assert torch.equal(a, b)


def test_unknown_target_module_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="q_proj"):
        _setup(tmp_path, "model.lora.target_modules=[qkv]")


def test_adapters_get_gradients_through_gradient_checkpointing(tmp_path: Path) -> None:
    """Non-reentrant checkpointing recomputes through the frozen base: the adapters' gradients are
    the ones without it (to 1e-6)."""
    grads = {}
    for gc in (False, True):
        torch.manual_seed(0)  # LoRA's A matrices start random
        _, model, _ = _setup(tmp_path / str(gc), f"model.gradient_checkpointing={str(gc).lower()}")
        _nudge_adapters(model)
        model.train()
        logp, _ = PolicyModule(model).response_logprobs(_mb(), 1.0)
        logp.sum().backward()
        grads[gc] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads[True].keys() == grads[False].keys()
    for n, g in grads[False].items():
        torch.testing.assert_close(grads[True][n], g, rtol=1e-6, atol=1e-7, msg=n)


def test_merged_weights_stream_the_merged_state_under_base_names(tmp_path: Path) -> None:
    from dapo_rl.models.lora import merged_state_dict, merged_weights

    _, model, _ = _setup(tmp_path)
    _nudge_adapters(model)
    base_names = [n for n, _ in model.get_base_model().named_parameters(remove_duplicate=False)]
    plain = [n.replace(".base_layer.", ".") for n in base_names if ".lora_" not in n]
    streamed = list(merged_weights(model))
    assert [n for n, _ in streamed] == plain  # every base parameter once, under its HF name
    state = merged_state_dict(model)
    for name, tensor in streamed:
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    q = "model.layers.0.self_attn.q_proj.weight"
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 2.0
    torch.testing.assert_close(dict(streamed)[q], expected, rtol=1e-6, atol=1e-6)
    plain_model = save_random_tiny_model(tmp_path / "plain")
    cfg = load_config(None, [f"model.path={plain_model}"])
    full, _ = load_model_and_tokenizer(plain_model, cfg, torch.device("cpu"))
    assert [n for n, _ in merged_weights(full)] == [
        n for n, _ in full.named_parameters(remove_duplicate=False)
    ]
