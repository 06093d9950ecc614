"""Rules of the configuration that guard a run rather than a field: plain run names, sampling that
can make a group informative, the vLLM CPU head sizes, YAML files without repeated keys, and the
absolute paths a run saves so that ``--resume`` works from any directory. Used by
:mod:`dapo_rl.config`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dapo_rl.config_schema import DapoConfig

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""The head dimensions vLLM's CPU attention has kernels for (its CPU backend's supported list)."""


def run_problems(cfg: DapoConfig) -> list[str]:
    """A run name that is a plain name, and sampling that can make a group informative."""
    p: list[str] = []
    name = cfg.logging.run_name
    if name is not None and (name in ("", ".", "..") or any(c in name for c in "/\\\0")):
        p.append(
            f"logging.run_name={name!r} must be a plain name (no '/', '\\', and not '.' or '..'): it "
            "names a folder inside logging.run_dir; put the path in logging.run_dir instead"
        )
    r, ds = cfg.rollout, cfg.dynamic_sampling
    greedy = "rollout.temperature=0" if r.temperature == 0 else "rollout.top_k=1" if r.top_k == 1 else None
    if ds.enable and greedy:
        p.append(
            f"{greedy} samples without randomness, so the {cfg.batch.samples_per_prompt} responses of a "
            "group are identical and dynamic sampling never finds an informative group: raise the "
            "temperature (the paper samples at 1.0) or set dynamic_sampling.enable=false"
        )
    return p


def vllm_cpu_problems(cfg: DapoConfig, model: Path) -> list[str]:
    """rollout.engine=vllm on a CPU with a model whose attention head size vLLM's CPU kernels lack."""
    if cfg.rollout.engine != "vllm" or cfg.train.device not in ("cpu", "auto"):
        return []
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        config = config.get("text_config") or config
        head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return []
    if head in VLLM_CPU_HEAD_SIZES:
        return []
    import torch  # deferred (heavy): only for a vllm run, to tell a CPU run from a GPU one

    if cfg.train.device == "auto" and torch.cuda.is_available():
        return []
    return [
        f"rollout.engine=vllm: the model's attention head size is {head}, but vLLM's CPU attention "
        f"supports only {', '.join(map(str, VLLM_CPU_HEAD_SIZES))}: use rollout.engine=hf on this "
        "CPU, a GPU, or a model with one of those head sizes"
    ]


class DuplicateKey(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently, so a setting or a whole section would be lost)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise DuplicateKey(f"line {line}: key {key!r} is given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _absolute_spec(spec: str) -> str:
    """``file.py:name`` with an absolute file path (module paths and registered names as given)."""
    file, sep, name = spec.rpartition(":")
    if sep and file.endswith(".py") and not Path(file).expanduser().is_absolute():
        return f"{Path(file).expanduser().resolve()}:{name}"
    return spec


def anchored_paths(cfg: DapoConfig) -> DapoConfig:
    """``cfg`` with every path it names absolute (resolved from the working directory): the model
    directory, the data files and user code given as ``file.py:function``. A run saves its config
    so, and ``--resume`` from any directory finds the same files."""

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    d, m, r, ds = cfg.data, cfg.model, cfg.reward, cfg.dynamic_sampling
    data = d.model_copy(
        update={
            "train_files": [absolute(f) for f in d.train_files],
            "eval_files": [absolute(f) for f in d.eval_files],
            "loader": _absolute_spec(d.loader) if d.loader is not None else None,
            "template": _absolute_spec(d.template),
        }
    )
    update = {
        "data": data,
        "model": m.model_copy(update={"path": absolute(m.path) if m.path is not None else None}),
        "reward": r.model_copy(update={"name": _absolute_spec(r.name)}),
        "dynamic_sampling": ds.model_copy(update={"filter": _absolute_spec(ds.filter)}),
    }
    return cfg.model_copy(update=update)
