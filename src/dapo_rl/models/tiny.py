"""A character-level tokenizer and a tiny Llama-style causal LM for the embedded synthetic task.

Both are built locally (no hub access) and saved with ``save_pretrained`` so that
``AutoTokenizer.from_pretrained(dir)`` and ``AutoModelForCausalLM.from_pretrained(dir)`` load them
like any other checkpoint.

Tokenizer: one token per character of :data:`ALPHABET` plus ``<pad>``, ``<bos>``, ``<eos>`` and
``<unk>``. Encoding adds ``<bos>`` in front (a post-processor), never ``<eos>``; decoding fuses the
characters back together, so spaces and newlines survive a round trip. The saved
``tokenizer_config.json`` names the generic ``PreTrainedTokenizerFast`` class and the model is a
``llama`` model: transformers 5 maps some model types (``qwen2`` among them) to their own tokenizer
class on reload, which would re-interpret ``tokenizer.json`` and drop spaces.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

#: Every character the synthetic task writes (prompts, scratchpads, the ``Answer:`` line).
ALPHABET = "0123456789+-*= \nAnswer:"


def default_cache_dir() -> Path:
    """Where warm-started models are cached: ``$DAPO_RL_CACHE`` or ``~/.cache/dapo-rl``."""
    env = os.environ.get("DAPO_RL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dapo-rl"


def _characters() -> list[str]:
    seen: list[str] = []
    for ch in ALPHABET:
        if ch not in seen:
            seen.append(ch)
    return seen


def fast_tokenizer(core: Tokenizer, **kwargs: object) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers`` core that uses our special tokens as a transformers fast tokenizer
    (left padding, no clean-up of spaces on decode); ``kwargs`` go to the constructor."""
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def build_tokenizer(save_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Build the character-level fast tokenizer; save it to ``save_dir`` when given.

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then the characters of
    :data:`ALPHABET` in order. ``tokenizer("12+3=")`` gives ``[bos, '1', '2', '+', '3', '=']``.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _characters():
        vocab[ch] = len(vocab)
    # A BPE model without merges and without a pre-tokenizer splits text into single characters;
    # unknown characters become <unk>. Fuse() concatenates the tokens back on decode.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])],
    )
    tokenizer = fast_tokenizer(core, model_max_length=512)
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 256,
    seed: int = 0,
    init_std: float = 0.02,
) -> LlamaForCausalLM:
    """A tiny randomly initialised Llama causal LM sized for ``tokenizer`` (dropout 0, tied embeddings).

    The default (hidden 128, 4 layers, intermediate 384) has about 0.8M parameters. ``seed`` makes
    the initialisation reproducible without touching the global RNG state.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate if intermediate is not None else 3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        rms_norm_eps=1e-6,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init; the global RNG state is restored after
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
