"""Run ``dapo train`` on N Ray workers with Ray Train's ``TorchTrainer`` (the ``ray`` extra).

    dapo train --launcher ray --num-workers 4 --config dapo_math model.path=DIR
    dapo train --launcher ray --num-workers 16 --use-gpu --config dapo_math model.path=DIR
    python -m dapo_rl.launch_ray --num-workers 2 train.total_steps=10     # the same, as a module

Ray Train starts one worker per rank and sets up torch.distributed among them (gloo on CPU, NCCL
with ``--use-gpu``); every worker then runs the function torchrun's processes run,
:func:`dapo_rl.launch.train_from_cli`, which adopts Ray's process group
(:func:`dapo_rl.distributed.init_distributed`). So the loop, the checkpoints and the run directory
are exactly those of a torchrun launch. Ray connects to a running cluster (``RAY_ADDRESS``, or
``ray start`` on this machine) or starts a local one. Workers run in the driver's working directory,
so relative paths in the configuration mean the same thing; on a cluster the run directory, data and
model must be on a file system every node sees.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from dapo_rl.config import load_config
from dapo_rl.launch import train_from_cli


def _require_ray() -> None:
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the Ray launcher needs Ray Train: pip install 'dapo-rl[ray]'") from exc


def launch(
    config: str | None,
    overrides: list[str],
    resume: str | None,
    num_workers: int,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Train on ``num_workers`` Ray workers; returns rank 0's run summary."""
    _require_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer  # deferred: ray is an optional extra

    if num_workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {num_workers}")
    cfg_path = Path(resume) / "config.yaml" if resume else config
    cfg = load_config(cfg_path, overrides)  # fail here, before any worker starts
    name = cfg.logging.run_name
    if not resume and name is None:  # name the run here, so the driver knows where it goes
        name = time.strftime("%Y%m%d-%H%M%S")
        overrides = [*overrides, f"logging.run_name={name}"]
    run_dir = Path(resume) if resume else Path(cfg.logging.run_dir) / str(name)
    loop_config = {
        "config": config, "overrides": list(overrides), "resume": resume, "cwd": os.getcwd(), "use_gpu": use_gpu,
    }  # fmt: skip
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(
            backend="nccl" if use_gpu else "gloo", timeout_s=int(cfg.distributed.timeout_s)
        ),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="dapo", storage_path=str(Path(cfg.logging.run_dir).resolve() / "ray")),
    )
    trainer.fit()
    return json.loads((run_dir / "summary.json").read_text())


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray worker = one rank: the same training function as under torchrun."""
    os.chdir(loop_config["cwd"])
    overrides = list(loop_config["overrides"])
    if loop_config["use_gpu"]:  # the GPU Ray gave this worker (its index among the visible ones)
        from ray.train.torch import get_device

        overrides.append(f"train.device={get_device()}")
    train_from_cli(loop_config["config"], overrides, loop_config["resume"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dapo_rl.launch_ray", description=__doc__.split("\n")[0])
    parser.add_argument("--num-workers", type=int, required=True, help="Ray workers (= data-parallel ranks)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL")
    parser.add_argument("--config", "-c", default=None, help="preset name or YAML file (default: tiny)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None, help="resume the run in RUN_DIR")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.total_steps=10")
    args = parser.parse_args(argv)
    summary = launch(args.config, args.overrides, args.resume, args.num_workers, args.use_gpu)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
