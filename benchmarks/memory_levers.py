"""Memory levers for real models, measured on the CPU:

1. **LoRA vs full fine-tuning**: parameter, gradient and AdamW-state bytes of a ~108M-parameter
   Qwen2-shaped model (vocabulary 151,936, hidden 512, 8 layers, 8 heads / 2 KV heads, MLP 2,048,
   tied embeddings), read from the real tensors after one forward, backward and optimizer step.
2. **Gradient checkpointing**: peak resident memory of one training forward + backward (our
   ``PolicyModule.response_logprobs``) with and without it, each in a fresh subprocess
   (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), and the time it costs.
3. **Padding**: the padded share of training micro-batches on a ragged DAPO-like workload (responses
   of 20..2,000 tokens, a tenth truncated at the cap, groups of 16 sharing a prompt), with the
   trainer's length-sorted plan vs micro-batches filled in arrival order.

    .venv/bin/python benchmarks/memory_levers.py             # all three (about a minute on 2 cores)
    .venv/bin/python benchmarks/memory_levers.py --part padding

Writes benchmarks/results/memory_levers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import write_result

MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]


def qwen2_config(vocab: int = 151936, hidden: int = 512, layers: int = 8, inter: int = 2048):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_memory(rank: int) -> dict[str, float]:
    """Bytes of parameters, gradients and AdamW states after one step (rank 0: full fine-tuning)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from dapo_rl.batch import PolicyModule, TrainSample, collate
    from dapo_rl.config import LoraConfig

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config())
    if rank:
        from dapo_rl.models.lora import add_adapters

        model = add_adapters(model, LoraConfig(rank=rank, alpha=2 * rank))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    g = torch.Generator().manual_seed(0)
    samples = [TrainSample(torch.randint(0, 1000, (32,), generator=g).tolist(), [5] * 32, 1.0, 0)] * 2
    mb = collate(samples, [0, 1], 0, torch.device("cpu"))
    logp, _ = PolicyModule(model).response_logprobs(mb, 1.0)
    logp.sum().backward()
    opt.step()
    states = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in params),
        "weights_bytes": _bytes(model.parameters()),
        "grad_bytes": _bytes(p.grad for p in params if p.grad is not None),
        "adam_state_bytes": _bytes(states),
        "state_dtypes": sorted({str(t.dtype) for t in states}),
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def checkpointing_worker(gc: bool, rows: int, tokens: int) -> dict[str, float]:
    """One training forward + backward in this process; peak RSS above the pre-step level."""
    import torch
    from transformers import Qwen2ForCausalLM

    from dapo_rl.batch import PolicyModule, TrainSample, collate
    from dapo_rl.models.loading import enable_gradient_checkpointing

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config(vocab=32000))
    if gc:
        enable_gradient_checkpointing(model)
    model.train()
    g = torch.Generator().manual_seed(0)
    samples = [
        TrainSample(torch.randint(0, 32000, (64,), generator=g).tolist(),
                    torch.randint(0, 32000, (tokens - 64,), generator=g).tolist(), 1.0, 0)
        for _ in range(rows)
    ]  # fmt: skip
    mb = collate(samples, list(range(rows)), 0, torch.device("cpu"))
    policy = PolicyModule(model)
    for p in model.parameters():  # gradient buffers exist before the measured step (as in training)
        p.grad = torch.zeros_like(p)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    logp, _ = policy.response_logprobs(mb, 1.0)
    logp.sum().backward()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024, "seconds": seconds}


