"""The row type every dataset reader and synthetic task yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PromptRow:
    """One training or evaluation problem.

    ``prompt`` is either the bare problem text (a template is applied later) or a list of chat
    messages ``[{"role": "user", "content": ...}, ...]`` as in the verl / DAPO-Math-17k layout.
    ``answer`` is the ground truth in the form the reward function expects. ``extra`` keeps the other
    fields of the source row (passed to reward functions). ``uid`` names the row for error messages
    and evaluation output, e.g. ``"gsm8k_test.jsonl:17"``.
    """

    prompt: str | list[dict[str, str]]
    answer: str
    uid: str
    extra: dict[str, Any] = field(default_factory=dict)
