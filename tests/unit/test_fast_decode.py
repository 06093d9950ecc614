"""The lean decode path (``dapo_rl.rollout.fast_decode``) against transformers: per-token logits under
teacher forcing, greedy ``model.generate``, the engine's own transformers path (same seed, same
samples; EOS, truncation and stop strings alike), and the fallback for models it does not cover."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from dapo_rl.models.tiny import build_tokenizer
from dapo_rl.rollout import HFRolloutEngine, SamplingParams
from dapo_rl.rollout.fast_decode import LeanDecoder, lean_decode_unsupported
from dapo_rl.rollout.hf_engine import _Chunk

PROMPTS = ["1+2=", "347+85=", "9*9=", "1234-999="]  # unequal lengths: left padding


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _seeded(cls, config, seed: int = 0) -> nn.Module:
    """A randomly initialised model in eval mode; biases (zero at init) get random values too."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                nn.init.normal_(p, std=0.2)
    return model.eval()


def _common(vocab: int, **kw) -> dict:
    base = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, initializer_range=0.2, bos_token_id=1,
        eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return base | kw


def build(kind: str, vocab: int) -> nn.Module:
    """The model families the lean path covers, with the variations that change its arithmetic."""
    if kind == "llama":  # the embedded tiny model's architecture: MHA, tied head
        return _seeded(LlamaForCausalLM, LlamaConfig(**_common(vocab, tie_word_embeddings=True)))
    if kind == "llama_bias_gqa_llama3":  # all biases, GQA, untied head, llama3 rope scaling
        rope = {
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
        }  # fmt: skip
        config = LlamaConfig(
            **_common(vocab, num_key_value_heads=2, tie_word_embeddings=False),
            attention_bias=True, mlp_bias=True, rope_parameters=rope,
        )  # fmt: skip
        return _seeded(LlamaForCausalLM, config)
    if kind == "qwen2_tied":  # q/k/v biases, GQA 4/2, tied head
        return _seeded(
            Qwen2ForCausalLM, Qwen2Config(**_common(vocab, num_key_value_heads=2, tie_word_embeddings=True))
        )
    if kind == "qwen2_untied":  # GQA 4/1, untied head
        return _seeded(
            Qwen2ForCausalLM,
            Qwen2Config(**_common(vocab, num_key_value_heads=1, tie_word_embeddings=False)),
            seed=1,
        )
    if kind == "mistral":
        config = MistralConfig(**_common(vocab, num_key_value_heads=2), sliding_window=None)
        return _seeded(MistralForCausalLM, config)
    raise ValueError(kind)


KINDS = ["llama", "llama_bias_gqa_llama3", "qwen2_tied", "qwen2_untied", "mistral"]


@pytest.fixture(scope="module", params=KINDS)
def model(request, tok):
    return build(request.param, len(tok))


def _ids(tok, texts):
    return [tok(t)["input_ids"] for t in texts]


def _lean_teacher_forced(engine: HFRolloutEngine, prompts, responses, drop_after: int | None = None):
    """Logits ``[rows, T, vocab]`` from the engine's prefill then lean steps fed ``responses``; with
    ``drop_after``, rows 1 and 3 leave the batch after that step (their later logits are NaN)."""
    steps = len(responses[0])
    chunk = _Chunk([list(p) for p in prompts], [1] * len(prompts), [(i, 0) for i in range(len(prompts))])
    with torch.no_grad():
        cache, logits, mask, positions = engine._prefill(chunk, steps, torch.device("cpu"))
        stepper = engine._stepper(cache, mask, mask.shape[1] - steps, lean=True)
        assert isinstance(stepper, LeanDecoder)
        out = torch.full((len(prompts), steps, logits.shape[-1]), float("nan"))
        out[:, 0] = logits
        active = torch.arange(len(prompts))
        for t in range(steps - 1):
            if t == drop_after:
                keep = torch.tensor([0, 2])
                stepper.select(keep)
                active, positions = active[keep], positions[keep]
            tokens = torch.tensor([responses[r][t] for r in active.tolist()])
            out[active, t + 1] = stepper.step(tokens, positions)
            positions = positions + 1
    return out


def _reference_logits(model, prompt, response) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]


