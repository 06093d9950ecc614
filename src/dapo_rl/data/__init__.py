"""Datasets and prompts: file readers, prompt templates, the resumable prompt stream.

Typical use::

    rows, stats = read_rows("dapo_math_17k.parquet")
    rows, dropped = filter_prompt_length(rows, lambda r: len(tok(render_prompt(r, "dapo", tok, True)).input_ids), 2048, "drop")
    data = PromptDataset(rows, seed=0)
    batch = data.next_batch(512)
"""

from dapo_rl.data.dataset import PromptDataset, filter_prompt_length
from dapo_rl.data.readers import read_rows
from dapo_rl.data.templates import TEMPLATES, apply_template, build_messages, render_prompt
from dapo_rl.data.types import PromptRow

__all__ = [
    "TEMPLATES",
    "PromptDataset",
    "PromptRow",
    "apply_template",
    "build_messages",
    "filter_prompt_length",
    "read_rows",
    "render_prompt",
]
