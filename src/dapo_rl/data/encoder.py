"""Prompt token ids of a row: the configured template rendered and tokenized once per row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dapo_rl.data.templates import render_prompt
from dapo_rl.data.types import PromptRow


@dataclass
class PromptEncoder:
    """Renders a row with the configured template and tokenizes it once (cached by uid).

    Plain templates are tokenized with ``add_special_tokens=True``, so a tokenizer that adds a BOS
    by default (Llama) gets it and one that does not (Qwen) gets none; the chat template's text
    already holds its special tokens, so it is tokenized with ``add_special_tokens=False``."""

    tokenizer: Any
    template: str | Callable[[str], str]
    use_chat_template: bool
    system_prompt: str | None

    def __post_init__(self) -> None:
        self._cache: dict[str, list[int]] = {}

    def text(self, row: PromptRow) -> str:
        return render_prompt(row, self.template, self.tokenizer, self.use_chat_template, self.system_prompt)

    def __call__(self, row: PromptRow) -> list[int]:
        ids = self._cache.get(row.uid)
        if ids is None:
            ids = self.tokenizer(self.text(row), add_special_tokens=not self.use_chat_template)["input_ids"]
            self._cache[row.uid] = ids
        return ids
