"""What a reward function returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardResult:
    """``score`` is the task reward (before overlong shaping); ``acc`` says the answer is right;
    ``pred`` is the extracted answer (``None`` when no answer could be parsed)."""

    score: float
    acc: bool
    pred: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
