"""The data-parallel helpers that need no second process: shares, the single-process context,
FSDP mode checks, and merging the ranks' evaluation results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dapo_rl.distributed import (
    DistContext,
    init_distributed,
    pad_plan,
    shard_bounds,
    wants_fsdp,
)
from dapo_rl.eval_metrics import merge_evaluations, summarize


@pytest.mark.parametrize(("n", "world"), [(0, 2), (1, 2), (6, 2), (7, 3), (5, 8)])
def test_shares_are_contiguous_balanced_and_cover_everything(n: int, world: int) -> None:
    items = list(range(n))
    shares = [DistContext(rank=r, world_size=world).shard(items) for r in range(world)]
    assert [x for share in shares for x in share] == items  # rank order gives the global order back
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [shard_bounds(n, world, r)[1] - shard_bounds(n, world, r)[0] for r in range(world)] == [
        len(s) for s in shares
    ]


def test_single_process_context_reduces_to_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed("cpu")
    assert not torch.distributed.is_initialized()
    assert (ctx.rank, ctx.world_size, ctx.group, ctx.is_main, ctx.seed_parts) == (0, 1, False, True, ())
    t = torch.tensor([1.0, 2.0])
    assert ctx.all_reduce_sum(t) is t and ctx.all_reduce_max(t) is t
    assert ctx.sum_values({"a": 1.5}) == {"a": 1.5} and ctx.max_values({}) == {}
    assert ctx.all_counts(3) == [3] and ctx.gather_objects("x") == ["x"] and not ctx.any(False)
    assert pad_plan([[0, 1], [2]], ctx) == [[0, 1], [2]]
    with ctx.main_first():
        pass
    ctx.close()


def test_fsdp_modes() -> None:
    single, group = DistContext(), DistContext(world_size=2, group=True)
    assert not wants_fsdp(single, "auto") and wants_fsdp(group, "auto") and not wants_fsdp(group, "off")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node 1"):
        wants_fsdp(single, "on")


def _result(
    correct: list[list[bool]],
    preds: list[list[str | None]],
    lengths: list[list[int]],
    trunc: list[list[bool]],
    first: int = 0,
) -> dict:
    out = summarize(correct, preds, 2, np.array(lengths), np.array(trunc))
    out["reward"] = {"timeouts": 1, "errors": 0}
    out["problems"] = [
        {"uid": f"u{first + i}", "answer": "1", "num_correct": sum(c), "correct": c, "preds": p,
         "response_tokens": n, "num_truncated": sum(t)}
        for i, (c, p, n, t) in enumerate(zip(correct, preds, lengths, trunc))
    ]  # fmt: skip
    return out


def test_merged_evaluation_equals_the_whole() -> None:
    correct = [[True, False], [False, False], [True, True]]
    preds = [["1", "2"], [None, "3"], ["1", "1"]]
    lengths = [[3, 4], [5, 9], [2, 2]]
    trunc = [[False, True], [False, False], [True, True]]
    whole = _result(correct, preds, lengths, trunc)
    parts = [
        _result(correct[:2], preds[:2], lengths[:2], trunc[:2]),
        _result(correct[2:], preds[2:], lengths[2:], trunc[2:], first=2),
    ]
    merged = merge_evaluations([*parts, None], k=2)  # a rank without rows gives None
    for key in ("avg_at_k", "pass_at_k", "maj_at_k"):
        assert merged[key]["mean"] == pytest.approx(whole[key]["mean"]), key
        assert merged[key]["ci95"] == pytest.approx(whole[key]["ci95"]), key
    for key in ("invalid_rate", "mean_response_tokens", "truncation_rate", "num_problems"):
        assert merged[key] == pytest.approx(whole[key]), key
    assert merged["problems"] == whole["problems"] and merged["reward"] == {"timeouts": 2, "errors": 0}
    assert merge_evaluations([whole], k=2) is whole
