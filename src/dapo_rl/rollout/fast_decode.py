"""A lean decode step for Llama-family decoders (Llama, Qwen2, Mistral without sliding window).

The rollout engine prefills prompts with the model's own forward, then decodes one token per step
for hundreds of rows. With a small model on a CPU, transformers' decode step is mostly overhead:
module calls, mask building, cache bookkeeping, a ``repeat_kv`` copy for grouped-query attention,
and attention over a strided cache view. :class:`LeanDecoder` computes the same step as a straight
sequence of tensor operations:

- the weights are the model's own parameters, read when a chunk starts (no copy: they follow
  training updates, and inside an FSDP2 gather they are the gathered tensors);
- the KV cache is the engine's preallocated buffer per layer (``[rows, kv_heads, capacity,
  head_dim]``), filled by the prefill and then written in place, one slot per step;
- rotary cos/sin come from a table computed once per chunk by the model's own rotary module, with
  ``rotate_half`` as a fixed permutation and the attention scale folded into the query's table;
- attention is two batched matmuls per layer, grouped-query heads as a ``[kv_heads, group]`` view
  of the query (no repeated keys), with the left padding as a precomputed additive bias.

Only models whose step is known to be exactly this are accepted (:func:`lean_decode_unsupported`
says why one is not): the three model classes, plain ``nn.Linear`` / ``nn.Embedding`` modules, the
class's own forwards (no subclass overriding them), no forward hooks other than FSDP's, a rotary
embedding whose cos/sin depend on the position only, full attention in every layer. Anything else
decodes with the transformers forward, as before.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_STATIC_ROPE = {"default", "linear", "llama3"}  # cos/sin depend on the position only


def _families() -> dict[str, tuple[type, ...]]:
    """model_type -> (causal LM, decoder model, decoder layer, attention, MLP, RMSNorm) classes."""
    from transformers.models.llama import modeling_llama as ll
    from transformers.models.mistral import modeling_mistral as mi
    from transformers.models.qwen2 import modeling_qwen2 as qw

    return {
        "llama": (
            ll.LlamaForCausalLM, ll.LlamaModel, ll.LlamaDecoderLayer, ll.LlamaAttention, ll.LlamaMLP,
            ll.LlamaRMSNorm,
        ),
        "qwen2": (
            qw.Qwen2ForCausalLM, qw.Qwen2Model, qw.Qwen2DecoderLayer, qw.Qwen2Attention, qw.Qwen2MLP,
            qw.Qwen2RMSNorm,
        ),
        "mistral": (
            mi.MistralForCausalLM, mi.MistralModel, mi.MistralDecoderLayer, mi.MistralAttention,
            mi.MistralMLP, mi.MistralRMSNorm,
        ),
    }  # fmt: skip


def _fsdp_module_type() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return FSDPModule


def _same_forward(module: nn.Module, cls: type) -> bool:
    """``module`` is a ``cls`` whose forward is ``cls.forward``: subclasses that do not override it
    pass (FSDP2's ``FSDP<cls>``, and transformers re-wraps ``forward`` in every subclass of a
    checkpointing layer, hence the unwrapping)."""
    return isinstance(module, cls) and inspect.unwrap(type(module).forward) is inspect.unwrap(cls.forward)


def _rope_type(config: Any) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return str(rope.get("rope_type", rope.get("type", "default")))


def lean_decode_unsupported(model: nn.Module) -> str | None:
    """Why ``model`` (a Hugging Face causal LM) cannot decode with :class:`LeanDecoder`; ``None``
    when it can."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    family = _families().get(model_type)  # type: ignore[arg-type]
    if family is None:
        return f"model_type {model_type!r} is not one of {sorted(_families())}"
    lm_cls, base_cls, layer_cls, attn_cls, mlp_cls, norm_cls = family
    if not _same_forward(model, lm_cls):
        return f"{type(model).__name__} is not a plain {lm_cls.__name__}"
    if _rope_type(config) not in _STATIC_ROPE:
        return f"rope type {_rope_type(config)!r} is not one of {sorted(_STATIC_ROPE)}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    if getattr(config, "sliding_window", None) is not None:
        return "sliding-window attention"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or []):
        return "layers other than full attention"
    base = getattr(model, "model", None)
    if not _same_forward(base, base_cls):
        return f"model.model is not a plain {base_cls.__name__}"
    if type(base.embed_tokens) is not nn.Embedding or type(model.lm_head) is not nn.Linear:
        return "embedding or LM head is not a plain nn.Embedding / nn.Linear"
    if not _same_forward(base.norm, norm_cls):
        return f"final norm is not a plain {norm_cls.__name__}"
    if len(base.layers) != config.num_hidden_layers:
        return "number of layers differs from config.num_hidden_layers"
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for i, layer in enumerate(base.layers):
        attn, mlp = layer.self_attn, layer.mlp
        if not (
            _same_forward(layer, layer_cls) and _same_forward(attn, attn_cls) and _same_forward(mlp, mlp_cls)
        ):
            return f"layer {i} is not a plain {layer_cls.__name__}"
        if not all(
            _same_forward(n, norm_cls) for n in (layer.input_layernorm, layer.post_attention_layernorm)
        ):
            return f"layer {i}: a norm is not a plain {norm_cls.__name__}"
        projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj)
        if any(type(p) is not nn.Linear for p in (*projections, mlp.down_proj)):
            return f"layer {i}: a projection is not a plain nn.Linear"
        d = attn.head_dim
        if (attn.q_proj.out_features, attn.k_proj.out_features) != (heads * d, kv_heads * d):
            return f"layer {i}: projection shapes do not match the head counts"
        if getattr(attn, "sliding_window", None) is not None:
            return f"layer {i}: sliding-window attention"
    fsdp = _fsdp_module_type()
    for name, module in model.named_modules():
        hooked = module._forward_hooks or module._forward_pre_hooks
        if hooked and not (fsdp is not None and isinstance(module, fsdp)):
            return f"module {name or type(model).__name__!r} has forward hooks"
    return None


