"""What both sides of ``step_vs_trl.py`` share at run time: the reward and the per-step summary.

Standard library only: it is imported by the repo's virtual environment (our side) and by the
benchmark-only TRL environment, which has no ``dapo_rl``.
"""

from __future__ import annotations

import statistics


def digit_fraction(text: str) -> float:
    """The fraction of the characters of ``text`` that are digits (0 for an empty text).

    Deterministic and cheap, and varied on a randomly initialised model (whose characters are about
    half digits), so that group-relative advantages are not zero."""
    return sum(ch.isdigit() for ch in text) / len(text) if text else 0.0


def median_after_warmup(values: list[float], warmup: int) -> float | None:
    """The median of ``values[warmup:]`` (None when there is nothing left)."""
    timed = values[warmup:]
    return statistics.median(timed) if timed else None
