"""The one typed configuration: load a YAML preset, apply dotted overrides, validate.

The schema (one section class per group of keys, a docstring under every field) is in
:mod:`dapo_rl.config_schema`; every name of it is re-exported here, so ``from dapo_rl.config import
DapoConfig`` keeps working. This module reads presets, applies overrides and checks what one field
cannot check alone: rules across fields, names against their registries, and (``check_paths``)
files, the model directory and import paths of user code.

We use pydantic (v2) rather than OmegaConf structured configs because it gives us, in one place,
typed coercion with readable messages, *all* field errors at once, forbidden extra keys, and the
docstring under each field (``use_attribute_docstrings``) from which ``docs/config.md`` is generated.
YAML is read with PyYAML; overrides like ``algorithm.clip_ratio_high=0.3`` are parsed as YAML scalars.

Every field's default is the DAPO paper's value where the paper sets one (section 11 of the
semantics doc); the embedded default run is the ``tiny`` preset applied on top.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dapo_rl.config_async import AsyncConfig, async_problems, resolve_importance_correction
from dapo_rl.config_rules import (
    DuplicateKey,
    UniqueKeyLoader,
    anchored_paths,
    run_problems,
    vllm_cpu_problems,
)
from dapo_rl.config_schema import (
    AlgorithmConfig,
    BatchConfig,
    CheckpointConfig,
    DapoConfig,
    DataConfig,
    DistributedConfig,
    DynamicSamplingConfig,
    EvalConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    OverlongConfig,
    RewardConfig,
    RolloutConfig,
    SyntheticTaskConfig,
    TrainConfig,
)
from dapo_rl.storage import check_safetensors, check_tokenizer_files

PRESET_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "tiny"

__all__ = [
    "DEFAULT_PRESET",
    "PRESET_DIR",
    "AlgorithmConfig",
    "AsyncConfig",
    "BatchConfig",
    "CheckpointConfig",
    "ConfigError",
    "DapoConfig",
    "DataConfig",
    "DistributedConfig",
    "DynamicSamplingConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "OverlongConfig",
    "RewardConfig",
    "RolloutConfig",
    "SyntheticTaskConfig",
    "TrainConfig",
    "anchored_paths",
    "build_config",
    "config_to_yaml",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "resolve_preset",
]


class ConfigError(ValueError):
    """One or more problems with a configuration; the message lists all of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


# ---- cross-field rules -----------------------------------------------------------------------


