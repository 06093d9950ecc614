"""The fixed schedule, the staleness metrics, and the refusal of more than one rank."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dapo_rl.async_rollout.schedule import needed, staleness_metrics, version_for_step
from dapo_rl.async_rollout.source import build_source
from dapo_rl.config import load_config
from dapo_rl.distributed import DistContext
from dapo_rl.errors import UsageError


def test_version_schedule_and_bound() -> None:
    assert [version_for_step(s, 0) for s in range(1, 6)] == [0, 1, 2, 3, 4]  # synchronous
    assert [version_for_step(s, 1) for s in range(1, 6)] == [0, 0, 1, 2, 3]
    assert [version_for_step(s, 2) for s in range(1, 6)] == [0, 0, 0, 1, 2]
    for eta in (0, 1, 2, 4):
        for step in range(1, 20):
            age = step - 1 - version_for_step(step, eta)
            assert 0 <= age <= eta and (age == eta or step <= eta + 1)
    # pinned: version v is used by batch v + 1 + eta; the last useful one of 6 steps at eta 2 is 3
    assert [needed(v, 2, 6, True) for v in range(7)] == [True] * 4 + [False] * 3
    assert [needed(v, 2, 6, False) for v in range(7)] == [True] * 6 + [False]
    assert needed(0, 2, 1, True) and needed(0, 2, 2, True) and not needed(1, 2, 2, True)  # short runs


def test_staleness_metrics() -> None:
    m = staleness_metrics(5, [2, 2, 3, 4], 2)
    assert (
        m["async/staleness_hist/0"] == 1
        and m["async/staleness_hist/1"] == 1
        and m["async/staleness_hist/2"] == 2
    )
    assert m["async/staleness_mean"] == pytest.approx(1.25) and m["async/staleness_max"] == 2
    empty = staleness_metrics(3, [], 1)
    assert empty["async/staleness_mean"] == 0 and empty["async/staleness_hist/1"] == 0


@pytest.mark.parametrize(
    "overrides", [["async.max_staleness=1", "rollout.importance_correction=tis"], ["async.enable=true"]]
)
def test_more_than_one_rank_is_refused(overrides: list[str]) -> None:
    cfg = load_config(None, overrides)
    trainer = SimpleNamespace(cfg=cfg, dist=DistContext(rank=0, world_size=2, group=True))
    with pytest.raises(UsageError, match=r"one process plus its rollout worker.*torchrun or Ray"):
        build_source(trainer, None, "")
