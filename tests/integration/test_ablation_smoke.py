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
