"""The ``dapo`` command. Heavy imports (torch, transformers) are deferred so ``--help`` is instant.

dapo train                                   # embedded default: tiny model + synthetic task
dapo train --config gsm8k model.path=DIR     # a preset plus dotted overrides
dapo train --resume runs/NAME                # continue a killed run exactly
torchrun --nproc_per_node 4 -m dapo_rl train ...          # data parallel (docs/distributed.md)
dapo train --launcher ray --num-workers 4 ...  # data parallel on Ray Train workers
dapo eval --model DIR --data FILE --reward math_dapo -k 32
dapo sft [--forget-carry P] [--steps N]      # (re)build the warm-started tiny model
dapo config show [--config X] [key=value ...]
dapo plot runs/NAME                          # redraw the PNG plots of a run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        help="preset name (tiny, gsm8k, dapo_math, paper_32b, grpo_baseline) or a YAML file; default: tiny",
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
        "--resume", metavar="RUN_DIR", help="resume the run in RUN_DIR from its last checkpoint"
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
    if args.launcher == "ray":
        from dapo_rl.launch_ray import launch

        launch(args.config, args.overrides, args.resume, args.num_workers, args.use_gpu)
        return 0
    from dapo_rl.trainer import train_from_cli

    train_from_cli(config=args.config, overrides=args.overrides, resume=args.resume)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from dapo_rl.evaluation import eval_from_cli

    eval_from_cli(args)
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from dapo_rl.models.sft import ensure_warm_model

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


def _cmd_plot(args: argparse.Namespace) -> int:
    from dapo_rl.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(path)
    return 0


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "sft": _cmd_sft, "config": _cmd_config, "plot": _cmd_plot}


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from dapo_rl import __version__

        print(__version__)
        return
    if args.command is None:
        parser.print_help()
        sys.exit(0)
    from dapo_rl.config import ConfigError

    try:
        code = COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"dapo {args.command}: {exc}", file=sys.stderr)
        code = 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"dapo {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
