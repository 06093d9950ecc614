"""Batched sampling with any Hugging Face causal LM: the default rollout engine.

How a call to :meth:`HFRolloutEngine.generate` runs:

1. Prompts are sorted by length and cut into chunks of at most ``max_batch_sequences`` rows
   (prompt x sample) and ``max_batch_tokens`` cache slots, so similar lengths share a chunk.
2. Per chunk, the distinct prompts are left-padded (attention mask, position ids counted from each
   prompt's first real token) and prefilled ONCE; the KV cache and last logits are then expanded to
   the samples of each prompt.
3. Decode loop, one token per step for all rows: temperature / top-k / top-p / greedy on the last
   logits, a ``torch.Generator`` seeded from ``params.seed`` (same seed, same outputs), EOS ids and
   stop strings end a row. Finished rows are dropped from the batch (and from the cache) once they
   are a quarter of it; the loop ends as soon as every row has finished.

The cache (:mod:`dapo_rl.rollout.kv_cache`) and the choice of the next token
(:mod:`dapo_rl.rollout.sampler`) live in their own modules.

Decode steps: for Llama, Qwen2 and Mistral models (full attention, plain modules; see
:func:`~dapo_rl.rollout.fast_decode.lean_decode_unsupported`) a :class:`LeanDecoder` computes each
step as a straight sequence of tensor operations on the model's own parameters and the preallocated
cache buffers (same logits within 1e-5 in float32). Any other model steps through its own forward
with a ``DynamicCache`` whose layers write into buffers preallocated for prompt +
``max_new_tokens`` instead of concatenating each step, which copies the whole cache (models whose
cache is not a plain full-attention one, e.g. sliding windows, keep transformers' own cache layers).
``decode_path()`` says which one a call will use, and why.

The engine samples from the model object it was given (the trainer passes its live policy, so there
are no weights to sync), in eval mode under ``torch.no_grad`` (not ``inference_mode``, whose
tensors would break a wrapped policy, e.g. FSDP parameters unsharded while sampling), and
restores the training mode afterwards. A policy with a compute dtype below float32
(``model.dtype``, :meth:`dapo_rl.batch.PolicyModule.autocast`) samples under that autocast, the
lean decode steps included.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from transformers import DynamicCache

from dapo_rl.rollout.base import FinishReason, Response, SamplingParams
from dapo_rl.rollout.fast_decode import LeanDecoder, lean_decode_unsupported
from dapo_rl.rollout.kv_cache import PreallocatedLayer, make_cache
from dapo_rl.rollout.sampler import StopChecker, sample_next

_COMPACT_FRACTION = 0.25  # drop finished rows once they are this fraction of the batch


@dataclass
class _Chunk:
    """Prompts decoded together: ``prompts[j]`` is sampled ``counts[j]`` times; ``rows`` maps each
    decode row to ``(prompt_index, sample_index)`` in the caller's numbering."""

    prompts: list[list[int]]
    counts: list[int]
    rows: list[tuple[int, int]]


