"""`dapo train --launcher ray` on a local Ray instance: two Ray Train workers on CPU form the gloo
group, run the same training function as torchrun's processes and write one run directory.

Ray binds to the machine's interface address by default. So that nothing but loopback can be
reached, the test runs the launch in a private network namespace (``unshare --net`` with only ``lo``
up), and skips, saying why, when Ray is not installed or no namespace can be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.helpers import loopback_env
from tests.helpers_run import SMALL, save_random_tiny_model

pytestmark = pytest.mark.distributed
pytest.importorskip("ray.train.torch", reason="the ray extra is not installed: pip install 'dapo-rl[ray]'")

DRIVER = """
import sys, ray
ray.init(num_cpus=4, include_dashboard=False)
try:
    from dapo_rl.cli import main
    main(sys.argv[1:])
finally:
    ray.shutdown()
"""


def _private_network() -> list[str] | None:
    """The command prefix of a network namespace with only loopback, or None when none can be made."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return None
    prefix = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run([*prefix, ip, "link", "set", "lo", "up"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_ray_launcher_trains_on_two_workers(tmp_path: Path) -> None:
    prefix = _private_network()
    if prefix is None:
        pytest.skip("needs `unshare --net` (root, or user namespaces) so that Ray can reach loopback only")
    model = save_random_tiny_model(tmp_path / "model")
    runs = tmp_path / "runs"
    args = [
        "train", "--launcher", "ray", "--num-workers", "2", f"model.path={model}", f"logging.run_dir={runs}",
        "logging.run_name=ray", *SMALL, "train.total_steps=2", "logging.plots=false", "logging.progress=false",
    ]  # fmt: skip
    inside = [*prefix, "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-c", DRIVER]
    env = {**loopback_env(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([*inside, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])

    run = runs / "ray"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["optimizer_updates"] >= 2
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s > 0] == [1, 2, 2]  # two training steps, then the final evaluation
    final = run / "checkpoints" / "step_000002"
    assert (final / "trainer_state_rank00001.pt").is_file()  # written by the second worker
    before, after = load_file(model / "model.safetensors"), load_file(final / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
