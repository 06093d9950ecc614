"""The rollout engine interface: prompts in, sampled responses out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy; ``top_k == 0`` and ``top_p == 1`` are off."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    eos_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    seed: int | None = None
    return_logprobs: bool = False


@dataclass
class Response:
    """One sampled response.

    ``token_ids`` are the generated tokens only (not the prompt), including the EOS token when one
    was generated; ``length == len(token_ids)``. ``text`` is the decoded response without special
    tokens. ``finish_reason`` is ``"eos"`` (an EOS id was sampled), ``"stop"`` (a stop string
    appeared; the tokens end with the token that completed it) or ``"length"`` (truncated at
    ``max_new_tokens``). ``logprobs[t]`` is log softmax(logits / temperature) of token t (unfiltered
    by top-k / top-p), present when ``return_logprobs`` was asked for.
    """

    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    logprobs: list[float] | None = None

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    """Anything that samples ``n`` responses for each prompt from the policy it was built with."""

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingParams) -> list[list[Response]]:
        """Return ``n`` responses per prompt, as ``result[prompt_index][sample_index]``."""
        ...

    def sync_weights(self) -> None:
        """Make the policy's current weights the ones the engine samples from. The trainer calls it
        once after each step's optimizer updates, whatever the engine. An engine that samples from
        the live policy module (the hf engine) has nothing to do; one that holds its own copy of the
        weights (vLLM) pushes them here."""
        ...
