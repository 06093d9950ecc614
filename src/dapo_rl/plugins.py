"""User code reachable from YAML by import path: ``package.module:function`` or
``path/to/file.py:function``, checked when the configuration is loaded.

The contracts (see docs/extending.md):

- reward function: ``fn(response: str, ground_truth: str, **extra) -> RewardResult | float |
  (score, acc) | {"score": .., "acc": ..}``; extra holds the data row's other fields (only those the
  function names are passed unless it takes ``**extra``). A bare float's ``acc`` is ``score > 0``.
- group filter: ``fn(group: GroupView) -> bool`` (keep the group when True).
- dataset loader: ``fn(split: str) -> Iterable[PromptRow | dict]`` with split ``"train"`` or ``"eval"``;
  a dict needs ``prompt`` and ``answer`` (other keys go to ``extra``).
- prompt template: a string with one ``{problem}``, or ``fn(problem: str) -> str``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_rl.algorithm.filtering import GROUP_FILTERS
from dapo_rl.data.templates import PLACEHOLDER, TEMPLATES
from dapo_rl.rewards import REWARDS


class PluginError(ValueError):
    """An import path in the configuration that cannot be used; the message names key and path."""


def is_import_path(value: str) -> bool:
    """``module:attr`` or ``file.py:attr`` (a Windows drive letter alone does not count)."""
    module, sep, attr = value.rpartition(":")
    return bool(sep and module and attr.isidentifier() and "{" not in value)


def _import_module(module: str, key: str, spec: str) -> Any:
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"{key}={spec!r}: file not found: {path}")
        name = f"dapo_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise PluginError(f"{key}={spec!r}: cannot import {path} as a Python module")
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"{key}={spec!r}: importing {path} failed: {exc!r}") from exc
        return mod
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise PluginError(
            f"{key}={spec!r}: cannot import module {module!r} ({exc!r}); is it on PYTHONPATH or installed?"
        ) from exc


def load_object(spec: str, key: str) -> Any:
    """Import ``module:attr`` / ``file.py:attr`` and return the attribute."""
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise PluginError(f"{key}={spec!r}: expected 'package.module:name' or 'path/to/file.py:name'")
    mod = _import_module(module, key, spec)
    try:
        return getattr(mod, attr)
    except AttributeError:
        names = [n for n in dir(mod) if not n.startswith("_")]
        raise PluginError(
            f"{key}={spec!r}: {module!r} has no attribute {attr!r} (it has: {', '.join(names)})"
        ) from None


def check_signature(fn: Any, key: str, spec: str, expected: str, args: int) -> Callable[..., Any]:
    """``fn`` must be callable with ``args`` positional arguments; else a PluginError naming key,
    path and the expected signature."""
    if not callable(fn):
        raise PluginError(f"{key}={spec!r} is a {type(fn).__name__}, expected a function {expected}")
    try:
        inspect.signature(fn).bind(*range(args))
    except TypeError as exc:
        raise PluginError(
            f"{key}={spec!r}: signature {inspect.signature(fn)} does not fit; expected {expected} ({exc})"
        ) from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return fn


REWARD_SIGNATURE = "fn(response: str, ground_truth: str, **extra) -> RewardResult | float | (score, acc)"
FILTER_SIGNATURE = "fn(group: GroupView) -> bool"
LOADER_SIGNATURE = "fn(split: str) -> Iterable[PromptRow | dict]"
TEMPLATE_SIGNATURE = "a string with one {problem}, or fn(problem: str) -> str"


def resolve_reward(spec: str, key: str = "reward.name") -> str | Callable[..., Any]:
    """A registered reward name stays a name; an import path becomes the checked function."""
    if spec in REWARDS or not is_import_path(spec):
        REWARDS.get(spec)  # raises with the valid names when unknown
        return spec
    return check_signature(load_object(spec, key), key, spec, REWARD_SIGNATURE, 2)


def resolve_filter(spec: str, key: str = "dynamic_sampling.filter") -> Callable[..., Any] | None:
    """``std`` (the built-in) gives None; an import path gives the checked function."""
    if spec in GROUP_FILTERS or not is_import_path(spec):
        GROUP_FILTERS.get(spec)
        return None
    return check_signature(load_object(spec, key), key, spec, FILTER_SIGNATURE, 1)


def resolve_loader(spec: str, key: str = "data.loader") -> Callable[..., Any]:
    return check_signature(load_object(spec, key), key, spec, LOADER_SIGNATURE, 1)


def resolve_template(spec: str, key: str = "data.template") -> str | Callable[[str], str]:
    """A registered name or a ``{problem}`` string stays; an import path gives its string or function."""
    if spec in TEMPLATES or PLACEHOLDER in spec or not is_import_path(spec):
        if PLACEHOLDER not in spec:
            TEMPLATES.get(spec)
        return spec
    obj = load_object(spec, key)
    if isinstance(obj, str):
        if obj.count(PLACEHOLDER) != 1:
            raise PluginError(f"{key}={spec!r}: the template string needs exactly one {PLACEHOLDER}")
        return obj
    return check_signature(obj, key, spec, TEMPLATE_SIGNATURE, 1)


def config_plugin_problems(cfg: Any) -> list[str]:
    """Every import path in ``cfg`` that does not resolve, as messages (empty when all are fine).
    Registered names are checked by the config itself when it loads."""
    checks = [
        ("reward.name", cfg.reward.name, resolve_reward),
        ("dynamic_sampling.filter", cfg.dynamic_sampling.filter, resolve_filter),
        ("data.template", cfg.data.template, resolve_template),
    ]
    checks = [(key, value, resolve) for key, value, resolve in checks if is_import_path(value)]
    if cfg.data.loader is not None:
        checks.append(("data.loader", cfg.data.loader, resolve_loader))
    problems = []
    for key, value, resolve in checks:
        try:
            resolve(value, key)
        except PluginError as exc:
            problems.append(str(exc))
        except KeyError as exc:  # RegistryError: an unknown built-in name
            problems.append(f"{key}: {exc}")
    return problems
