"""Training throughput of the trainer's update pass: trained tokens per second, achieved FLOP/s, and
that as a fraction of the matrix-multiply peak measured by this script, on this machine, at the
model's own GEMM shapes.

    .venv/bin/python benchmarks/train_throughput.py                          # all cores, both models
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/train_throughput.py --threads 1
    .venv/bin/python benchmarks/train_throughput.py --models tiny --repeats 2  # a quick look

Writes benchmarks/results/train_throughput.{json,md}. No network: both models are Qwen2 causal LMs
built locally with random, seeded weights and saved to a temporary directory, which the trainer
loads like any checkpoint:

- ``tiny``: the issue's model (hidden 128, 4 layers, intermediate 512, 4 heads / 2 KV heads, tied
  embeddings, vocabulary 384, about 1M parameters);
- ``big``: for contrast, one where matrix multiplies dominate (hidden 512, 4 layers, intermediate
  2048, 8 heads / 4 KV heads, about 16M parameters).

The workload is the trainer's own update: a :class:`dapo_rl.trainer.Trainer` is built on the model
(fp32, CPU) and its ``_update`` runs on 256 responses (32 groups x 8, prompt 16 + response 64 tokens,
random ids and +-1 advantages, seeded): micro-batches by token budget (``plan_micro_batches``,
``micro_batch_tokens`` 4096), ``collate``, ``PolicyModule.response_logprobs`` (with entropy, as the
trainer asks), ``clipped_policy_loss`` with token-mean weights, backward, gradient clipping and one
AdamW step (one mini-batch on fresh samples: no old-log-prob pass, exactly as the trainer does it).
``--ragged`` draws response lengths uniformly in [8, 64] instead, so that padding shows.

Model FLOPs of one update (useful work on the real, unpadded tokens; forward + backward)::

    6 x P_linear x T                   the decoder's linear layers (P_linear: their weights; the
                                       embedding is a lookup; norms and biases are not counted)
    + 6 x V x H x T_resp               the LM head, which runs on response positions only
    + 12 x layers x H_attn x sum(L^2)  attention scores and values (QK^T, AV) forward + backward,
                                       the full L x L square per sequence of length L (the PaLM
                                       convention; the causal half is 6 x ..., recorded too)

with T all tokens, T_resp response tokens, V vocabulary, H hidden size, H_attn = heads x head_dim.
Recomputation (the chunked LM head recomputes its logits in backward) is not counted as model FLOPs.

The matmul peak is measured here, fp32, with ``torch.matmul`` at every GEMM shape the update runs
(per micro-batch token count M and linear layer [in -> out]: forward ``x @ W.T`` [M, in] x [in, out],
input gradient ``g @ W`` [M, out] x [out, in], weight gradient ``g.T @ x`` [out, M] x [M, in], in
those memory layouts; the LM head likewise on the response tokens): best of 5 timed blocks per
shape. ``peak_weighted`` is what the update's GEMMs would reach if each ran at its measured speed
(total FLOPs / sum of FLOPs_i / speed_i), ``peak_best`` the fastest shape, and a 2048^3 square GEMM
is the machine's reference. bf16 GEMM speed is measured at one of the model's shapes, to show
whether bf16 autocast could pay on this CPU (``--variants bf16_autocast`` runs it).

Variants (``--variants``), each on its own trainer from the same weights, timed interleaved
(warm-up, then rounds of one update per variant, the order rotating), and each checked against
``reference`` (the trainer as shipped: SDPA attention, fp32, AdamW as built by ``dapo_rl.optim``):
the gradient of the first update (relative L2 difference over all parameters) and the logged entropy
and gradient norm of every update (largest relative difference). The logged loss is no check: on
fresh samples the importance ratio is exactly 1 and the loss is the weighted mean of -advantage.

- ``eager_attention``: transformers' eager attention instead of SDPA;
- ``fused_adamw`` / ``foreach_adamw``: ``torch.optim.AdamW(fused=True)`` / ``(foreach=True)``;
- ``compile``: ``torch.compile`` of the decoder (forward and, through AOTAutograd, backward);
  compile time is recorded separately (the warm-up update);
- ``bf16_autocast``: ``torch.autocast("cpu", torch.bfloat16)`` around the update;
- ``greedy_plan``: the micro-batch planner before the padding-aware one (each micro-batch filled
  up to the budget), to show what the padding costs (with ``--ragged``);
- ``micro_batch_tokens_N``: ``batch.micro_batch_tokens`` N instead of ``--micro-batch-tokens``
  (the peak stays the one at the default budget's shapes).

Times are wall-clock; the process CPU time is recorded too (with one thread, wall minus CPU time is
time the process waited for a core, i.e. contention on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import write_result

MODELS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 384,
    },
    "big": {
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "intermediate_size": 2048,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 384,
    },
}
VARIANTS = (
    "reference", "eager_attention", "fused_adamw", "foreach_adamw", "compile", "bf16_autocast", "greedy_plan",
)  # fmt: skip
DEFAULT_VARIANTS = ("reference", "eager_attention", "fused_adamw")
TARGET_FRACTION = 0.5


# ---- the workload ----------------------------------------------------------------------------------


def save_model(name: str, folder: Path, seed: int) -> Path:
    """A seeded, randomly initialised Qwen2 causal LM and the project's tokenizer in ``folder/name``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dapo_rl.models.tiny import build_tokenizer

    path = folder / name
    build_tokenizer().save_pretrained(path)
    torch.manual_seed(seed)
    config = Qwen2Config(**MODELS[name], max_position_embeddings=256, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def build_trainer(model_path: Path, run_root: Path, run_name: str, args: argparse.Namespace) -> Any:
    """The trainer on ``model_path``: token-mean, no KL / entropy bonus, one update per step."""
    from dapo_rl.config import load_config
    from dapo_rl.trainer import Trainer

    groups = args.sequences // args.group_size
    overrides = [
        f"model.path={model_path}",
        "model.dtype=float32",
        "data.template=plain",
        "data.synthetic.num_train=64",
        "data.synthetic.num_eval=8",
        "dynamic_sampling.enable=false",
        "overlong.enable=false",
        f"rollout.max_response_tokens={args.response_tokens}",
        f"batch.prompts_per_step={groups}",
        f"batch.samples_per_prompt={args.group_size}",
        f"batch.prompts_per_update={groups}",
        f"batch.micro_batch_tokens={args.micro_batch_tokens}",
        "algorithm.loss_agg_mode=token-mean",
        "algorithm.kl_coef=0.0",
        "algorithm.entropy_coef=0.0",
        "optim.lr=1e-5",
        "optim.weight_decay=0.0",
        "optim.warmup_updates=0",
        "optim.grad_clip=1.0",
        f"train.seed={args.seed}",
        "train.device=cpu",
        "train.total_steps=1",
        "checkpoint.every_steps=0",
        "checkpoint.save_final=false",
        f"logging.run_dir={run_root}",
        f"logging.run_name={run_name}",
        "logging.tensorboard=false",
        "logging.plots=false",
        "logging.progress=false",
    ]
    trainer = Trainer(load_config(None, overrides))
    torch.set_num_threads(args.threads)  # the trainer leaves torch's default when not told
    return trainer


def make_samples(args: argparse.Namespace, vocab: int) -> list[Any]:
    """Seeded responses: random ids (never the special ids 0-3), +-1 advantages, whole groups."""
    from dapo_rl.batch import TrainSample

    rng = random.Random(args.seed)
    out = []
    for i in range(args.sequences):
        n = rng.randint(8, args.response_tokens) if args.ragged else args.response_tokens
        prompt = [rng.randrange(4, vocab) for _ in range(args.prompt_tokens)]
        response = [rng.randrange(4, vocab) for _ in range(n)]
        out.append(TrainSample(prompt, response, rng.choice([-1.0, 1.0]), i // args.group_size))
    return out


def micro_batches(samples: list[Any], budget: int) -> list[dict[str, int]]:
    """The trainer's micro-batch plan: rows, padded tokens (rows x longest), response positions."""
    from dapo_rl.batch import plan_micro_batches

    out = []
    for idx in plan_micro_batches([s.num_tokens for s in samples], budget):
        chosen = [samples[i] for i in idx]
        out.append(
            {
                "rows": len(idx),
                "padded_tokens": len(idx) * max(s.num_tokens for s in chosen),
                "response_tokens": sum(len(s.response_ids) for s in chosen),
            }
        )
    return out


# ---- FLOPs and GEMM shapes ---------------------------------------------------------------------------


def linear_layers(spec: dict[str, Any]) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one decoder layer."""
    h, i = spec["hidden_size"], spec["intermediate_size"]
    head_dim = h // spec["num_attention_heads"]
    kv = spec["num_key_value_heads"] * head_dim
    return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down


def model_flops(spec: dict[str, Any], samples: list[Any]) -> dict[str, float]:
    """Model FLOPs of one update (forward + backward), by part; see the module docstring."""
    layers, h, v = spec["num_hidden_layers"], spec["hidden_size"], spec["vocab_size"]
    p_linear = layers * sum(a * b for a, b in linear_layers(spec))
    tokens = sum(s.num_tokens for s in samples)
    resp = sum(len(s.response_ids) for s in samples)
    square = sum(s.num_tokens**2 for s in samples)
    out = {
        "linear": 6.0 * p_linear * tokens,
        "lm_head": 6.0 * v * h * resp,
        "attention": 12.0 * layers * h * square,
    }
    out["total"] = out["linear"] + out["lm_head"] + out["attention"]
    out["total_causal_half"] = out["total"] - out["attention"] / 2
    return out


Shape = tuple[int, int, int, str]  # (m, k, n, layout): one GEMM [m, k] x [k, n]


def gemm_shapes(spec: dict[str, Any], plan: list[dict[str, int]]) -> dict[Shape, float]:
    """FLOPs per GEMM shape over one update, as the update runs them: every linear layer in forward
    (x @ W.T), input gradient (g @ W) and weight gradient (g.T @ x), at each micro-batch's padded
    token count; the LM head on its response tokens (its forward twice: it is recomputed)."""
    flops: dict[Shape, float] = defaultdict(float)
    layers, h, v = spec["num_hidden_layers"], spec["hidden_size"], spec["vocab_size"]
    for mb in plan:
        m = mb["padded_tokens"]
        for fan_in, fan_out in linear_layers(spec):
            for shape in (
                (m, fan_in, fan_out, "x@Wt"),
                (m, fan_out, fan_in, "g@W"),
                (fan_out, m, fan_in, "gt@x"),
            ):
                flops[shape] += 2.0 * m * fan_in * fan_out * layers
        r = mb["response_tokens"]  # the LM head: forward, recomputed in backward, two gradients
        for shape in ((r, h, v, "x@Wt"), (r, h, v, "x@Wt"), (r, v, h, "g@W"), (v, r, h, "gt@x")):
            flops[shape] += 2.0 * r * h * v
    return dict(flops)


def _operands(shape: Shape, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands in the memory layout the update uses (a weight [out, in] is row-major)."""
    m, k, n, layout = shape
    g = torch.Generator().manual_seed(0)
    if layout == "x@Wt":  # x [m, k] @ W.T with W [n, k]
        return torch.randn(m, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype).t()
    if layout == "gt@x":  # g.T with g [k, m], times x [k, n]
        return torch.randn(k, m, generator=g).to(dtype).t(), torch.randn(k, n, generator=g).to(dtype)
    return torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)


def gemm_gflops(
    shape: Shape, dtype: torch.dtype = torch.float32, block_s: float = 0.08
) -> tuple[float, float]:
    """``torch.matmul`` at ``shape``: (GFLOP/s by wall clock, GFLOP/s by process CPU time), each the
    best of 5 timed blocks."""
    a, b = _operands(shape, dtype)
    flop = 2.0 * shape[0] * shape[1] * shape[2]
    torch.matmul(a, b)
    t = time.perf_counter()
    torch.matmul(a, b)
    reps = max(1, int(block_s / max(time.perf_counter() - t, 1e-6)))
    wall = cpu = float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            torch.matmul(a, b)
        wall = min(wall, (time.perf_counter() - t) / reps)
        cpu = min(cpu, (time.process_time() - c) / reps)
    return flop / wall / 1e9, flop / max(cpu, 1e-9) / 1e9


def measure_peak(shapes: dict[Shape, float], bf16_shape: Shape | None) -> dict[str, Any]:
    """Per-shape fp32 GEMM speed, the FLOP-weighted and best of them, a 2048^3 square, one bf16 shape;
    by wall clock, and by CPU time (``_cpu``, meaningful with one thread)."""
    speeds = {s: gemm_gflops(s) for s in shapes}
    total = sum(shapes.values())
    out: dict[str, Any] = {}
    for i, suffix in enumerate(("", "_cpu")):
        out[f"peak_weighted_gflops{suffix}"] = total / sum(f / speeds[s][i] for s, f in shapes.items())
        out[f"peak_best_gflops{suffix}"] = max(v[i] for v in speeds.values())
    square = gemm_gflops((2048, 2048, 2048, "a@b"), block_s=0.3)
    out["square_2048_gflops"], out["square_2048_gflops_cpu"] = square
    out["gemm_flops"] = total
    out["gemm_time_ideal_s"] = sum(f / (speeds[s][0] * 1e9) for s, f in shapes.items())
    out["shapes"] = [
        {"m": s[0], "k": s[1], "n": s[2], "layout": s[3], "share": f / total, "gflops": speeds[s][0]}
        for s, f in sorted(shapes.items(), key=lambda item: -item[1])
    ]
    if bf16_shape is not None:
        out["bf16_shape"] = list(bf16_shape)
        out["bf16_gflops"] = gemm_gflops(bf16_shape, torch.bfloat16, block_s=0.3)[0]
        out["fp32_gflops_same_shape"] = speeds[bf16_shape][0] if bf16_shape in speeds else None
    return out


# ---- variants ----------------------------------------------------------------------------------------


def _adamw(trainer: Any, **kwargs: Any) -> None:
    """Replace the trainer's AdamW (as ``dapo_rl.optim.build_optimizer`` makes it) and its schedule."""
    from dapo_rl.optim import lr_factor

    cfg, o = trainer.cfg, trainer.cfg.optim
    params = [p for p in trainer.policy.parameters() if p.requires_grad]
    trainer.optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, **kwargs
    )
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda u: lr_factor(u, cfg))


