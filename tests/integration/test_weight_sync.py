"""The trainer hands the updated weights to its rollout engine once per step, after the step's
optimizer updates (RolloutEngine.sync_weights), and never asks which engine it has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from dapo_rl.config import load_config
from dapo_rl.rollout import ROLLOUT_ENGINES, HFRolloutEngine
from dapo_rl.trainer import Trainer
from tests.helpers_run import SMALL, save_random_tiny_model


class _RecordingEngine(HFRolloutEngine):
    """The hf engine, recording at each sync the optimizer updates taken and a weight checksum."""

    trainer: ClassVar[Trainer | None] = None
    syncs: ClassVar[list[tuple[int, int, float]]] = []

    def sync_weights(self) -> None:
        t = type(self).trainer
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        type(self).syncs.append((t.step, t.update.updates, checksum) if t else (0, 0, checksum))


def test_one_sync_per_step_after_the_updates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # train.num_threads: leave pytest's
    monkeypatch.setitem(ROLLOUT_ENGINES._items, "recording", _RecordingEngine)
    monkeypatch.setattr(_RecordingEngine, "syncs", [])
    model = save_random_tiny_model(tmp_path / "model")
    cfg = load_config(
        None,
        [*SMALL, f"model.path={model}", f"logging.run_dir={tmp_path}", "logging.run_name=sync",
         "rollout.engine=recording", "train.total_steps=3", "eval.every_steps=0", "logging.plots=false",
         "logging.tensorboard=false", "logging.progress=false", "dynamic_sampling.enable=false"],
    )  # fmt: skip
    trainer = Trainer(cfg, eval_rows=[])
    monkeypatch.setattr(_RecordingEngine, "trainer", trainer)
    trainer.fit()
    syncs = _RecordingEngine.syncs
    per_step = cfg.updates_per_step
    assert [(step, updates) for step, updates, _ in syncs] == [(s, s * per_step) for s in (1, 2, 3)]
    checksums = [c for _, _, c in syncs]
    assert len(set(checksums)) == 3  # each sync sees the weights its step's updates produced
    final = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
    assert checksums[-1] == pytest.approx(final, rel=0, abs=0)
    rows = [json.loads(line) for line in (tmp_path / "sync" / "metrics.jsonl").read_text().splitlines()]
    timed = [r["perf/time_weight_sync_s"] for r in rows if "perf/time_step_s" in r]
    assert len(timed) == 3 and all(t >= 0.0 for t in timed)
