"""Rollout under FSDP2: with the parameters gathered, each rank decodes its own prompts for its own
number of steps (no collective inside the loop) and samples exactly what the unsharded model
samples; afterwards the parameters are sharded again and training forwards still work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.distributed.helpers import run_ranks

pytestmark = pytest.mark.distributed


def rollout_on_rank(out_dir: str) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    from dapo_rl.config import DistributedConfig
    from dapo_rl.distributed import gathered, init_distributed, wrap_policy
    from dapo_rl.rollout.base import SamplingParams
    from dapo_rl.rollout.hf_engine import HFRolloutEngine
    from tests.helpers_model import make_tiny_model_and_tokenizer

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    model, tok = make_tiny_model_and_tokenizer(seed=0)
    plain = copy.deepcopy(model)
    policy = wrap_policy(model, ctx, DistributedConfig(fsdp="auto"))
    assert isinstance(next(policy.parameters()), DTensor)
    # rank 1 decodes three times as many prompts for many more steps than rank 0
    prompts = [[1, 5 + i, 6, 7] for i in range(1 + 2 * ctx.rank)]
    params = SamplingParams(max_new_tokens=4 + 20 * ctx.rank, seed=ctx.rank, eos_token_ids=[2])
    engine = HFRolloutEngine(policy, tok)
    assert engine.decode_path()[0] == "hf"  # sharded parameters: only the transformers forward gathers them
    with gathered(policy):
        path = engine.decode_path()
        sharded = engine.generate(prompts, 3, params)
    reference = HFRolloutEngine(plain, tok).generate(prompts, 3, params)
    assert isinstance(next(policy.parameters()), DTensor)  # sharded again
    policy.module.train()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    policy(input_ids=ids).logits.float().pow(2).mean().backward()  # the training path still runs
    result = {
        "path": path,
        "same": [[r.token_ids for r in g] for g in sharded] == [[r.token_ids for r in g] for g in reference],
        "lengths": [r.length for g in sharded for r in g],
    }
    Path(out_dir, f"rank{ctx.rank}.json").write_text(json.dumps(result))
    ctx.close()


def test_rollout_under_fsdp_matches_the_unsharded_model(tmp_path: Path) -> None:
    run_ranks(rollout_on_rank, 2, str(tmp_path))
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["same"] for r in results)
    assert all(r["path"] == ["lean", None] for r in results)  # the lean decode reads the gathered weights
    assert max(results[1]["lengths"]) > max(results[0]["lengths"])  # the decode loops really differed
