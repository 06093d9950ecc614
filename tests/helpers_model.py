"""Shared test helpers: a tiny, randomly initialised causal LM with the project's tokenizer."""

from __future__ import annotations

from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from dapo_rl.models.tiny import build_tiny_model, build_tokenizer


def make_tiny_model_and_tokenizer(
    seed: int = 0, hidden: int = 32, layers: int = 2, init_std: float = 0.2
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A seeded, randomly initialised tiny Llama (about 30k parameters, in eval mode) and the
    character-level tokenizer of the synthetic task.

    ``init_std`` is larger than a real model's so that next-token distributions are far from
    uniform: tests of sampling then have something to detect, and greedy ties are unlikely.
    """
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, hidden=hidden, layers=layers, heads=4, seed=seed, init_std=init_std)
    model.eval()
    return model, tokenizer
