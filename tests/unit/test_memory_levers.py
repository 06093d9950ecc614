"""Memory levers: gradient checkpointing changes memory, not gradients; the forward-only passes
(old log-probs, KL reference) in larger micro-batches give the training micro-batching's log-probs."""

from __future__ import annotations

from pathlib import Path

import torch

from dapo_rl.batch import (
    PolicyModule,
    TrainSample,
    collate,
    forward_only_logprobs,
    plan_micro_batches,
    sequence_logprobs,
)
from dapo_rl.config import load_config
from dapo_rl.models.loading import load_model_and_tokenizer
from tests.helpers_run import save_random_tiny_model


def _samples(n: int = 12, seed: int = 0) -> list[TrainSample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = int(torch.randint(2, 9, (1,), generator=g))
        r = int(torch.randint(1, 30, (1,), generator=g))
        ids = torch.randint(3, 20, (p + r,), generator=g).tolist()
        out.append(TrainSample(ids[:p], ids[p:], float(i % 3) - 1.0, i // 4))
    return out


def _grads(model: torch.nn.Module, samples: list[TrainSample]) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    policy = PolicyModule(model)
    for idx in plan_micro_batches([s.num_tokens for s in samples], 64):
        mb = collate(samples, idx, 0, torch.device("cpu"))
        logp, ent = policy.response_logprobs(mb, 0.9, with_entropy=True)
        adv = torch.tensor([samples[i].advantage for i in idx])[:, None]
        (-(logp * adv + 0.01 * ent) * mb.response_mask).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path: Path) -> None:
    """Recomputing activations in backward reproduces the gradients (float32: to 1e-6 relative;
    measured max difference 0 on this model, the recompute runs the same kernels)."""
    path = save_random_tiny_model(tmp_path / "model")
    samples = _samples()
    grads = {}
    for gc in (False, True):
        cfg = load_config(None, [f"model.path={path}", f"model.gradient_checkpointing={str(gc).lower()}"])
        model, _ = load_model_and_tokenizer(path, cfg, torch.device("cpu"))
        assert model.is_gradient_checkpointing == gc
        grads[gc] = _grads(model, samples)
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-6, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[False].values())


def test_forward_only_micro_batches_give_the_training_log_probs() -> None:
    """The old-log-prob / reference pass in a 4x larger token budget returns, per training
    micro-batch, the log-probs that micro-batch's own forward gives (fp32; other batch shapes round
    the matmuls differently: 1 ulp, 1.2e-6 on a log-prob of -3.4, was the largest difference)."""
    from tests.helpers_model import make_tiny_model_and_tokenizer

    model, _ = make_tiny_model_and_tokenizer(seed=3)
    samples = _samples(20, seed=1)
    lengths = [s.num_tokens for s in samples]
    train_plan = [*plan_micro_batches(lengths, 48), []]  # an empty (FSDP padding) micro-batch too
    forward_plan = plan_micro_batches(lengths, 192)
    assert len(forward_plan) < len(train_plan) - 1

    def make(ss: list[TrainSample], idx: list[int]):
        return collate(ss, idx, 0, torch.device("cpu"))

    with torch.no_grad():
        got = forward_only_logprobs(model, samples, forward_plan, train_plan, make, 0.8)
        for j, idx in enumerate(train_plan[:-1]):
            expected = sequence_logprobs(model, make(samples, idx), 0.8)[0]
            assert got[j].shape == expected.shape
            torch.testing.assert_close(got[j], expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(got[-1], torch.zeros(1, 1))
