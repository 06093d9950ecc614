"""Two data-parallel ranks with P/2 prompts each make the same update as one process with P prompts.

Both runs see the same rollouts (a scripted engine whose responses depend on the prompt only), so
any difference comes from the distributed mechanics: sharding, global dynamic-sampling counts and
surplus rule, global mini-batches, all-reduced loss normalisers, summed gradients, padded
micro-batches, metric reductions. Checked for token-mean and group-token-mean, with several
micro-batches and two optimizer updates per step; the group-token-mean run also carries surplus
groups over, runs two epochs per step and has a KL term to an FSDP-sharded reference model; a third
run replicates the parameters (``distributed.fsdp=off``) instead of sharding them, and a fourth
recomputes activations (gradient checkpointing) under FSDP2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dapo_rl import metric_names as M
from tests.distributed.helpers import parity_reward, problem_rows, register_scripted_engine, run_ranks
from tests.helpers_run import save_random_tiny_model

pytestmark = pytest.mark.distributed

COMMON = [
    "rollout.engine=scripted",
    "batch.prompts_per_step=4",
    "batch.prompts_per_update=2",
    "batch.samples_per_prompt=4",
    "batch.micro_batch_tokens=48",
    "rollout.max_response_tokens=12",
    "overlong.buffer_tokens=4",
    "dynamic_sampling.oversample=1.5",
    "dynamic_sampling.max_rounds=3",
    "optim.lr=1e-3",
    "optim.warmup_updates=0",
    "train.total_steps=2",
    "train.num_threads=1",
    "checkpoint.every_steps=0",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress=false",
]
MODES = {
    "token-mean": ["algorithm.loss_agg_mode=token-mean"],
    "group-token-mean": [
        "algorithm.loss_agg_mode=group-token-mean",
        "dynamic_sampling.carry_over=true",
        "batch.epochs_per_step=2",
        "algorithm.kl_coef=0.1",
    ],
    # replicated parameters instead of FSDP2: gradients all-reduced (summed) by the trainer
    "token-mean-replicated": ["algorithm.loss_agg_mode=token-mean", "distributed.fsdp=off"],
    # activation checkpointing recomputes the FSDP2 layers in backward
    "token-mean-checkpointed": ["algorithm.loss_agg_mode=token-mean", "model.gradient_checkpointing=true"],
}


def train_modes(model: str, runs: str, tag: str) -> None:
    """One process of a run (of each mode, one after the other)."""
    from dapo_rl.config import load_config
    from dapo_rl.distributed import init_distributed
    from dapo_rl.trainer import Trainer

    register_scripted_engine()
    dist = init_distributed("cpu")
    for mode, extra in MODES.items():
        overrides = [
            *COMMON,
            *extra,
            f"model.path={model}",
            f"logging.run_dir={runs}",
            f"logging.run_name={tag}-{mode}",
        ]
        cfg = load_config(None, overrides)
        trainer = Trainer(cfg, reward_fn=parity_reward, train_rows=problem_rows(64), eval_rows=[], dist=dist)
        trainer.fit()
    dist.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("equivalence")
    model = save_random_tiny_model(root / "model")
    run_ranks(train_modes, 1, str(model), str(root / "runs"), "one")
    run_ranks(train_modes, 2, str(model), str(root / "runs"), "two")
    return root


def _metrics(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


@pytest.mark.parametrize("mode", list(MODES))
def test_two_ranks_make_the_single_process_update(runs: Path, mode: str) -> None:
    one, two = runs / "runs" / f"one-{mode}", runs / "runs" / f"two-{mode}"
    start = load_file(runs / "model" / "model.safetensors")
    w1 = load_file(one / "checkpoints" / "step_000002" / "model" / "model.safetensors")
    w2 = load_file(two / "checkpoints" / "step_000002" / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert any(not torch.equal(w1[k], start[k]) for k in w1), "the run did not train"
    for k in w1:
        torch.testing.assert_close(w2[k] - start[k], w1[k] - start[k], rtol=0, atol=1e-5, msg=k)
    assert (two / "checkpoints" / "step_000002" / "sharded" / ".metadata").is_file()

    m1, m2 = _metrics(one), _metrics(two)
    assert sorted(m1) == sorted(m2) == [1, 2]
    for step in (1, 2):
        a = {k: v for k, v in m1[step].items() if not k.startswith("perf/")}
        b = {k: v for k, v in m2[step].items() if not k.startswith("perf/")}
        assert a.keys() == b.keys(), (step, a.keys() ^ b.keys())
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (step, key)
    # the scripted rollouts exercise the dynamic-sampling paths being compared: filtered groups,
    # a second round, surplus (carried over in the second mode)
    assert any(m1[s]["sampling/groups_all_correct"] + m1[s]["sampling/groups_all_wrong"] for s in (1, 2))
    assert max(m1[s]["sampling/rounds"] for s in (1, 2)) >= 2
    if "dynamic_sampling.carry_over=true" in MODES[mode]:
        assert m1[1]["sampling/carried_groups"] > 0 and m1[2]["sampling/carried_age_max"] == 1
    assert m1[1]["optim/updates"] >= 2
    for step in (1, 2):  # the learning-signal ledger adds up (docs/health.md), here on 2 ranks
        r = m2[step]
        cats = [r[M.ledger_key(c)] for c in M.LEDGER_CATEGORIES]
        moved = r["perf/tokens_generated"] + r[M.LEDGER_CARRIED_IN] - r[M.LEDGER_CARRIED_OUT]
        assert sum(cats) == r[M.LEDGER_TOKENS] == moved
        assert sum(cats[M.LEDGER_CATEGORIES.index("zero_advantage") :]) == pytest.approx(
            r["perf/tokens_trained"], abs=1e-9
        )
