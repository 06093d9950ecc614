"""Memory-aware token log-probs and entropy (semantics §6 and §8).

Log-probs are taken from ``log_softmax(logits / temperature)`` (the sampling temperature: the
policy that sampled). A full-vocabulary fp32 copy of ``[N, V]`` logits is the largest tensor of an
RL step (16k tokens x 152k vocab x 4 bytes = 10 GB), so every function here walks the flattened
tokens in chunks of ``chunk_tokens``, upcasts one chunk at a time, and saves nothing of size
``[N, V]`` for backward (custom autograd functions recompute per chunk):

- ``token_logprobs`` / ``token_entropy`` take logits that already exist; they add at most one
  chunk x V fp32 workspace in forward and backward (the backward returns the ``[N, V]`` logits
  gradient, which autograd needs anyway).
- ``logprobs_from_hidden`` takes the final hidden states and the LM-head weight, so the ``[N, V]``
  logits are never materialised at all, forward or backward: peak ~ chunk x V.

All results are float32 (float64 for float64 inputs). Double backward is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

#: Logits elements per chunk when ``logprobs_from_hidden`` picks the chunk itself: 2**26 fp32 values
#: (256 MiB), i.e. 441 tokens for a 151,936-token vocabulary, 2,097 for a 32,000 one.
CHUNK_ELEMENTS = 2**26
#: Most tokens per automatic chunk (small vocabularies).
MAX_AUTO_CHUNK_TOKENS = 8192


def auto_chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk so that one ``chunk x V`` fp32 workspace holds ``CHUNK_ELEMENTS`` values."""
    return max(1, min(MAX_AUTO_CHUNK_TOKENS, CHUNK_ELEMENTS // max(vocab_size, 1)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_options(temperature: float, chunk_tokens: int | None, vocab_size: int) -> int:
    """Validate the options; returns the chunk length (``None``: :func:`auto_chunk_tokens`)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_tokens is None:
        return auto_chunk_tokens(vocab_size)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    return chunk_tokens


def _chunk_stats(x: Tensor, labels: Tensor | None, want_entropy: bool) -> tuple[Tensor | None, Tensor | None]:
    """For scaled logits ``x[n, V]``: (logp at labels [n] or None, entropy [n] or None)."""
    logsm = torch.log_softmax(x, dim=-1)
    logp = logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1) if labels is not None else None
    ent = None
    if want_entropy:
        p = logsm.exp()
        ent = -torch.where(p > 0, p * logsm, 0.0).sum(-1)
    return logp, ent


def _chunk_grad(
    logsm: Tensor, labels: Tensor | None, g_logp: Tensor | None, ent: Tensor | None, g_ent: Tensor | None
) -> Tensor:
    """d(loss)/d(scaled logits) for one chunk, given upstream grads of log-prob and entropy.

    d logp_y / d x_j = 1[j = y] - p_j;   d H / d x_j = -p_j (log p_j + H).
    """
    p = logsm.exp()
    grad = torch.zeros_like(logsm)
    if g_logp is not None:
        grad -= p * g_logp.unsqueeze(-1)
        grad.scatter_add_(-1, labels.unsqueeze(-1), g_logp.unsqueeze(-1))
    if g_ent is not None:
        term = torch.where(p > 0, p * (logsm + ent.unsqueeze(-1)), 0.0)
        grad -= term * g_ent.unsqueeze(-1)
    return grad


def _as_rows(logits: Tensor) -> Tensor:
    """``[..., T, V]`` -> ``[B, T, V]`` without copying (a 2-D input gets B = 1)."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be [..., T, V], got shape {tuple(logits.shape)}")
    if logits.dim() == 2:
        return logits.unsqueeze(0)
    try:
        return logits.view(-1, *logits.shape[-2:])
    except RuntimeError:  # leading dims not mergeable without a copy (rare)
        return logits.reshape(-1, *logits.shape[-2:])


def _pieces(start: int, end: int, seq_len: int) -> list[tuple[int, int, int]]:
    """Flat token range [start, end) as (row, t0, t1) pieces of a [B, T, ...] tensor."""
    out = []
    while start < end:
        row, t0 = divmod(start, seq_len)
        t1 = min(seq_len, t0 + end - start)
        out.append((row, t0, t1))
        start += t1 - t0
    return out


def _read(x: Tensor, pieces: list[tuple[int, int, int]]) -> Tensor:
    parts = [x[b, t0:t1] for b, t0, t1 in pieces]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _ChunkedLogitsStats(torch.autograd.Function):
    """logits[B, T, V] -> (logp[B*T] at labels, entropy[B*T]); either output may be disabled.

    The logits may be a non-contiguous view such as ``logits[:, :-1]``: chunks are read piece by
    piece, so no ``[N, V]`` copy is made (a flat reshape would copy the whole tensor).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        logits: Tensor,
        labels: Tensor | None,
        temperature: float,
        chunk: int,
        want_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        cdtype = _compute_dtype(logits.dtype)
        n, seq_len = logits.shape[0] * logits.shape[1], logits.shape[1]
        logp = torch.empty(n if labels is not None else 0, dtype=cdtype, device=logits.device)
        ent = torch.empty(n if want_entropy else 0, dtype=cdtype, device=logits.device)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            x = _read(logits, _pieces(s, e, seq_len)).to(cdtype) / temperature
            lp, h = _chunk_stats(x, labels[s:e] if labels is not None else None, want_entropy)
            if lp is not None:
                logp[s:e] = lp
            if h is not None:
                ent[s:e] = h
        ctx.save_for_backward(logits, labels, ent)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_logp: Tensor | None, g_ent: Tensor | None):  # type: ignore[override]
        logits, labels, ent = ctx.saved_tensors
        if labels is None:
            g_logp = None
        if ent.numel() == 0:
            g_ent = None
        if g_logp is None and g_ent is None:
            return None, None, None, None, None
        cdtype = _compute_dtype(logits.dtype)
        n, seq_len = logits.shape[0] * logits.shape[1], logits.shape[1]
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for s in range(0, n, ctx.chunk):
            e = min(s + ctx.chunk, n)
            pieces = _pieces(s, e, seq_len)
            logsm = torch.log_softmax(_read(logits, pieces).to(cdtype) / ctx.temperature, dim=-1)
            gx = _chunk_grad(
                logsm,
                labels[s:e] if labels is not None else None,
                g_logp[s:e] if g_logp is not None else None,
                ent[s:e] if g_ent is not None else None,
                g_ent[s:e] if g_ent is not None else None,
            )
            gx = (gx / ctx.temperature).to(logits.dtype)
            offset = 0
            for b, t0, t1 in pieces:
                grad[b, t0:t1] = gx[offset : offset + t1 - t0]
                offset += t1 - t0
        return grad, None, None, None, None


def token_logprobs(
    logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
) -> Tensor:
    """Log-probability of each label under ``softmax(logits / temperature)``, chunked.

    Args:
        logits: ``[..., T, V]`` (any float dtype; each chunk is upcast to fp32 inside). A
            time-shifted view such as ``logits[:, :-1]`` is read in place, never copied.
        labels: ``[..., T]`` token ids in ``[0, V)`` (pad positions must hold a valid id, e.g. the
            pad token; mask them later).
        temperature: sampling temperature, > 0.
        chunk_tokens: tokens per chunk; the fp32 workspace is ``chunk_tokens x V``. ``None``:
            :func:`auto_chunk_tokens` of the vocabulary.

    Returns:
        ``[..., T]`` log-probs, float32 (float64 for float64 logits), differentiable w.r.t. logits.
    """
    chunk_tokens = _check_options(temperature, chunk_tokens, logits.shape[-1])
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} must equal logits {tuple(logits.shape)} minus the vocab dim"
        )
    rows = _as_rows(logits)
    logp, _ = _ChunkedLogitsStats.apply(rows, labels.reshape(-1), float(temperature), chunk_tokens, False)
    return logp.reshape(labels.shape)


def token_entropy(logits: Tensor, temperature: float = 1.0, chunk_tokens: int | None = None) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` per token, chunked.

    Args:
        logits: ``[..., T, V]`` (views such as ``logits[:, :-1]`` are not copied).
        temperature: > 0.
        chunk_tokens: tokens per chunk (``None``: :func:`auto_chunk_tokens` of the vocabulary).

    Returns:
        ``[..., T]`` entropies in nats, float32 (float64 for float64 logits), differentiable.
    """
    chunk_tokens = _check_options(temperature, chunk_tokens, logits.shape[-1])
    rows = _as_rows(logits)
    _, ent = _ChunkedLogitsStats.apply(rows, None, float(temperature), chunk_tokens, True)
    return ent.reshape(logits.shape[:-1])


class _ChunkedHeadStats(torch.autograd.Function):
    """hidden[N, H], weight[V, H], bias[V] | None -> (logp[N], entropy[N] | empty), logits never kept."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        temperature: float,
        chunk: int,
        want_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        cdtype = _compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        mm_dtype = _matmul_dtype(hidden, weight)
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=cdtype, device=hidden.device)
        ent = torch.empty(n if want_entropy else 0, dtype=cdtype, device=hidden.device)
        w_mm, b_mm = weight.to(mm_dtype), bias.to(mm_dtype) if bias is not None else None
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                x = _head_logits(hidden[s:e].to(mm_dtype), w_mm, b_mm).to(cdtype) / temperature
                lp, h = _chunk_stats(x, labels[s:e], want_entropy)
                logp[s:e] = lp
                if h is not None:
                    ent[s:e] = h
        ctx.save_for_backward(hidden, weight, bias, labels, ent)
        ctx.temperature, ctx.chunk, ctx.mm_dtype = temperature, chunk, mm_dtype
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_logp: Tensor | None, g_ent: Tensor | None):  # type: ignore[override]
        hidden, weight, bias, labels, ent = ctx.saved_tensors
        if ent.numel() == 0:
            g_ent = None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if g_logp is None and g_ent is None:
            return (None,) * 7
        cdtype = _compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=cdtype, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=cdtype, device=bias.device) if need_b and bias is not None else None
        )
        mm_dtype = ctx.mm_dtype  # the forward's matmul precision (autocast is off in backward)
        w_mm, b_mm = weight.to(mm_dtype), bias.to(mm_dtype) if bias is not None else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, hidden.shape[0])
            h = hidden[s:e].to(mm_dtype)
            logsm = torch.log_softmax(_head_logits(h, w_mm, b_mm).to(cdtype) / ctx.temperature, dim=-1)
            gx = (
                _chunk_grad(
                    logsm,
                    labels[s:e],
                    g_logp[s:e] if g_logp is not None else None,
                    ent[s:e] if g_ent is not None else None,
                    g_ent[s:e] if g_ent is not None else None,
                )
                / ctx.temperature
            )  # d loss / d logits, [n, V] in cdtype
            g_mm = gx.to(mm_dtype)
            if grad_h is not None:
                grad_h[s:e] = (g_mm @ w_mm).to(hidden.dtype)
            if grad_w is not None:
                grad_w += (g_mm.transpose(0, 1) @ h).to(cdtype)
            if grad_b is not None:
                grad_b += gx.sum(0)
        return (
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
            None,
            None,
        )


def _matmul_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The LM-head matmul's dtype: autocast's when it is on (mixed precision in one process, where
    the weight is a float32 master copy), else the inputs' promoted dtype. The log-softmax is
    float32 either way."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _head_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.nn.functional.linear(h, weight, bias)


def logprobs_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
    with_entropy: bool = False,
    lm_head_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Token log-probs (and optionally entropy) straight from final hidden states.

    Equals ``token_logprobs(hidden @ W.T + b, labels, temperature)`` but computes the logits one
    chunk at a time and recomputes them in backward, so peak memory is ~ ``chunk_tokens x V``
    instead of ``N x V`` in both passes. Gradients flow to ``hidden``, ``lm_head_weight`` and
    ``lm_head_bias``.

    Args:
        hidden: ``[N, H]`` (or ``[..., H]``) final hidden states, after the final norm.
        lm_head_weight: ``[V, H]`` output projection (the tied embedding when tied). Under FSDP pass
            the unsharded (full) weight.
        labels: ``[N]`` (or ``[...]``) token ids in ``[0, V)``.
        temperature: sampling temperature, > 0.
        chunk_tokens: tokens per chunk; ``None`` picks :func:`auto_chunk_tokens` of the vocabulary
            (peak memory then stays near a few ``CHUNK_ELEMENTS`` fp32 buffers whatever ``V``).
        with_entropy: also return the per-token entropy.
        lm_head_bias: ``[V]`` or None.

    Returns:
        ``(logp[N], entropy[N] or None)``, float32 (float64 for float64 inputs); the matmul runs
        in the inputs' dtype (in autocast's dtype when autocast is on, forward and backward alike),
        the softmax in fp32.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} must equal hidden {tuple(hidden.shape)} minus the last dim"
        )
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight must be [V, H={hidden.shape[-1]}], got {tuple(lm_head_weight.shape)}"
        )
    chunk_tokens = _check_options(temperature, chunk_tokens, lm_head_weight.shape[0])
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    logp, ent = _ChunkedHeadStats.apply(
        flat_h,
        lm_head_weight,
        lm_head_bias,
        labels.reshape(-1),
        float(temperature),
        chunk_tokens,
        with_entropy,
    )
    logp = logp.reshape(labels.shape)
    return logp, (ent.reshape(labels.shape) if with_entropy else None)
