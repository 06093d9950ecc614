"""The GPU check's CPU smoke mode runs end to end (the same code path the lent GPU runs, tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_smoke_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    fig = record["figures"]
    assert record["mode"] == "cpu-smoke" and len(fig["steps"]) == 3
    assert fig["param_dtypes"] == ["torch.float32"] and fig["optimizer_state_dtypes"] == ["torch.float32"]
    for step in fig["steps"]:
        assert step["tokens_generated"] > 0 and step["tokens_trained"] > step["tokens_generated"]
        assert step["stages_s"]["rollout"] > 0 and step["stages_s"]["update"] > 0
        assert step["update_tflops_per_s"] > 0 and step["decode_bandwidth_gb_s"] > 0
    eta1 = record["async_eta1"]  # the async.max_staleness=1 row
    assert len(eta1["steps"]) == 3 and eta1["wall_s_per_step"] > 0 and eta1["speedup_vs_sync"] > 0
    assert [s["async/staleness_mean"] for s in eta1["steps"]] == [0.0, 1.0, 1.0]