def greedy_plan(lengths: list[int], budget: int) -> list[list[int]]:
    """The micro-batch planner before the padding-aware one: sorted by length, each micro-batch
    filled up to the budget (same count of micro-batches, more padding)."""
    plans: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and max(longest, lengths[i]) * (len(current) + 1) > budget:
            plans.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    return [*plans, current] if current else plans


def apply_variant(name: str, trainer: Any) -> Callable[[], contextlib.AbstractContextManager]:
    """Change ``trainer`` for variant ``name``; returns the context to run its updates in."""
    if name == "eager_attention":
        trainer.policy.module.set_attn_implementation("eager")
    elif name == "fused_adamw":
        _adamw(trainer, fused=True)
    elif name == "foreach_adamw":
        _adamw(trainer, foreach=True)
    elif name == "compile":
        trainer.policy.module.get_decoder().compile()
    elif name == "greedy_plan":
        budget = trainer.cfg.batch.micro_batch_tokens
        trainer.update._plan = lambda samples: greedy_plan([s.num_tokens for s in samples], budget)
    elif name.startswith("micro_batch_tokens_"):
        trainer.cfg.batch.micro_batch_tokens = int(name.rsplit("_", 1)[1])
    elif name == "bf16_autocast":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    elif name != "reference":
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}, micro_batch_tokens_N")
    return contextlib.nullcontext


