"""Every metric name defined in metric_names.py is documented in docs/metrics.md, and the helpers
build the names the trainer logs."""

from __future__ import annotations

from pathlib import Path

from dapo_rl import metric_names as M

DOC = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()


def _constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(M).items()
        if name.isupper() and isinstance(value, str) and "/" in value and not name.endswith(("_PREFIX",))
    }


def test_every_constant_is_documented() -> None:
    names = _constants()
    assert len(names) > 50
    missing = sorted(v for v in names.values() if f"`{v}`" not in DOC)
    assert missing == []
    stages = [M.perf_time(s) for s in M.STAGES]
    assert [s for s in stages if f"`{s}`" not in DOC] == []
    bounds = [f(M.eval_key(e)) for e in M.EVAL_ESTIMATES for f in (M.ci95_low, M.ci95_high)]
    assert [b for b in bounds if f"`{b}`" not in DOC] == []


def test_helpers() -> None:
    assert M.perf_time("old_logprobs") == "perf/time_old_logprobs_s"
    assert M.stage_of("perf/time_old_logprobs_s") == "old_logprobs"
    assert M.stage_of(M.PERF_TIME_STEP) is None and M.stage_of(M.PERF_TOKENS_PER_S) is None
    assert M.ci95_high(M.EVAL_PASS_AT_K) == "eval/pass_at_k_ci95_high"


def test_policy_loss_keys_are_defined_names() -> None:
    import torch

    from dapo_rl.algorithm.policy_loss import POLICY_METRIC_MAXES, POLICY_METRIC_SUMS, finalize_policy_metrics

    sums = {k: torch.tensor(1.0) for k in (*POLICY_METRIC_SUMS, *POLICY_METRIC_MAXES)}
    logged = set(finalize_policy_metrics(sums))
    assert logged <= set(_constants().values()), logged - set(_constants().values())
    assert {M.LOSS_CLIP_LOW_FRAC, M.LOSS_CLIP_HIGH_FRAC} <= logged
