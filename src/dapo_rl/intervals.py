"""95% intervals for evaluation estimates that stay inside [0, 1].

Every estimate is a mean over P problems of a per-problem value in [0, 1]. The normal interval
``mean ± 1.96 s / sqrt(P)`` leaves [0, 1] on small or lopsided sets (AIME: 30 problems, one solved ->
"[-0.012, 0.079]"), and collapses to a point when every problem scores alike. Instead:

- :func:`wilson_interval` (Wilson 1927) for pass@k and maj@k: the score interval of a proportion
  with n = P. For 0/1 values (maj@k) it is the textbook interval. For fractional values in [0, 1]
  (the unbiased pass@k) it is conservative, since such values have variance at most
  ``mean (1 - mean)``, the Bernoulli variance the score interval assumes. Its bounds lie in [0, 1]
  and it never has zero width, so 0/P and P/P get honest one-sided intervals.
- :func:`bootstrap_interval` for avg@k: the percentile bootstrap over problems (resample the P
  per-problem values with replacement, seeded, 2000 times). It follows the real spread of avg@k,
  which k samples per problem make much narrower than a Bernoulli one, and its bounds are means of
  values in [0, 1]. When every problem has the same value the bootstrap has no spread; the Wilson
  interval is reported instead (``"interval": "wilson"``).

:func:`estimate` returns ``{"mean", "ci95", "interval"}``; :func:`unavailable` the record of an
estimate that cannot be computed (``mean`` and ``ci95`` None and a ``"unavailable"`` reason).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the problem set for the avg@k interval."""

Method = Literal["wilson", "bootstrap"]


def wilson_interval(mean: float, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval ``[lo, hi]`` of a proportion ``mean`` observed over ``n`` trials.

    ``(m + z²/2n ± z sqrt(m(1-m)/n + z²/4n²)) / (1 + z²/n)``; always within [0, 1], with lo = 0
    exactly when m = 0 and hi = 1 exactly when m = 1. Needs ``n >= 1`` and ``0 <= mean <= 1``.
    """
    if n < 1:
        raise ValueError(f"the Wilson interval needs n >= 1 trials, got {n}")
    if not 0.0 <= mean <= 1.0:
        raise ValueError(f"the Wilson interval needs a proportion in [0, 1], got {mean}")
    z2n = z * z / n
    centre = (mean + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(mean * (1 - mean) / n + z2n / (4 * n)) / (1 + z2n)
    lo = 0.0 if mean == 0.0 else max(0.0, centre - half)
    hi = 1.0 if mean == 1.0 else min(1.0, centre + half)
    return [lo, hi]


def bootstrap_interval(
    values: np.ndarray | Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float]:
    """Percentile bootstrap ``[lo, hi]`` (2.5% and 97.5% quantiles) of the mean of ``values``.

    The resampled means are drawn with a seeded generator, so the interval of the same values is
    always the same. Its bounds lie between ``min(values)`` and ``max(values)``.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"the bootstrap needs a non-empty 1-d array of values, got shape {arr.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // arr.size)  # bounded memory for large problem sets
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, arr.size, size=(stop - start, arr.size))
        means[start:stop] = arr[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [float(lo), float(hi)]


def estimate(values: np.ndarray | Sequence[float], method: Method) -> dict[str, Any]:
    """``{"mean", "ci95", "interval"}`` of per-problem values in [0, 1] (see the module docstring).

    With no values the mean is None; with fewer than two the interval is None.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"per-problem values must lie in [0, 1], got min {arr.min()}, max {arr.max()}")
    if arr.size == 0:
        return {"mean": None, "ci95": None, "interval": method}
    mean = float(arr.mean())
    if arr.size < 2:
        return {"mean": mean, "ci95": None, "interval": method}
    if method == "bootstrap" and arr.min() < arr.max():
        return {"mean": mean, "ci95": bootstrap_interval(arr), "interval": "bootstrap"}
    if method not in ("wilson", "bootstrap"):
        raise ValueError(f"unknown interval method {method!r}; use 'wilson' or 'bootstrap'")
    return {
        "mean": mean,
        "ci95": wilson_interval(min(max(mean, 0.0), 1.0), int(arr.size)),
        "interval": "wilson",
    }


def unavailable(reason: str) -> dict[str, Any]:
    """The record of an estimate that cannot be computed, with the reason a reader sees."""
    return {"mean": None, "ci95": None, "unavailable": reason}