def one_update(trainer: Any, samples: list[Any], context: Callable) -> dict[str, float]:
    """The trainer's update on ``samples`` (one mini-batch, fresh): wall and CPU seconds, metrics."""
    from dapo_rl.step_metrics import StageTimes

    groups = len({s.group for s in samples})
    wall, cpu = time.perf_counter(), time.process_time()
    with context():
        metrics = trainer.update(samples, groups, True, StageTimes())
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "loss": metrics["loss/total"],
        "entropy": metrics["loss/entropy"],
        "grad_norm": metrics["optim/grad_norm"],
    }


def keep_first_gradient(trainer: Any) -> list[torch.Tensor]:
    """Make ``trainer`` keep a copy of the gradients of its first update (just before the AdamW
    step, after clipping); returns the list they will be put in."""
    kept: list[torch.Tensor] = []
    step = trainer.update._step_optimizer

    def step_and_keep(local_loss: float) -> float:
        if not kept:
            kept.extend(p.grad.detach().clone() for p in trainer.policy.parameters() if p.grad is not None)
        return step(local_loss)

    trainer.update._step_optimizer = step_and_keep
    return kept


def agreement(
    ref: list[dict[str, float]],
    other: list[dict[str, float]],
    ref_grads: list[torch.Tensor],
    grads: list[torch.Tensor],
) -> dict[str, float]:
    """Differences to the reference from the same weights and data: the gradient of the first
    update (|g - g_ref| / |g_ref|, over all parameters) and, over every update, the logged entropy
    and gradient norm (largest relative difference). The logged loss is no check here: on fresh
    samples the importance ratio is exactly 1 and the loss is the weighted mean of -advantage."""

    def rel(key: str) -> float:
        return max(abs(a[key] - b[key]) / max(abs(a[key]), 1e-12) for a, b in zip(ref, other))

    g_ref = torch.cat([g.flatten().double() for g in ref_grads])
    g = torch.cat([g.flatten().double() for g in grads])
    return {
        "first_grad_rel": float((g - g_ref).norm() / g_ref.norm()),
        "entropy_rel": rel("entropy"),
        "grad_norm_rel": rel("grad_norm"),
        "loss_rel": rel("loss"),
    }


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
MEMORY_OPS = (
    "aten::copy_", "aten::fill_", "aten::zero_", "aten::cat", "aten::index", "aten::index_put_",
    "aten::gather", "aten::scatter_add_", "aten::empty", "aten::empty_strided", "aten::clone",
    "aten::embedding", "aten::embedding_dense_backward", "aten::index_select", "aten::resize_",
    "aten::_to_copy", "aten::contiguous", "aten::where", "aten::_index_put_impl_", "aten::new_zeros",
)  # fmt: skip


