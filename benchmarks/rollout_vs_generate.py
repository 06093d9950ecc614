"""Rollout throughput: our engines (``hf``, ``vllm``) against transformers' ``model.generate``.

    .venv/bin/python benchmarks/rollout_vs_generate.py            # EOS suppressed: equal tokens
    .venv/bin/python benchmarks/rollout_vs_generate.py --ragged   # EOS allowed: ragged lengths

Locally built, randomly initialised models (nothing is downloaded): the embedded tiny Llama
(``llama``, 0.8M parameters, ``dapo_rl.models.tiny``), a tiny Qwen2 (``qwen2``: hidden 128, 4 layers,
4 query / 2 key-value heads, q/k/v biases, vocabulary 384, seeded) and two Qwen2-shaped ones of
about 25M (``qwen2_25m``: hidden 512, 8 layers, 8/2 heads) and 100M parameters (``qwen2_100m``:
hidden 768, 12 layers, 12/4 heads). Synthetic arithmetic prompts (32 for the tiny models, 8 and 4
for the larger ones, so that a size takes seconds, not minutes, on 2 cores), each sampled G = 8
and 16 times at temperature 1, top-p 1, no top-k, 64 new tokens (32 for the larger models).

Four runners: ``ours`` (the hf engine as shipped: lean decode step), ``ours_hf_step`` (the engine
with ``lean_decode=False``: transformers' forward per step), ``vllm`` (the vllm engine: in-process
vLLM, fp32, eager, built once per model outside the timing) and ``generate``. Fairness: by default
EOS is suppressed in all (our engines get no EOS ids; ``generate`` gets ``min_new_tokens =
max_new_tokens``), so every row generates the same number of tokens, and the tokens are counted
from the outputs (``generate``: non-pad tokens of each row's generated part, which stops at its
first EOS); the script fails if the counts differ. With ``--ragged`` EOS ends a row (each runner
samples its own lengths: tokens/s is each runner's own count over its own time).
``generate`` gets each prompt repeated G times (``num_return_sequences=G``, ``do_sample=True``,
``top_k=0``, ``use_cache=True``), left-padded, in one batch; our engine gets the 32 prompts and
``n = G``. All run under ``torch.no_grad`` with the same threads (``--threads``, default torch's);
one warm-up call each, then the runners alternate for ``--repeats`` rounds (so that load from other
processes hits all alike) and the best (minimum) wall time and CPU time (all threads) of each is
reported: on a machine shared with other CPU-bound processes single rounds varied up to 10x, and
the minimum is the least disturbed estimate. Compare the speedups, not the absolute figures.

Writes benchmarks/results/rollout_vs_generate.{json,md} (``_ragged`` with ``--ragged``).
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

QWEN2_SHAPES = {  # hidden, layers, intermediate, query heads, key-value heads
    "qwen2": (128, 4, 384, 4, 2),
    "qwen2_25m": (512, 8, 1408, 8, 2),
    "qwen2_100m": (768, 12, 3072, 12, 4),
}
WORKLOAD = {"llama": (32, 64), "qwen2": (32, 64), "qwen2_25m": (8, 32), "qwen2_100m": (4, 32)}
"""model -> (prompts, new tokens) by default."""


def tiny_qwen2(vocab: int = 384, seed: int = 0, shape: str = "qwen2") -> torch.nn.Module:
    """A randomly initialised Qwen2 causal LM of ``QWEN2_SHAPES[shape]`` (GQA, tied head)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, layers, intermediate, heads, kv_heads = QWEN2_SHAPES[shape]
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
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
    for shape in QWEN2_SHAPES:
        if shape in names:
            models[shape] = tiny_qwen2(shape=shape)
    for m in models.values():
        m.eval()
    return models


RAGGED = False  # --ragged: EOS ends a row (set in main)


def _params(model, max_new: int, seed: int) -> SamplingParams:
    eos = [model.generation_config.eos_token_id] if RAGGED else []
    return SamplingParams(max_new_tokens=max_new, temperature=1.0, top_p=1.0, seed=seed, eos_token_ids=eos)


def run_ours(model, tokenizer, prompts: list[list[int]], g: int, max_new: int, seed: int, lean: bool) -> int:
    engine = HFRolloutEngine(model, tokenizer, max_batch_sequences=len(prompts) * g, lean_decode=lean)
    out = engine.generate(prompts, g, _params(model, max_new, seed))
    return sum(r.length for s in out for r in s)


_VLLM: dict[int, Any] = {}  # one vLLM engine per model, built outside the timing


def vllm_engine(model, tokenizer, rows: int) -> Any:
    if id(model) not in _VLLM:
        from dapo_rl.rollout.vllm_engine import VLLMRolloutEngine  # heavy optional dependency

        _VLLM[id(model)] = VLLMRolloutEngine(
            model, tokenizer, max_batch_sequences=rows, max_model_len=256, kv_cache_bytes=1 << 30
        )
    return _VLLM[id(model)]


def run_vllm(model, tokenizer, prompts: list[list[int]], g: int, max_new: int, seed: int) -> int:
    engine = vllm_engine(model, tokenizer, 512)
    out = engine.generate(prompts, g, _params(model, max_new, seed))
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
            min_new_tokens=1 if RAGGED else max_new,
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
    "vllm": run_vllm,
    "generate": run_generate,
}


