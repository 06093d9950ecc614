"""Chunked log-probs and entropy: equal to the naive full-vocabulary path in value and gradient,
and never hold more than one chunk of [N, V] at a time."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_rl.algorithm import logprobs as logprobs_module
from dapo_rl.algorithm.logprobs import auto_chunk_tokens, logprobs_from_hidden, token_entropy, token_logprobs


def naive_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    logsm = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def naive_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logsm = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logsm.exp() * logsm).sum(-1)


def test_token_logprobs_match_naive_values_and_grads() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen) * 3  # N = 10 tokens, chunk 3 does not divide it
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    upstream = torch.randn(2, 5, generator=gen)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = token_logprobs(a, labels, temperature=0.7, chunk_tokens=3)
    want = naive_logprobs(b, labels, 0.7)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-5)
    assert got.dtype == torch.float32 and got.shape == (2, 5)


def test_token_logprobs_hand_value() -> None:
    # logits [0, ln 3] at T=1: softmax = [1/4, 3/4] -> log p(label 1) = ln 0.75
    # at T=0.5: logits/T = [0, 2 ln 3] -> softmax [1/10, 9/10] -> ln 0.9
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    labels = torch.tensor([1])
    assert token_logprobs(logits, labels).item() == pytest.approx(math.log(0.75), abs=1e-12)
    assert token_logprobs(logits, labels, temperature=0.5).item() == pytest.approx(math.log(0.9), abs=1e-12)


def test_bf16_logits_are_upcast() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(7, 50, generator=gen) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 50, (7,), generator=gen)
    got = token_logprobs(logits, labels, chunk_tokens=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, naive_logprobs(logits, labels, 1.0), rtol=0, atol=1e-6)
    leaf = logits.clone().requires_grad_(True)
    token_logprobs(leaf, labels, chunk_tokens=2).sum().backward()
    assert leaf.grad.dtype == torch.bfloat16


def test_entropy_values_and_grads() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 9, generator=gen) * 2
    upstream = torch.randn(3, 4, generator=gen)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = token_entropy(a, temperature=1.3, chunk_tokens=5)
    want = naive_entropy(b, 1.3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-5)


def test_entropy_hand_values_and_masked_vocab() -> None:
    # uniform over V = 8 -> ln 8; a row with all mass on one token (others -inf) -> 0, finite grads
    logits = torch.tensor([[0.0] * 8, [2.0] + [-float("inf")] * 7], requires_grad=True)
    ent = token_entropy(logits)
    torch.testing.assert_close(ent, torch.tensor([math.log(8.0), 0.0]), rtol=0, atol=1e-6)
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # at the uniform point the entropy is maximal: gradient 0
    torch.testing.assert_close(logits.grad[0], torch.zeros(8), rtol=0, atol=1e-7)


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (5,), generator=gen)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, labels, 0.8, 2), (logits,))
    assert torch.autograd.gradcheck(lambda x: token_entropy(x, 0.8, 2), (logits,))
    hidden = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)

    def head(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp, ent = logprobs_from_hidden(h, w, labels, 0.8, 2, with_entropy=True, lm_head_bias=b)
        return lp, ent

    assert torch.autograd.gradcheck(head, (hidden, weight, bias))


@pytest.mark.parametrize("with_bias", [False, True])
def test_logprobs_from_hidden_matches_full_logits_fp32(with_bias: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    n, h, v = 37, 16, 53
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen) * 0.3
    bias = torch.randn(v, generator=gen) if with_bias else None
    labels = torch.randint(0, v, (n,), generator=gen)
    up_lp, up_ent = torch.randn(n, generator=gen), torch.randn(n, generator=gen)

    def leaves() -> list[torch.Tensor]:
        out = [hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)]
        return [*out, bias.clone().requires_grad_(True)] if with_bias else out

    a = leaves()
    lp, ent = logprobs_from_hidden(a[0], a[1], labels, 0.9, 8, True, a[2] if with_bias else None)
    ((lp * up_lp).sum() + (ent * up_ent).sum()).backward()

    b = leaves()
    logits = torch.nn.functional.linear(b[0], b[1], b[2] if with_bias else None)
    lp_ref, ent_ref = naive_logprobs(logits, labels, 0.9), naive_entropy(logits, 0.9)
    ((lp_ref * up_lp).sum() + (ent_ref * up_ent).sum()).backward()

    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent_ref, rtol=0, atol=1e-5)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-5)


def test_logprobs_from_hidden_without_entropy_and_frozen_head() -> None:
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 6, 4, generator=gen, requires_grad=True)  # leading dims allowed
    weight = torch.randn(10, 4, generator=gen)  # frozen: no grad wanted
    labels = torch.randint(0, 10, (2, 6), generator=gen)
    lp, ent = logprobs_from_hidden(hidden, weight, labels, chunk_tokens=5)
    assert ent is None and lp.shape == (2, 6)
    lp.sum().backward()
    ref = hidden.detach().clone().requires_grad_(True)
    naive_logprobs(ref @ weight.T, labels, 1.0).sum().backward()
    torch.testing.assert_close(hidden.grad, ref.grad, rtol=0, atol=1e-5)
    with torch.no_grad():
        lp2, _ = logprobs_from_hidden(hidden, weight, labels)
    torch.testing.assert_close(lp2, lp.detach())


def _record_log_softmax_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    rows: list[int] = []
    original = torch.log_softmax

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows.append(x.shape[0])
        return original(x, *args, **kwargs)

    monkeypatch.setattr(torch, "log_softmax", spy)
    return rows


def test_hidden_path_keeps_at_most_one_chunk_of_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No saved tensor is [N, V]-sized, and every softmax (forward and backward) sees <= chunk rows."""
    gen = torch.Generator().manual_seed(6)
    n, h, v, chunk = 64, 8, 500, 8
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    labels = torch.randint(0, v, (n,), generator=gen)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    rows = _record_log_softmax_rows(monkeypatch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp, ent = logprobs_from_hidden(hidden, weight, labels, chunk_tokens=chunk, with_entropy=True)
    (lp.sum() + ent.sum()).backward()
    assert saved and max(saved) <= v * h < n * v
    assert rows and max(rows) <= chunk
    assert len(rows) == 2 * (n // chunk)  # one pass forward, one recompute in backward


def test_automatic_chunk_follows_the_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """chunk_tokens=None: CHUNK_ELEMENTS // V tokens per chunk (clamped), same values as explicit."""
    assert auto_chunk_tokens(151_936) == 441  # 2**26 // 151,936
    assert auto_chunk_tokens(32_000) == 2_097
    assert auto_chunk_tokens(26) == logprobs_module.MAX_AUTO_CHUNK_TOKENS
    assert auto_chunk_tokens(10**9) == 1
    monkeypatch.setattr(logprobs_module, "CHUNK_ELEMENTS", 500 * 6)  # -> 6 tokens per chunk at V=500
    gen = torch.Generator().manual_seed(8)
    n, h, v = 40, 8, 500
    # float64: the fp32 matmul rounds differently per chunk shape and thread count (up to ~2e-6 here)
    hidden = torch.randn(n, h, generator=gen, dtype=torch.float64)
    weight = torch.randn(v, h, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, v, (n,), generator=gen)
    rows = _record_log_softmax_rows(monkeypatch)
    lp_auto, _ = logprobs_from_hidden(hidden, weight, labels)
    assert max(rows) == 6 and len(rows) == math.ceil(n / 6)
    lp_full, _ = logprobs_from_hidden(hidden, weight, labels, chunk_tokens=n)
    torch.testing.assert_close(lp_auto, lp_full, rtol=0, atol=1e-6)


def test_logits_path_saves_only_its_input(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(40, 30, generator=gen, requires_grad=True)
    labels = torch.randint(0, 30, (40,), generator=gen)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    rows = _record_log_softmax_rows(monkeypatch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp = token_logprobs(logits, labels, chunk_tokens=16)
    lp.sum().backward()
    assert sum(saved) <= logits.numel() + labels.numel()  # the logits themselves, no fp32 copy
    assert max(rows) <= 16


def test_invalid_arguments() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(x, torch.zeros(3, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="chunk_tokens"):
        token_entropy(x, chunk_tokens=0)
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="lm_head_weight"):
        logprobs_from_hidden(x, torch.zeros(5, 3), torch.zeros(3, dtype=torch.long))


def test_shifted_noncontiguous_logits_are_read_in_place() -> None:
    """``logits[:, :-1]`` (the usual next-token shift) gives the same values and grads as a copy,
    with chunks that straddle row boundaries, and saves no copy of the logits."""
    gen = torch.Generator().manual_seed(8)
    full = torch.randn(3, 6, 13, generator=gen, requires_grad=True)
    labels = torch.randint(0, 13, (3, 5), generator=gen)
    up = torch.randn(3, 5, generator=gen)
    shifted = full[:, :-1]
    assert not shifted.is_contiguous()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp = token_logprobs(shifted, labels, temperature=0.9, chunk_tokens=4)  # 15 tokens, rows of 5
        ent = token_entropy(shifted, temperature=0.9, chunk_tokens=4)
    ((lp * up).sum() + ent.sum()).backward()
    assert max(saved) == shifted.numel()
    ref = full.detach().clone().requires_grad_(True)
    lp_ref = naive_logprobs(ref[:, :-1], labels, 0.9)
    ent_ref = naive_entropy(ref[:, :-1], 0.9)
    ((lp_ref * up).sum() + ent_ref.sum()).backward()
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ent, ent_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(full.grad, ref.grad, rtol=0, atol=1e-5)
    assert torch.equal(full.grad[:, -1], torch.zeros(3, 13))