def _rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Transformers' Llama RMSNorm, operation for operation (the casts skipped in float32)."""
    x = h if h.dtype == torch.float32 else h.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (x if h.dtype == torch.float32 else x.to(h.dtype))


def _linear_residual(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``h + linear(x, weight, bias)``, the residual add fused into the matmul when there is no bias."""
    if bias is None:
        return torch.addmm(h, x, weight.t())
    return h + F.linear(x, weight, bias)


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    eps1: float
    eps2: float
    q: tuple[torch.Tensor, torch.Tensor | None]
    k: tuple[torch.Tensor, torch.Tensor | None]
    v: tuple[torch.Tensor, torch.Tensor | None]
    o: tuple[torch.Tensor, torch.Tensor | None]
    gate: tuple[torch.Tensor, torch.Tensor | None]
    up: tuple[torch.Tensor, torch.Tensor | None]
    down: tuple[torch.Tensor, torch.Tensor | None]
    act: nn.Module
    keys: torch.Tensor  # [rows, kv_heads, capacity, head_dim]
    values: torch.Tensor


def _wb(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return linear.weight, linear.bias


class LeanDecoder:
    """Decode steps for one chunk of rows of a supported model (see the module docstring).

    ``layers_kv`` are the per-layer ``(keys, values)`` buffers ``[rows, kv_heads, capacity,
    head_dim]`` holding ``length`` filled slots (the prefill); ``mask`` ``[rows, >= capacity]`` is
    1 for real tokens and 0 for padding, the generated slots included as ones.
    """

    def __init__(
        self,
        model: nn.Module,
        layers_kv: list[tuple[torch.Tensor, torch.Tensor]],
        length: int,
        mask: torch.Tensor,
    ) -> None:
        base, config = model.model, model.config
        self.embed = base.embed_tokens.weight
        self.dtype = self.embed.dtype
        self.norm, self.norm_eps = base.norm.weight, base.norm.variance_epsilon
        self.head = _wb(model.lm_head)
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        attn0 = base.layers[0].self_attn
        self.head_dim = attn0.head_dim
        self.layers: list[_Layer] = []
        for layer, (keys, values) in zip(base.layers, layers_kv):
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                _Layer(
                    ln1=layer.input_layernorm.weight,
                    ln2=layer.post_attention_layernorm.weight,
                    eps1=layer.input_layernorm.variance_epsilon,
                    eps2=layer.post_attention_layernorm.variance_epsilon,
                    q=_wb(attn.q_proj),
                    k=_wb(attn.k_proj),
                    v=_wb(attn.v_proj),
                    o=_wb(attn.o_proj),
                    gate=_wb(mlp.gate_proj),
                    up=_wb(mlp.up_proj),
                    down=_wb(mlp.down_proj),
                    act=mlp.act_fn,
                    keys=keys,
                    values=values,
                )
            )
        self.length = length
        capacity = layers_kv[0][0].shape[2]
        device = self.embed.device
        # Additive attention bias for the padding, one row per (row, kv head): [rows, kv_heads, 1, capacity].
        bias = torch.zeros(mask.shape[0], capacity, dtype=self.dtype, device=device)
        bias.masked_fill_(mask[:, :capacity].to(device) == 0, torch.finfo(self.dtype).min)
        self.bias = bias[:, None, None, :].expand(-1, self.kv_heads, 1, -1).contiguous()
        self._rope_table(base.rotary_emb, capacity, attn0.scaling, device)

    def _rope_table(self, rotary: nn.Module, positions: int, scaling: float, device: torch.device) -> None:
        """Per position, cos and sin for every query head (times the attention scale) and every
        key-value head, the sin with the signs of ``rotate_half``: ``[positions, 2, heads, head_dim]``
        for queries and ``[positions, 2, kv_heads, head_dim]`` for keys. Computed in float32 by the
        model's rotary module and rounded once to the model's dtype."""
        probe = torch.zeros(1, 1, self.head_dim, dtype=torch.float32, device=device)
        cos, sin = rotary(probe, torch.arange(positions, device=device)[None])
        sign = torch.ones(self.head_dim, dtype=torch.float32, device=device)
        sign[: self.head_dim // 2] = -1
        table = torch.stack([cos[0], sin[0] * sign], dim=1)[:, :, None, :]  # the sign flip is exact
        self.rope_q = (table * scaling).to(self.dtype).expand(-1, -1, self.heads, -1).contiguous()
        self.rope_k = table.to(self.dtype).expand(-1, -1, self.kv_heads, -1).contiguous()

    def select(self, index: torch.Tensor) -> None:
        """Keep only the rows ``index`` (in that order)."""
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.bias = self.bias.index_select(0, index)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None):
        """``x * cos + rotate_half(x) * sin`` (``sin`` carries the signs), into ``out`` if given."""
        half = self.head_dim // 2
        swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
        return torch.add(x * cos, swapped * sin, out=out)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ``[rows]`` at ``positions`` ``[rows]``; logits ``[rows, vocab]`` (float32)."""
        rows = tokens.shape[0]
        slot = self.length
        end = slot + 1
        kv, d = self.kv_heads, self.head_dim
        groups = self.heads // kv
        cos_q, sin_q = self.rope_q[positions].unbind(1)  # [rows, heads, head_dim] each
        cos_k, sin_k = self.rope_k[positions].unbind(1)
        bias = self.bias.view(rows * kv, 1, self.bias.shape[-1])[..., :end]
        h = F.embedding(tokens, self.embed)
        for layer in self.layers:
            x = _rms_norm(h, layer.ln1, layer.eps1)
            q = self._rotate(F.linear(x, *layer.q).view(rows, self.heads, d), cos_q, sin_q)
            self._rotate(F.linear(x, *layer.k).view(rows, kv, d), cos_k, sin_k, out=layer.keys[:, :, slot])
            layer.values[:, :, slot] = F.linear(x, *layer.v).view(rows, kv, d)
            keys = layer.keys.view(rows * kv, -1, d)[:, :end]
            scores = torch.baddbmm(bias, q.view(rows * kv, groups, d), keys.transpose(1, 2))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            if self.dtype != torch.float32:
                probs = probs.to(self.dtype)
            attn = torch.bmm(probs, layer.values.view(rows * kv, -1, d)[:, :end]).view(rows, -1)
            h = _linear_residual(h, attn, *layer.o)
            x = _rms_norm(h, layer.ln2, layer.eps2)
            h = _linear_residual(h, layer.act(F.linear(x, *layer.gate)) * F.linear(x, *layer.up), *layer.down)
        self.length = end
        return F.linear(_rms_norm(h, self.norm, self.norm_eps), *self.head).float()
