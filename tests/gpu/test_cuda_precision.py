"""Mixed precision on a CUDA device (run by benchmarks/gpu_check.py on a lent GPU; skipped here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dapo_rl.batch import PolicyModule, TrainSample, collate
from dapo_rl.config import load_config
from dapo_rl.models.loading import load_model_and_tokenizer
from dapo_rl.optim import build_optimizer
from dapo_rl.rollout.base import SamplingParams
from dapo_rl.rollout.hf_engine import HFRolloutEngine
from tests.helpers_run import save_random_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _setup(tmp_path: Path):
    path = save_random_tiny_model(tmp_path / "model")
    cfg = load_config(
        None, [f"model.path={path}", "model.dtype=bfloat16", "optim.lr=1e-6", "optim.weight_decay=0"]
    )
    model, tok = load_model_and_tokenizer(path, cfg, torch.device("cuda"))
    g = torch.Generator().manual_seed(0)
    samples = [
        TrainSample(torch.randint(3, 20, (6,), generator=g).tolist(), torch.randint(3, 20, (n,), generator=g).tolist(), 1.0 - i, 0)
        for i, n in enumerate((5, 9))
    ]  # fmt: skip
    return cfg, model, tok, collate(samples, [0, 1], 0, torch.device("cuda"))


def test_bf16_autocast_update_moves_float32_master_weights(tmp_path: Path) -> None:
    cfg, model, _, mb = _setup(tmp_path)
    policy = PolicyModule(model, torch.bfloat16)
    optimizer, _ = build_optimizer(policy, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    logp, ent = policy.response_logprobs(mb, 1.0, with_entropy=True)
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
    (-(logp * torch.tensor([[1.0], [-1.0]], device="cuda")) * mb.response_mask).sum().backward()
    optimizer.step()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before))
    assert changed / sum(b.numel() for b in before) > 0.99
    states = [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    assert all(t.dtype == torch.float32 for t in states)


def test_bf16_logprobs_agree_with_fp32(tmp_path: Path) -> None:
    _, model, _, mb = _setup(tmp_path)
    with torch.no_grad():
        a = PolicyModule(model).response_logprobs(mb, 1.0)[0]
        b = PolicyModule(model, torch.bfloat16).response_logprobs(mb, 1.0)[0]
    assert not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05


def test_hf_engine_samples_under_bf16_autocast(tmp_path: Path) -> None:
    _, model, tok, _ = _setup(tmp_path)
    engine = HFRolloutEngine(PolicyModule(model, torch.bfloat16), tok, 64)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=0, eos_token_ids=[tok.eos_token_id])
    out = engine.generate([[5, 6, 7], [8, 9]], 4, params)
    again = engine.generate([[5, 6, 7], [8, 9]], 4, params)
    assert [[r.token_ids for r in g] for g in out] == [[r.token_ids for r in g] for g in again]
    assert all(r.length > 0 for g in out for r in g)