def _cross_field_problems(cfg: DapoConfig) -> list[str]:
    from dapo_rl.algorithm.aggregation import AGGREGATIONS  # deferred (torch): see _registry_problems

    p: list[str] = []
    a, b, o, r = cfg.algorithm, cfg.batch, cfg.overlong, cfg.rollout
    if o.enable and not 0 < o.buffer_tokens < r.max_response_tokens:
        p.append(
            f"overlong.buffer_tokens={o.buffer_tokens} must be > 0 and < rollout.max_response_tokens="
            f"{r.max_response_tokens} (or set overlong.enable=false)"
        )
    if not 0 <= a.clip_ratio_low < 1:
        p.append(f"algorithm.clip_ratio_low={a.clip_ratio_low} must satisfy 0 <= clip_ratio_low < 1")
    if a.clip_ratio_high < 0:
        p.append(f"algorithm.clip_ratio_high={a.clip_ratio_high} must be >= 0")
    if a.clip_ratio_c is not None and a.clip_ratio_c <= 1:
        p.append(f"algorithm.clip_ratio_c={a.clip_ratio_c} must be > 1 (or null to turn dual-clip off)")
    if a.loss_agg_mode not in AGGREGATIONS:
        close = difflib.get_close_matches(a.loss_agg_mode, AGGREGATIONS.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        p.append(f"algorithm.loss_agg_mode={a.loss_agg_mode!r} is not one of {AGGREGATIONS.names()}{hint}")
    if b.prompts_per_step % b.prompts_per_update:
        p.append(
            f"batch.prompts_per_step={b.prompts_per_step} must be divisible by "
            f"batch.prompts_per_update={b.prompts_per_update}"
        )
    if b.samples_per_prompt < 2:
        p.append(
            f"batch.samples_per_prompt={b.samples_per_prompt} must be >= 2: a group-relative advantage "
            "of a group of one response is always 0, so nothing would be trained"
        )
    if b.micro_batch_tokens < r.max_response_tokens:
        p.append(
            f"batch.micro_batch_tokens={b.micro_batch_tokens} must be >= rollout.max_response_tokens="
            f"{r.max_response_tokens} so that one response always fits a micro-batch"
        )
    p += run_problems(cfg)
    model = Path(cfg.model.path).expanduser() if cfg.model.path is not None else None
    if model is not None and model.is_dir():
        try:
            check_safetensors(model)  # headers only: fast at any size
            check_tokenizer_files(model)
        except ValueError as exc:
            p.append(f"model.path: {exc}")
        limit = _position_limit(model)
        if limit is not None and cfg.data.max_prompt_tokens > limit:
            p.append(
                f"data.max_prompt_tokens={cfg.data.max_prompt_tokens} is more than the model's "
                f"{limit} positions (max_position_embeddings in model.path): set it to at most "
                f"{limit} minus rollout.max_response_tokens"
            )
        p += vllm_cpu_problems(cfg, model)
    return p + async_problems(cfg)


def _path_problems(cfg: DapoConfig) -> list[str]:
    """The model directory and the data files the config names, when they do not exist."""
    p: list[str] = []
    if cfg.model.path is not None and not Path(cfg.model.path).expanduser().is_dir():
        p.append(f"model.path={cfg.model.path!r} is not a directory (a local Hugging Face model directory)")
    for key in ("train_files", "eval_files"):
        for f in getattr(cfg.data, key):
            if not Path(f).expanduser().is_file():
                p.append(f"data.{key}: file not found: {f!r}")
    return p


def _position_limit(model_dir: Path) -> int | None:
    """``max_position_embeddings`` of the model's config.json (None when absent or unreadable)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("text_config") or {}  # multimodal configs nest the language model's
    limit = config.get("max_position_embeddings", text.get("max_position_embeddings"))
    return limit if isinstance(limit, int) else None


def _plugin_problems(cfg: DapoConfig) -> list[str]:
    from dapo_rl.plugins import config_plugin_problems  # deferred (torch): see _registry_problems

    return config_plugin_problems(cfg)


def _registry_problems(cfg: DapoConfig) -> list[str]:
    """Names that must be registered (advantage estimator, rollout engine, group filter, reward,
    prompt template), checked at load with the valid names in the message. A user-code import path
    (``module:function``) is checked with the paths instead (:func:`_plugin_problems`)."""
    # Deferred: the registries live with their implementations (torch, transformers); importing them
    # at the top would make every `dapo config` command and `import dapo_rl.config` seconds slower.
    from dapo_rl.algorithm.advantages import ADVANTAGE_ESTIMATORS
    from dapo_rl.algorithm.filtering import GROUP_FILTERS
    from dapo_rl.data.templates import PLACEHOLDER, TEMPLATES
    from dapo_rl.plugins import is_import_path
    from dapo_rl.registry import RegistryError
    from dapo_rl.rewards import REWARDS
    from dapo_rl.rollout import ROLLOUT_ENGINES

    template = cfg.data.template
    checks = [
        ("algorithm.advantage", cfg.algorithm.advantage, ADVANTAGE_ESTIMATORS),
        ("rollout.engine", cfg.rollout.engine, ROLLOUT_ENGINES),
        ("dynamic_sampling.filter", cfg.dynamic_sampling.filter, GROUP_FILTERS),
        ("reward.name", cfg.reward.name, REWARDS),
        ("data.template", None if PLACEHOLDER in template else template, TEMPLATES),
    ]
    problems = []
    for key, name, registry in checks:
        user_code = key in ("dynamic_sampling.filter", "reward.name", "data.template")
        if name is None or name in registry or (user_code and is_import_path(name)):
            continue
        try:
            registry.get(name)
        except RegistryError as exc:
            problems.append(f"{key}: {exc}")
    return problems


# ---- loading, overrides, errors --------------------------------------------------------------


def _fields_at(path: tuple[str | int, ...]) -> list[str]:
    """Valid field names of the section reached by ``path`` (for "did you mean" hints)."""
    model: type[BaseModel] = DapoConfig
    for part in path:
        by_alias = {f.alias: f for f in model.model_fields.values() if f.alias}  # `async`
        info = model.model_fields.get(str(part)) or by_alias.get(str(part))
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            return []
        model = info.annotation
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
        where = ".".join(map(str, loc[:-1])) or "the top level"
        return f"unknown key {key!r}{hint} (valid keys in {where}: {', '.join(valid)})"
    got = err.get("input")
    return f"{key}: {err['msg']} (got {got!r})"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c.d=[x, y]"]`` into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not of the form key.path=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})")
            continue
        _set_dotted(tree, key.strip(), value)
    if problems:
        raise ConfigError(problems)
    return tree


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (``tiny``, ``gsm8k``...) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(
        [f"config file not found: {str(name_or_path)!r} (built-in presets: {', '.join(names)})"]
    )


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a preset file (a key or section given twice is refused, with its line). A top-level
    ``base: NAME`` key merges this file over preset NAME."""
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader) or {}
    except DuplicateKey as exc:
        raise ConfigError([f"{path}: {exc}; keep one (one of the two settings would be lost)"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"])
    _anchor_file_specs(data, path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = resolve_preset(base if Path(base).is_absolute() else _relative_preset(path, base))
    if base_path.resolve() in _seen:
        raise ConfigError([f"{path}: 'base: {base}' makes a cycle"])
    return _deep_merge(read_yaml(base_path, (*_seen, path.resolve())), data)


def _anchor_file_specs(tree: dict[str, Any], folder: Path) -> None:
    """Import paths of user code written as ``relative/file.py:name`` in a YAML file are relative to
    that file's folder: make them absolute so the config works from any working directory."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _anchor_file_specs(value, folder)
        elif isinstance(value, str) and ".py:" in value:
            file, _, name = value.rpartition(":")
            if file.endswith(".py") and not Path(file).expanduser().is_absolute():
                tree[key] = f"{(folder / file).resolve()}:{name}"


def _relative_preset(path: Path, base: str) -> str:
    sibling = path.parent / base
    return str(sibling) if sibling.is_file() else base


def build_config(tree: dict[str, Any], check_paths: bool = True) -> DapoConfig:
    """Validate a nested dict into a DapoConfig, reporting every problem at once. ``check_paths``
    also checks that files, the model directory and import paths of user code exist."""
    try:
        cfg = DapoConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from None
    resolve_importance_correction(cfg)  # auto: tis with stale batches, else none
    problems = _cross_field_problems(cfg) + _registry_problems(cfg)
    if check_paths:  # import paths of user code are paths too
        problems += _path_problems(cfg) + _plugin_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    config: str | Path | None = None, overrides: list[str] | None = None, check_paths: bool = True
) -> DapoConfig:
    """Load a preset (default: the embedded ``tiny`` preset) and apply dotted overrides."""
    tree = read_yaml(resolve_preset(config if config is not None else DEFAULT_PRESET))
    tree = _deep_merge(tree, parse_overrides(overrides or []))
    return build_config(tree, check_paths=check_paths)


def config_to_yaml(cfg: DapoConfig) -> str:
    """The resolved configuration as YAML (what ``dapo config show`` prints and runs save)."""
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False, width=100)
