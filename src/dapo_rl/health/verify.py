"""Verified weight pushes: after a push to a rollout engine that holds its own weights (vllm), check
that the engine now computes what the trainer computes (docs/health.md).

Two checks, both cheap (:func:`check_push`):

1. **A fixed probe**: :data:`PROBE_TOKENS` token ids scored by the policy (log-probs at temperature
   1, as the trainer computes them) and by the engine (``engine.probe_logprobs``). Their mean
   absolute difference must stay within the compute dtype's tolerance (:data:`TOLERANCE`).
2. **Per-tensor sums**: (sum, sum of squares) of every weight the trainer would push, in the
   engine's dtype and under the engine's names (q/k/v and gate/up fused as vLLM holds them), against
   the engine's own (``engine.weight_sums``). These name the tensors that differ. vLLM on a CPU
   repacks its linear layers and exposes only embeddings and norms; the probe covers the rest.

With LoRA the trainer's side is the base with the adapters merged (what a push must deliver).
``rollout.verify_weights_every`` sets how often (after the first step a process runs, then every N
steps);
a mismatch raises :class:`WeightPushError` (exit 3) on every rank.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import torch

from dapo_rl.batch import TrainSample, collate, sequence_logprobs
from dapo_rl.errors import EXIT_DIVERGED, DapoError
from dapo_rl.models.lora import merged_weights
from dapo_rl.rollout.vllm_engine import full_weights

PROBE_TOKENS = 16
TOLERANCE = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}
"""Largest mean |log-prob difference| on the probe, by the engine's compute dtype."""
_FUSED = re.compile(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.")
_FUSED_AS = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
             "up_proj": "gate_up_proj"}  # fmt: skip


class WeightPushError(DapoError):
    """The rollout engine does not hold the policy's weights after a push (exit code 3)."""

    exit_code = EXIT_DIVERGED


def probe_ids(vocab_size: int) -> list[int]:
    """The fixed probe: :data:`PROBE_TOKENS` token ids spread over the vocabulary."""
    return [(7919 * i + 7) % vocab_size for i in range(PROBE_TOKENS)]


def engine_name(name: str) -> str:
    """A Hugging Face weight name as vLLM holds it (``...q_proj.weight`` -> ``...qkv_proj.weight``)."""
    return _FUSED.sub(lambda m: f".{_FUSED_AS[m.group(1)]}.", name)


def policy_sums(
    weights: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype
) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) of the weights a push sends, cast to ``dtype``, by engine name."""
    sums: dict[str, tuple[float, float]] = {}
    for name, tensor in weights:
        data = tensor.detach().to(dtype).to(torch.float64)
        s, q = sums.get(engine_name(name), (0.0, 0.0))
        sums[engine_name(name)] = (s + float(data.sum()), q + float((data * data).sum()))
    return sums


def _differing(ours: dict[str, tuple[float, float]], theirs: dict[str, tuple[float, float]]) -> list[str]:
    bad = []
    for name, (s, q) in ours.items():
        if name not in theirs:  # e.g. a tied lm_head, or a repacked linear layer
            continue
        ts, tq = theirs[name]
        if abs(ts - s) > 1e-6 * max(1.0, q**0.5) or abs(tq - q) > 1e-6 * max(1.0, q):
            bad.append(f"{name} (sum {s:.6g} in the policy, {ts:.6g} in the engine)")
    return bad


@torch.no_grad()
def check_push(
    policy: torch.nn.Module, engine: Any, weights: Callable[..., Any] = merged_weights
) -> str | None:
    """None when ``engine`` computes what ``policy`` computes, else what differs, in words.
    ``weights`` reads the policy's weights as a push must deliver them."""
    core = getattr(policy, "module", policy)
    ids = probe_ids(int(core.config.vocab_size))
    mb = collate([TrainSample(ids[:1], ids[1:], 0.0, 0)], [0], 0, next(core.parameters()).device)
    was_training = policy.training
    policy.eval()
    ours = sequence_logprobs(policy, mb, 1.0)[0][0].double().cpu()
    policy.train(was_training)
    theirs = torch.tensor(engine.probe_logprobs(ids), dtype=torch.float64)
    gap = (ours - theirs).abs()
    tol = TOLERANCE.get(engine.dtype, 1e-1)
    bad = _differing(
        policy_sums(full_weights(core, engine.dtype, weights), engine.dtype), engine.weight_sums()
    )
    if gap.mean() <= tol and not bad:
        return None
    where = (
        "tensors that differ: " + ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        if bad
        else "every tensor whose sums the engine exposes agrees (vLLM on a CPU repacks its linear layers), "
        "so a linear layer differs"
    )
    return (
        f"on a fixed probe of {PROBE_TOKENS} tokens the engine's log-probs differ from the policy's by "
        f"{gap.mean():.3g} on average (max {gap.max():.3g}; tolerance {tol:g} for {str(engine.dtype).removeprefix('torch.')}); "
        f"{where}"
    )


def verify_engine(trainer: Any, step: int, first: bool = False) -> None:
    """The trainer's check after step ``step``'s push (see the module docstring): at the first step
    this process runs (``first``: a fresh or a resumed run) and every ``verify_weights_every``
    steps. All ranks call it."""
    every = trainer.cfg.rollout.verify_weights_every
    engine = trainer.engine
    if not every or not hasattr(engine, "probe_logprobs") or (not first and step % every):
        return
    if getattr(
        getattr(trainer.cfg, "async_", None), "max_staleness", 0
    ):  # the worker samples, not this engine
        return
    problem = check_push(trainer.policy, engine)
    if trainer.dist.any(problem is not None):
        raise WeightPushError(
            f"the rollout engine does not hold the policy's weights after the push of step {step}: "
            f"{problem or 'on another rank'}. It samples from other weights than the ones trained: a "
            "bug in the weight push (rollout.engine=vllm; with model.lora the adapters must be merged "
            "in); rollout.verify_weights_every=0 turns this check off"
        )
