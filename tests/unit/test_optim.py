"""The learning-rate schedule against hand-computed values, and AdamW's scheduler following it."""

from __future__ import annotations

import pytest
import torch

from dapo_rl.config import load_config
from dapo_rl.optim import build_optimizer, lr_factor

# 6 rollout steps x (4 / 2 prompts per update) = 12 optimizer updates; 2 of warm-up, floor 0.1.
BASE = [
    "train.total_steps=6",
    "batch.prompts_per_step=4",
    "batch.prompts_per_update=2",
    "batch.epochs_per_step=1",
    "optim.warmup_updates=2",
    "optim.min_lr_ratio=0.1",
]


def _cfg(schedule: str):
    cfg = load_config("tiny", [*BASE, f"optim.schedule={schedule}"], check_paths=False)
    assert cfg.total_updates == 12
    return cfg


# Decay over the 10 updates after warm-up: frac = (u - 2) / 10, factor = 0.1 + 0.9 * shape(frac).
COSINE = {
    0: 0.5,  # warm-up: (0 + 1) / 2
    1: 1.0,  # warm-up: (1 + 1) / 2
    2: 1.0,  # frac 0: cos 0 = 1
    4: 0.1 + 0.9 * 0.5 * (1 + 0.8090169943749475),  # frac 0.2: cos(0.2 pi) = 0.80902
    7: 0.55,  # frac 0.5: shape 0.5
    9: 0.1 + 0.9 * 0.5 * (1 - 0.5877852522924731),  # frac 0.7: cos(0.7 pi) = -0.58779
    12: 0.1,  # frac 1: the floor
    30: 0.1,  # past the run's end: stays at the floor
}
LINEAR = {0: 0.5, 1: 1.0, 2: 1.0, 4: 0.82, 7: 0.55, 9: 0.37, 12: 0.1, 30: 0.1}
CONSTANT = {0: 0.5, 1: 1.0, 2: 1.0, 7: 1.0, 30: 1.0}


@pytest.mark.parametrize(
    ("schedule", "expected"), [("cosine", COSINE), ("linear", LINEAR), ("constant", CONSTANT)]
)
def test_lr_factor_hand_values(schedule: str, expected: dict[int, float]) -> None:
    cfg = _cfg(schedule)
    for update, factor in expected.items():
        assert lr_factor(update, cfg) == pytest.approx(factor, abs=1e-12), (schedule, update)


def test_no_warmup_starts_at_full_rate() -> None:
    cfg = load_config("tiny", [*BASE, "optim.schedule=linear", "optim.warmup_updates=0"], check_paths=False)
    assert lr_factor(0, cfg) == 1.0
    assert lr_factor(6, cfg) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-12)  # frac 6 / 12


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_scheduler_follows_lr_factor_per_update(schedule: str) -> None:
    cfg = _cfg(schedule)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, cfg)
    lr = cfg.optim.lr
    seen = [scheduler.get_last_lr()[0]]
    for _ in range(14):
        optimizer.step()
        scheduler.step()
        seen.append(scheduler.get_last_lr()[0])
    expected = [
        lr * (COSINE if schedule == "cosine" else LINEAR).get(u, lr_factor(u, cfg)) for u in range(15)
    ]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[7] == pytest.approx(lr * 0.55, rel=1e-12)


def test_optimizer_refuses_low_precision_master_weights() -> None:
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        build_optimizer(model, _cfg("cosine"))
