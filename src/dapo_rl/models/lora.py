"""LoRA adapters through the ``peft`` library (``model.lora.rank > 0``).

- Only the adapters require grad, so AdamW holds state for them alone (the base stays frozen in
  float32 master precision; the forward still runs in ``model.dtype`` under autocast).
- The KL reference is the same module with its adapters switched off
  (:class:`AdaptersDisabled`, peft's ``disable_adapter()``): no second copy of the weights.
- A checkpoint's ``model/`` holds the adapters and the tokenizer (peft's ``save_pretrained``;
  resuming loads the base named in ``adapter_config.json`` and these adapters), and ``merged/``
  the base with the adapters folded in, a plain Hugging Face model
  (:func:`save_merged`; ``AutoModelForCausalLM.from_pretrained`` and ``dapo eval`` load it).
- The hf rollout engine samples from the live module, base + adapters, with nothing to sync.

``peft`` is imported inside the functions: it is an optional dependency (the ``lora`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dapo_rl.config import LoraConfig


def _peft() -> Any:
    try:  # optional dependency: only LoRA runs need it
        import peft
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "model.lora.rank > 0 needs the peft package: pip install 'dapo-rl[lora]' (or pip install peft)"
        ) from e
    return peft


def add_adapters(
    model: torch.nn.Module, lora: LoraConfig, adapter_dir: Path | None = None, trainable: bool = True
) -> torch.nn.Module:
    """``model`` wrapped as a peft model: fresh adapters from ``lora``, or the ones saved in
    ``adapter_dir`` (a LoRA checkpoint). With ``trainable`` only the adapters require grad."""
    peft = _peft()
    if adapter_dir is not None:
        return peft.PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    config = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )
    missing = [m for m in lora.target_modules if m not in linear]
    if missing:
        raise ValueError(
            f"model.lora.target_modules {missing} name no linear layer of this model; its linear layers "
            f"are {linear}"
        )
    return peft.get_peft_model(model, config)


def is_peft_model(model: torch.nn.Module) -> bool:
    """True for a peft-wrapped model (also inside a :class:`dapo_rl.batch.PolicyModule`)."""
    inner = getattr(model, "module", model)
    return hasattr(inner, "disable_adapter") and hasattr(inner, "peft_config")


class AdaptersDisabled:
    """The KL reference of a LoRA run: the live policy with its adapters switched off, which is
    exactly the frozen base model. Has the ``response_logprobs`` of a PolicyModule, so
    :func:`dapo_rl.batch.sequence_logprobs` takes it like one."""

    def __init__(self, policy: torch.nn.Module) -> None:
        if not is_peft_model(policy):
            raise TypeError("AdaptersDisabled needs a policy whose module is a peft model")
        self.policy = policy

    def response_logprobs(
        self, mb: Any, temperature: float, with_entropy: bool = False, chunk_tokens: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.policy.module.disable_adapter():
            return self.policy.response_logprobs(mb, temperature, with_entropy, chunk_tokens)


def _lora_layers(base: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """peft's LoRA layers of ``base`` by module name (each wraps its ``base_layer``)."""
    return {
        name: module
        for name, module in base.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }


def _merged(
    key: str, value: torch.Tensor, layers: dict[str, torch.nn.Module], adapter: str
) -> tuple[str, torch.Tensor] | None:
    """``(base name, tensor)`` of one entry of a peft model's base: None for adapter tensors, the
    base weight plus the adapter's delta (W + scale B A) for a LoRA layer's weight."""
    if ".lora_" in key or "lora_embedding" in key:
        return None
    owner, _, leaf = key.rpartition(".base_layer.")
    if owner in layers and leaf == "weight":
        value = value + layers[owner].get_delta_weight(adapter).to(value.dtype)
    return key.replace(".base_layer.", "."), value.detach()


@torch.no_grad()
def merged_state_dict(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded into its layer's weight
    (W + scale B A), under the base model's own names. The live model is left untouched."""
    base = peft_model.get_base_model()
    layers, adapter = _lora_layers(base), peft_model.active_adapter
    entries = (_merged(k, v, layers, adapter) for k, v in base.state_dict().items())
    return dict(e for e in entries if e is not None)


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The parameters a rollout engine holding its own copy needs, under Hugging Face names, one
    at a time: a peft model's base parameters with each adapter merged in (W + scale B A; at most
    one merged tensor exists at a time), tied ones under each name; a plain model's parameters as
    they are. The live model is left untouched."""
    if not is_peft_model(model):
        yield from model.named_parameters(remove_duplicate=False)
        return
    base = model.get_base_model()
    layers, adapter = _lora_layers(base), model.active_adapter
    with torch.no_grad():
        for key, value in base.named_parameters(remove_duplicate=False):
            entry = _merged(key, value, layers, adapter)
            if entry is not None:
                yield entry


def save_merged(peft_model: torch.nn.Module, directory: Path, tokenizer: Any = None) -> None:
    """Write the base model with the adapters merged as a plain Hugging Face model directory."""
    base = peft_model.get_base_model()
    state = merged_state_dict(peft_model)
    tied = getattr(base.config, "tie_word_embeddings", False)
    if tied:  # one tensor for the tied pair, as save_pretrained writes it for a plain model
        state.pop("lm_head.weight", None)
    base.save_pretrained(directory, state_dict=state, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