@pytest.mark.parametrize("drop_after", [None, 3])
def test_teacher_forced_logits_match_the_hf_forward(model, tok, drop_after):
    prompts = _ids(tok, PROMPTS)
    gen = torch.Generator().manual_seed(0)
    responses = torch.randint(3, len(tok), (len(prompts), 12), generator=gen).tolist()
    engine = HFRolloutEngine(model, tok)
    assert engine.decode_path() == ("lean", None)
    lean = _lean_teacher_forced(engine, prompts, responses, drop_after)
    for r, (prompt, response) in enumerate(zip(prompts, responses)):
        ref = _reference_logits(model, prompt, response)
        steps = len(response) if drop_after is None or r in (0, 2) else drop_after + 1
        torch.testing.assert_close(lean[r, :steps], ref[:steps], atol=1e-5, rtol=0)
        assert lean[r, steps:].isnan().all()


def test_the_comparison_has_power(tok):
    """A deliberately wrong rotary table (off by one position) fails the tolerance by far."""
    model = build("llama", len(tok))
    prompts = _ids(tok, PROMPTS[:2])
    responses = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    engine = HFRolloutEngine(model, tok)
    original = LeanDecoder._rope_table

    def shifted(self, rotary, positions, scaling, device):
        original(self, rotary, positions + 1, scaling, device)
        self.rope_q, self.rope_k = self.rope_q[1:], self.rope_k[1:]

    LeanDecoder._rope_table = shifted
    try:
        lean = _lean_teacher_forced(engine, prompts, responses)
    finally:
        LeanDecoder._rope_table = original
    errors = [
        (lean[r, 1:] - _reference_logits(model, prompts[r], responses[r])[1:]).abs().max() for r in (0, 1)
    ]
    assert min(errors) > 1e-2


def test_greedy_equals_hf_generate(model, tok):
    prompts = _ids(tok, PROMPTS)
    batch = tok.pad([{"input_ids": p} for p in prompts], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        ref = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=20,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    engine = HFRolloutEngine(model, tok)
    assert engine.decode_path()[0] == "lean"
    params = SamplingParams(max_new_tokens=20, temperature=0.0, eos_token_ids=[tok.eos_token_id])
    out = engine.generate(prompts, 2, params)
    for i, samples in enumerate(out):
        expected = ref[i, width:].tolist()
        for r in samples:
            assert r.token_ids == expected[: r.length]
            assert r.finish_reason == ("eos" if r.token_ids[-1] == tok.eos_token_id else "length")


def _flat(out):
    return [r for samples in out for r in samples]


def _as_tuples(out):
    return [[(r.token_ids, r.text, r.finish_reason) for r in s] for s in out]


def test_seeded_samples_equal_the_hf_path_and_repeat(model, tok):
    prompts = _ids(tok, PROMPTS)
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.95, seed=11, return_logprobs=True)
    lean_engine, hf_engine = HFRolloutEngine(model, tok), HFRolloutEngine(model, tok, lean_decode=False)
    assert hf_engine.decode_path() == ("hf", "lean_decode=False")
    lean, again, hf = (e.generate(prompts, 3, params) for e in (lean_engine, lean_engine, hf_engine))
    assert _as_tuples(lean) == _as_tuples(again) == _as_tuples(hf)
    for a, b in zip(_flat(lean), _flat(hf)):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    # logprobs also match teacher forcing at the sampling temperature
    for prompt, samples in zip(prompts, lean):
        for r in samples:
            ref = torch.log_softmax(_reference_logits(model, prompt, r.token_ids) / 0.9, -1)
            ref = ref.gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(r.logprobs), ref, atol=1e-5, rtol=0)
    other = lean_engine.generate(prompts, 3, SamplingParams(max_new_tokens=16, temperature=0.9, seed=12))
    assert _as_tuples(other) != _as_tuples(lean)


def test_eos_truncation_and_stop_strings_as_the_hf_path(tok):
    model = build("qwen2_tied", len(tok))
    prompts = _ids(tok, PROMPTS)
    lean_engine, hf_engine = HFRolloutEngine(model, tok), HFRolloutEngine(model, tok, lean_decode=False)
    free = lean_engine.generate(prompts, 1, SamplingParams(max_new_tokens=24, temperature=0.0))
    # EOS ids taken from the free run so that rows end at different steps (rows leave the batch)
    eos = sorted({free[i][0].token_ids[3 + 4 * i] for i in range(len(prompts))})
    stop = free[1][0].text[5:7]
    seen: dict[str, set[int]] = {}
    for params in (
        SamplingParams(max_new_tokens=24, temperature=0.0, eos_token_ids=eos),
        SamplingParams(max_new_tokens=24, temperature=1.0, seed=3, eos_token_ids=eos[:1]),
        SamplingParams(max_new_tokens=24, temperature=0.0, stop_strings=[stop, "never"]),
        SamplingParams(max_new_tokens=5, temperature=0.0),
    ):
        lean, hf = lean_engine.generate(prompts, 4, params), hf_engine.generate(prompts, 4, params)
        assert _as_tuples(lean) == _as_tuples(hf)
        for r in _flat(lean):
            seen.setdefault(r.finish_reason, set()).add(r.length)
    assert set(seen) == {"eos", "stop", "length"}
    assert len(seen["eos"]) >= 3  # rows ended at different steps: finished rows left the batch


