"""Training batches: responses -> optimizer mini-batches (whole groups) -> micro-batches (a token
budget) -> padded tensors, and the policy forward that turns them into per-token log-probs.

Only response tokens are projected onto the vocabulary: hidden states at prompt positions never
reach the LM head, and the vocabulary projection runs in token chunks
(:func:`dapo_rl.algorithm.logprobs.logprobs_from_hidden`) so memory does not grow with
sequence length x vocabulary.

The policy is wrapped in a :class:`PolicyModule`, whose ``response_logprobs`` is that training
forward and whose ``forward`` passes through to the Hugging Face model (rollout engines call it);
under FSDP2 it is the root unit, so both gather the root parameters. With several data-parallel
ranks, mini-batches are cut by the groups' global positions (:func:`split_by_groups`) and a rank
with less data runs zero-weight :func:`padding_sample` micro-batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_rl.algorithm.logprobs import logprobs_from_hidden, token_entropy, token_logprobs


@dataclass
class TrainSample:
    """One response ready for the loss. ``group`` indexes the prompt group within the step."""

    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float
    group: int
    loss_mask: bool = True  # False: masked out entirely (overlong filtering)
    rollout_logprobs: list[float] | None = None  # the rollout engine's, per response token, if it gave them

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class MicroBatch:
    """Padded tensors for a set of samples. Response tensors are ``[b, R]`` with R the longest
    response in the micro-batch; ``index`` maps rows back to positions in the mini-batch."""

    input_ids: Tensor  # [b, L] right-padded prompt+response
    attention_mask: Tensor  # [b, L]
    response_mask: Tensor  # [b, R] 1 on valid (loss-carrying) response tokens
    response_ids: Tensor  # [b, R]
    prompt_lens: Tensor  # [b]
    response_lens: Tensor  # [b]
    index: list[int]  # positions of these rows in the mini-batch

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def split_by_groups(
    samples: list[TrainSample], groups_per_update: int, total_groups: int | None = None
) -> list[list[TrainSample]]:
    """Optimizer mini-batches of whole groups, in order; the last may hold fewer groups.

    With ``total_groups``, ``TrainSample.group`` is the group's position in the step's batch counted
    over every data-parallel rank: mini-batch k holds positions ``[k n, (k + 1) n)`` with n =
    ``groups_per_update``, so all ranks cut the same ``ceil(total_groups / n)`` mini-batches, the
    same ones as a single process would, and a rank may hold no group of some mini-batch. Without
    it (one process), groups are numbered in order of first appearance.
    """
    if total_groups is None:
        order = list(dict.fromkeys(s.group for s in samples))
        position = {g: i for i, g in enumerate(order)}
        total_groups = len(order)
    else:
        position = {s.group: s.group for s in samples}
    num = -(-total_groups // groups_per_update)
    out: list[list[TrainSample]] = [[] for _ in range(num)]
    for s in samples:
        out[position[s.group] // groups_per_update].append(s)
    return out


def padding_sample(pad_id: int) -> TrainSample:
    """A one-token, fully masked sample: the zero-weight micro-batch a rank runs when it has less
    data than another (FSDP2 needs the same number of forwards and backwards on every rank)."""
    return TrainSample([pad_id], [pad_id], 0.0, -1, loss_mask=False)


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices of samples per micro-batch so that rows x longest-row <= token_budget (padded cost),
    with as few micro-batches as possible and, among those, the fewest padding tokens.

    Samples are sorted by length and cut into consecutive runs; a sample longer than the budget
    gets a micro-batch of its own. The cuts come from an exact dynamic programme over the sorted
    lengths minimising (micro-batches, padded tokens) in that order: filling each micro-batch up to
    the budget gives the same count but can pad far more (a short sample that ends up next to long
    ones). Every index appears exactly once; micro-batches come in order of length.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    # best[j]: (micro-batches, padded tokens) for the first j sorted samples; start[j]: where the
    # last of those micro-batches starts. Micro-batch [i, j) pads to sorted_lengths[j - 1].
    best: list[tuple[int, int]] = [(0, 0)]
    start: list[int] = [0]
    for j in range(1, len(order) + 1):
        longest = sorted_lengths[j - 1]
        max_rows = max(1, token_budget // max(longest, 1))
        choice, cut = None, j - 1
        for i in range(max(j - max_rows, 0), j):  # best[i][0] never decreases with i
            count, padded = best[i]
            if choice is not None and count + 1 > choice[0]:
                break
            candidate = (count + 1, padded + (j - i) * longest)
            if choice is None or candidate < choice:
                choice, cut = candidate, i
        best.append(choice)
        start.append(cut)
    plans: list[list[int]] = []
    j = len(order)
    while j > 0:
        plans.append(order[start[j] : j])
        j = start[j]
    return plans[::-1]


def collate(samples: list[TrainSample], index: list[int], pad_id: int, device: torch.device) -> MicroBatch:
    """Right-pad the chosen samples into tensors."""
    chosen = [samples[i] for i in index]
    seq_len = max(s.num_tokens for s in chosen)
    resp_len = max(max(len(s.response_ids) for s in chosen), 1)
    b = len(chosen)
    input_ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    attention = torch.zeros((b, seq_len), dtype=torch.long)
    response_ids = torch.full((b, resp_len), pad_id, dtype=torch.long)
    response_mask = torch.zeros((b, resp_len))
    for row, s in enumerate(chosen):
        tokens = s.prompt_ids + s.response_ids
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention[row, : len(tokens)] = 1
        response_ids[row, : len(s.response_ids)] = torch.tensor(s.response_ids, dtype=torch.long)
        response_mask[row, : len(s.response_ids)] = float(s.loss_mask)
    return MicroBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        response_mask=response_mask.to(device),
        response_ids=response_ids.to(device),
        prompt_lens=torch.tensor([len(s.prompt_ids) for s in chosen], device=device),
        response_lens=torch.tensor([len(s.response_ids) for s in chosen], device=device),
        index=list(index),
    )


def _response_positions(mb: MicroBatch) -> tuple[Tensor, Tensor, Tensor]:
    """(row, input position predicting the token, column in the response tensor) for every response
    token. The token at position p is predicted by the hidden state at p - 1."""
    rows, cols = [], []
    for r, n in enumerate(mb.response_lens.tolist()):
        rows.append(torch.full((n,), r, dtype=torch.long))
        cols.append(torch.arange(n))
    row = torch.cat(rows).to(mb.input_ids.device)
    col = torch.cat(cols).to(mb.input_ids.device)
    pos = mb.prompt_lens[row] - 1 + col
    return row, pos, col


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = get_decoder() if callable(get_decoder) else None
    if (
        decoder is None
        or not isinstance(head, torch.nn.Linear)
        or getattr(model.config, "final_logit_softcapping", None)
    ):
        return None, None
    return decoder, head


class PolicyModule(torch.nn.Module):
    """A causal LM wrapped so that ONE module's forward covers everything the trainer runs.

    ``forward`` passes through to the Hugging Face model (rollout engines call it like the model:
    the engine reads config and cache from ``.module``, the DDP convention); ``response_logprobs`` is
    the training forward (decoder, then the chunked LM head). Under FSDP2 the wrapper is the root
    unit and ``response_logprobs`` is registered as an FSDP forward method, so both gather the root
    parameters (embeddings, final norm, LM head) before they run.
    """

    def __init__(self, module: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.module = module
        self.compute_dtype = compute_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to ``compute_dtype`` (float32 master weights, bf16 matmuls); a no-op
        for float32 or ``None`` (also under FSDP2, whose MixedPrecisionPolicy casts instead)."""
        if self.compute_dtype in (None, torch.float32):
            return contextlib.nullcontext()
        device = next(self.module.parameters()).device
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    def forward(self, *args: object, **kwargs: object) -> object:
        with self.autocast():
            return self.module(*args, **kwargs)

    def response_logprobs(
        self, mb: MicroBatch, temperature: float, with_entropy: bool = False, chunk_tokens: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Per-token log-probs (and entropy) of the response tokens at ``temperature``: ``[b, R]``
        each, zero at padding (fresh tensors, not views: FSDP2 hooks them for backward)."""
        temperature = temperature if temperature > 0 else 1.0
        row, pos, col = _response_positions(mb)
        labels = mb.response_ids[row, col]
        decoder, head = _decoder_and_head(self.module)
        with self.autocast():  # matmuls in the compute dtype; log-softmax and results in float32
            if decoder is not None:
                hidden = decoder(input_ids=mb.input_ids, attention_mask=mb.attention_mask).last_hidden_state
                lp, ent = logprobs_from_hidden(
                    hidden[row, pos], head.weight, labels, temperature, chunk_tokens, with_entropy, head.bias
                )
            else:  # generic fallback: full logits
                logits = self.module(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[
                    row, pos
                ]
                lp = token_logprobs(logits, labels, temperature, chunk_tokens)
                ent = token_entropy(logits, temperature, chunk_tokens) if with_entropy else None
        shape = mb.response_ids.shape
        logp = torch.zeros(shape, dtype=lp.dtype, device=lp.device).index_put((row, col), lp)
        entropy = None
        if ent is not None:
            entropy = torch.zeros(shape, dtype=ent.dtype, device=ent.device).index_put((row, col), ent)
        return logp, entropy


def sequence_logprobs(
    model: torch.nn.Module,
    mb: MicroBatch,
    temperature: float,
    with_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs (and entropy) of the response tokens at ``temperature``: ``[b, R]`` each,
    zero at padding. Differentiable through ``model`` (a :class:`PolicyModule` or a bare HF model)."""
    policy = model if hasattr(model, "response_logprobs") else PolicyModule(model)
    return policy.response_logprobs(mb, temperature, with_entropy, chunk_tokens)


def forward_only_logprobs(
    model: torch.nn.Module,
    samples: list[TrainSample],
    forward_plan: list[list[int]],
    train_plan: list[list[int]],
    make_micro_batch: Callable[[list[TrainSample], list[int]], MicroBatch],
    temperature: float,
) -> list[Tensor]:
    """Log-probs under a frozen policy (old policy, KL reference) for the micro-batches of
    ``train_plan``, computed in the (larger) micro-batches of ``forward_plan``: one ``[b, R]``
    tensor per training micro-batch, laid out as :func:`collate` lays it out (zeros at padding; an
    empty, zero-weight micro-batch gets ``[1, 1]`` zeros). Run it under ``torch.no_grad``; both
    plans may hold empty micro-batches (FSDP2 padding, see ``pad_plan``)."""
    per_sample: list[Tensor | None] = [None] * len(samples)
    device = torch.device("cpu")
    for idx in forward_plan:
        mb = make_micro_batch(samples, idx)
        device = mb.input_ids.device
        logp = sequence_logprobs(model, mb, temperature)[0]
        for row, i in enumerate(idx):
            per_sample[i] = logp[row, : len(samples[i].response_ids)]
    out = []
    for idx in train_plan:
        rows = [per_sample[i] for i in idx]
        width = max((len(samples[i].response_ids) for i in idx), default=1) or 1
        dense = torch.zeros((max(len(idx), 1), width), dtype=torch.float32, device=device)
        for row, lp in enumerate(rows):
            dense[row, : lp.numel()] = lp
        out.append(dense)
    return out
