"""Supervised warm start of the tiny model on the synthetic task, cached on disk.

:func:`run_sft` trains a fresh tiny Llama on worked solutions
(:func:`dapo_rl.data.synthetic.format_solution`; loss on the response tokens and the final EOS only),
AdamW with linear warm-up and cosine decay, then measures the model on held-out problems with
:func:`dapo_rl.evaluation.evaluate` (the evaluation training and ``dapo eval`` use) and writes
model, tokenizer and ``sft_info.json`` atomically.

The teacher is fallible on purpose: at each column with a carry (or borrow) coming in, it leaves the
carry out with probability ``forget_carry`` (0.4), carries on from what it wrote and states the
answer its working implies. The warm model imitates that habit as well as the arithmetic: it writes
the format reliably and knows most column facts, but at temperature 1 it drops carries about as
often as its teacher. This is the situation reinforcement learning from a verifiable reward is for
(imitation copied a bad habit; only the reward tells it apart). The measured effect of the recipe
(accuracy, the habit before and after DAPO, timings) is in benchmarks/README.md and in each warm
model's ``sft_info.json``.

:func:`ensure_warm_model` returns a cached warm model directory, training it first when the cache
has no complete one for the current task and model configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dapo_rl.data import length_task, synthetic
from dapo_rl.data.encoder import PromptEncoder
from dapo_rl.evaluation import EvalSpec, evaluate
from dapo_rl.models.tiny import build_tiny_model, build_tokenizer, default_cache_dir
from dapo_rl.rewards.runner import RewardRunner
from dapo_rl.rollout.hf_engine import HFRolloutEngine

#: Bump when the SFT recipe changes in a way that changes the cached model.
SFT_VERSION = "sft-v2"
INFO_FILE = "sft_info.json"
#: Generation cap used when evaluating the warm model (longest reference response: 49 tokens).
EVAL_MAX_NEW_TOKENS = 64
_WARMUP_STEPS = 30
_WEIGHT_DECAY = 0.01
_HEADS = 4
_PACK_LEN = 128  # tokens per packed training row (the longest example has about 60)


@dataclass(frozen=True)
class SFTConfig:
    """Everything that determines the warm model (hashed into the cache directory name)."""

    steps: int = 1600
    batch_size: int = 32
    lr: float = 2e-3
    hidden: int = 128
    layers: int = 4
    seed: int = 0
    forget_carry: float = 0.4
    ramble: float = 0.0  # the length task's rambling teacher (dapo_rl.data.length_task); 0: none

    def digest(self) -> str:
        """A short hash of this config, the task version and the SFT version."""
        sft = {k: v for k, v in asdict(self).items() if k != "ramble" or v}  # ramble 0: the old hash
        payload = json.dumps(
            {"sft": sft, "task": synthetic.TASK_VERSION, "version": SFT_VERSION}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _encode_examples(
    tokenizer: Any, rows: list, forget_carry: float = 0.0, seed: int = 0, ramble: float = 0.0
) -> list[tuple[list[int], int]]:
    """Token ids of prompt + solution + EOS, with the prompt length (its tokens get no loss).

    The solutions are the fallible teacher's (:func:`~dapo_rl.data.synthetic.format_solution`
    with ``forget_carry``, drawn reproducibly from ``seed``), rambled when ``ramble`` > 0
    (:func:`~dapo_rl.data.length_task.teacher_solution`)."""
    rng = random.Random(f"teacher:{seed}")
    if ramble > 0.0:
        targets = [length_task.teacher_solution(r, forget_carry, ramble, rng) for r in rows]
    else:
        targets = [synthetic.format_solution(r, forget_carry, rng) for r in rows]
    prompts = tokenizer([r.prompt for r in rows])["input_ids"]
    answers = tokenizer(targets, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(prompts, answers)]


def _pack(examples: list[tuple[list[int], int]], pad_id: int, row_len: int) -> dict[str, torch.Tensor]:
    """Pack examples into rows of ``row_len`` tokens (first fit, longest first).

    Position ids restart at 0 for every example; with no attention mask, transformers turns them
    into a block-diagonal causal mask, so packed examples never see each other. Labels are -100
    on prompts (BOS included) and padding, so no loss crosses an example boundary.
    """
    rows: list[list[tuple[list[int], int]]] = []
    used: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e[0])):
        for r, fill in enumerate(used):
            if fill + len(ex[0]) <= row_len:
                rows[r].append(ex)
                used[r] += len(ex[0])
                break
        else:
            rows.append([ex])
            used.append(len(ex[0]))
    width = max(used)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    # Padding continues the positions of the row's last example, so it forms no extra sequence.
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for ids, prompt_len in row:
            end = at + len(ids)
            input_ids[r, at:end] = torch.tensor(ids)
            labels[r, at + prompt_len : end] = input_ids[r, at + prompt_len : end]
            positions[r, at:end] = torch.arange(len(ids))
            at = end
        positions[r, at:] = torch.arange(len(row[-1][0]), len(row[-1][0]) + width - at)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions, "use_cache": False}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate_warm_model(
    model: torch.nn.Module, tokenizer: Any, problems: int = 200, samples: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Accuracy on ``problems`` held-out problems: greedy, and ``samples`` samples at temperature 1,
    through :func:`dapo_rl.evaluation.evaluate` with the synthetic reward.

    Also the fraction of problems whose samples are mixed / all right / all wrong (the DAPO
    dynamic-sampling view), the per-level sampled accuracy and the carries left out.
    """
    rows = synthetic.make_rows(problems, seed=seed, split="test")
    engine = HFRolloutEngine(model, tokenizer)
    encode = PromptEncoder(tokenizer, "plain", use_chat_template=False, system_prompt=None)
    base = {"max_response_tokens": EVAL_MAX_NEW_TOKENS, "eos_token_ids": [tokenizer.eos_token_id]}
    one_batch = {"batch_prompts": len(rows), "seed": seed}  # every prompt in one call, seeded once
    with RewardRunner("synthetic", timeout_s=None) as reward:
        greedy = evaluate(engine, encode, reward, rows, EvalSpec(k=1, temperature=0.0, **base, **one_batch))
        sampled = evaluate(
            engine, encode, reward, rows, EvalSpec(k=samples, keep_texts=True, **base, **one_batch)
        )
    counts = [p["num_correct"] for p in sampled["problems"]]
    per_level: dict[str, float] = {}
    for level in sorted({r.extra["level"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.extra["level"] == level]
        per_level[str(level)] = sum(counts[i] for i in idx) / (samples * len(idx))
    carries = [synthetic.forgotten_carries(t) for p in sampled["problems"] for t in p["texts"]]
    due = sum(d for d, _ in carries)
    return {
        "eval_problems": problems,
        "eval_samples_per_problem": samples,
        "greedy_accuracy": greedy["avg_at_k"]["mean"],
        "sampled_accuracy": sampled["avg_at_k"]["mean"],
        "groups_mixed": sum(0 < c < samples for c in counts) / problems,
        "groups_all_right": sum(c == samples for c in counts) / problems,
        "groups_all_wrong": sum(c == 0 for c in counts) / problems,
        "sampled_accuracy_per_level": per_level,
        "sampled_mean_length": sampled["mean_response_tokens"],
        "sampled_truncated": sampled["truncation_rate"],
        "sampled_forgotten_carry_rate": sum(f for _, f in carries) / due if due else 0.0,
        "sampled_rambling_rate": sum(
            length_task.repeats(t) > 0 for p in sampled["problems"] for t in p["texts"]
        )
        / (samples * problems),
    }


def _train(
    model: torch.nn.Module, tokenizer: Any, cfg: SFTConfig, max_seconds: float | None, progress: bool
) -> dict[str, Any]:
    """``cfg.steps`` AdamW steps (fewer if ``max_seconds`` runs out); returns the loss record."""
    rows = synthetic.make_rows(
        cfg.steps * cfg.batch_size, seed=cfg.seed, split="train", difficulty=synthetic.SFT_LEVELS
    )
    examples = _encode_examples(tokenizer, rows, cfg.forget_carry, cfg.seed, cfg.ramble)
    random.Random(cfg.seed).shuffle(examples)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=_WEIGHT_DECAY, betas=(0.9, 0.98)
    )
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="SFT warm start", disable=not progress, leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, _WARMUP_STEPS, cfg.steps)
        chunk = examples[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        loss = model(**_pack(chunk, tokenizer.pad_token_id, _PACK_LEN)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    bar.close()
    model.eval()
    tail = losses[-10:]
    return {
        "steps": len(losses),
        "train_seconds": time.perf_counter() - start,
        "initial_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "loss_every_25_steps": [round(x, 4) for x in losses[::25]],
    }


def _atomic_save(model: torch.nn.Module, tokenizer: Any, info: dict[str, Any], output_dir: Path) -> None:
    """Write everything into a sibling temp dir, then rename it into place."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if output_dir.exists():
            trash = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}-{time.time_ns()}"
            output_dir.rename(trash)
            tmp.rename(output_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def run_sft(
    output_dir: Path,
    steps: int = SFTConfig.steps,
    seed: int = 0,
    batch_size: int = SFTConfig.batch_size,
    lr: float = SFTConfig.lr,
    hidden: int = SFTConfig.hidden,
    layers: int = SFTConfig.layers,
    forget_carry: float = SFTConfig.forget_carry,
    ramble: float = SFTConfig.ramble,
    max_seconds: float | None = None,
    eval_problems: int = 200,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the warm-start model and save it (with its tokenizer and ``sft_info.json``) to ``output_dir``.

    Training runs ``steps`` AdamW steps of ``batch_size`` problems (levels 1-4) solved by a teacher
    that leaves out a carry with probability ``forget_carry`` (see the module docstring), learning rate
    ``lr`` after a 30-step warm-up, cosine-decayed to a tenth. ``max_seconds`` is an optional wall
    clock cap (off by default: a cut-short model may not have learned the task yet). ``threads``
    sets torch's CPU threads for the run (restored afterwards; ``None`` keeps them: a run passes its
    ``train.num_threads``, :func:`dapo_rl.runtime.model_dir`).
    ``eval_problems=0`` skips the final evaluation. Returns the info written to ``sft_info.json``.
    """
    output_dir = Path(output_dir)
    cfg = SFTConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        hidden=hidden,
        layers=layers,
        seed=seed,
        forget_carry=forget_carry,
        ramble=ramble,
    )
    with _torch_threads(threads):
        start = time.perf_counter()
        tokenizer = build_tokenizer()
        model = build_tiny_model(tokenizer, hidden=cfg.hidden, layers=cfg.layers, heads=_HEADS, seed=seed)
        info: dict[str, Any] = {
            "task_version": synthetic.TASK_VERSION,
            "sft_version": SFT_VERSION,
            "config": asdict(cfg),
            "config_hash": cfg.digest(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(),
        }
        info.update(_train(model, tokenizer, cfg, max_seconds, progress))
        if eval_problems > 0:
            eval_start = time.perf_counter()
            info.update(evaluate_warm_model(model, tokenizer, problems=eval_problems, seed=seed))
            info["eval_seconds"] = time.perf_counter() - eval_start
        info["seconds"] = time.perf_counter() - start
        _atomic_save(model, tokenizer, info, output_dir)
    return info


def read_info(model_dir: Path) -> dict[str, Any] | None:
    """The ``sft_info.json`` of a warm model directory, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads((Path(model_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_warm_model(
    cache_dir: Path | None = None,
    steps: int = SFTConfig.steps,
    seed: int = 0,
    progress: bool = True,
    output_dir: Path | None = None,
    force: bool = False,
    **sft_kwargs: Any,
) -> Path:
    """The directory of a warm-started model for the current task, training one if needed.

    The directory is ``output_dir`` when given, else ``<cache_dir>/warm-<hash>`` (``cache_dir``
    defaults to :func:`~dapo_rl.models.tiny.default_cache_dir`), the hash covering the task version
    and the SFT configuration. It is reused when it holds a model, a tokenizer and an
    ``sft_info.json`` with that hash (unless ``force``); otherwise :func:`run_sft` writes it
    (``sft_kwargs`` go to :func:`run_sft`). Concurrent callers (several ranks, several runs) wait on
    a file lock next to the directory, so only one of them trains.
    """
    cfg_fields = {k: v for k, v in sft_kwargs.items() if k in SFTConfig.__dataclass_fields__}
    digest = SFTConfig(steps=steps, seed=seed, **cfg_fields).digest()
    if output_dir is not None:
        target = Path(output_dir).expanduser()
    else:
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        target = cache / f"warm-{digest}"
    if not force and _is_complete(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        # Another process may have finished meanwhile (a forced call retrains anyway).
        if force or not _is_complete(target, digest):
            run_sft(target, steps=steps, seed=seed, progress=progress, **sft_kwargs)
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(model_dir: Path, digest: str) -> bool:
    info = read_info(model_dir)
    if info is None or info.get("config_hash") != digest:
        return False
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return all((model_dir / name).is_file() for name in needed)
