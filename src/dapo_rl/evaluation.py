"""Evaluation: sample k responses per held-out problem and report avg@k, pass@k and maj@k.

Metrics (semantics doc section 10), each computed per problem and then averaged over problems with a
95% normal interval ``mean ± 1.96 · s / sqrt(P)`` (``s`` the sample standard deviation over the P
problems, ddof = 1; the interval is not clipped to [0, 1], and is ``null`` when P < 2):

- ``avg_at_k``: the fraction of the first k samples that are correct (the paper's AIME avg@32).
- ``pass_at_k``: the unbiased estimator ``1 - C(n - c, k) / C(n, k)`` from n >= k samples of which c
  are correct (Chen et al. 2021), computed as a product so it never overflows.
- ``maj_at_k``: majority vote over the parsed answers of the first k samples (see :func:`maj_at_k`).

Also reported: ``invalid_rate`` (responses with no parsable answer), ``mean_response_tokens`` and
``truncation_rate`` (responses cut at the generation cap without EOS).

:func:`evaluate` returns one record per problem (never one per sample) under ``"problems"``.
:func:`eval_from_cli` is ``dapo eval``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dapo_rl.config import DapoConfig
    from dapo_rl.data.types import PromptRow
    from dapo_rl.rewards.runner import RewardRunner
    from dapo_rl.rollout.base import RolloutEngine

Z95 = 1.96
"""Normal quantile for a two-sided 95% interval."""


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


def mean_ci95(values: np.ndarray | Sequence[float]) -> dict[str, Any]:
    """``{"mean": m, "ci95": [m - 1.96 s/sqrt(P), m + 1.96 s/sqrt(P)]}`` over per-problem values.

    ``s`` is the sample standard deviation (ddof = 1). With fewer than two values the interval is
    ``None``; with none the mean is ``None`` too.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "ci95": None}
    mean = float(arr.mean())
    if arr.size < 2:
        return {"mean": mean, "ci95": None}
    half = Z95 * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def summarize(
    correct: np.ndarray | Sequence[Sequence[bool]],
    preds: Sequence[Sequence[str | None]],
    k: int,
    lengths: np.ndarray | Sequence[Sequence[int]] | None = None,
    truncated: np.ndarray | Sequence[Sequence[bool]] | None = None,
) -> dict[str, Any]:
    """All evaluation metrics over a (P problems x n samples) correctness matrix.

    ``preds[p][i]`` is the parsed answer (``None`` if none). ``lengths`` (response tokens) and
    ``truncated`` (cut at the cap) are optional arrays of shape (P, n); without them the matching
    entries are ``None``. Returns ``avg_at_k``, ``pass_at_k``, ``maj_at_k`` (each
    ``{"mean", "ci95"}``), ``invalid_rate``, ``num_problems``, ``num_samples`` (n), ``k``,
    ``mean_response_tokens``, ``truncation_rate``. Rates are over all P x n responses.
    """
    mat = _as_matrix(correct, k)
    num_responses = sum(len(r) for r in preds)
    if len(preds) != mat.shape[0] or num_responses != mat.size:
        raise ValueError(f"preds ({len(preds)} problems, {num_responses} answers) does not match {mat.shape}")
    invalid = sum(p is None for row in preds for p in row)
    return {
        "num_problems": int(mat.shape[0]),
        "num_samples": int(mat.shape[1]),
        "k": int(k),
        "avg_at_k": mean_ci95(avg_at_k(mat, k)),
        "pass_at_k": mean_ci95(pass_at_k_per_problem(mat, k)),
        "maj_at_k": mean_ci95(maj_at_k(preds, mat, k)),
        "invalid_rate": invalid / num_responses if num_responses else None,
        "mean_response_tokens": float(np.mean(lengths)) if lengths is not None and mat.size else None,
        "truncation_rate": float(np.mean(truncated)) if truncated is not None and mat.size else None,
    }


# ---- sampling and scoring ----------------------------------------------------------------------


def scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The scalar numbers of an evaluation result (means and interval bounds), for a metrics log."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict) and "mean" in value:
            flat[key] = value["mean"]
            if value.get("ci95") is not None:  # None with fewer than two problems
                flat[f"{key}_ci95_low"], flat[f"{key}_ci95_high"] = value["ci95"]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    return flat


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[PromptRow],
    reward: RewardRunner,
    k: int,
    max_response_tokens: int,
    temperature: float,
    top_p: float,
    template: str | Callable[[str], str],
    use_chat_template: bool = False,
    system_prompt: str | None = None,
    seed: int = 0,
    batch_prompts: int = 64,
    progress: bool = True,
    *,
    engine: RolloutEngine | None = None,
    stop_strings: Sequence[str] = (),
) -> dict[str, Any]:
    """Sample ``k`` responses per row, score them, and summarize (see :func:`summarize`).

    Prompts are rendered with ``template`` and tokenized exactly as in training
    (:class:`dapo_rl.runtime.PromptEncoder`): ``tokenizer(text, add_special_tokens=True)`` for plain
    templates, so a tokenizer that adds a BOS by default (Llama) gets it and one that does not (Qwen)
    gets none; ``add_special_tokens=False`` with the chat template, whose text already holds them.
    Generation stops at the tokenizer's EOS and the model's generation-config EOS ids, or at
    ``max_response_tokens`` (truncated). Sampling is seeded with ``seed + batch index``.

    ``engine`` defaults to :class:`~dapo_rl.rollout.hf_engine.HFRolloutEngine` over ``model``.
    Returns the summary plus ``"problems"``: one record per row (never one per sample) with ``uid``,
    ``answer``, ``num_correct``, ``correct`` (k bools), ``preds`` (k answers, ``None`` = unparsable),
    ``response_tokens`` (k lengths) and ``num_truncated``; and ``"reward"``: the summed reward
    failure counts (``timeouts``, ``errors``).
    """
    import torch
    from tqdm.auto import tqdm

    from dapo_rl.rollout.base import SamplingParams
    from dapo_rl.runtime import PromptEncoder, eos_token_ids

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not rows:
        raise ValueError("no problems to evaluate")
    if batch_prompts < 1:
        raise ValueError(f"batch_prompts must be >= 1, got {batch_prompts}")
    if engine is None:
        from dapo_rl.rollout.hf_engine import HFRolloutEngine

        engine = HFRolloutEngine(model, tokenizer)
    encode = PromptEncoder(tokenizer, template, use_chat_template, system_prompt)
    eos_ids = eos_token_ids(tokenizer, model)

    correct = np.zeros((len(rows), k), dtype=bool)
    lengths = np.zeros((len(rows), k), dtype=np.int64)
    truncated = np.zeros((len(rows), k), dtype=bool)
    preds: list[list[str | None]] = []
    failures = {"timeouts": 0, "errors": 0}
    was_training = bool(getattr(model, "training", False))
    model.eval()
    bar = tqdm(total=len(rows), desc="eval", unit="problem", disable=not progress, file=sys.stderr)
    try:
        for b, start in enumerate(range(0, len(rows), batch_prompts)):
            chunk = rows[start : start + batch_prompts]
            params = SamplingParams(
                max_new_tokens=max_response_tokens,
                temperature=temperature,
                top_p=top_p,
                eos_token_ids=list(eos_ids),
                stop_strings=list(stop_strings),
                seed=seed + b,
            )
            with torch.no_grad():
                groups = engine.generate([encode(r) for r in chunk], k, params)
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
            for j, group in enumerate(groups):
                p = start + j
                scored = results[j * k : (j + 1) * k]
                correct[p] = [bool(res.acc) for res in scored]
                lengths[p] = [resp.length for resp in group]
                truncated[p] = [resp.truncated for resp in group]
                preds.append([res.pred for res in scored])
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)

    out = summarize(correct, preds, k, lengths=lengths, truncated=truncated)
    out["reward"] = failures
    out["problems"] = [
        {
            "uid": row.uid,
            "answer": row.answer,
            "num_correct": int(correct[p].sum()),
            "correct": correct[p].tolist(),
            "preds": preds[p],
            "response_tokens": lengths[p].tolist(),
            "num_truncated": int(truncated[p].sum()),
        }
        for p, row in enumerate(rows)
    ]
    return out


# ---- dapo eval ---------------------------------------------------------------------------------


