"""Shared helpers for the data tests: where the shared datasets live, a tiny local tokenizer."""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QWEN25_TEMPLATE = SHARED_DATA / "tokenizer_qwen" / "qwen2_5_chat_template.jinja"
SKIP_REASON = f"shared datasets not found at {SHARED_DATA} (they live beside the repo, never inside it)"


def tiny_tokenizer(chat_template: str | None = None):  # -> PreTrainedTokenizerFast
    """A character-level ``PreTrainedTokenizerFast`` built locally (no download), optionally carrying
    ``chat_template``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["<unk>"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok
