"""Evaluation metrics, pure functions over per-problem results: avg@k, pass@k, maj@k, intervals,
the summary of a result, merging the ranks' results, and printing a result.

Each metric is computed per problem and then averaged over problems with a 95% interval that stays
in [0, 1] (:mod:`dapo_rl.intervals`: percentile bootstrap over problems for avg@k, Wilson score
interval for pass@k and maj@k; ``null`` when P < 2), semantics doc section 10:

- ``avg_at_k``: the fraction of the first k samples that are correct (the paper's AIME avg@32).
- ``pass_at_k``: the unbiased estimator ``1 - C(n - c, k) / C(n, k)`` from n >= k samples of which c
  are correct (Chen et al. 2021), computed as a product so it never overflows.
- ``maj_at_k``: majority vote over the parsed answers of the first k samples (see :func:`maj_at_k`);
  unavailable (``mean`` null, with the reason under ``"unavailable"``) when the reward function
  extracts no answer (it returns a bare score), and so is ``invalid_rate``.

Also reported: ``invalid_rate`` (responses with no parsable answer), ``mean_response_tokens`` and
``truncation_rate`` (responses cut at the generation cap without EOS).

The sampling loop that produces the per-problem results is :func:`dapo_rl.evaluation.evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from dapo_rl.intervals import estimate, unavailable

NO_ANSWERS = "the reward function extracts no answer (it returns a bare score); return RewardResult(pred=...)"
"""Why maj@k and the invalid rate are unavailable."""


# ---- pure metrics ------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i = n-c+1}^{n} (1 - k / i)``, which is exact in real arithmetic and
    stable in floating point. Requires ``1 <= k <= n`` and ``0 <= c <= n`` (else ``ValueError``).
    """
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < k:
        raise ValueError(f"pass@k needs n >= k samples, got n={n} < k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def _as_matrix(correct: np.ndarray | Sequence[Sequence[bool]], k: int) -> np.ndarray:
    """``correct`` as a bool array of shape (P, n), checking ``1 <= k <= n``."""
    mat = np.asarray(correct, dtype=bool)
    if mat.ndim != 2:
        raise ValueError(f"correct must have shape (problems, samples), got shape {mat.shape}")
    if k < 1 or k > mat.shape[1]:
        raise ValueError(f"k={k} must satisfy 1 <= k <= samples per problem ({mat.shape[1]})")
    return mat


def avg_at_k(correct: np.ndarray | Sequence[Sequence[bool]], k: int) -> np.ndarray:
    """Per-problem avg@k: the mean correctness of the first ``k`` samples.

    ``correct``: bool, shape (P, n) with n >= k. Returns float64, shape (P,).
    """
    mat = _as_matrix(correct, k)
    return mat[:, :k].mean(axis=1, dtype=np.float64)


def pass_at_k_per_problem(correct: np.ndarray | Sequence[Sequence[bool]], k: int) -> np.ndarray:
    """Per-problem unbiased pass@k using all n samples of each problem.

    ``correct``: bool, shape (P, n) with n >= k. Returns float64, shape (P,).
    """
    mat = _as_matrix(correct, k)
    n = mat.shape[1]
    return np.array([pass_at_k(n, int(c), k) for c in mat.sum(axis=1)], dtype=np.float64)


def majority_vote(preds: Sequence[str | None]) -> str | None:
    """The most frequent non-``None`` answer; ties go to the answer that occurs first.

    Returns ``None`` when every answer is ``None`` (or the list is empty).
    """
    counts: dict[str, int] = {}
    for p in preds:
        if p is not None:
            counts[p] = counts.get(p, 0) + 1  # dicts keep first-occurrence order
    if not counts:
        return None
    best = max(counts.values())
    return next(p for p, c in counts.items() if c == best)


def maj_at_k(
    preds: Sequence[Sequence[str | None]], correct: np.ndarray | Sequence[Sequence[bool]], k: int
) -> np.ndarray:
    """Per-problem maj@k: majority vote over the parsed answers of the first ``k`` samples.

    ``preds[p][i]`` is the parsed answer of sample i of problem p (``None``: no parsable answer, which
    takes no part in the vote); ``correct`` is bool, shape (P, n). Ties are broken by first occurrence.
    A problem scores 1 when all of its first-k samples carrying the voted answer are correct (with a
    deterministic checker these samples agree), 0 when they are not or when no sample has an answer.
    Returns float64, shape (P,).
    """
    mat = _as_matrix(correct, k)
    if len(preds) != mat.shape[0]:
        raise ValueError(f"preds has {len(preds)} problems but correct has {mat.shape[0]}")
    out = np.zeros(mat.shape[0], dtype=np.float64)
    for p, row in enumerate(preds):
        if len(row) < k:
            raise ValueError(f"problem {p} has {len(row)} predictions, fewer than k={k}")
        first_k = list(row[:k])
        voted = majority_vote(first_k)
        if voted is None:
            continue
        out[p] = float(all(mat[p, i] for i, ans in enumerate(first_k) if ans == voted))
    return out


def summarize(
    correct: np.ndarray | Sequence[Sequence[bool]],
    preds: Sequence[Sequence[str | None]],
    k: int,
    lengths: np.ndarray | Sequence[Sequence[int]] | None = None,
    truncated: np.ndarray | Sequence[Sequence[bool]] | None = None,
    answers_extracted: bool = True,
) -> dict[str, Any]:
    """All evaluation metrics over a (P problems x n samples) correctness matrix.

    ``preds[p][i]`` is the parsed answer (``None`` if none). ``lengths`` (response tokens) and
    ``truncated`` (cut at the cap) are optional arrays of shape (P, n); without them the matching
    entries are ``None``. Returns ``avg_at_k``, ``pass_at_k``, ``maj_at_k`` (each
    ``{"mean", "ci95"}``), ``invalid_rate``, ``num_problems``, ``num_samples`` (n), ``k``,
    ``mean_response_tokens``, ``truncation_rate``, ``answers_extracted``. Rates are over all P x n
    responses. ``answers_extracted=False`` (the reward gives no ``pred``) makes maj@k and the invalid
    rate unavailable instead of 0 and 1.
    """
    mat = _as_matrix(correct, k)
    num_responses = sum(len(r) for r in preds)
    if len(preds) != mat.shape[0] or num_responses != mat.size:
        raise ValueError(f"preds ({len(preds)} problems, {num_responses} answers) does not match {mat.shape}")
    invalid = sum(p is None for row in preds for p in row)
    maj = estimate(maj_at_k(preds, mat, k), "wilson") if answers_extracted else unavailable(NO_ANSWERS)
    return {
        "num_problems": int(mat.shape[0]),
        "num_samples": int(mat.shape[1]),
        "k": int(k),
        "avg_at_k": estimate(avg_at_k(mat, k), "bootstrap"),
        "pass_at_k": estimate(pass_at_k_per_problem(mat, k), "wilson"),
        "maj_at_k": maj,
        "invalid_rate": invalid / num_responses if num_responses and answers_extracted else None,
        "answers_extracted": answers_extracted,
        "mean_response_tokens": float(np.mean(lengths)) if lengths is not None and mat.size else None,
        "truncation_rate": float(np.mean(truncated)) if truncated is not None and mat.size else None,
    }


def scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The scalar numbers of an evaluation result (means and interval bounds), for a metrics log."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict) and "mean" in value:
            if value["mean"] is None:  # unavailable (no extracted answers) or no problems
                continue
            flat[key] = value["mean"]
            if value.get("ci95") is not None:  # None with fewer than two problems
                flat[f"{key}_ci95_low"], flat[f"{key}_ci95_high"] = value["ci95"]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    for name, count in result.get("reward", {}).items():  # verifier timeouts and errors
        flat[name] = count
    return flat


def merge_evaluations(parts: list[dict[str, Any] | None], k: int) -> dict[str, Any]:
    """One evaluation result from the ranks' results on their shares of the held-out rows (in
    rank order; None for a rank without rows). One part is returned as it is."""
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    problems = [prob for p in parts for prob in p["problems"]]
    lengths = np.array([prob["response_tokens"] for prob in problems])
    # per-problem truncation counts are what the rate needs
    truncated = np.array([[i < prob["num_truncated"] for i in range(lengths.shape[1])] for prob in problems])
    extracted = all(p.get("answers_extracted", True) for p in parts)
    out = summarize(
        [prob["correct"] for prob in problems], [prob["preds"] for prob in problems], k, lengths, truncated,
        answers_extracted=extracted,
    )  # fmt: skip
    out["reward"] = {key: sum(p["reward"][key] for p in parts) for key in parts[0]["reward"]}
    out["problems"] = problems
    return out


# ---- printing a result ---------------------------------------------------------------------------


def _fmt_metric(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return f"n/a ({m['unavailable']})" if m.get("unavailable") else "n/a"
    if m["ci95"] is None:
        return f"{m['mean']:.4f}"
    lo, hi = m["ci95"]
    return f"{m['mean']:.4f}  [{lo:.4f}, {hi:.4f}]"


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable table of an :func:`evaluate` result."""
    k = result["k"]

    def rate(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    tokens = result["mean_response_tokens"]
    rows = [
        ("problems", str(result["num_problems"])),
        (f"avg@{k}", _fmt_metric(result["avg_at_k"])),
        (f"pass@{k}", _fmt_metric(result["pass_at_k"])),
        (f"maj@{k}", _fmt_metric(result["maj_at_k"])),
        ("invalid rate", rate(result["invalid_rate"])),
        ("mean response tokens", "n/a" if tokens is None else f"{tokens:.1f}"),
        ("truncation rate", rate(result["truncation_rate"])),
    ]
    if "reward" in result:  # verifier failures, each scored as a wrong answer
        failed = result["reward"]
        rows.append(("reward timeouts / errors", f"{failed['timeouts']} / {failed['errors']}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric'.ljust(width)}  value  [95% interval]"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    """An :func:`evaluate` result as JSON: indented, with one line per record under ``"problems"``."""
    head = {key: value for key, value in result.items() if key != "problems"}
    text = json.dumps(head, indent=2)
    if "problems" not in result:
        return text
    records = ",\n".join("    " + json.dumps(p) for p in result["problems"])
    body = f"[\n{records}\n  ]" if records else "[]"
    return (text[:-2] + ",\n" if head else "{\n") + f'  "problems": {body}\n}}'