def op_category(name: str) -> str:
    """Where a profiled op's own time goes: GEMM, attention kernels, memory and layout, other math,
    or framework overhead (autograd nodes, Python functions: what is not an ATen op)."""
    if name in GEMM_OPS:
        return "gemm"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name in MEMORY_OPS:
        return "memory"
    if name.startswith("aten::"):
        return "elementwise_and_reductions"
    return "framework"


def profile_update(trainer: Any, samples: list[Any], gemm_flops: float) -> dict[str, Any]:
    """One update under ``torch.profiler`` (CPU): self time by category, the largest ops, and the
    AdamW step. Profiling adds per-op overhead, so its shares matter more than its seconds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = one_update(trainer, samples, contextlib.nullcontext)["wall_s"]
    events = prof.key_averages()
    by_cat: dict[str, float] = defaultdict(float)
    for e in events:
        by_cat[op_category(e.key)] += e.self_cpu_time_total / 1e6
    traced = sum(by_cat.values())
    by_cat["untraced"] = max(wall - traced, 0.0)  # Python between ops, the profiler itself
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "wall_s": wall,
        "seconds": dict(by_cat),
        "shares": {k: v / wall for k, v in by_cat.items()},
        "gemm_gflops_in_update": gemm_flops / max(by_cat["gemm"], 1e-9) / 1e9,
        "optimizer_step_s": optimizer,
        "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in top],
    }


def summarize(
    updates: list[dict[str, float]],
    flops: dict[str, float],
    peak: dict[str, Any],
    tokens: int,
    resp: int,
    threads: int,
) -> dict[str, Any]:
    """Figures of one variant from its updates (the first, the warm-up, is not timed)."""
    timed = updates[1:]
    wall = statistics.median(u["wall_s"] for u in timed)
    best = min(u["wall_s"] for u in timed)
    cpu = statistics.median(u["cpu_s"] for u in timed)
    peak_wall = peak["peak_weighted_gflops"] * 1e9
    out = {
        "update_s": wall,
        "update_best_s": best,
        "update_cpu_s": cpu,
        "warmup_update_s": updates[0]["wall_s"],
        "tokens_per_s": tokens / wall,
        "response_tokens_per_s": resp / wall,
        "achieved_gflops": flops["total"] / wall / 1e9,
        "fraction_of_peak": flops["total"] / wall / peak_wall,
        "fraction_of_peak_best_update": flops["total"] / best / peak_wall,
        "fraction_of_peak_causal_half": flops["total_causal_half"] / wall / peak_wall,
        "fraction_of_square_peak": flops["total"] / wall / (peak["square_2048_gflops"] * 1e9),
        "speedup_vs_reference": None,
        "agreement": None,
    }
    if threads == 1:  # CPU time: what the update and the GEMMs took of the core they had
        out["achieved_gflops_cpu"] = flops["total"] / cpu / 1e9
        out["fraction_of_peak_cpu"] = flops["total"] / cpu / 1e9 / peak["peak_weighted_gflops_cpu"]
    return out


def run_model(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    spec = MODELS[name]
    path = save_model(name, folder, args.seed)
    samples = make_samples(args, spec["vocab_size"])
    plan = micro_batches(samples, args.micro_batch_tokens)
    flops = model_flops(spec, samples)
    shapes = gemm_shapes(spec, plan)
    bf16_shape = (plan[0]["padded_tokens"], spec["hidden_size"], spec["intermediate_size"], "x@Wt")
    print(f"[{name}] measuring the GEMM peak at {len(shapes)} shapes ...", flush=True)
    peak = measure_peak(shapes, bf16_shape)
    trainers, contexts, first, grads = {}, {}, {}, {}
    for v in args.variants:
        trainers[v] = build_trainer(path, folder / "runs", f"{name}-{v}", args)
        contexts[v] = apply_variant(v, trainers[v])
        grads[v] = keep_first_gradient(trainers[v])
    updates: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    for v in args.variants:  # warm-up (and compilation), one update each
        first[v] = one_update(trainers[v], samples, contexts[v])
        updates[v].append(first[v])
        print(f"[{name}] {v}: warm-up update {first[v]['wall_s']:.2f} s", flush=True)
    for r in range(args.repeats):  # the order rotates, so that no variant always goes first
        order = args.variants[r % len(args.variants) :] + args.variants[: r % len(args.variants)]
        for v in order:
            updates[v].append(one_update(trainers[v], samples, contexts[v]))
        print(
            f"[{name}] round {r + 1}: "
            + ", ".join(
                f"{v} {updates[v][-1]['wall_s']:.2f} s (CPU {updates[v][-1]['cpu_s']:.2f})" for v in order
            )
        )
    tokens = sum(s.num_tokens for s in samples)
    resp = sum(len(s.response_ids) for s in samples)
    padded = sum(mb["padded_tokens"] for mb in plan)
    profile = None if args.no_profile else profile_update(trainers["reference"], samples, peak["gemm_flops"])
    results = {v: summarize(updates[v], flops, peak, tokens, resp, args.threads) for v in args.variants}
    for v in args.variants:  # "reference" is always there (main adds it)
        results[v]["speedup_vs_reference"] = results["reference"]["update_s"] / results[v]["update_s"]
        if v != "reference":
            results[v]["agreement"] = agreement(
                updates["reference"], updates[v], grads["reference"], grads[v]
            )
    return {
        "model": {
            **spec,
            "parameters": sum(p.numel() for p in trainers[args.variants[0]].policy.parameters()),
            "linear_parameters": spec["num_hidden_layers"] * sum(a * b for a, b in linear_layers(spec)),
        },
        "tokens": tokens,
        "response_tokens": resp,
        "padded_tokens": padded,
        "micro_batches": len(plan),
        "model_flops": flops,
        "peak": peak,
        "variants": results,
        "profile": profile,
    }


# ---- report -------------------------------------------------------------------------------------------


def table(figures: dict[str, Any], args: argparse.Namespace) -> str:
    cpu = args.threads == 1
    first = next(iter(figures.values()))
    lines = [
        f"Training throughput of the update pass ({args.threads} thread(s), fp32; peak: fp32 matmul at the "
        "model's GEMM shapes, FLOP-weighted)" + ("; CPU-time figures in brackets" if cpu else ""),
        "",
        f"Workload: {args.sequences} responses, prompt {args.prompt_tokens} + response "
        f"{'8-' if args.ragged else ''}{args.response_tokens} tokens ({first['tokens']:,} tokens, "
        f"{first['padded_tokens']:,} with padding), micro_batch_tokens {args.micro_batch_tokens} "
        f"({first['micro_batches']} micro-batches), one AdamW step.",
        "",
        "| model | variant | update s | tokens/s | response tokens/s | GFLOP/s | peak GFLOP/s "
        "| fraction of peak | speed vs reference | vs reference: first gradient, later grad norms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        p = f["peak"]
        for v, r in f["variants"].items():
            a = r["agreement"]
            agree = f"{a['first_grad_rel']:.0e}, {a['grad_norm_rel']:.0e}" if a else ""
            gflops, peak = f"{r['achieved_gflops']:.1f}", f"{p['peak_weighted_gflops']:.1f}"
            frac = f"{r['fraction_of_peak']:.0%}"
            if cpu:
                gflops += f" [{r['achieved_gflops_cpu']:.1f}]"
                peak += f" [{p['peak_weighted_gflops_cpu']:.1f}]"
                frac += f" [{r['fraction_of_peak_cpu']:.0%}]"
            lines.append(
                f"| {name} | {v} | {r['update_s']:.2f} | {r['tokens_per_s']:,.0f} "
                f"| {r['response_tokens_per_s']:,.0f} | {gflops} | {peak} | {frac} "
                f"| {r['speedup_vs_reference']:.2f}x | {agree} |"
            )
    lines += [
        "",
        "| model | GEMM peak: best shape | weighted | square 2048 | bf16 at one shape (fp32 there) |",
    ]
    lines.append("|---|---|---|---|---|")
    for name, f in figures.items():
        p = f["peak"]
        lines.append(
            f"| {name} | {p['peak_best_gflops']:.1f} | {p['peak_weighted_gflops']:.1f} "
            f"| {p['square_2048_gflops']:.1f} | {p['bf16_gflops']:.1f} ({p['fp32_gflops_same_shape']:.1f}) |"
        )
    for name, f in figures.items():
        prof = f["profile"]
        if prof is None:
            continue
        split = ", ".join(f"{k} {v:.0%}" for k, v in sorted(prof["shares"].items(), key=lambda kv: -kv[1]))
        lines += [
            "",
            f"{name}, reference update under torch.profiler ({prof['wall_s']:.2f} s): {split}; GEMMs ran at "
            f"{prof['gemm_gflops_in_update']:.1f} GFLOP/s; AdamW step {prof['optimizer_step_s'] * 1e3:.0f} ms.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        help=f"of {', '.join(VARIANTS)}, micro_batch_tokens_N (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per variant, after one warm-up")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--ragged", action="store_true", help="response lengths uniform in [8, response]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled reference update")
    args = parser.parse_args()
    if "reference" not in args.variants:
        args.variants.insert(0, "reference")
    torch.set_num_threads(args.threads)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        # a cold inductor cache, so that the compile variant's warm-up update shows the compile time
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        for name in args.models:
            figures[name] = run_model(name, args, Path(tmp))
    config = {k: v for k, v in vars(args).items()}
    config["target_fraction"] = TARGET_FRACTION
    md = table(figures, args)
    path = write_result("train_throughput", config, figures, md)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
