"""Setting up a run: the model directory, the rows (the one loader, used by training and ``dapo
eval`` alike), the datasets, the EOS ids and the run directory. Kept out of the trainer so that the
loop reads top to bottom."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dapo_rl.config import DapoConfig, anchored_paths, config_to_yaml
from dapo_rl.data.dataset import PromptDataset, filter_prompt_length
from dapo_rl.data.encoder import PromptEncoder
from dapo_rl.data.length_task import warm_start_recipe
from dapo_rl.data.readers import canonical_answer, read_files
from dapo_rl.data.synthetic import make_rows
from dapo_rl.data.types import PromptRow
from dapo_rl.distributed import DistContext
from dapo_rl.errors import RunDirError
from dapo_rl.lifecycle import note_run_dir
from dapo_rl.models.sft import ensure_warm_model
from dapo_rl.plugins import resolve_loader
from dapo_rl.storage import (
    atomic_write_text,
    claim_run_dir,
    foreign_files,
    lock_run_dir,
    run_dir_in_use,
    unlock_run_dir,
    write_run_marker,
)
from dapo_rl.tracking import MetricsLogger


def model_dir(cfg: DapoConfig) -> Path:
    """The configured model directory, or the cached warm-started tiny model (built on first use,
    with ``train.num_threads`` threads like every other stage of the run)."""
    if cfg.model.path is not None:
        return Path(cfg.model.path).expanduser()
    return ensure_warm_model(threads=cfg.train.num_threads, **warm_start_recipe(cfg.data.synthetic))


def load_rows(cfg: DapoConfig, split: str) -> list[PromptRow]:
    """Training (``train``) or held-out (``eval``) rows: the configured files, else the synthetic task."""
    if cfg.data.loader is not None:
        return rows_from_user(resolve_loader(cfg.data.loader)(split), f"data.loader({split!r})")
    files = cfg.data.train_files if split == "train" else cfg.data.eval_files
    if not files:
        if cfg.data.train_files:  # real training data but no eval files: no held-out set
            return []
        n = cfg.data.synthetic.num_train if split == "train" else cfg.data.synthetic.num_eval
        return make_rows(n, seed=cfg.train.seed, split="train" if split == "train" else "test")
    d = cfg.data  # skipped malformed rows are reported per file; an empty file is an error
    return read_files(files, d.prompt_key, d.answer_key, on_malformed=d.on_malformed)


def rows_from_user(items: Any, source: str) -> list[PromptRow]:
    """PromptRows from what user code gave: PromptRows, or dicts with ``prompt`` and ``answer``
    (other keys go to ``extra``; ``uid`` is used when present). The answer takes the form a row read
    from a file has (:func:`dapo_rl.data.readers.canonical_answer`), so one reward serves both."""
    rows = []
    for i, item in enumerate(items or []):
        if isinstance(item, PromptRow):
            rows.append(item)
            continue
        if not isinstance(item, dict) or "prompt" not in item or "answer" not in item:
            raise ValueError(
                f"{source}: item {i} is {type(item).__name__} {item!r:.80}; expected a PromptRow or a dict "
                "with 'prompt' and 'answer'"
            )
        extra = {k: v for k, v in item.items() if k not in ("prompt", "answer", "uid")}
        try:  # the form rewards get from files too: a dict answer becomes sorted compact JSON
            answer = canonical_answer(item["answer"], extra)
        except ValueError as exc:
            raise ValueError(f"{source}: item {i}: {exc}") from None
        rows.append(PromptRow(item["prompt"], answer, str(item.get("uid", f"{source}:{i}")), extra))
    return rows


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation-config EOS."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, list):
        ids.update(int(i) for i in extra)
    if not ids:
        raise ValueError("the tokenizer has no EOS token and the model's generation config names none")
    return sorted(ids)


def build_datasets(
    cfg: DapoConfig,
    encode: PromptEncoder,
    train_rows: list[PromptRow] | None = None,
    eval_rows: list[PromptRow] | None = None,
) -> tuple[PromptDataset, list[PromptRow]]:
    """The training stream (over-long prompts dropped and counted, or an error) and held-out rows;
    rows given from Python replace the configured data."""
    train = rows_from_user(train_rows, "train_rows") if train_rows is not None else load_rows(cfg, "train")
    rows, dropped = filter_prompt_length(
        train, lambda r: len(encode(r)), cfg.data.max_prompt_tokens, cfg.data.on_long_prompt
    )
    if not rows:
        raise ValueError(
            f"no training rows left: {dropped} prompt(s) are longer than data.max_prompt_tokens="
            f"{cfg.data.max_prompt_tokens}, or the training files are empty"
        )
    if dropped:
        print(
            f"dropped {dropped} training prompt(s) longer than data.max_prompt_tokens={cfg.data.max_prompt_tokens}"
        )
    held_out = rows_from_user(eval_rows, "eval_rows") if eval_rows is not None else load_rows(cfg, "eval")
    dataset = PromptDataset(rows, seed=cfg.train.seed, shuffle=cfg.data.shuffle)
    dataset.dropped_long = dropped  # read by the health guard (prompts cut by data.max_prompt_tokens)
    return dataset, held_out[: cfg.eval.max_problems]


def open_run(
    cfg: DapoConfig, run_dir: Path | None, ctx: DistContext, write_config: bool = True
) -> tuple[Path, MetricsLogger]:
    """The run directory (a new one named by rank 0 unless given) marked as a run's, with the
    resolved config saved in it (atomically; a resumed run writes it only once its checkpoint has
    loaded: ``write_config=False``), and the metrics logger (only rank 0 writes)."""
    run_dir = ctx.broadcast_object(run_dir or (new_run_dir(cfg) if ctx.is_main else None))
    if ctx.is_main:
        write_run_marker(run_dir)
        if write_config:
            save_config(cfg, run_dir)
    lg = cfg.logging
    logger = MetricsLogger(
        run_dir, lg.tensorboard, lg.wandb, lg.wandb_project, cfg.model_dump(), enabled=ctx.is_main
    )
    return run_dir, logger


def save_config(cfg: DapoConfig, run_dir: Path) -> None:
    """``run_dir/config.yaml``, written atomically (a kill never leaves it half-written), with every
    path it names absolute so that ``--resume`` finds the same files from any directory."""
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(anchored_paths(cfg)))


def new_run_dir(cfg: DapoConfig) -> Path:
    """``logging.run_dir / (run_name or a timestamp)``, created and locked; never a directory that
    holds another run (a named one is refused, a timestamp gets a ``-2``, ``-3``... suffix)."""
    root = Path(cfg.logging.run_dir)
    if cfg.logging.run_name:
        return claim_run_dir(root / cfg.logging.run_name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 1
    while run_dir_in_use(path) or foreign_files(path):
        n += 1
        path = root / f"{stamp}-{n}"
    return claim_run_dir(path)


def check_run_dir(cfg: DapoConfig, run_dir: Path | None, resume: bool, ctx: DistContext) -> Path:
    """Before the model and data load: the run directory, created and locked by rank 0 for the
    life of the process (:func:`~dapo_rl.storage.lock_run_dir`). A new run's directory must not
    hold another run (nor files a run would write over), and must be writable; a resumed one must
    not be in use by another process. Every rank gets the directory, or raises the same
    :class:`~dapo_rl.errors.RunDirError`."""
    problem, path = None, None
    if ctx.is_main:
        try:
            named = run_dir or (
                Path(cfg.logging.run_dir) / cfg.logging.run_name if cfg.logging.run_name else None
            )
            fresh = not resume and (named is None or not Path(named).exists())
            if resume and run_dir is not None:
                lock_run_dir(run_dir)
                path = Path(run_dir)
            else:
                path = claim_run_dir(run_dir) if run_dir is not None else new_run_dir(cfg)
            note_run_dir(path, fresh)
        except RunDirError as exc:
            problem = str(exc)
    problem, path = ctx.broadcast_object((problem, path))
    if problem:
        raise RunDirError(problem)
    return Path(path)


def release_run_dir(run_dir: Path, ctx: DistContext) -> None:
    """Give back the lock :func:`check_run_dir` took (rank 0 holds it; the others have nothing)."""
    if ctx.is_main:
        unlock_run_dir(run_dir)