def test_follows_in_place_weight_updates(tok):
    model = build("llama", len(tok))
    prompts = _ids(tok, PROMPTS)
    engine = HFRolloutEngine(model, tok)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    before = engine.generate(prompts, 1, params)
    with torch.no_grad():  # an optimizer step changes parameters in place
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    after = engine.generate(prompts, 1, params)
    assert _as_tuples(after) != _as_tuples(before)
    assert _as_tuples(after) == _as_tuples(
        HFRolloutEngine(model, tok, lean_decode=False).generate(prompts, 1, params)
    )


class _HookedLinear(nn.Linear):
    """A stand-in for an adapter / quantized layer: an ``nn.Linear`` subclass with its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _CustomLlama(LlamaForCausalLM):
    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs)


def _unsupported(kind: str, vocab: int) -> nn.Module:
    if kind == "sliding_window_qwen2":
        config = Qwen2Config(
            **_common(vocab, num_key_value_heads=2),
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=0,
        )
        return _seeded(Qwen2ForCausalLM, config)
    if kind == "sliding_window_mistral":
        return _seeded(MistralForCausalLM, MistralConfig(**_common(vocab), sliding_window=4))
    if kind == "dynamic_rope":
        rope = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
        return _seeded(LlamaForCausalLM, LlamaConfig(**_common(vocab), rope_parameters=rope))
    model = build("llama", vocab)
    if kind == "forward_hook":
        model.model.layers[1].mlp.register_forward_hook(lambda module, args, out: out * 0.5)
    elif kind == "linear_subclass":
        old = model.model.layers[0].self_attn.v_proj
        new = _HookedLinear(old.in_features, old.out_features, bias=False)
        new.weight = old.weight
        model.model.layers[0].self_attn.v_proj = new
    elif kind == "subclass_forward":
        model.__class__ = _CustomLlama
    elif kind == "gpt2":
        return _seeded(
            GPT2LMHeadModel, GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        )
    else:
        raise ValueError(kind)
    return model


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("sliding_window_qwen2", "sliding"),
        ("sliding_window_mistral", "sliding"),
        ("dynamic_rope", "rope type 'dynamic'"),
        ("forward_hook", "forward hooks"),
        ("linear_subclass", "not a plain nn.Linear"),
        ("subclass_forward", "not a plain LlamaForCausalLM"),
        ("gpt2", "model_type 'gpt2'"),
    ],
)
def test_unsupported_models_fall_back_to_the_hf_forward(tok, kind, reason):
    model = _unsupported(kind, len(tok))
    engine = HFRolloutEngine(model, tok)
    path, why = engine.decode_path()
    assert path == "hf" and reason in why and why == lean_decode_unsupported(model)
    if kind == "gpt2":
        return
    # ... and decode what the model's own forward gives (greedy, one row per prompt)
    prompts = _ids(tok, PROMPTS[:2])
    out = engine.generate(prompts, 1, SamplingParams(max_new_tokens=10, temperature=0.0))
    for prompt, (r,) in zip(prompts, out):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(10):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert r.token_ids == ids[len(prompt) :]


def test_a_deep_copy_stays_supported(tok):
    model = copy.deepcopy(build("qwen2_untied", len(tok)))
    assert lean_decode_unsupported(model) is None


@pytest.mark.parametrize("kind", ["llama", "qwen2_tied"])
def test_bfloat16_stays_within_rounding_noise(tok, kind):
    """In bfloat16 the step rounds like transformers' eager attention, not bit for bit: measured
    max |logit difference| to the full forward 0.06-0.09 (transformers' own cached sdpa decode: 0.03-0.05)
    for logits up to about 5; a wrong operation shows as differences of order 1."""
    model = build(kind, len(tok)).to(torch.bfloat16)
    prompts = _ids(tok, PROMPTS)
    responses = torch.randint(
        3, len(tok), (len(prompts), 10), generator=torch.Generator().manual_seed(0)
    ).tolist()
    lean = _lean_teacher_forced(HFRolloutEngine(model, tok), prompts, responses)
    assert lean.dtype == torch.float32
    full = torch.stack([_reference_logits(model, p, r) for p, r in zip(prompts, responses)])
    assert (lean - full).abs().max() < 0.25
