"""Evaluation: sample k responses per held-out problem with a rollout engine, score them with the
reward runner, and summarize (avg@k, pass@k, maj@k; :mod:`dapo_rl.eval_metrics`).

One :func:`evaluate` serves the trainer (periodic held-out evaluation, each rank on its share), the
``dapo eval`` command (:func:`dapo_rl.cli.eval_from_cli`) and the SFT warm start
(:func:`dapo_rl.models.sft.evaluate_warm_model`). What to sample is an :class:`EvalSpec`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dapo_rl.data.types import PromptRow
from dapo_rl.eval_metrics import summarize
from dapo_rl.rewards.runner import NO_EXTRACTED_ANSWER, RewardRunner
from dapo_rl.rollout.base import RolloutEngine, SamplingParams


@dataclass(frozen=True)
class EvalSpec:
    """How to sample an evaluation: ``k`` samples per problem of at most ``max_response_tokens``
    tokens, ending at ``eos_token_ids`` or a stop string. Batch b of ``batch_prompts`` problems is
    sampled with seed ``seed + b``. ``keep_texts`` adds the response texts to each problem record."""

    k: int
    max_response_tokens: int
    eos_token_ids: Sequence[int]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop_strings: Sequence[str] = field(default_factory=tuple)
    batch_prompts: int = 64
    progress: bool = False
    keep_texts: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch_prompts < 1:
            raise ValueError(f"batch_prompts must be >= 1, got {self.batch_prompts}")

    def sampling(self, batch_index: int) -> SamplingParams:
        """The engine's sampling parameters for batch ``batch_index``."""
        return SamplingParams(
            max_new_tokens=self.max_response_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            eos_token_ids=list(self.eos_token_ids),
            stop_strings=list(self.stop_strings),
            seed=self.seed + batch_index,
        )


def evaluate(
    engine: RolloutEngine,
    encode: Callable[[PromptRow], list[int]],
    reward: RewardRunner,
    rows: Sequence[PromptRow],
    spec: EvalSpec,
) -> dict[str, Any]:
    """Sample ``spec.k`` responses per row, score them, and summarize (see
    :func:`dapo_rl.eval_metrics.summarize`).

    ``encode`` turns a row into prompt token ids exactly as in training
    (:class:`dapo_rl.data.encoder.PromptEncoder`). Returns the summary plus ``"problems"``: one record
    per row (never one per sample) with ``uid``, ``answer``, ``num_correct``, ``correct`` (k bools),
    ``preds`` (k answers, ``None`` = unparsable), ``response_tokens`` (k lengths) and
    ``num_truncated`` (and with ``spec.keep_texts`` the ``prompt``, the response ``texts``, their
    ``scores`` and ``finish_reasons``); and ``"reward"``: the summed reward
    failure counts (``timeouts``, ``errors``).
    """
    if not rows:
        raise ValueError("no problems to evaluate")
    k = spec.k
    correct = np.zeros((len(rows), k), dtype=bool)
    lengths = np.zeros((len(rows), k), dtype=np.int64)
    truncated = np.zeros((len(rows), k), dtype=bool)
    preds: list[list[str | None]] = []
    details: list[dict[str, Any]] = []
    failures = {"timeouts": 0, "errors": 0}
    scored_ok = plain = 0  # results not timed out / failed, and those of them with no extracted answer
    bar = tqdm(total=len(rows), desc="eval", unit="problem", disable=not spec.progress, file=sys.stderr)
    with bar:
        for batch_index, start in enumerate(range(0, len(rows), spec.batch_prompts)):
            chunk = rows[start : start + spec.batch_prompts]
            with torch.no_grad():
                groups = engine.generate([encode(r) for r in chunk], k, spec.sampling(batch_index))
            if len(groups) != len(chunk) or any(len(g) != k for g in groups):
                raise RuntimeError(
                    f"the rollout engine returned {[len(g) for g in groups]} responses, expected {k} each"
                )
            results, metrics = reward.score_batch(
                [resp.text for g in groups for resp in g],
                [r.answer for r in chunk for _ in range(k)],
                [r.extra for r in chunk for _ in range(k)],
            )
            failures["timeouts"] += int(metrics.get("reward/timeouts", 0))
            failures["errors"] += int(metrics.get("reward/errors", 0))
            ok = [res for res in results if not ({"timeout", "error"} & res.info.keys())]
            scored_ok += len(ok)
            plain += sum(bool(res.info.get(NO_EXTRACTED_ANSWER)) for res in ok)
            for j, group in enumerate(groups):
                row_index = start + j
                scored = results[j * k : (j + 1) * k]
                correct[row_index] = [bool(res.acc) for res in scored]
                lengths[row_index] = [resp.length for resp in group]
                truncated[row_index] = [resp.truncated for resp in group]
                preds.append([res.pred for res in scored])
                details.append(
                    {
                        "prompt": chunk[j].prompt,
                        "texts": [resp.text for resp in group],
                        "scores": [res.score for res in scored],
                        "finish_reasons": [resp.finish_reason for resp in group],
                    }
                )
            bar.update(len(chunk))

    extracted = scored_ok == 0 or plain < scored_ok
    out = summarize(correct, preds, k, lengths=lengths, truncated=truncated, answers_extracted=extracted)
    out["reward"] = failures
    out["problems"] = [
        {
            "uid": row.uid,
            "answer": row.answer,
            "num_correct": int(correct[i].sum()),
            "correct": correct[i].tolist(),
            "preds": preds[i],
            "response_tokens": lengths[i].tolist(),
            "num_truncated": int(truncated[i].sum()),
            **(details[i] if spec.keep_texts else {}),
        }
        for i, row in enumerate(rows)
    ]
    return out
