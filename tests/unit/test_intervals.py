"""Evaluation intervals stay inside [0, 1], with hand-checked Wilson values and a seeded bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from dapo_rl.intervals import Z95, bootstrap_interval, estimate, unavailable, wilson_interval


def test_wilson_textbook_values() -> None:
    # 5 of 10: the tabulated Wilson interval is [0.2366, 0.7634].
    lo, hi = wilson_interval(0.5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    # 0 of n and n of n: closed forms z²/(n + z²) away from the edge.
    for n in (1, 30, 500):
        edge = Z95**2 / (n + Z95**2)
        assert wilson_interval(0.0, n) == pytest.approx([0.0, edge], abs=1e-12)
        assert wilson_interval(1.0, n) == pytest.approx([1.0 - edge, 1.0], abs=1e-12)


def test_aime_size_sets_stay_in_range() -> None:
    # AIME: 30 problems, one solved. The old normal interval was [-0.031, 0.098].
    values = np.zeros(30)
    values[0] = 1.0
    for method in ("wilson", "bootstrap"):
        out = estimate(values, method)
        lo, hi = out["ci95"]
        assert 0.0 <= lo <= out["mean"] <= hi <= 1.0, (method, out)
    wil = estimate(values, "wilson")["ci95"]
    assert wil == pytest.approx([0.005909, 0.166704], abs=1e-5)  # Wilson for 1/30, by hand


@pytest.mark.parametrize("k", [1, 4, 32])
@pytest.mark.parametrize("num_problems", [2, 30, 500])
def test_zero_of_k_and_k_of_k(k: int, num_problems: int) -> None:
    for value in (0.0, 1.0):
        for method in ("wilson", "bootstrap"):
            out = estimate(np.full(num_problems, value), method)
            lo, hi = out["ci95"]
            assert out["mean"] == value
            assert 0.0 <= lo <= value <= hi <= 1.0
            assert hi - lo > 0.0, "an interval of all-equal problems must not collapse to a point"
            assert out["interval"] == "wilson"  # the bootstrap has no spread here


def test_random_sets_never_leave_unit_range() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        p = int(rng.integers(2, 60))
        k = int(rng.integers(1, 33))
        skill = rng.beta(0.3, 0.3, size=p)  # lopsided: many problems near 0 or 1
        values = rng.binomial(k, skill) / k
        for method in ("wilson", "bootstrap"):
            lo, hi = estimate(values, method)["ci95"]
            assert 0.0 <= lo <= values.mean() <= hi <= 1.0


def test_bootstrap_is_seeded_and_bounded_by_the_values() -> None:
    values = [0.0, 0.25, 0.5, 0.25, 1.0, 0.75]
    a, b = bootstrap_interval(values), bootstrap_interval(values)
    assert a == b
    assert min(values) <= a[0] < np.mean(values) < a[1] <= max(values)
    # Two problems 0 and 1: resampled means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4.
    assert bootstrap_interval([0.0, 1.0]) == [0.0, 1.0]


def test_small_and_bad_inputs() -> None:
    assert estimate([], "wilson") == {"mean": None, "ci95": None, "interval": "wilson"}
    assert estimate([0.4], "bootstrap") == {"mean": 0.4, "ci95": None, "interval": "bootstrap"}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate([0.5, 1.5], "wilson")
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)
    assert unavailable("why") == {"mean": None, "ci95": None, "unavailable": "why"}