def _fmt_metric(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return "n/a"
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


def _load_eval_rows(cfg: DapoConfig, data: str | None) -> tuple[list[PromptRow], str]:
    """Rows from ``--data``, else the configured eval files, else the synthetic held-out split."""
    from dapo_rl.data.readers import read_rows

    files = [data] if data is not None else list(cfg.data.eval_files)
    if not files and cfg.data.train_files:
        raise ValueError("no evaluation data: pass --data FILE or set data.eval_files")
    if not files:
        from dapo_rl.data.synthetic import make_rows

        n = cfg.data.synthetic.num_eval
        return make_rows(
            n, cfg.train.seed, "test"
        ), f"synthetic held-out split (num_eval={n}, seed={cfg.train.seed})"
    rows: list[PromptRow] = []
    for f in files:
        path = Path(f).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {f}")
        got, _ = read_rows(path, cfg.data.prompt_key, cfg.data.answer_key, on_malformed=cfg.data.on_malformed)
        rows += got
    return rows, ", ".join(str(f) for f in files)


def eval_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``dapo eval``: evaluate a model directory on a data file and print/write the result.

    Settings come from the config (``--config``, default preset ``tiny``, plus dotted overrides):
    sampling from ``eval.temperature``, ``eval.top_p`` and ``eval_max_response_tokens``, prompts from
    ``data.template`` / ``use_chat_template`` / ``system_prompt``, the reward from ``reward.name``,
    k from ``eval.k``; ``--reward``, ``-k`` and ``--max-problems`` override them. ``--model`` None
    uses ``model.path`` or the embedded warm-started tiny model; ``--data`` None uses
    ``data.eval_files`` or the synthetic held-out split. Problems are taken in file order (the first
    ``--max-problems``). The table goes to stderr and the JSON to stdout (and to ``--output``).
    Missing paths raise ``FileNotFoundError`` naming the path.
    """
    from dapo_rl.config import load_config
    from dapo_rl.plugins import resolve_reward, resolve_template
    from dapo_rl.registry import RegistryError
    from dapo_rl.rewards.runner import RewardRunner
    from dapo_rl.rollout import ROLLOUT_ENGINES
    from dapo_rl.runtime import load_model_and_tokenizer, model_dir, resolve_device

    cfg = load_config(args.config, args.overrides, check_paths=False)
    k = args.k if args.k is not None else cfg.eval.k
    if k < 1:
        raise ValueError(f"-k must be >= 1, got {k}")
    max_problems = args.max_problems if args.max_problems is not None else cfg.eval.max_problems
    if max_problems is not None and max_problems < 1:
        raise ValueError(f"--max-problems must be >= 1, got {max_problems}")
    reward_name = args.reward if args.reward is not None else cfg.reward.name
    try:
        reward_fn = resolve_reward(reward_name, "--reward" if args.reward is not None else "reward.name")
        template = resolve_template(cfg.data.template)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    model_arg, source = (args.model, "--model") if args.model is not None else (cfg.model.path, "model.path")
    if model_arg is not None and not Path(model_arg).expanduser().is_dir():
        raise FileNotFoundError(f"model directory not found ({source}): {model_arg}")
    rows, data_desc = _load_eval_rows(cfg, args.data)
    rows = rows[:max_problems]
    if not rows:
        raise ValueError(f"no problems to evaluate in {data_desc}")
    # Only now (all cheap checks passed) build the warm-started tiny model if it is needed.
    path = Path(model_arg).expanduser() if model_arg is not None else model_dir(cfg)

    import torch

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    model, tokenizer = load_model_and_tokenizer(path, cfg, device)
    engine = ROLLOUT_ENGINES.get(cfg.rollout.engine)(model, tokenizer, cfg.rollout.max_batch_sequences)
    settings = {
        "model": str(path),
        "data": data_desc,
        "reward": reward_name,
        "k": k,
        "temperature": cfg.eval.temperature,
        "top_p": cfg.eval.top_p,
        "max_response_tokens": cfg.eval_max_response_tokens,
        "template": cfg.data.template,
        "use_chat_template": cfg.data.use_chat_template,
        "seed": cfg.train.seed,
    }
    with RewardRunner(
        reward_fn,
        timeout_s=cfg.reward.timeout_s,
        num_workers=cfg.reward.num_workers,
        eos_text=tokenizer.eos_token,
    ) as runner:
        result = evaluate(
            model,
            tokenizer,
            rows,
            runner,
            k=k,
            max_response_tokens=cfg.eval_max_response_tokens,
            temperature=cfg.eval.temperature,
            top_p=cfg.eval.top_p,
            template=template,
            use_chat_template=cfg.data.use_chat_template,
            system_prompt=cfg.data.system_prompt,
            seed=cfg.train.seed,
            engine=engine,
            stop_strings=cfg.rollout.stop_strings,
        )
    result = {"settings": settings, **result}
    print(format_table(result), file=sys.stderr)
    text = to_json(result)
    print(text)
    if args.output is not None:
        out = Path(args.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return result
