"""The length task's warm start: a short SFT run with the rambling teacher records its recipe and
habit, and ensure_warm_model keeps it apart from the default warm model. (The full recipe's starting
point, measured once: sampled truncation 35.1%, rambling 55.3%, sampled accuracy 30.0%, greedy
25.0% on 200 held-out problems x 8; benchmarks/README.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_rl.models.sft import SFTConfig, ensure_warm_model, read_info

pytestmark = pytest.mark.slow

SHORT = dict(steps=12, batch_size=8, hidden=32, layers=1, eval_problems=8, progress=False, threads=1)


def test_rambling_warm_start_is_cached_apart(tmp_path: Path):
    path = ensure_warm_model(cache_dir=tmp_path, ramble=0.6, **SHORT)
    info = read_info(path)
    assert info is not None and info["config"]["ramble"] == 0.6
    assert path.name == f"warm-{SFTConfig(steps=12, batch_size=8, hidden=32, layers=1, ramble=0.6).digest()}"
    assert 0.0 <= info["sampled_rambling_rate"] <= 1.0 and 0.0 <= info["sampled_truncated"] <= 1.0
    # the same recipe again is the cached model; without rambling it is another one
    assert ensure_warm_model(cache_dir=tmp_path, ramble=0.6, **SHORT) == path
    plain = ensure_warm_model(cache_dir=tmp_path, **SHORT)
    assert plain != path and read_info(plain)["config"]["ramble"] == 0.0
