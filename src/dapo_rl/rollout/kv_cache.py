"""The KV cache of the hf rollout engine: ``DynamicCache`` layers that write into buffers
preallocated for prompt + ``max_new_tokens`` instead of concatenating at each decode step (which
copies the whole cache every step). Models whose cache is not a plain full-attention one (e.g.
sliding windows) keep transformers' own cache layers."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A full-attention cache layer writing into a buffer of fixed capacity (no per-step concat).

    ``keys`` / ``values`` are views of the filled part, shape ``[batch, heads, length, head_dim]``.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, _ = key_states.shape
        self._kbuf = key_states.new_empty((batch, heads, self.capacity, key_states.shape[-1]))
        self._vbuf = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
        self.length = 0
        self._set_views()
        self.is_initialized = True

    def _set_views(self) -> None:
        self.keys = self._kbuf[:, :, : self.length]
        self.values = self._vbuf[:, :, : self.length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        end = self.length + new
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} tokens)")
        self._kbuf[:, :, self.length : end].copy_(key_states)
        self._vbuf[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._set_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def _reindex(self, index: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        kbuf = self._kbuf.new_empty((index.numel(), *self._kbuf.shape[1:]))
        vbuf = self._vbuf.new_empty((index.numel(), *self._vbuf.shape[1:]))
        kbuf[:, :, : self.length] = self.keys.index_select(0, index)
        vbuf[:, :, : self.length] = self.values.index_select(0, index)
        self._kbuf, self._vbuf = kbuf, vbuf
        self._set_views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            batch = self._kbuf.shape[0]
            self._reindex(torch.arange(batch, device=self.device).repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._reindex(indices.to(self.device))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._reindex(beam_idx.to(self.device))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the rollout cache is never cropped")

    def reset(self) -> None:
        self.length = 0
        self._set_views()


def make_cache(model: torch.nn.Module, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` for ``model``; plain full-attention layers get preallocated buffers."""
    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [PreallocatedLayer(capacity) for _ in cache.layers]
    return cache
