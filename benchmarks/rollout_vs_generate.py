"""Rollout throughput: our engine (``HFRolloutEngine``) against transformers' ``model.generate``.

    .venv/bin/python benchmarks/rollout_vs_generate.py

Two locally built, randomly initialised models (nothing is downloaded): the embedded tiny Llama
(``dapo_rl.models.tiny``) and a tiny Qwen2 (hidden 128, 4 layers, 4 query / 2 key-value heads, q/k/v
biases, vocabulary 384, seeded). 32 synthetic arithmetic prompts, each sampled G = 8 and 16 times at
temperature 1, top-p 1, no top-k, 64 new tokens.

Three runners: ``ours`` (the engine as shipped: lean decode step), ``ours_hf_step`` (the engine with
``lean_decode=False``: transformers' forward per step) and ``generate``. Fairness: EOS is suppressed
in all (our engine gets no EOS ids; ``generate`` gets ``min_new_tokens = max_new_tokens``), so every
row generates 64 tokens, and the tokens are counted from the outputs (``generate``: non-pad tokens of
each row's generated part, which stops at its first EOS); the script fails if the counts differ.
``generate`` gets each prompt repeated G times (``num_return_sequences=G``, ``do_sample=True``,
``top_k=0``, ``use_cache=True``), left-padded, in one batch; our engine gets the 32 prompts and
``n = G``. All run under ``torch.no_grad`` with the same threads (``--threads``, default torch's);
one warm-up call each, then the runners alternate for ``--repeats`` rounds (so that load from other
processes hits all alike) and the median wall time and CPU time (all threads) of each is reported.
On a machine shared with other CPU-bound processes, compare the speedups, not the absolute figures.

Writes benchmarks/results/rollout_vs_generate.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from _common import write_result

from dapo_rl.data.synthetic import make_rows
from dapo_rl.models.tiny import build_tiny_model, build_tokenizer
from dapo_rl.rollout import HFRolloutEngine, SamplingParams


def tiny_qwen2(vocab: int = 384, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised Qwen2 causal LM (hidden 128, 4 layers, GQA 4/2 heads, tied head)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config)


def build_models(names: list[str]) -> dict[str, torch.nn.Module]:
    tokenizer = build_tokenizer()
    models: dict[str, torch.nn.Module] = {}
    if "llama" in names:
        models["llama"] = build_tiny_model(tokenizer, seed=0)
    if "qwen2" in names:
        models["qwen2"] = tiny_qwen2()
    for m in models.values():
        m.eval()
    return models


def run_ours(model, tokenizer, prompts: list[list[int]], g: int, max_new: int, seed: int, lean: bool) -> int:
    engine = HFRolloutEngine(model, tokenizer, max_batch_sequences=len(prompts) * g, lean_decode=lean)
    params = SamplingParams(max_new_tokens=max_new, temperature=1.0, top_p=1.0, seed=seed)
    out = engine.generate(prompts, g, params)
    return sum(r.length for s in out for r in s)


def run_generate(model, tokenizer, prompts: list[list[int]], g: int, max_new: int, seed: int) -> int:
    batch = tokenizer.pad([{"input_ids": p} for p in prompts], return_tensors="pt", padding_side="left")
    width = batch["input_ids"].shape[1]
    eos = model.generation_config.eos_token_id
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            num_return_sequences=g,
            max_new_tokens=max_new,
            min_new_tokens=max_new,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
        )
    # Non-pad tokens of each row: up to and including its first EOS (a random model may also sample
    # the pad id as an ordinary token: those count; the padding after an EOS would not).
    return sum(
        next((i + 1 for i, t in enumerate(row) if t == eos), len(row)) for row in out[:, width:].tolist()
    )


RUNNERS = {
    "ours": lambda *a: run_ours(*a, lean=True),
    "ours_hf_step": lambda *a: run_ours(*a, lean=False),  # the engine with transformers' decode step
    "generate": run_generate,
}


def measure(
    model, tokenizer, prompts, g: int, max_new: int, repeats: int, runners: list[str]
) -> dict[str, Any]:
    """Median wall and CPU (all threads) seconds per runner; the runners alternate within a round."""
    for name in runners:  # warm-up
        RUNNERS[name](model, tokenizer, prompts, g, max_new, 0)
    wall: dict[str, list[float]] = {n: [] for n in runners}
    cpu: dict[str, list[float]] = {n: [] for n in runners}
    tokens: dict[str, set[int]] = {n: set() for n in runners}
    for r in range(repeats):
        for name in runners:
            w, c = time.perf_counter(), time.process_time()
            tokens[name].add(RUNNERS[name](model, tokenizer, prompts, g, max_new, r + 1))
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    counts = set().union(*tokens.values())
    if len(counts) != 1:
        raise RuntimeError(f"token counts differ: {tokens}")
    n_tokens = counts.pop()
    fig: dict[str, Any] = {"tokens": n_tokens}
    for name in runners:
        fig[f"{name}_s"] = round(statistics.median(wall[name]), 4)
        fig[f"{name}_cpu_s"] = round(statistics.median(cpu[name]), 4)
        fig[f"{name}_tok_s"] = round(n_tokens / statistics.median(wall[name]), 1)
        fig[f"{name}_all_s"] = [round(t, 4) for t in wall[name]]
    for name in runners:
        if name != "generate" and "generate" in runners:
            fig[f"{name}_speedup"] = round(fig["generate_s"] / fig[f"{name}_s"], 2)
            fig[f"{name}_speedup_cpu"] = round(fig["generate_cpu_s"] / fig[f"{name}_cpu_s"], 2)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["llama", "qwen2"], choices=["llama", "qwen2"])
    ap.add_argument("--groups", nargs="+", type=int, default=[8, 16], help="samples per prompt G")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    prompts = [tokenizer(row.prompt)["input_ids"] for row in make_rows(args.prompts, seed=0)]
    models = build_models(args.models)
    figures: dict[str, Any] = {}
    lines = [
        "| model | G | tokens | ours tok/s | ours, transformers step, tok/s | generate tok/s "
        "| speedup (wall) | speedup (CPU time) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        for g in args.groups:
            fig = measure(model, tokenizer, prompts, g, args.max_new_tokens, args.repeats, args.runners)
            figures[f"{name}_G{g}"] = fig
            row = (
                f"| {name} | {g} | {fig['tokens']} | {fig.get('ours_tok_s', '-')} "
                f"| {fig.get('ours_hf_step_tok_s', '-')} | {fig.get('generate_tok_s', '-')} "
                f"| {fig.get('ours_speedup', '-')}x | {fig.get('ours_speedup_cpu', '-')}x |"
            )
            lines.append(row)
            print(row, {k: v for k, v in fig.items() if k.endswith("_all_s")}, flush=True)
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        config = {
            "prompts": args.prompts,
            "groups": args.groups,
            "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0,
            "top_p": 1.0,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "runners": args.runners,
            "load_average_at_end": os.getloadavg(),
            "models": {
                n: {"type": m.config.model_type, "parameters": sum(p.numel() for p in m.parameters())}
                for n, m in models.items()
            },
        }
        print(write_result("rollout_vs_generate", config, figures, table))


if __name__ == "__main__":
    main()
