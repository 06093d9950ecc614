"""One DAPO training step, our trainer vs TRL's GRPOTrainer, side by side on the same workload.

    .venv/bin/python benchmarks/step_vs_trl.py                      # 2 warm-up + 8 timed steps each
    .venv/bin/python benchmarks/step_vs_trl.py --steps 2 --warmup 1  # a smoke run
    .venv/bin/python benchmarks/step_vs_trl.py --skip-install        # reuse benchmarks/.venv-trl as is

Writes benchmarks/results/step_vs_trl.{json,md}: the median wall time of a training step after
warm-up for each side, the ratio ours / TRL (the issue's target: <= 0.4), the per-stage breakdown
(generation, the rest of the rollout stage, the update), tokens generated per step and the mean
completion length, with both sides' versions. CPU only (both sides are pinned to the CPU, 2 torch
threads); run it on an otherwise idle machine, it takes a few minutes on 2 cores.

TRL is a benchmark-only dependency, never a project dependency: on first use the script makes its
own virtual environment, ``benchmarks/.venv-trl`` (git-ignored), and installs ``trl`` there with the
CPU ``torch`` pinned by ``constraints-cpu.txt`` and the same ``transformers`` as the repo's ``.venv``
(so both sides run the same model code). Each side runs in its own subprocess: ours with the repo's
python (``_ours_worker.py``, the public ``dapo_rl.train`` API), TRL's with the TRL environment's python
(``_trl_worker.py``). Nothing is downloaded from the Hugging Face hub.

The workload, identical on both sides:

- a tiny Qwen2 causal LM (hidden 128, 4 layers, intermediate 512, 4 heads / 2 KV heads, tied
  embeddings, about 1M parameters), randomly initialised with a fixed seed and saved to a temporary
  directory with its tokenizer; both trainers load both from that directory;
- the tokenizer is our character-level one (the alphabet of :mod:`dapo_rl.models.tiny`), with its
  vocabulary spelled in byte-level form (space as ``Ġ``, newline as ``Ċ``): transformers 5 loads any
  ``qwen2`` checkpoint's tokenizer as ``Qwen2Tokenizer``, which rebuilds a byte-level pipeline from the
  vocabulary, so this spelling is what makes it tokenize and decode exactly like the original;
- ``<eos>`` is the tokenizer's last id and lies outside the model's output vocabulary, so neither
  trainer can sample it: every completion runs to the full 64 new tokens, on both sides, with each
  trainer's own EOS handling left in place (the reported mean completion lengths check this);
- 32 synthetic arithmetic prompts (:func:`dapo_rl.data.synthetic.make_rows`) x 8 samples per step,
  temperature 1.0, top-p 1.0, no top-k; reward: the fraction of digit characters in the decoded
  completion (varied on a random model, so advantages are not zero); group-normalised advantages;
- one optimizer update per step on all 256 completions in one micro-batch; clipped token-level loss
  with eps_low 0.2 / eps_high 0.28 (TRL ``loss_type="dapo"``); no KL, no reference model, no entropy
  bonus; AdamW, constant learning rate 1e-6, no weight decay, gradient clipping at 1.0; float32;
- ours: dynamic sampling and overlong shaping/filtering off (they are DAPO pieces TRL does not run);
  TRL: no vLLM, no bf16 autocast, no gradient checkpointing (both TRL defaults are turned off).

Both sides skip the old-log-prob forward pass: with one update per step on fresh samples the
importance ratio is exactly 1 (ours: ``Trainer._update``; TRL: ``gradient_accumulation_steps`` is a
multiple of ``steps_per_generation * num_iterations``). The JSON records what each side did.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write_result
from _step_workload import median_after_warmup

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRL_VENV = HERE / ".venv-trl"
TRL_VERSION = "1.16.0"
CONSTRAINTS = REPO / "constraints-cpu.txt"
TARGET_RATIO = 0.4

WORKLOAD = {
    "prompts_per_step": 32,
    "samples_per_prompt": 8,
    "max_new_tokens": 64,
    "temperature": 1.0,
    "top_p": 1.0,
    "clip_low": 0.2,
    "clip_high": 0.28,
    "lr": 1e-6,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "threads": 2,
    "seed": 0,
}
MODEL = {
    "architecture": "Qwen2ForCausalLM",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


# ---- the TRL environment ---------------------------------------------------------------------------


def trl_python() -> Path:
    return TRL_VENV / "bin" / "python"


def trl_env_versions() -> dict[str, str] | None:
    """Versions in the TRL environment, or None when it is missing or broken."""
    if not trl_python().is_file():
        return None
    code = "import json, trl, transformers, torch; print(json.dumps({'trl': trl.__version__, "
    code += "'transformers': transformers.__version__, 'torch': torch.__version__}))"
    out = subprocess.run([str(trl_python()), "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def ensure_trl_env(trl_version: str, skip_install: bool) -> dict[str, Any]:
    """Make ``benchmarks/.venv-trl`` with trl, the pinned CPU torch and our transformers version."""
    import transformers

    if skip_install:
        if not trl_python().is_file():
            sys.exit(f"--skip-install: {TRL_VENV} does not exist; run once without --skip-install")
        return {"installed_now": False}
    wanted = {"trl": trl_version, "transformers": transformers.__version__}
    have = trl_env_versions()
    if have is not None and all(have[k] == v for k, v in wanted.items()):
        return {"installed_now": False}
    print(
        f"installing trl=={trl_version} into {TRL_VENV} (CPU torch from {CONSTRAINTS.name}) ...", flush=True
    )
    t = time.perf_counter()
    if not trl_python().is_file():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pins = ["torch", f"transformers=={transformers.__version__}", f"trl=={trl_version}"]
    cmd = [str(trl_python()), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *pins]
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t
    print(f"installed in {seconds:.0f} s", flush=True)
    return {"installed_now": True, "install_seconds": round(seconds, 1), "pip_args": pins}


# ---- the workload --------------------------------------------------------------------------------


def build_tokenizer() -> Any:
    """Our character-level tokenizer (same alphabet and special tokens as dapo_rl.models.tiny), spelled
    in byte-level form so that Qwen2Tokenizer, which transformers 5 uses for any qwen2 checkpoint,
    reloads it unchanged; ``<eos>`` takes the last id (the model's vocabulary stops before it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from dapo_rl.models.tiny import ALPHABET, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, fast_tokenizer

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab = {PAD_TOKEN: 0, BOS_TOKEN: 1, UNK_TOKEN: 2}
    for ch in dict.fromkeys(ALPHABET):
        vocab[byte_level.pre_tokenize_str(ch)[0][0]] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.add_special_tokens([PAD_TOKEN, BOS_TOKEN, UNK_TOKEN, EOS_TOKEN])
    core.pre_tokenizer = byte_level
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    return fast_tokenizer(core)


def check_round_trip(model_dir: Path, texts: list[str]) -> str:
    """Reload the tokenizer as both trainers will (AutoTokenizer) and check it against the original."""
    from transformers import AutoTokenizer

    from dapo_rl.models.tiny import ALPHABET

    tok = AutoTokenizer.from_pretrained(model_dir)
    for text in [*texts, ALPHABET, "12 + 3\n= 15\nAnswer: 15"]:
        ids = tok(text)["input_ids"]
        if ids[0] != tok.bos_token_id or tok.decode(ids, skip_special_tokens=True) != text:
            raise RuntimeError(f"{type(tok).__name__} does not round-trip {text!r}: {ids}")
    return type(tok).__name__


def build_workload(folder: Path, steps: int, warmup: int) -> dict[str, Any]:
    """Save the model and tokenizer to ``folder/model`` and write ``folder/workload.json``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dapo_rl.data.synthetic import make_rows

    model_dir = folder / "model"
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(model_dir)
    spec = {k: v for k, v in MODEL.items() if k != "architecture"}
    config = Qwen2Config(
        vocab_size=tokenizer.eos_token_id,  # every id but <eos>: no completion can end early
        rms_norm_eps=1e-6,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=None,
        **spec,
    )
    torch.manual_seed(WORKLOAD["seed"])
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = None  # the tokenizer's <eos> is the only EOS either side uses
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(model_dir)
    n_prompts = WORKLOAD["prompts_per_step"] * (warmup + steps)
    rows = make_rows(n_prompts, seed=WORKLOAD["seed"], split="train")
    prompts = [{"prompt": r.prompt, "answer": r.answer} for r in rows]
    tokenizer_class = check_round_trip(model_dir, [p["prompt"] for p in prompts[:64]])
    longest_prompt = max(len(tokenizer(p["prompt"])["input_ids"]) for p in prompts)
    responses = WORKLOAD["prompts_per_step"] * WORKLOAD["samples_per_prompt"]
    workload = {
        **WORKLOAD,
        "steps": steps,
        "warmup": warmup,
        "model_dir": str(model_dir),
        "micro_batch_tokens": responses * (longest_prompt + WORKLOAD["max_new_tokens"]),
        "prompts": prompts,
    }
    (folder / "workload.json").write_text(json.dumps(workload))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "tokenizer_class_on_reload": tokenizer_class,
        "longest_prompt_tokens": longest_prompt,
        "micro_batch_tokens": workload["micro_batch_tokens"],
    }


# ---- running and summarising ---------------------------------------------------------------------


def run_side(python: Path | str, worker: str, folder: Path) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    t = time.perf_counter()
    subprocess.run([str(python), str(HERE / worker), str(folder)], check=True, env=env, cwd=REPO)
    out_name = "ours.json" if worker == "_ours_worker.py" else "trl.json"
    result = json.loads((folder / out_name).read_text())
    result["process_wall_s"] = round(time.perf_counter() - t, 1)
    return result


def _median(steps: list[dict[str, float]], key: str, warmup: int) -> float | None:
    return median_after_warmup([s.get(key, 0.0) for s in steps], warmup)


def summarize_ours(res: dict[str, Any], warmup: int) -> dict[str, Any]:
    steps = res["steps"]
    for s in steps:
        s["update_all_s"] = s.get("old_logprobs_s", 0.0) + s.get("update_s", 0.0)
        s["between_s"] = s["step_s"] - s.get("rollout_s", 0.0) - s["update_all_s"]
    timed = steps[warmup:]
    return {
        "median_step_s": _median(steps, "step_s", warmup),
        "median_generation_s": _median(steps, "rollout_s", warmup),
        "median_between_s": _median(steps, "between_s", warmup),
        "median_reward_s": _median(steps, "reward_s", warmup),
        "median_update_s": _median(steps, "update_all_s", warmup),
        "median_old_logprobs_s": _median(steps, "old_logprobs_s", warmup),
        "old_logprob_pass": any(s.get("old_logprobs_s", 0.0) > 1e-3 for s in steps),
        "tokens_generated_per_step": _median(steps, "tokens_generated", warmup),
        "mean_completion_len": statistics.fmean(s["mean_completion_len"] for s in timed) if timed else None,
        "reward_mean": statistics.fmean(s["reward_mean"] for s in timed) if timed else None,
        "optimizer_updates": steps[-1].get("updates") if steps else None,
        "step_s": [round(s["step_s"], 3) for s in steps],
        "threads": res["threads"],
        "versions": res["versions"],
        "process_wall_s": res["process_wall_s"],
    }


def summarize_trl(res: dict[str, Any], warmup: int) -> dict[str, Any]:
    steps = res["steps"]
    for s in steps:
        s["between_s"] = s.get("generate_and_score_s", 0.0) - s.get("generate_s", 0.0)
        s["update_all_s"] = s["step_s"] - s.get("generate_and_score_s", 0.0)
    timed = steps[warmup:]
    return {
        "median_step_s": _median(steps, "step_s", warmup),
        "median_generation_s": _median(steps, "generate_s", warmup),
        "median_between_s": _median(steps, "between_s", warmup),
        "median_update_s": _median(steps, "update_all_s", warmup),
        "old_logprob_pass": any(s.get("logprob_calls_no_grad", 0) > 0 for s in steps),
        "old_logprob_pass_by_rule": res["old_logprob_pass_by_rule"],
        "logprob_forward_calls_per_step": {
            "with_grad": _median(steps, "logprob_calls_grad", 0),
            "without_grad": _median(steps, "logprob_calls_no_grad", 0),
        },
        "tokens_generated_per_step": _median(steps, "tokens_generated", warmup),
        "mean_completion_len": (
            statistics.fmean(s["tokens_generated"] / s["completions"] for s in timed) if timed else None
        ),
        "reward_mean": statistics.fmean(s.get("reward_mean", float("nan")) for s in timed) if timed else None,
        "step_s": [round(s["step_s"], 3) for s in steps],
        "threads": steps[-1]["threads"] if steps else None,
        "tokenizer_class": res["tokenizer_class"],
        "eos_token_ids": res["eos_token_ids"],
        "versions": res["versions"],
        "process_wall_s": res["process_wall_s"],
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(ours: dict[str, Any], trl: dict[str, Any], ratio: float | None, timed: int, load: str) -> str:
    lines = [
        f"| side | s/step (median of {timed}) | generation | reward, advantages, bookkeeping | "
        "update (fwd+bwd+AdamW) | old-log-prob pass | tokens/step | mean completion length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in (("dapo_rl", ours), (f"TRL GRPOTrainer {trl['versions']['trl']}", trl)):
        lines.append(
            f"| {name} | {_fmt(s['median_step_s'])} | {_fmt(s['median_generation_s'])} | "
            f"{_fmt(s['median_between_s'])} | {_fmt(s['median_update_s'])} | "
            f"{'yes' if s['old_logprob_pass'] else 'no'} | {_fmt(s['tokens_generated_per_step'], 0)} | "
            f"{_fmt(s['mean_completion_len'], 1)} |"
        )
    met = "—" if ratio is None else ("met" if ratio <= TARGET_RATIO else "not met")
    lines.append("")
    lines.append(f"Ratio ours / TRL (median s/step): **{_fmt(ratio)}** (target <= {TARGET_RATIO}: {met}).")
    lines.append(
        f"CPU, {ours['threads']} torch threads per side; 1-minute load average before / after: {load}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per side, not timed")
    parser.add_argument("--skip-install", action="store_true", help="use benchmarks/.venv-trl as it is")
    parser.add_argument("--trl-version", default=TRL_VERSION, help="trl version for benchmarks/.venv-trl")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    install = ensure_trl_env(args.trl_version, args.skip_install)
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before[0]:.1f} — the machine is busy, times will be inflated")
    with tempfile.TemporaryDirectory(prefix="step_vs_trl_") as tmp:
        folder = Path(tmp)
        model = build_workload(folder, args.steps, args.warmup)
        print(f"model: {model['parameters']:,} parameters, saved to {folder / 'model'}", flush=True)
        ours = summarize_ours(run_side(sys.executable, "_ours_worker.py", folder), args.warmup)
        trl = summarize_trl(run_side(trl_python(), "_trl_worker.py", folder), args.warmup)
    ratio = (
        ours["median_step_s"] / trl["median_step_s"]
        if ours["median_step_s"] and trl["median_step_s"]
        else None
    )
    config = {
        "workload": {**WORKLOAD, "steps": args.steps, "warmup": args.warmup},
        "model": {**MODEL, **model},
        "trl_version": args.trl_version,
        "device": "cpu",
    }
    figures = {
        "ratio_ours_over_trl": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio is not None and ratio <= TARGET_RATIO,
        "ours": ours,
        "trl": trl,
        "trl_install": install,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    load = f"{load_before[0]:.1f} / {figures['load_average_after'][0]:.1f}"
    text = table(ours, trl, ratio, args.steps, load)
    path = write_result("step_vs_trl", config, figures, text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
