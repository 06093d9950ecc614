"""Evaluation metrics against hand-computed values and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dapo_rl.eval_metrics import (
    avg_at_k,
    maj_at_k,
    majority_vote,
    pass_at_k,
    pass_at_k_per_problem,
    scalar_metrics,
    summarize,
)
from dapo_rl.intervals import wilson_interval

# ---- pass@k ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # = c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2) = 0.7
        (5, 0, 3, 0.0),  # nothing correct
        (5, 3, 3, 1.0),  # n - c = 2 < k: every k-subset holds a correct one
        (5, 5, 1, 1.0),
        (10, 1, 5, 0.5),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
        (4, 1, 4, 1.0),
        (32, 4, 8, 1 - math.comb(28, 8) / math.comb(32, 8)),
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_subset_enumeration() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_finite_and_exact() -> None:
    # C(1000, 500) overflows floats; the product form must not.
    value = pass_at_k(1000, 3, 500)
    assert value == pytest.approx(1 - (500 * 499 * 498) / (1000 * 999 * 998), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 1, 0), (3, 4, 1), (3, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_per_problem_uses_all_samples() -> None:
    correct = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(pass_at_k_per_problem(correct, 2), [0.7, 0.0, 1.0])
    with pytest.raises(ValueError):
        pass_at_k_per_problem(correct, 6)


# ---- avg@k -------------------------------------------------------------------------------------


def test_avg_at_k_uses_first_k_samples() -> None:
    correct = np.array([[1, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(avg_at_k(correct, 4), [0.75, 0.25])
    np.testing.assert_allclose(avg_at_k(correct, 2), [0.5, 0.0])


# ---- maj@k -------------------------------------------------------------------------------------


def test_majority_vote_ties_and_none() -> None:
    assert majority_vote(["3", "4", "4", "3"]) == "3"  # tie: first occurrence wins
    assert majority_vote(["4", "3", "3", "4"]) == "4"
    assert majority_vote([None, None, "7", "8", "8"]) == "8"
    assert majority_vote([None, None, None, "5"]) == "5"  # None never votes
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_maj_at_k_cases() -> None:
    preds = [
        ["5", "5", "6", None],  # majority 5 (correct)
        ["6", "5", "6", "5"],  # tie 6 vs 5 -> 6 occurs first (wrong)
        [None, None, None, "5"],  # only one answer: 5 (correct)
        [None, None, None, None],  # no answer at all: wrong
        ["7", "5", "7", "5"],  # k=2 below: tie 7 vs 5 -> 7 (wrong); k=4: tie -> 7 (wrong)
        ["1", "2", "2", "9"],  # 2 wins (correct)
    ]
    correct = np.array(
        [
            [1, 1, 0, 0],
            [0, 1, 0, 1],
            [0, 0, 0, 1],
            [0, 0, 0, 0],
            [0, 1, 0, 1],
            [0, 1, 1, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(maj_at_k(preds, correct, 4), [1, 0, 1, 0, 0, 1])
    # With k = 1 only the first sample votes.
    np.testing.assert_array_equal(maj_at_k(preds, correct, 1), [1, 0, 0, 0, 0, 0])
    # With k = 3 problem 2 has no answer among its first three samples.
    np.testing.assert_array_equal(maj_at_k(preds, correct, 3), [1, 0, 0, 0, 0, 1])


def test_maj_at_k_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        maj_at_k([["1", "2"]], np.zeros((2, 2), dtype=bool), 2)
    with pytest.raises(ValueError):
        maj_at_k([["1"], ["2"]], np.zeros((2, 2), dtype=bool), 2)


# ---- intervals and summary ---------------------------------------------------------------------


def test_summarize_hand_example() -> None:
    correct = np.array([[1, 0], [1, 1], [0, 0]], dtype=bool)
    preds = [["3", "4"], ["5", "5"], [None, "9"]]
    lengths = np.array([[10, 20], [30, 40], [50, 60]])
    truncated = np.array([[0, 0], [0, 1], [1, 1]], dtype=bool)
    out = summarize(correct, preds, 2, lengths=lengths, truncated=truncated)
    assert out["num_problems"] == 3
    assert out["num_samples"] == 2
    assert out["k"] == 2
    # avg@2 per problem: 0.5, 1, 0 -> mean 0.5. Bootstrap over 3 problems: a resample is all 0 or
    # all 1 with probability 1/27 > 2.5% each, so the percentile interval is [0, 1] (the normal one
    # was [-0.066, 1.066]).
    assert out["avg_at_k"]["mean"] == pytest.approx(0.5)
    assert out["avg_at_k"]["ci95"] == [0.0, 1.0]
    assert out["avg_at_k"]["interval"] == "bootstrap"
    # pass@2 per problem: 1, 1, 0: Wilson for 2 of 3.
    assert out["pass_at_k"]["mean"] == pytest.approx(2 / 3)
    assert out["pass_at_k"]["ci95"] == pytest.approx(wilson_interval(2 / 3, 3))
    # maj@2: tie 3/4 -> 3 (correct); 5 (correct); 9 (wrong).
    assert out["maj_at_k"]["mean"] == pytest.approx(2 / 3)
    assert out["invalid_rate"] == pytest.approx(1 / 6)
    assert out["mean_response_tokens"] == pytest.approx(35.0)
    assert out["truncation_rate"] == pytest.approx(0.5)


def test_summarize_invalid_rate_and_optional_fields() -> None:
    correct = np.zeros((2, 4), dtype=bool)
    preds = [[None, None, "1", None], [None, "2", "3", "4"]]
    out = summarize(correct, preds, 4)
    assert out["invalid_rate"] == pytest.approx(4 / 8)
    assert out["mean_response_tokens"] is None
    assert out["truncation_rate"] is None
    assert out["maj_at_k"]["mean"] == 0.0


def test_reward_without_extracted_answers_makes_maj_unavailable() -> None:
    # A reward returning a bare float: every pred is None, yet avg@k is 0.5. maj@k was 0.0 and the
    # invalid rate 1.0; both are unavailable instead.
    correct = np.array([[1, 0], [1, 0]], dtype=bool)
    out = summarize(correct, [[None, None], [None, None]], 2, answers_extracted=False)
    assert out["avg_at_k"]["mean"] == 0.5
    assert out["maj_at_k"]["mean"] is None and "extracts no answer" in out["maj_at_k"]["unavailable"]
    assert out["invalid_rate"] is None
    flat = scalar_metrics({**out, "reward": {"timeouts": 3, "errors": 0}})
    assert "maj_at_k" not in flat and "invalid_rate" not in flat
    assert flat["avg_at_k"] == 0.5 and flat["timeouts"] == 3 and flat["errors"] == 0


def test_summarize_k_below_n_and_bad_k() -> None:
    correct = np.array([[0, 1, 1, 1]], dtype=bool)
    out = summarize(correct, [["a", "b", "b", "b"]], 1)
    assert out["avg_at_k"]["mean"] == 0.0  # first sample only
    assert out["pass_at_k"]["mean"] == pytest.approx(0.75)  # unbiased over all 4 samples
    with pytest.raises(ValueError):
        summarize(correct, [["a", "b", "b", "b"]], 5)
    with pytest.raises(ValueError):
        summarize(correct, [["a", "b"]], 1)
