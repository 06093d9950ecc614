"""The ``dapo`` command: parse arguments and call down into the library. Each command imports what
it needs when it runs (torch, transformers and the trainer take seconds to import), so ``--help``
is instant; that is the one reason for the imports inside functions here.

dapo train                                   # embedded default: tiny model + synthetic task
dapo train --config gsm8k model.path=DIR     # a preset plus dotted overrides
dapo train --resume runs/NAME                # continue a killed run exactly
torchrun --nproc_per_node 4 -m dapo_rl train ...          # data parallel (docs/distributed.md)
dapo train --launcher ray --num-workers 4 ...  # data parallel on Ray Train workers
dapo eval --model DIR --data FILE --reward math_dapo -k 32
dapo sft [--forget-carry P] [--steps N]      # (re)build the warm-started tiny model
dapo config show [--config X] [key=value ...]
dapo plot runs/NAME                          # redraw the PNG plots of a run
dapo samples runs/NAME [--step N] [--eval]   # read what the model wrote (generations, eval responses)
dapo doctor runs/NAME                        # diagnose a run: ledger, guard findings, trends (docs/health.md)
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        help="preset name (tiny, gsm8k, dapo_math, countdown, paper_32b, grpo_baseline) or a YAML file; default: tiny",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algorithm.clip_ratio_high=0.3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dapo",
        description="Train language models with DAPO (clip-higher, dynamic sampling, token-level loss, "
        "overlong reward shaping).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train with DAPO (default: tiny model on the synthetic task)")
    _add_config_args(train)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="resume the run in RUN_DIR from its newest valid checkpoint"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the files of an earlier run in the same run directory first (without it a run "
        "name in use is refused)",
    )
    train.add_argument(
        "--launcher",
        choices=["local", "ray"],
        default="local",
        help="local: train in this process (one rank of the group under torchrun); "
        "ray: start --num-workers Ray Train workers, one rank each (needs the ray extra)",
    )
    train.add_argument("--num-workers", type=int, default=1, help="Ray workers with --launcher ray")
    train.add_argument("--use-gpu", action="store_true", help="one GPU per Ray worker (NCCL)")

    ev = sub.add_parser("eval", help="evaluate a model: avg@k, pass@k, maj@k with 95%% intervals")
    ev.add_argument("--model", default=None, help="HF model directory (default: the embedded tiny model)")
    ev.add_argument("--data", default=None, help="jsonl/parquet file (default: the synthetic held-out split)")
    ev.add_argument("--reward", default=None, help="reward function name (default from the preset)")
    ev.add_argument("-k", type=int, default=None, help="samples per problem")
    ev.add_argument("--max-problems", type=int, default=None)
    ev.add_argument("--output", "-o", default=None, help="write the JSON result here as well")
    _add_config_args(ev)

    sft = sub.add_parser("sft", help="build the warm-started tiny model for the embedded default run")
    sft.add_argument("--output", default=None, help="model directory (default: the cache)")
    sft.add_argument("--force", action="store_true", help="retrain even if a cached model exists")
    sft.add_argument(
        "--forget-carry",
        type=float,
        default=None,
        metavar="P",
        help="the teacher leaves out a carry with probability P (default 0.4; 0: a faultless teacher)",
    )
    sft.add_argument("--steps", type=int, default=None, help="SFT steps (default 1600)")

    cfg = sub.add_parser("config", help="inspect configurations")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the resolved configuration")
    _add_config_args(show)
    cfg_sub.add_parser("docs", help="print the configuration reference (docs/config.md)")

    plot = sub.add_parser("plot", help="(re)draw the PNG plots of a run directory")
    plot.add_argument("run_dir")

    samples = sub.add_parser(
        "samples", help="print a run's generations with their rewards (or an evaluation's responses)"
    )
    samples.add_argument("run", help="run directory, or a .jsonl file written by dapo eval -o")
    samples.add_argument("--step", type=int, default=None, help="this step (default: the latest)")
    samples.add_argument("--eval", action="store_true", help="the evaluation's responses (eval/step_N.jsonl)")
    samples.add_argument("--limit", type=int, default=8, help="at most this many problems (default 8)")

    doctor = sub.add_parser(
        "doctor", help="diagnose a run directory (finished, running or killed): exit 0 healthy, 6 not"
    )
    doctor.add_argument("run_dir")
    return parser


def _cmd_config(args: argparse.Namespace) -> int:
    from dapo_rl.config import config_to_yaml, load_config

    if args.config_command == "show":
        print(config_to_yaml(load_config(args.config, args.overrides, check_paths=False)), end="")
        return 0
    if args.config_command == "docs":
        from dapo_rl.config_docs import render

        print(render(), end="")
        return 0
    print("usage: dapo config {show,docs}", file=sys.stderr)
    return 2


def _cmd_train(args: argparse.Namespace) -> int:
    from dapo_rl.lifecycle import stop_on_signals

    with stop_on_signals():  # from here to the exit: SIGINT/SIGTERM -> a message and 130/143
        from dapo_rl.errors import Interrupted

        try:
            return _train(args)
        except Interrupted as stop:
            return _stopped(stop)


def _stopped(stop: Any) -> int:
    """A signal stopped ``dapo train`` outside the step loop: say where the run stands, 130/143."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the message short
        signal.signal(sig, signal.SIG_IGN)
    from dapo_rl.launch import stopped_message

    print(f"dapo train: {stopped_message(stop)}", file=sys.stderr)
    return stop.exit_code


def _train(args: argparse.Namespace) -> int:
    from dapo_rl.errors import UsageError, stopped_exit_code

    if args.launcher == "ray":
        from dapo_rl.launch_ray import launch

        if args.overwrite:
            raise UsageError("--overwrite does not work with --launcher ray: choose another logging.run_name")
        summary = launch(args.config, args.overrides, args.resume, args.num_workers, args.use_gpu) or {}
    else:
        from dapo_rl.launch import train_from_cli

        summary = train_from_cli(args.config, args.overrides, args.resume, args.overwrite)
    if summary.get("stopped_early"):  # a checkpoint was written: resumable (130 SIGINT, 143 SIGTERM)
        return stopped_exit_code(getattr(signal, summary.get("stopped_by") or "SIGTERM"))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    eval_from_cli(args)
    return 0


def eval_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``dapo eval``: evaluate a model directory on held-out rows and print/write the result.

    Settings come from the config (``--config``, default preset ``tiny``, plus dotted overrides):
    sampling from ``eval.temperature``, ``eval.top_p`` and ``eval_max_response_tokens``, prompts from
    ``data.template`` / ``use_chat_template`` / ``system_prompt``, the reward from ``reward.name``,
    k from ``eval.k``, the engine from ``rollout.engine``; ``--reward``, ``-k`` and
    ``--max-problems`` override them. ``--model`` None uses ``model.path`` or the embedded
    warm-started tiny model. Rows: ``--data FILE``, else the eval split of the training run's data
    (:func:`dapo_rl.runtime.load_rows`: ``data.loader``, ``data.eval_files`` or the synthetic
    held-out split), in order (the first ``--max-problems``). The table goes to stderr and the JSON
    to stdout (and to ``--output``). Missing paths raise ``FileNotFoundError`` naming the path.
    """
    import torch  # deferred: see the module docstring

    from dapo_rl.data.encoder import PromptEncoder
    from dapo_rl.distributed import resolve_device
    from dapo_rl.evaluation import EvalSpec, evaluate
    from dapo_rl.health.run import check_eval
    from dapo_rl.lifecycle import quiet_third_party
    from dapo_rl.models.loading import load_model_and_tokenizer
    from dapo_rl.plugins import resolve_reward, resolve_template
    from dapo_rl.registry import RegistryError
    from dapo_rl.rewards.runner import RewardRunner
    from dapo_rl.rollout.factory import build_engine
    from dapo_rl.runtime import eos_token_ids, model_dir

    cfg = _eval_config(args)
    try:
        reward_fn = resolve_reward(cfg.reward.name, "--reward" if args.reward is not None else "reward.name")
        template = resolve_template(cfg.data.template)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    model_arg, source = (args.model, "--model") if args.model is not None else (cfg.model.path, "model.path")
    if model_arg is not None and not Path(model_arg).expanduser().is_dir():
        raise FileNotFoundError(f"model directory not found ({source}): {model_arg}")
    rows, data_desc = _eval_rows(cfg)
    # Only now (all cheap checks passed) build the warm-started tiny model if it is needed.
    path = Path(model_arg).expanduser() if model_arg is not None else model_dir(cfg)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    quiet_third_party()  # our eval bar only
    model, tokenizer = load_model_and_tokenizer(path, cfg, resolve_device(cfg.train.device), trainable=False)
    engine = build_engine(model, tokenizer, cfg)
    encode = PromptEncoder(tokenizer, template, cfg.data.use_chat_template, cfg.data.system_prompt)
    ev = cfg.eval
    spec = EvalSpec(
        k=ev.k, max_response_tokens=cfg.eval_max_response_tokens, eos_token_ids=eos_token_ids(tokenizer, model),
        temperature=ev.temperature, top_p=ev.top_p, seed=cfg.train.seed, stop_strings=cfg.rollout.stop_strings,
        progress=True, keep_texts=args.output is not None,
    )  # fmt: skip
    settings = {
        "model": str(path), "data": data_desc, "reward": cfg.reward.name, "k": ev.k,
        "temperature": ev.temperature, "top_p": ev.top_p, "max_response_tokens": cfg.eval_max_response_tokens,
        "template": cfg.data.template, "use_chat_template": cfg.data.use_chat_template, "seed": cfg.train.seed,
    }  # fmt: skip
    r = cfg.reward
    with RewardRunner(reward_fn, r.timeout_s, r.num_workers, eos_text=tokenizer.eos_token) as runner:
        result = {"settings": settings, **evaluate(engine, encode, runner, rows, spec)}
    _report_eval(result, args.output)
    check_eval(cfg, result)  # the health guard: truncation, unparsed answers, reward failures
    return result


def _eval_config(args: argparse.Namespace) -> Any:
    """The config with ``dapo eval``'s flags folded in: ``--data`` replaces the configured eval data,
    ``-k``, ``--max-problems`` and ``--reward`` their config keys."""
    from dapo_rl.config import load_config

    cfg = load_config(args.config, args.overrides, check_paths=False)
    k = args.k if args.k is not None else cfg.eval.k
    if k < 1:
        raise ValueError(f"-k must be >= 1, got {k}")
    max_problems = args.max_problems if args.max_problems is not None else cfg.eval.max_problems
    if max_problems is not None and max_problems < 1:
        raise ValueError(f"--max-problems must be >= 1, got {max_problems}")
    data = cfg.data
    if args.data is not None:  # one file given on the command line replaces the configured data
        data = data.model_copy(update={"eval_files": [args.data], "loader": None})
    reward = cfg.reward.model_copy(
        update={"name": args.reward if args.reward is not None else cfg.reward.name}
    )
    ev = cfg.eval.model_copy(update={"k": k, "max_problems": max_problems})
    return cfg.model_copy(update={"data": data, "reward": reward, "eval": ev})


def _eval_rows(cfg: Any) -> tuple[list[Any], str]:
    """The held-out rows through the one loader (:func:`dapo_rl.runtime.load_rows`), the first
    ``eval.max_problems`` of them, and where they come from, in words."""
    from dapo_rl.runtime import load_rows

    d = cfg.data
    if d.loader is not None:
        desc = f"data.loader {d.loader!r} (split 'eval')"
    elif d.eval_files:
        desc = ", ".join(str(f) for f in d.eval_files)
    else:
        desc = f"synthetic held-out split (num_eval={d.synthetic.num_eval}, seed={cfg.train.seed})"
    rows = load_rows(cfg, "eval")[: cfg.eval.max_problems]
    if not rows and d.train_files and not d.eval_files and d.loader is None:
        raise ValueError("no evaluation data: pass --data FILE or set data.eval_files")
    if not rows:
        raise ValueError(f"no problems to evaluate in {desc}")
    return rows, desc


def _report_eval(result: dict[str, Any], output: str | None) -> None:
    """The table to stderr, the JSON to stdout and to ``output`` (with every response beside it)."""
    from dapo_rl.eval_metrics import format_table, to_json
    from dapo_rl.generations import append_jsonl, eval_records, without_responses

    print(format_table(result), file=sys.stderr)
    text = to_json(without_responses(result))
    print(text)
    if output is not None:
        from dapo_rl.storage import atomic_write_text, storage_error

        out = Path(output).expanduser()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # exit code 4 naming the path, like every write of a run
            raise storage_error("the evaluation result", out, exc) from exc
        atomic_write_text(out, text + "\n")
        append_jsonl(out.with_suffix(".jsonl"), eval_records(result), mode="w")  # every response
        print(f"wrote {out} and {out.with_suffix('.jsonl')} (dapo samples reads it)", file=sys.stderr)


def _cmd_sft(args: argparse.Namespace) -> int:
    from dapo_rl.lifecycle import quiet_third_party
    from dapo_rl.models.sft import ensure_warm_model

    quiet_third_party()  # our SFT bar only

    recipe = {}
    if args.forget_carry is not None:
        if not 0.0 <= args.forget_carry <= 1.0:
            print(f"dapo sft: --forget-carry must be in [0, 1], got {args.forget_carry}", file=sys.stderr)
            return 2
        recipe["forget_carry"] = args.forget_carry
    if args.steps is not None:
        if args.steps < 1:
            print(f"dapo sft: --steps must be >= 1, got {args.steps}", file=sys.stderr)
            return 2
        recipe["steps"] = args.steps
    path = ensure_warm_model(
        output_dir=Path(args.output) if args.output else None, force=args.force, **recipe
    )
    print(f"warm-started tiny model: {path}")
    if recipe:
        print(f"train on it with: dapo train model.path={path}")
    return 0


def _cmd_samples(args: argparse.Namespace) -> int:
    from dapo_rl.generations import samples_from_cli

    return samples_from_cli(args.run, args.step, args.eval, args.limit)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dapo_rl.health.doctor import diagnose

    report, code = diagnose(Path(args.run_dir))
    print(report)
    return code


def _cmd_plot(args: argparse.Namespace) -> int:
    from dapo_rl.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(path)
    return 0


COMMANDS = {
    "train": _cmd_train, "eval": _cmd_eval, "sft": _cmd_sft, "config": _cmd_config, "plot": _cmd_plot,
    "samples": _cmd_samples, "doctor": _cmd_doctor,
}  # fmt: skip


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like ``parser.parse_args``, but dotted overrides may also follow an option
    (``dapo train a.b=1 --overwrite c.d=2``): argparse alone stops collecting them at the first
    option. They are kept in the order given (a later one wins)."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.version:
        from dapo_rl import __version__

        print(__version__)
        return
    if args.command is None:
        parser.print_help()
        sys.exit(0)
    from dapo_rl.config import ConfigError
    from dapo_rl.errors import exit_code_for

    try:
        code = COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"dapo {args.command}: {exc}", file=sys.stderr)
        code = 2
    except Exception as exc:  # ours (and FileNotFoundError/ValueError) in one line; the rest: traceback
        code = exit_code_for(exc)
        if code is None:
            raise
        print(f"dapo {args.command}: error: {exc}", file=sys.stderr)
    sys.exit(code)
