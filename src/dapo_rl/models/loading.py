"""Loading a Hugging Face causal LM for training or for inference, with the run's precision.

Precision (``model.dtype``, docs/real-models.md): the dtype names the COMPUTE precision. A model
that trains keeps float32 master weights, so AdamW's states are float32 too and an update of
1e-6 x a weight of 1 is not rounded away (bfloat16 has 8 bits of mantissa: a relative change
below 2^-9 of a weight vanishes). The forward and backward then run in the compute dtype:

- one process: ``torch.autocast`` inside :class:`dapo_rl.batch.PolicyModule` (training forward,
  old-log-prob and reference passes, the hf rollout engine's forwards);
- FSDP2: ``MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=float32)``
  (:func:`dapo_rl.distributed.fully_shard_policy`).

A frozen model (the KL reference, ``dapo eval``) is loaded in the compute dtype: it never
updates, so its weights need no more precision than its matmuls use. Log-softmax, log-probs,
entropy, the ratio and the loss are float32 whatever the compute dtype
(:mod:`dapo_rl.algorithm.logprobs` upcasts the logits one chunk at a time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dapo_rl.collapse import nonfinite_parameters
from dapo_rl.errors import ModelFileError
from dapo_rl.storage import check_safetensors, check_tokenizer_files

if TYPE_CHECKING:
    from dapo_rl.config import DapoConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ADAPTER_CONFIG = "adapter_config.json"
"""A directory holding this file is a LoRA checkpoint (adapters only, see :mod:`dapo_rl.models.lora`)."""


def compute_dtype(cfg: DapoConfig) -> torch.dtype:
    """The dtype forward and backward run in (``model.dtype``)."""
    return _DTYPES[cfg.model.dtype]


def load_model_and_tokenizer(
    path: Path, cfg: DapoConfig, device: torch.device, trainable: bool = True
) -> tuple[Any, Any]:
    """The model and tokenizer in ``path`` (a Hugging Face directory, or a LoRA checkpoint holding
    adapters whose base is the directory they were trained from).

    ``trainable``: float32 master weights, gradient checkpointing and LoRA adapters as configured
    (only the adapters then require grad). Otherwise the weights are loaded in the compute dtype,
    frozen, in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    adapter_dir = path if (path / ADAPTER_CONFIG).is_file() else None
    base_path = _adapter_base(path) if adapter_dir else path
    if not (base_path / "config.json").is_file():
        raise FileNotFoundError(f"{base_path} is not a Hugging Face model directory (no config.json)")
    check_safetensors(base_path)  # a corrupt or truncated file is named (ModelFileError), not a raw traceback
    check_tokenizer_files(path)  # else transformers suggests installing packages
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    dtype = torch.float32 if trainable else compute_dtype(cfg)
    model = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
    ).to(device)
    bad = nonfinite_parameters(model)
    if bad:  # evaluated to 0% or trained into a "diverged" exit that would blame the learning rate
        raise ModelFileError(
            f"the model in {base_path} holds NaN or infinite weights ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}; {len(bad)} tensor(s)): the files are damaged or were "
            "saved from a diverged run; point model.path at another copy or an earlier checkpoint"
        )
    if trainable and cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if adapter_dir is not None or (trainable and cfg.model.lora.rank > 0):
        from dapo_rl.models.lora import add_adapters

        model = add_adapters(model, cfg.model.lora, adapter_dir, trainable)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (non-reentrant: composes with FSDP2
    and with frozen inputs, e.g. LoRA's frozen embeddings)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _adapter_base(adapter_dir: Path) -> Path:
    """The base model directory recorded in a LoRA checkpoint's adapter config."""
    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base or not Path(base).expanduser().is_dir():
        raise FileNotFoundError(
            f"{adapter_dir} holds LoRA adapters whose base model directory {base!r} is missing; restore "
            "that directory, or evaluate the merged model next to it (../merged)"
        )
    return Path(base).expanduser()
