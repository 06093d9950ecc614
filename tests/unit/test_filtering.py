"""Dynamic-sampling group filter: informativeness, metrics choice, user functions, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dapo_rl.algorithm.filtering import GROUP_FILTERS, GroupView, filter_groups, select_informative_groups


def group(
    accs: list[bool], rewards: list[float] | None = None, scores: list[float] | None = None
) -> GroupView:
    n = len(accs)
    scores = scores if scores is not None else [1.0 if a else -1.0 for a in accs]
    rewards = rewards if rewards is not None else list(scores)
    return GroupView(rewards=rewards, accs=accs, scores=scores, lengths=[10] * n, texts=["x"] * n)


def test_select_from_tensor() -> None:
    metric = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5000001]])
    assert select_informative_groups(metric).tolist() == [False, True, False, True]
    as_bool = torch.tensor([[True, True], [True, False]])
    assert select_informative_groups(as_bool).tolist() == [False, True]


def test_select_from_ragged_list_with_float_noise() -> None:
    metric = [
        torch.tensor([0.1 + 0.2, 0.3], dtype=torch.float64),  # differ by 5.6e-17: NOT informative
        torch.tensor([0.0, 1e-6]),  # informative
        torch.tensor([4.0]),  # group of one: never informative
        torch.tensor([]),  # empty group
        torch.tensor([2.0, 2.0, 2.0, 3.0, 2.0]),
    ]
    assert (0.1 + 0.2) != 0.3  # the noise the tolerance is for
    assert select_informative_groups(metric).tolist() == [False, True, False, False, True]
    assert select_informative_groups([]).tolist() == []


def test_filter_on_acc_by_default() -> None:
    groups = [
        group([True, False, True]),  # mixed: kept
        group([True, True, True]),  # all correct: dropped
        group([False, False, False]),  # all wrong: dropped
        # all wrong, but the shaped reward varies through the overlong penalty: dropped on acc
        group([False, False, False], rewards=[-1.0, -1.5, -2.0]),
    ]
    keep, counts = filter_groups(groups)
    assert keep == [True, False, False, False]
    assert counts == {
        "total": 4,
        "kept": 1,
        "all_correct": 1,
        "all_wrong": 2,
        "other": 0,
        "kept_all_correct": 0,
        "kept_all_wrong": 0,
    }
    # Filtering on the shaped reward keeps the all-wrong group; the counts flag it.
    keep_r, counts_r = filter_groups(groups, metric="reward")
    assert keep_r == [True, False, False, True]
    assert counts_r["kept"] == 2 and counts_r["kept_all_wrong"] == 1 and counts_r["all_wrong"] == 1


def test_filter_on_score() -> None:
    # scores constant although acc is mixed (e.g. a verifier with partial credit): dropped, "other"
    g = group([True, False], scores=[0.5, 0.5])
    keep, counts = filter_groups([g, group([True, False])], metric="score")
    assert keep == [False, True]
    assert counts["other"] == 1 and counts["kept"] == 1


def test_user_fn_replaces_the_criterion() -> None:
    groups = [group([True, False]), group([True, True]), group([False, True, True, True])]
    keep, counts = filter_groups(groups, user_fn=lambda g: 0 < np.mean(g.accs) < 0.6)  # numpy bool ok
    assert keep == [True, False, False]
    assert counts["kept"] == 1 and counts["all_correct"] == 1 and counts["other"] == 1
    keep, _ = filter_groups(groups, user_fn=lambda g: len(g.texts) > 2)
    assert keep == [False, False, True]


def test_user_fn_must_return_bool() -> None:
    def fraction_correct(g: GroupView) -> float:
        return sum(g.accs) / len(g.accs)

    with pytest.raises(TypeError, match=r"'fraction_correct' must return a bool.*got float 0\.5 for group 0"):
        filter_groups([group([True, False])], user_fn=fraction_correct)
    with pytest.raises(TypeError, match="got int"):
        filter_groups([group([True, False])], user_fn=lambda g: 1)


def test_errors_and_registry() -> None:
    assert "std" in GROUP_FILTERS
    with pytest.raises(ValueError, match="acc, score, reward"):
        filter_groups([group([True])], metric="accuracy")
    bad = GroupView(rewards=[1.0], accs=[True, False], scores=[1.0, 0.0], lengths=[1, 2], texts=["a", "b"])
    with pytest.raises(ValueError, match="lengths differ"):
        filter_groups([bad])
    with pytest.raises(ValueError, match="no responses"):
        filter_groups([GroupView([], [], [], [], [])])
    with pytest.raises(KeyError, match="Valid names: std"):
        select_informative_groups(torch.zeros(1, 2), criterion="variance")
    assert filter_groups([]) == (
        [],
        {
            "total": 0,
            "kept": 0,
            "all_correct": 0,
            "all_wrong": 0,
            "other": 0,
            "kept_all_correct": 0,
            "kept_all_wrong": 0,
        },
    )
