"""benchmarks/ablation.py end to end on a tiny budget (--smoke): a random tiny model, the length
task's settings, three arms (GRPO, DAPO, DAPO without soft overlong punishment), two seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_model import make_tiny_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ablation_smoke_writes_table_json_and_plots(tmp_path: Path) -> None:
    model, tokenizer = make_tiny_model_and_tokenizer()
    model.save_pretrained(str(tmp_path / "model"))
    tokenizer.save_pretrained(str(tmp_path / "model"))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--smoke", "--task", "length",
           "--arms", "grpo", "dapo", "no-soft", "--seeds", "0", "1", "--out", str(out),
           f"model.path={tmp_path / 'model'}", "train.num_threads=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "ablation_length.json").read_text())
    figures = record["figures"]
    assert [a["arm"] for a in figures["arms"]] == ["grpo", "dapo", "no-soft"]
    assert record["config"]["steps"] == 2
    runs = figures["runs"]
    assert len(runs) == 6 and all(r["steps"] == 2 and r["tokens"] > 0 for r in runs)
    assert all(len(r["curves"]["entropy"]) == 2 for r in runs)
    # every arm of a seed starts from the same warm model, measured once
    assert len({json.dumps(r["before"]["acc"]) for r in runs if r["seed"] == 0}) == 1
    # the comparisons among these arms: DAPO vs DAPO without soft punishment, DAPO vs GRPO
    effect, overall = figures["effects"]
    assert (effect["piece"], effect["with"], effect["without"]) == ("soft", "dapo", "no-soft")
    assert (overall["piece"], overall["with"], overall["without"]) == ("all", "dapo", "grpo")
    by = {(r["arm"], r["seed"]): r for r in runs}
    per_seed = [by["dapo", s]["after"]["acc"] - by["no-soft", s]["after"]["acc"] for s in (0, 1)]
    assert effect["acc"]["per_seed"] == pytest.approx(per_seed)
    assert effect["acc"]["diff"] == pytest.approx(sum(per_seed) / 2)
    table = (out / "ablation_length.md").read_text()
    assert "| GRPO |" in table and "| DAPO - soft overlong punishment |" in table
    assert "soft overlong punishment (DAPO vs DAPO - soft overlong punishment)" in table
    assert (out / "ablation_length.png").stat().st_size > 0
    assert (out / "ablation_length_effects.png").stat().st_size > 0
    assert "| GRPO |" in proc.stdout


@pytest.mark.slow
def test_ablation_equal_wall_clock_stops_each_run_at_its_training_seconds(tmp_path: Path) -> None:
    """--seconds S: every run stops after the first step at which its training time (evaluations left
    out) reaches S, well before the step cap; the budget is in the JSON, the table and the cache."""
    model, tokenizer = make_tiny_model_and_tokenizer()
    model.save_pretrained(str(tmp_path / "model"))
    tokenizer.save_pretrained(str(tmp_path / "model"))
    out, seconds, cap = tmp_path / "out", 1.0, 40
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--smoke", "--task", "length",
           "--arms", "dapo", "grpo", "--seeds", "0", "1", "--seconds", str(seconds), "--steps", str(cap),
           "--cache", str(tmp_path / "cache"), "--out", str(out), "--name", "wallclock",
           f"model.path={tmp_path / 'model'}", "train.num_threads=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "wallclock.json").read_text())
    config = record["config"]
    assert (config["budget_seconds"], config["budget_tokens"], config["steps"]) == (seconds, None, cap)
    runs = record["figures"]["runs"]
    assert len(runs) == 4
    for r in runs:
        step_s = r["curves"]["seconds"]
        assert 1 <= r["steps"] < cap and len(step_s) == r["steps"]
        assert r["train_seconds"] >= seconds  # it ran until S ...
        assert sum(step_s[:-1]) < seconds  # ... and no step past the first that reached it
        if r["arm"] == "dapo":  # the first arm of a seed also evaluates the warm start, before training
            # the evaluations are not training time: outside the steps, training time is bookkeeping
            # (~1 ms a step), a small part of the two evaluations' time (each ~50-100 ms here)
            assert r["train_seconds"] - sum(step_s) < 0.5 * (r["seconds"] - r["train_seconds"])
    table = (out / "wallclock.md").read_text()
    assert "Budget: 1 training s, at most 40 steps." in table
    by_arm = {a["arm"]: a for a in record["figures"]["arms"]}
    for arm, label in (("grpo", "GRPO"), ("dapo", "DAPO")):
        steps = sorted(r["steps"] for r in runs if r["arm"] == arm)
        assert (by_arm[arm]["steps_min"], by_arm[arm]["steps_max"]) == (steps[0], steps[-1])
        cell = f"{sum(steps) / 2:.0f}" + ("" if steps[0] == steps[-1] else f" ({steps[0]}-{steps[1]})")
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert row.split(" | ")[7] == cell  # the steps column: the steps each arm reached
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"length_{arm}_s{s}_1trainings,atmost40steps.json" for arm in ("dapo", "grpo") for s in (0, 1)
    ]
    # --budget and --seconds are two different budgets: asking for both is an error
    both = subprocess.run([*cmd, "--budget", "1000"], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