def measure(
    model, tokenizer, prompts, g: int, max_new: int, repeats: int, runners: list[str]
) -> dict[str, Any]:
    """Best (minimum) wall and CPU (all threads) seconds per runner; the runners alternate within a
    round."""
    for name in runners:  # warm-up
        RUNNERS[name](model, tokenizer, prompts, g, max_new, 0)
    wall: dict[str, list[float]] = {n: [] for n in runners}
    cpu: dict[str, list[float]] = {n: [] for n in runners}
    tokens: dict[str, set[int]] = {n: set() for n in runners}
    tokens_per_round: dict[str, list[int]] = {n: [] for n in runners}
    for r in range(repeats):
        for name in runners:
            w, c = time.perf_counter(), time.process_time()
            count = RUNNERS[name](model, tokenizer, prompts, g, max_new, r + 1)
            tokens[name].add(count)
            tokens_per_round[name].append(count)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    counts = set().union(*tokens.values())
    if len(counts) != 1 and not RAGGED:
        raise RuntimeError(f"token counts differ: {tokens}")
    fig: dict[str, Any] = {"tokens": max(counts)}
    for name in runners:
        n_tokens = statistics.median(tokens_per_round[name])
        fig[f"{name}_tokens"] = n_tokens
        fig[f"{name}_s"] = round(min(wall[name]), 4)
        fig[f"{name}_cpu_s"] = round(min(cpu[name]), 4)
        fig[f"{name}_tok_s"] = round(n_tokens / min(wall[name]), 1)
        fig[f"{name}_all_s"] = [round(t, 4) for t in wall[name]]
    for name in runners:  # speedups in tokens/s (equal to time ratios when the counts are equal)
        if name != "generate" and "generate" in runners:
            gen_cpu_rate = fig["generate_tokens"] / fig["generate_cpu_s"]
            fig[f"{name}_speedup"] = round(fig[f"{name}_tok_s"] / fig["generate_tok_s"], 2)
            fig[f"{name}_speedup_cpu"] = round(fig[f"{name}_tokens"] / fig[f"{name}_cpu_s"] / gen_cpu_rate, 2)
    if "vllm" in runners and "ours" in runners:
        fig["vllm_over_ours"] = round(fig["vllm_tok_s"] / fig["ours_tok_s"], 2)
        cpu_rate = {n: fig[f"{n}_tokens"] / fig[f"{n}_cpu_s"] for n in ("vllm", "ours")}
        fig["vllm_over_ours_cpu"] = round(cpu_rate["vllm"] / cpu_rate["ours"], 2)
    return fig


def main() -> None:
    global RAGGED
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--models", nargs="+", default=["llama", "qwen2_25m", "qwen2_100m"], choices=list(WORKLOAD)
    )
    ap.add_argument("--groups", nargs="+", type=int, default=[8, 16], help="samples per prompt G")
    ap.add_argument("--prompts", type=int, default=None, help="default: per model (WORKLOAD)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: per model (WORKLOAD)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    ap.add_argument("--ragged", action="store_true", help="EOS ends a row (lengths differ by runner)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = ap.parse_args()
    RAGGED = args.ragged
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    models = build_models(args.models)
    figures: dict[str, Any] = {}
    lines = [
        "| model | parameters | prompts x G x new tokens | tokens | hf (ours) tok/s | hf, transformers step, tok/s "
        "| vllm tok/s | generate tok/s | hf vs generate | vllm vs generate | vllm vs hf | vllm vs hf (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        n_prompts, max_new = WORKLOAD[name]
        n_prompts, max_new = args.prompts or n_prompts, args.max_new_tokens or max_new
        prompts = [tokenizer(row.prompt)["input_ids"] for row in make_rows(n_prompts, seed=0)]
        params = sum(p.numel() for p in model.parameters())
        for g in args.groups:
            fig = measure(model, tokenizer, prompts, g, max_new, args.repeats, args.runners)
            fig |= {"parameters": params, "prompts": n_prompts, "max_new_tokens": max_new}
            figures[f"{name}_G{g}"] = fig
            row = (
                f"| {name} | {params / 1e6:.1f}M | {n_prompts} x {g} x {max_new} | {fig['tokens']} "
                f"| {fig.get('ours_tok_s', '-')} | {fig.get('ours_hf_step_tok_s', '-')} "
                f"| {fig.get('vllm_tok_s', '-')} | {fig.get('generate_tok_s', '-')} "
                f"| {fig.get('ours_speedup', '-')}x | {fig.get('vllm_speedup', '-')}x "
                f"| {fig.get('vllm_over_ours', '-')}x | {fig.get('vllm_over_ours_cpu', '-')}x |"
            )
            lines.append(row)
            print(row, {k: v for k, v in fig.items() if k.endswith("_all_s")}, flush=True)
        if id(model) in _VLLM:
            _VLLM.pop(id(model)).close()
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        config = {
            "groups": args.groups,
            "workload": {n: WORKLOAD[n] for n in models},
            "ragged": args.ragged,
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
        name = "rollout_vs_generate_ragged" if args.ragged else "rollout_vs_generate"
        print(write_result(name, config, figures, table))


if __name__ == "__main__":
    main()
