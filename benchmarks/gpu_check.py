"""One GPU check, sized for a lent device machine (an H200, 15 minutes of device time): under 8
minutes, one JSON file.

1. The ``gpu``-marked tests (``pytest -m gpu``).
2. Three DAPO steps of a randomly initialised Qwen2.5-0.5B-shaped model (24 layers, hidden 896,
   14 / 2 heads, MLP 4,864, vocabulary 151,936, tied embeddings; config built here, nothing
   downloaded) with a word-level tokenizer over the same vocabulary, in bfloat16 mixed precision
   (float32 master weights and AdamW states) with the hf rollout engine: 64 prompts x 8 samples x
   up to 1,024 response tokens, one optimizer update per step. A random model almost never emits
   EOS, so responses run to the cap; the reward is a hash of the text (nonzero advantages).
3. The same three steps with ``async.max_staleness=1`` (the rollout worker process holds its own
   copy of the weights on the same GPU and generates step s+1's batch while step s trains): wall
   seconds per step against the synchronous run's, the trainer's and the worker's idle ratios.
4. Figures: per-stage seconds, generated tokens/s, peak GPU memory, the update's MFU
   (6 x N x tokens trained / update seconds, over the bf16 dense peak: the spec sheet's and a
   measured 8192^3 matmul's), and the decode's memory-bandwidth use (bytes a decode step must read,
   bf16 weights + the KV cache, over the measured time per step and the HBM peak; prefill and
   sampling are in that time, so it is a lower bound).

On the device machine (its python3 holds torch, transformers, peft, tokenizers, safetensors, pyyaml,
tqdm, pyarrow, matplotlib; pydantic and math-verify travel as wheels, see docs/real-models.md):

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

Here, on a CPU, in seconds (tiny sizes, same code path; CI runs it, tests/unit/test_gpu_check.py):

    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

SPEC_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}  # dense, SXM spec sheets
SPEC_HBM_BYTES_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.04e12}

SIZES = {
    "gpu": {
        "model": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2),
        "prompts": 64, "samples": 8, "max_response_tokens": 1024, "prompt_words": 64,
        "micro_batch_tokens": 16384,
    },
    "cpu-smoke": {
        "model": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2),
        "prompts": 4, "samples": 2, "max_response_tokens": 16, "prompt_words": 8,
        "micro_batch_tokens": 256,
    },
}  # fmt: skip
STEPS = 3


def hash_reward(response: str, ground_truth: str, **extra: Any) -> Any:
    """A reward in [0, 1) from the text's hash: different responses, different rewards."""
    from dapo_rl.rewards.base import RewardResult

    score = (zlib.crc32(response.encode()) % 1000) / 1000
    return RewardResult(score, score > 0.5, "")


def build_model_dir(path: Path, shape: dict[str, int]) -> Path:
    """A randomly initialised Qwen2 of ``shape`` and a byte-level BPE tokenizer without merges over
    its vocabulary (the 256 byte symbols, then filler tokens ``w<i>``; transformers loads a
    qwen2 directory's tokenizer as Qwen2Tokenizer, which reads this one alike), saved to ``path``
    in float32."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dapo_rl.models.tiny import SPECIAL_TOKENS, fast_tokenizer

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab |= {f"w{i}": i for i in range(len(vocab), shape["vocab_size"])}
    core = Tokenizer(models.BPE(vocab, [], unk_token=SPECIAL_TOKENS[3]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    fast_tokenizer(core).save_pretrained(path)
    config = Qwen2Config(
        **shape, max_position_embeddings=4096, rope_theta=1e6, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def run_gpu_tests(timeout_s: float) -> dict[str, Any]:
    """``pytest -m gpu``: its summary line and return code."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"timed out after {timeout_s} s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return {
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else proc.stderr[-500:],
        "failures": failures[:20],
        "seconds": round(time.perf_counter() - t, 1),
    }


class _CountingUpdate:
    """The trainer's update, counting the tokens (prompt + response) it trains on."""

    def __init__(self, update: Any) -> None:
        self.inner, self.tokens = update, []

    def __call__(self, samples: list, *args: Any) -> dict[str, float]:
        self.tokens.append(sum(s.num_tokens for s in samples))
        return self.inner(samples, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def measured_matmul_flops(device: Any) -> float | None:
    """bf16 8192^3 matmul rate (mean of 10 after 3 warm-ups); None off CUDA."""
    import torch

    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - t)


