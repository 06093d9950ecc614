"""The ``health`` section of the configuration: the reward-signal guard (docs/health.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    on_problem: Literal["warn", "stop"] = "warn"
    """What a guard finding does: ``warn`` prints its sentence once and trains on; ``stop`` prints it,
    writes a checkpoint and exits (code 2 for a configuration cause, 3 for a diverging run;
    docs/health.md)."""
    window_steps: int = Field(3, ge=1)
    """The guard judges the last this many steps together: rates over all their responses (from the
    first step on, over the steps run so far); "every reward equal" must hold in each of them."""
    max_truncated_frac: float = Field(0.9, gt=0.0, le=1.0)
    """Finding when at least this share of the window's responses hit ``rollout.max_response_tokens``."""
    max_no_answer_rate: float = Field(0.5, gt=0.0, le=1.0)
    """Finding when more than this share of the window's responses had no answer the reward could parse."""
    max_reward_failure_rate: float = Field(0.05, ge=0.0, le=1.0)
    """Finding when more than this share of the window's reward calls timed out or raised."""
    max_prompt_cut_frac: float = Field(0.05, ge=0.0, le=1.0)
    """Finding (at start-up) when more than this share of the training prompts is longer than
    ``data.max_prompt_tokens`` (they are dropped)."""
    hacking_drop: float = Field(0.05, ge=0.0, le=1.0)
    """Finding when, between two held-out evaluations, the mean training reward rose while held-out
    avg@k fell by more than this (absolute); needs ``eval.every_steps``."""
