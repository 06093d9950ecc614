"""Choosing the next token of every decode row (greedy, temperature, top-k, top-p, seeded) and
spotting stop strings: the sampling pieces of the hf rollout engine, free of any model."""

from __future__ import annotations

import math
from typing import Any

import torch

from dapo_rl.rollout.base import SamplingParams


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next tokens ``[rows]`` and, when asked for, their unfiltered log-probs at the temperature."""
    greedy = params.temperature == 0
    scaled = logits if greedy else logits / params.temperature
    if greedy:
        tokens = scaled.argmax(-1)
    else:
        filtered = filter_top_k_top_p(scaled, params.top_k, params.top_p)
        probs = torch.softmax(filtered, dim=-1)
        # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) is a draw from p (no host sync).
        noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
        tokens = (probs / noise).argmax(-1)
    if not params.return_logprobs:
        return tokens, None
    logprobs = torch.log_softmax(scaled, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs


def filter_top_k_top_p(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k (ties kept) and outside the nucleus to ``-inf``.

    The nucleus is the smallest set of most likely tokens (after top-k) whose probability reaches
    ``top_p``; the most likely token is always kept.
    """
    vocab = scaled.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # probability mass of the more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, -math.inf)
    return scaled


class StopChecker:
    """Detects stop strings in the decoded tail of a response."""

    def __init__(self, tokenizer: Any, stop_strings: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.active = bool(self.stop_strings)
        # Every ordinary token decodes to at least one character; the margin covers special tokens
        # (decoded to nothing) and partial UTF-8 pieces.
        self.window = max((len(s) for s in self.stop_strings), default=0) + 8

    def hits(self, tails: list[list[int]]) -> list[bool]:
        """For each token tail, whether its decoded text contains a stop string."""
        if not tails:
            return []
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return [any(s in text for s in self.stop_strings) for text in texts]