def checkpointing(rows: int, tokens: int) -> dict[str, dict[str, float]]:
    out = {}
    for gc in (False, True):
        code = (
            "import json, sys; sys.path[:0] = ['benchmarks', 'src']; from memory_levers import "
            f"checkpointing_worker as w; print(json.dumps(w({gc}, {rows}, {tokens})))"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        out["on" if gc else "off"] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def ragged_workload(groups: int, group_size: int, cap: int, seed: int = 0) -> list[int]:
    """Sequence lengths (prompt + response): prompts 40..400 tokens shared by a group; responses
    log-normal around 500 tokens clipped to [20, cap], a tenth of them truncated at the cap."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(groups):
        prompt = int(rng.integers(40, 400))
        resp = np.clip(rng.lognormal(np.log(500), 0.8, group_size), 20, cap).astype(int)
        resp[rng.random(group_size) < 0.1] = cap
        out += [prompt + int(r) for r in resp]
    return out


def padded_share(lengths: list[int], plan: list[list[int]]) -> float:
    slots = sum(len(mb) * max(lengths[i] for i in mb) for mb in plan)
    return 1 - sum(lengths) / slots


def arrival_order_plan(lengths: list[int], budget: int) -> list[list[int]]:
    """Fill micro-batches in arrival order (no sorting): what padding costs without the planner."""
    plan, cur, longest = [], [], 0
    for i, n in enumerate(lengths):
        if cur and (len(cur) + 1) * max(longest, n) > budget:
            plan.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    return [*plan, cur] if cur else plan


def padding(budgets: tuple[int, ...] = (8192, 16384, 32768)) -> dict[str, dict[str, float]]:
    from dapo_rl.batch import plan_micro_batches

    lengths = ragged_workload(groups=32, group_size=16, cap=2000)  # one mini-batch: 32 groups x 16
    out = {}
    for budget in budgets:
        sorted_plan = plan_micro_batches(lengths, budget)
        fifo = arrival_order_plan(lengths, budget)
        out[str(budget)] = {
            "sorted_padded_share": padded_share(lengths, sorted_plan),
            "sorted_micro_batches": len(sorted_plan),
            "arrival_padded_share": padded_share(lengths, fifo),
            "arrival_micro_batches": len(fifo),
            "packed_micro_batches_lower_bound": -(-sum(lengths) // budget),
        }
    out["workload"] = {
        "sequences": len(lengths),
        "tokens": sum(lengths),
        "min": min(lengths),
        "max": max(lengths),
        "mean": sum(lengths) / len(lengths),
    }
    return out


def table(fig: dict) -> str:
    lines = []
    if "optimizer" in fig:
        lines += [
            "| Qwen2-shaped 108M, fp32 master weights | trainable params | weights | gradients | AdamW states | gradients + states |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in fig["optimizer"].items():
            gs = (r["grad_bytes"] + r["adam_state_bytes"]) / MIB
            lines.append(
                f"| {name} | {r['params_trainable'] / 1e6:.2f}M of {r['params_total'] / 1e6:.1f}M | "
                f"{r['weights_bytes'] / MIB:.0f} MiB | {r['grad_bytes'] / MIB:.1f} MiB | "
                f"{r['adam_state_bytes'] / MIB:.1f} MiB | {gs:.1f} MiB |"
            )
        lines.append("")
    if "checkpointing" in fig:
        c = fig["checkpointing"]
        lines += [
            f"| gradient checkpointing ({c['rows']} x {c['tokens']} tokens, hidden 512, 8 layers) | peak step memory | time |",
            "|---|---:|---:|",
            f"| off | {c['off']['peak_mib']:.0f} MiB | {c['off']['seconds']:.1f} s |",
            f"| on | {c['on']['peak_mib']:.0f} MiB | {c['on']['seconds']:.1f} s |",
            "",
        ]
    if "padding" in fig:
        p = fig["padding"]
        w = p["workload"]
        lines += [
            f"| padding: {w['sequences']} sequences, {w['min']}..{w['max']} tokens (mean {w['mean']:.0f}) | "
            "length-sorted plan (trainer) | arrival order | packed lower bound |",
            "|---|---:|---:|---:|",
        ]
        for budget, r in p.items():
            if budget == "workload":
                continue
            lines.append(
                f"| micro_batch_tokens={budget} | {r['sorted_padded_share']:.1%} padded, "
                f"{r['sorted_micro_batches']} micro-batches | {r['arrival_padded_share']:.1%}, "
                f"{r['arrival_micro_batches']} | {r['packed_micro_batches_lower_bound']} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["all", "optimizer", "checkpointing", "padding"], default="all")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1024)
    args = ap.parse_args()
    fig: dict = {}
    if args.part in ("all", "optimizer"):
        fig["optimizer"] = {
            "full fine-tuning": optimizer_memory(0),
            "LoRA r=16 (all linear)": optimizer_memory(16),
        }
    if args.part in ("all", "checkpointing"):
        fig["checkpointing"] = {
            "rows": args.rows,
            "tokens": args.tokens,
            **checkpointing(args.rows, args.tokens),
        }
    if args.part in ("all", "padding"):
        fig["padding"] = padding()
    md = table(fig)
    print(md)
    write_result(f"memory_levers{'' if args.part == 'all' else '_' + args.part}", vars(args), fig, md)


if __name__ == "__main__":
    main()
