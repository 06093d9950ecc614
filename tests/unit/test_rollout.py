"""The HF rollout engine against references: ``model.generate``, teacher-forced forwards, and the
exact sampling distribution."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.rollout import ROLLOUT_ENGINES, HFRolloutEngine, Response, SamplingParams
from tests.helpers_model import make_tiny_model_and_tokenizer

PROMPTS = ["1+2=", "347+85=", "9*9=", "1234-999=", "5-3=", "88+12="]  # unequal lengths


@pytest.fixture(scope="module")
def setup():
    model, tok = make_tiny_model_and_tokenizer(seed=0)
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    return model, tok, prompts


def greedy(engine: HFRolloutEngine, prompts, n=1, **kw) -> list[list[Response]]:
    return engine.generate(prompts, n, SamplingParams(temperature=0.0, **kw))


def teacher_forced_logits(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Logits ``[len(response), vocab]`` predicting each response token, from one unpadded forward."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]


def test_registry_has_hf():
    assert ROLLOUT_ENGINES.get("hf") is HFRolloutEngine


@pytest.mark.parametrize("max_batch_sequences", [256, 3])
def test_greedy_matches_hf_generate(setup, max_batch_sequences):
    model, tok, prompts = setup
    free = greedy(HFRolloutEngine(model, tok), prompts, max_new_tokens=20)
    # EOS ids chosen from the free-running outputs so that rows end at different steps.
    eos_ids = sorted({free[i][0].token_ids[2 + 3 * i] for i in range(len(prompts))})
    batch = tok.pad([{"input_ids": p} for p in prompts], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        ref = model.generate(
            **batch, do_sample=False, max_new_tokens=20, pad_token_id=tok.pad_token_id, eos_token_id=eos_ids
        )
    engine = HFRolloutEngine(model, tok, max_batch_sequences=max_batch_sequences)
    out = greedy(engine, prompts, n=2, max_new_tokens=20, eos_token_ids=eos_ids)
    lengths = set()
    for i, samples in enumerate(out):
        expected = ref[i, width:].tolist()
        for r in samples:
            assert r.token_ids == expected[: r.length]
            if r.finish_reason == "eos":
                assert r.token_ids[-1] in eos_ids
                assert not set(r.token_ids[:-1]) & set(eos_ids)
                assert r.length == len(expected) or expected[r.length] == tok.pad_token_id
            else:
                assert r.finish_reason == "length" and r.length == 20
            lengths.add(r.length)
    assert len(lengths) >= 3, "rows should end at different steps (exercises batch compaction)"


def test_chunking_does_not_change_greedy(setup):
    model, tok, prompts = setup
    kw = dict(max_new_tokens=16)
    whole = greedy(HFRolloutEngine(model, tok), prompts, n=3, **kw)
    chunked = greedy(HFRolloutEngine(model, tok, max_batch_tokens=45), prompts, n=3, **kw)
    assert [[r.token_ids for r in s] for s in whole] == [[r.token_ids for r in s] for s in chunked]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.0, 0, 1.0)]
)
def test_logprobs_match_teacher_forcing(setup, temperature, top_k, top_p):
    model, tok, prompts = setup
    params = SamplingParams(
        max_new_tokens=24, temperature=temperature, top_k=top_k, top_p=top_p, seed=1, return_logprobs=True
    )
    out = HFRolloutEngine(model, tok).generate(prompts, 3, params)
    temp = temperature if temperature > 0 else 1.0  # greedy reports temperature-1 log-probs
    for prompt, samples in zip(prompts, out):
        for r in samples:
            assert r.logprobs is not None and len(r.logprobs) == r.length
            logits = teacher_forced_logits(model, prompt, r.token_ids)
            ref = torch.log_softmax(logits / temp, -1).gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(r.logprobs), ref, atol=1e-4, rtol=0)


def test_no_logprobs_unless_asked(setup):
    model, tok, prompts = setup
    out = HFRolloutEngine(model, tok).generate(prompts[:2], 2, SamplingParams(max_new_tokens=4, seed=0))
    assert all(r.logprobs is None for s in out for r in s)


def _allowed_top_k(logits: torch.Tensor, k: int) -> set[int]:
    kth = sorted(logits.tolist(), reverse=True)[k - 1]
    return {i for i, v in enumerate(logits.tolist()) if v >= kth - 1e-6}


def _allowed_top_p(logits: torch.Tensor, temperature: float, p: float) -> set[int]:
    probs = torch.softmax(logits / temperature, -1).tolist()
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    allowed, mass = set(), 0.0
    for i in order:
        allowed.add(i)
        mass += probs[i]
        if mass >= p - 1e-6:  # tolerance: include the boundary token on near-ties
            break
    return allowed


def _count_outside(model, prompts, out, allowed_fn) -> tuple[int, int, int]:
    """(tokens checked, tokens outside the allowed set, steps whose allowed set is a strict subset)."""
    checked = outside = restrictive = 0
    vocab = model.config.vocab_size
    for prompt, samples in zip(prompts, out):
        for r in samples:
            logits = teacher_forced_logits(model, prompt, r.token_ids)
            for t, token in enumerate(r.token_ids):
                allowed = allowed_fn(logits[t])
                checked += 1
                outside += token not in allowed
                restrictive += len(allowed) < vocab
    return checked, outside, restrictive


def test_top_k_never_leaves_the_top_k(setup):
    model, tok, prompts = setup
    engine = HFRolloutEngine(model, tok)
    params = SamplingParams(max_new_tokens=24, temperature=1.5, top_k=3, seed=3)
    checked, outside, _ = _count_outside(
        model, prompts, engine.generate(prompts, 8, params), lambda lg: _allowed_top_k(lg, 3)
    )
    assert checked > 1000 and outside == 0
    # Power check: without top-k the same sampler leaves the top 3 often.
    params.top_k = 0
    _, outside_free, _ = _count_outside(
        model, prompts, engine.generate(prompts, 8, params), lambda lg: _allowed_top_k(lg, 3)
    )
    assert outside_free > 50


def test_top_p_never_leaves_the_nucleus(setup):
    model, tok, prompts = setup
    engine = HFRolloutEngine(model, tok)
    temp, top_p = 1.2, 0.7
    params = SamplingParams(max_new_tokens=24, temperature=temp, top_p=top_p, seed=4)
    checked, outside, restrictive = _count_outside(
        model, prompts, engine.generate(prompts, 8, params), lambda lg: _allowed_top_p(lg, temp, top_p)
    )
    assert checked > 1000 and outside == 0 and restrictive == checked
    params.top_p = 1.0
    _, outside_free, _ = _count_outside(
        model, prompts, engine.generate(prompts, 8, params), lambda lg: _allowed_top_p(lg, temp, top_p)
    )
    assert outside_free > 50


def _total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.8, 0, 1.0), (1.0, 4, 1.0), (1.5, 0, 0.6)])
def test_first_token_distribution(setup, temperature, top_k, top_p):
    """40,000 first tokens from one prompt against the exact filtered softmax(logits / T).

    Tolerance: total variation < 0.02. With at most 27 tokens the expected TV of 40,000 exact
    draws is about 0.01 or less (measured 0.003-0.009); a 3x wrong temperature gives 0.08-0.3.
    """
    model, tok, prompts = setup
    samples = 40_000
    engine = HFRolloutEngine(model, tok, max_batch_sequences=samples)
    params = SamplingParams(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p, seed=5)
    out = engine.generate([prompts[1]], samples, params)[0]
    counts = torch.bincount(torch.tensor([r.token_ids[0] for r in out]), minlength=model.config.vocab_size)
    empirical = counts.double() / samples

    logits = teacher_forced_logits(model, prompts[1], [0])[0].double()

    def exact(temp: float) -> torch.Tensor:
        scaled = logits / temp
        keep = set(range(len(scaled)))
        if top_k:
            keep &= _allowed_top_k(scaled, top_k)
        if top_p < 1:
            keep &= _allowed_top_p(scaled, 1.0, top_p)
        mask = torch.tensor([i in keep for i in range(len(scaled))])
        return torch.softmax(scaled.masked_fill(~mask, -math.inf), -1)

    assert _total_variation(empirical, exact(temperature)) < 0.02
    assert _total_variation(empirical, exact(temperature * 3)) > 0.05  # the test has power


def test_eos_ends_rows_and_truncation_is_flagged(setup):
    model, tok, prompts = setup
    engine = HFRolloutEngine(model, tok)
    free = greedy(engine, prompts, max_new_tokens=20)[1][0].token_ids
    # One EOS id: the row ends at its first occurrence, EOS included.
    k = 5
    out = greedy(engine, [prompts[1]], max_new_tokens=20, eos_token_ids=[free[k]])[0][0]
    first = free.index(free[k])
    assert out.finish_reason == "eos" and out.token_ids == free[: first + 1]
    assert not out.truncated
    # Several EOS ids: whichever comes first.
    later = next(t for t in free[first + 1 :] if t != free[k]) if len(set(free)) > 1 else free[k]
    out = greedy(engine, [prompts[1]], max_new_tokens=20, eos_token_ids=[later, free[k]])[0][0]
    stop_at = min(free.index(later), first)
    assert out.finish_reason == "eos" and out.token_ids == free[: stop_at + 1]
    # Truncation.
    out = greedy(engine, [prompts[1]], max_new_tokens=4, eos_token_ids=[tok.eos_token_id])[0][0]
    if tok.eos_token_id not in free[:4]:
        assert out.finish_reason == "length" and out.truncated and out.length == 4
    # EOS sampled at the very last step counts as EOS, not truncation.
    out = greedy(engine, [prompts[1]], max_new_tokens=first + 1, eos_token_ids=[free[k]])[0][0]
    assert out.finish_reason == "eos" and out.length == first + 1


def test_every_row_ending_at_once_stops_early(setup):
    model, tok, prompts = setup
    everything = list(range(model.config.vocab_size))
    out = HFRolloutEngine(model, tok).generate(
        prompts, 4, SamplingParams(max_new_tokens=50, eos_token_ids=everything, seed=0)
    )
    assert all(r.length == 1 and r.finish_reason == "eos" for s in out for r in s)


def test_stop_strings(setup):
    model, tok, prompts = setup
    engine = HFRolloutEngine(model, tok)
    for prompt in prompts[:4]:
        free = greedy(engine, [prompt], max_new_tokens=24)[0][0]
        text = free.text
        stop = text[4:6] if len(text) >= 6 else text[-2:]
        # The token that completes the first occurrence of the stop string.
        end = next(t for t in range(free.length) if stop in tok.decode(free.token_ids[: t + 1]))
        out = greedy(engine, [prompt], max_new_tokens=24, stop_strings=["never seen", stop])[0][0]
        assert out.finish_reason == "stop"
        assert out.token_ids == free.token_ids[: end + 1]
        assert stop in out.text and stop not in tok.decode(out.token_ids[:-1])


def test_seeded_and_reproducible(setup):
    model, tok, prompts = setup
    engine = HFRolloutEngine(model, tok)

    def run(seed):
        params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=seed, return_logprobs=True)
        return [[(r.token_ids, r.logprobs) for r in s] for s in engine.generate(prompts, 4, params)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    # Without a seed, the global RNG decides.
    torch.manual_seed(0)
    a = engine.generate(prompts, 2, SamplingParams(max_new_tokens=8))
    torch.manual_seed(0)
    b = engine.generate(prompts, 2, SamplingParams(max_new_tokens=8))
    assert [[r.token_ids for r in s] for s in a] == [[r.token_ids for r in s] for s in b]


def test_samples_of_a_prompt_differ_and_shape(setup):
    model, tok, prompts = setup
    out = HFRolloutEngine(model, tok).generate(prompts, 5, SamplingParams(max_new_tokens=12, seed=0))
    assert len(out) == len(prompts) and all(len(s) == 5 for s in out)
    assert all(len({tuple(r.token_ids) for r in s}) > 1 for s in out)
    assert HFRolloutEngine(model, tok).generate([], 3, SamplingParams(max_new_tokens=3)) == []


def test_training_mode_restored_and_no_grad(setup):
    model, tok, prompts = setup
    model.train()
    try:
        HFRolloutEngine(model, tok).generate(prompts[:1], 2, SamplingParams(max_new_tokens=3, seed=0))
        assert model.training
    finally:
        model.eval()
    HFRolloutEngine(model, tok).generate(prompts[:1], 2, SamplingParams(max_new_tokens=3, seed=0))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=0),
        SamplingParams(max_new_tokens=4, temperature=-1),
        SamplingParams(max_new_tokens=4, top_p=0.0),
        SamplingParams(max_new_tokens=4, top_k=-1),
        SamplingParams(max_new_tokens=4, stop_strings=[""]),
    ],
)
def test_invalid_params_rejected(setup, params):
    model, tok, prompts = setup
    with pytest.raises(ValueError):
        HFRolloutEngine(model, tok).generate(prompts, 1, params)