ASYNC_ETA1 = ["async.max_staleness=1", "rollout.importance_correction=tis"]


def dapo_steps(
    size: dict[str, Any], device_name: str, work: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    import torch

    from dapo_rl.config import load_config
    from dapo_rl.trainer import Trainer

    model_dir = build_model_dir(work / "model", size["model"])
    rollout_rows = size["prompts"] * size["samples"]
    cfg = load_config(
        None,
        [
            f"model.path={model_dir}", "model.dtype=bfloat16", f"train.device={device_name}",
            f"train.total_steps={STEPS}", f"logging.run_dir={work / 'runs'}", "logging.run_name=gpu_check",
            "logging.tensorboard=false", "logging.plots=false", "logging.progress=false",
            "logging.generations_per_step=0", "checkpoint.every_steps=0", "checkpoint.save_final=false",
            f"batch.prompts_per_step={size['prompts']}", f"batch.prompts_per_update={size['prompts']}",
            f"batch.samples_per_prompt={size['samples']}", f"batch.micro_batch_tokens={size['micro_batch_tokens']}",
            f"rollout.max_response_tokens={size['max_response_tokens']}", f"rollout.max_batch_sequences={rollout_rows}",
            "dynamic_sampling.enable=false", "overlong.enable=false", "optim.lr=1e-6", "optim.warmup_updates=0",
            "eval.every_steps=0", "data.template=plain", *extra,
        ],
    )  # fmt: skip
    words = size["prompt_words"]
    rows = [
        {"prompt": "".join(chr(97 + (7 * i + 13 * j) % 26) for j in range(words)), "answer": "0"}
        for i in range(size["prompts"] * STEPS)
    ]
    trainer = Trainer(cfg, reward_fn=hash_reward, train_rows=rows, eval_rows=[])
    counter = _CountingUpdate(trainer.update)
    trainer.update = counter
    device = trainer.device
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = []
    for _ in range(STEPS):
        t = time.perf_counter()
        metrics = trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps.append({"wall_s": time.perf_counter() - t, "metrics": metrics})
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    trainer.logger.close()
    trainer.reward.close()
    trainer.source.close()  # the rollout worker, with async
    return {
        "params": n_params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": steps,
        "tokens_trained": counter.tokens,
        "peak_gpu_memory_bytes": peak,
        "states_dtypes": sorted(
            {str(t.dtype) for s in trainer.optimizer.state.values() for t in s.values() if t.dim() > 0}
        ),
        "param_dtypes": sorted({str(p.dtype) for p in trainer.model.parameters()}),
    }


def figures(run: dict[str, Any], size: dict[str, Any], matmul_flops: float | None) -> dict[str, Any]:
    """Per-step stage times, rates, MFU and decode bandwidth (steps after the first, which warms up)."""
    shape = size["model"]
    gpu = next((k for k in SPEC_BF16_FLOPS if k in run["device"]), None)
    spec_flops, spec_bw = SPEC_BF16_FLOPS.get(gpu), SPEC_HBM_BYTES_S.get(gpu)
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    kv_per_token = shape["num_hidden_layers"] * 2 * shape["num_key_value_heads"] * head_dim * 2  # bf16
    rows = size["prompts"] * size["samples"]
    per_step = []
    for step, tokens in zip(run["steps"], run["tokens_trained"]):
        m = step["metrics"]
        stages = {k[len("perf/time_") : -2]: v for k, v in m.items() if k.startswith("perf/time_")}
        update_s = stages.get("update") or float("nan")
        flops = 6 * run["params"] * tokens
        resp_max = m.get("rollout/response_len_max", size["max_response_tokens"])
        decode_s = stages.get("rollout", float("nan")) / max(resp_max, 1)
        prompt = size["prompt_words"]
        bytes_per_decode_step = 2 * run["params"] + rows * (prompt + resp_max / 2) * kv_per_token
        bandwidth = bytes_per_decode_step / decode_s
        per_step.append(
            {
                "wall_s": round(step["wall_s"], 3),
                "stages_s": {k: round(v, 3) for k, v in stages.items()},
                "tokens_generated": m.get("perf/tokens_generated"),
                "generated_tokens_per_s": m.get("perf/tokens_generated", 0) / max(stages.get("rollout", 1e-9), 1e-9),
                "tokens_trained": tokens,
                "update_tflops_per_s": flops / update_s / 1e12,
                "update_mfu_spec": flops / update_s / spec_flops if spec_flops else None,
                "update_mfu_measured_peak": flops / update_s / matmul_flops if matmul_flops else None,
                "decode_step_ms": decode_s * 1e3,
                "decode_bytes_per_step": bytes_per_decode_step,
                "decode_bandwidth_gb_s": bandwidth / 1e9,
                "decode_bandwidth_use_spec": bandwidth / spec_bw if spec_bw else None,
                "reward_mean": m.get("reward/mean"),
            }
        )  # fmt: skip
    return {
        "device": run["device"],
        "params": run["params"],
        "param_dtypes": run["param_dtypes"],
        "optimizer_state_dtypes": run["states_dtypes"],
        "peak_gpu_memory_gib": run["peak_gpu_memory_bytes"] / 2**30 if run["peak_gpu_memory_bytes"] else None,
        "bf16_peak_spec_tflops": spec_flops / 1e12 if spec_flops else None,
        "bf16_matmul_measured_tflops": matmul_flops / 1e12 if matmul_flops else None,
        "hbm_peak_spec_tb_s": spec_bw / 1e12 if spec_bw else None,
        "steps": per_step,
    }


def async_figures(run: dict[str, Any], sync: dict[str, Any]) -> dict[str, Any]:
    """The eta = 1 row: wall seconds per step (after the first) against the synchronous run's, and
    where the time went (the trainer waiting for its batch, the worker waiting for weights)."""
    steps = run["steps"][1:]
    wall = sum(s["wall_s"] for s in steps) / len(steps)
    sync_wall = sum(s["wall_s"] for s in sync["steps"][1:]) / max(len(sync["steps"]) - 1, 1)
    keys = (
        "async/trainer_wait_s",
        "async/idle_ratio_trainer",
        "async/idle_ratio_rollout",
        "async/staleness_mean",
    )
    return {
        "wall_s_per_step": wall,
        "sync_wall_s_per_step": sync_wall,
        "speedup_vs_sync": sync_wall / wall,
        "steps": [
            {k: s["metrics"].get(k) for k in (*keys, "perf/time_rollout_s", "perf/time_update_s")}
            | {"wall_s": round(s["wall_s"], 3)}
            for s in run["steps"]
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (seconds)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    ap.add_argument("--tests-timeout", type=float, default=180.0)
    ap.add_argument("--skip-async", action="store_true", help="do not run the async.max_staleness=1 row")
    args = ap.parse_args(argv)
    import torch
    from _common import commit, machine

    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --cpu-smoke")
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "benchmark": "gpu_check",
        "mode": mode,
        "commit": commit(),
        "machine": machine(),
    }
    record["config"] = {**SIZES[mode], "steps": STEPS, "dtype": "bfloat16 compute, float32 master weights"}
    if not (args.skip_tests or args.cpu_smoke):
        record["gpu_tests"] = run_gpu_tests(args.tests_timeout)
    device = "cuda" if mode == "gpu" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        run = dapo_steps(SIZES[mode], device, Path(tmp))
    matmul = measured_matmul_flops(torch.device(device))
    record["figures"] = figures(run, SIZES[mode], matmul)
    if not args.skip_async:  # the eta = 1 row: the rollout worker (its own weights copy) overlaps training
        with tempfile.TemporaryDirectory() as tmp:
            run = dapo_steps(SIZES[mode], device, Path(tmp), tuple(ASYNC_ETA1))
        record["async_eta1"] = async_figures(run, record["figures"])
    record["total_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps(record["figures"], indent=2, default=str))
    print(f"wrote {args.out} in {record['total_s']} s")
    return record


if __name__ == "__main__":
    main()