class HFRolloutEngine:
    """Rollout engine over a Hugging Face ``AutoModelForCausalLM`` (see the module docstring).

    ``max_batch_sequences`` caps the rows (prompt x sample) decoded together; ``max_batch_tokens``
    (optional) caps rows x (padded prompt length + ``max_new_tokens``), the KV cache slots of a
    chunk. A prompt whose ``n`` samples do not fit one chunk is split over several chunks (its
    prefill then runs once per chunk).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_batch_sequences: int = 256,
        max_batch_tokens: int | None = None,
        lean_decode: bool = True,
    ) -> None:
        if max_batch_sequences < 1:
            raise ValueError(f"max_batch_sequences must be >= 1, got {max_batch_sequences}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_sequences = max_batch_sequences
        self.max_batch_tokens = max_batch_tokens
        self.lean_decode = lean_decode
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id: int = int(pad) if pad is not None else 0
        # A DDP-style wrapper keeps the HF model (config, forward signature) in ``.module``.
        self._core = getattr(model, "module", model)
        params = inspect.signature(self._core.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params

    # ------------------------------------------------------------------ public API
    def decode_path(self) -> tuple[str, str | None]:
        """``("lean", None)`` when decode steps run :class:`LeanDecoder`, else ``("hf", reason)``."""
        reason = lean_decode_unsupported(self._core) if self.lean_decode else "lean_decode=False"
        if reason is None and any(_is_dtensor(p) for p in self._core.parameters()):
            reason = "sharded (DTensor) parameters: not inside an FSDP2 gather"
        return ("hf", reason) if reason else ("lean", None)

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Response]]:
        """Sample ``n`` responses for each prompt; ``result[prompt_index][sample_index]``."""
        self._validate(prompt_ids, n, params)
        results: list[list[Response | None]] = [[None] * n for _ in prompt_ids]
        if not prompt_ids or n == 0:
            return results  # type: ignore[return-value]
        device = self._device()
        generator = torch.Generator(device=device)
        seed = params.seed
        if seed is None:  # follow the global RNG so that torch.manual_seed makes runs reproducible
            seed = int(torch.randint(0, 2**62, (1,)).item())
        generator.manual_seed(seed)
        lean = self.decode_path()[0] == "lean"
        was_training = self.model.training
        self.model.eval()
        compute = getattr(self.model, "autocast", contextlib.nullcontext)  # a PolicyModule's model.dtype
        try:
            with torch.no_grad(), compute():
                for chunk in self._chunks(prompt_ids, n, params.max_new_tokens):
                    for (p, s), response in zip(chunk.rows, self._run_chunk(chunk, params, generator, lean)):
                        results[p][s] = response
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def sync_weights(self) -> None:
        """Nothing to do: this engine samples from the live policy module, so it always has the
        current weights."""

    # ------------------------------------------------------------------ planning
    @staticmethod
    def _validate(prompt_ids: list[list[int]], n: int, params: SamplingParams) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if params.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        if params.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
        if params.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {params.top_k}")
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        if any(s == "" for s in params.stop_strings):
            raise ValueError("stop strings must be non-empty")

    def _device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters
            return torch.device("cpu")

    def _chunks(self, prompt_ids: list[list[int]], n: int, max_new: int) -> list[_Chunk]:
        """Cut (prompt, sample) rows into chunks, prompts sorted by length (less padding)."""
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        chunks: list[_Chunk] = []
        current = _Chunk([], [], [])
        width = 0  # padded prompt length of the current chunk

        def rows_allowed(new_width: int) -> int:
            cap = self.max_batch_sequences
            if self.max_batch_tokens is not None:
                cap = min(cap, max(1, self.max_batch_tokens // (new_width + max_new)))
            return cap

        for i in order:
            remaining = n
            while remaining > 0:
                new_width = max(width, len(prompt_ids[i]))
                free = rows_allowed(new_width) - len(current.rows)
                if free <= 0:
                    chunks.append(current)
                    current, width = _Chunk([], [], []), 0
                    continue
                take = min(free, remaining)
                first = n - remaining
                current.prompts.append(prompt_ids[i])
                current.counts.append(take)
                current.rows.extend((i, first + s) for s in range(take))
                width = new_width
                remaining -= take
        if current.rows:
            chunks.append(current)
        return chunks

    # ------------------------------------------------------------------ decoding
    def _forward(self, **kwargs: Any) -> torch.Tensor:
        """Logits of the last position, float32, shape ``[batch, vocab]``."""
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def _prefill(
        self, chunk: _Chunk, max_new: int, device: torch.device
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefill each distinct prompt once, then expand to its samples.

        Returns the cache, the last logits ``[rows, vocab]``, the attention mask
        ``[rows, width + max_new]`` (prompt part filled, generated part all ones) and the next
        position id of each row.
        """
        width = max(len(p) for p in chunk.prompts)
        num = len(chunk.prompts)
        ids = torch.full((num, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((num, width + max_new), dtype=torch.long)
        mask[:, width:] = 1
        for j, p in enumerate(chunk.prompts):
            ids[j, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[j, width - len(p) : width] = 1
        ids, mask = ids.to(device), mask.to(device)
        prompt_mask = mask[:, :width]
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        cache = make_cache(self._core, width + max_new)
        logits = self._forward(
            input_ids=ids, attention_mask=prompt_mask, position_ids=positions, past_key_values=cache
        )
        next_pos = prompt_mask.sum(-1)
        if all(c == chunk.counts[0] for c in chunk.counts):
            if chunk.counts[0] > 1:
                cache.batch_repeat_interleave(chunk.counts[0])
            expand = torch.arange(num, device=device).repeat_interleave(chunk.counts[0])
        else:
            expand = torch.repeat_interleave(
                torch.arange(num, device=device), torch.tensor(chunk.counts, device=device)
            )
            cache.batch_select_indices(expand)
        return cache, logits[expand], mask[expand], next_pos[expand]

    def _stepper(
        self, cache: DynamicCache, mask: torch.Tensor, width: int, lean: bool
    ) -> LeanDecoder | _HFStep:
        """The decode step for a prefilled chunk: lean when the model and its cache allow it."""
        layers = cache.layers
        if lean and layers and all(type(layer) is PreallocatedLayer for layer in layers):
            kv = [(layer._kbuf, layer._vbuf) for layer in layers]  # type: ignore[attr-defined]
            return LeanDecoder(self._core, kv, layers[0].get_seq_length(), mask)
        return _HFStep(self, cache, mask, width)

    def _run_chunk(
        self, chunk: _Chunk, params: SamplingParams, generator: torch.Generator, lean: bool
    ) -> list[Response]:
        device = self._device()
        max_new = params.max_new_tokens
        cache, logits, mask, positions = self._prefill(chunk, max_new, device)
        width = mask.shape[1] - max_new
        stepper = self._stepper(cache, mask, width, lean)
        del cache, mask  # owned by the stepper from here
        rows = len(chunk.rows)
        out_tokens = torch.full((rows, max_new), self.pad_token_id, dtype=torch.long, device=device)
        out_logprobs = torch.zeros((rows, max_new), dtype=torch.float32, device=device)
        lengths = [max_new] * rows
        reasons: list[FinishReason] = ["length"] * rows
        eos = torch.tensor(sorted(set(params.eos_token_ids)), dtype=torch.long, device=device)
        stop = StopChecker(self.tokenizer, params.stop_strings)
        active = torch.arange(rows, device=device)  # decode row -> chunk row
        alive = torch.ones(rows, dtype=torch.bool, device=device)
        for t in range(max_new):
            tokens, logprobs = sample_next(logits, params, generator)
            out_tokens[active, t] = tokens
            if logprobs is not None:
                out_logprobs[active, t] = logprobs
            ended = alive & torch.isin(tokens, eos) if eos.numel() else torch.zeros_like(alive)
            for idx in ended.nonzero().flatten().tolist():
                row = int(active[idx])
                lengths[row], reasons[row] = t + 1, "eos"
            if stop.active:
                candidates = (alive & ~ended).nonzero().flatten()
                tails = out_tokens[active[candidates], max(0, t + 1 - stop.window) : t + 1].tolist()
                for idx, hit in zip(candidates.tolist(), stop.hits(tails)):
                    if hit:
                        row = int(active[idx])
                        lengths[row], reasons[row] = t + 1, "stop"
                        ended[idx] = True
            alive &= ~ended
            if t == max_new - 1:
                break
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if alive.numel() - n_alive >= max(1, _COMPACT_FRACTION * alive.numel()):
                keep = alive.nonzero().flatten()
                stepper.select(keep)
                active, tokens, positions = active[keep], tokens[keep], positions[keep]
                alive = alive[keep]
            logits = stepper.step(tokens, positions)
            positions = positions + 1
        token_lists = out_tokens.tolist()
        logprob_lists = out_logprobs.tolist() if params.return_logprobs else None
        generated = [token_lists[r][: lengths[r]] for r in range(rows)]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [
            Response(
                token_ids=generated[r],
                text=texts[r],
                finish_reason=reasons[r],
                logprobs=logprob_lists[r][: lengths[r]] if logprob_lists is not None else None,
            )
            for r in range(rows)
        ]


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


class _HFStep:
    """Decode steps through the model's own forward and ``DynamicCache`` (any model)."""

    def __init__(self, engine: HFRolloutEngine, cache: DynamicCache, mask: torch.Tensor, width: int) -> None:
        self.engine, self.cache, self.mask = engine, cache, mask
        self.filled = width  # cache slots filled so far

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.filled += 1
        return self.engine._forward(
            input_ids=tokens[:, None],
            attention_mask=self.mask[:, : self.filled],
            position_ids=positions[:, None],
            past_key_values=self.cache,
        )
