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

import inspect
from collections.abc import Callable
from typing import Any

from dapo_rl.algorithm.filtering import GROUP_FILTERS
from dapo_rl.data.templates import PLACEHOLDER, TEMPLATES
from dapo_rl.rewards import REWARDS
from dapo_rl.usercode import PluginError, UserFunction, load_object

__all__ = ["PluginError", "UserFunction", "load_object"]


def is_import_path(value: str) -> bool:
    """``module:attr`` or ``file.py:attr`` (a Windows drive letter alone does not count)."""
    module, sep, attr = value.rpartition(":")
    return bool(sep and module and attr.isidentifier() and "{" not in value)


def _user(spec: str, key: str, expected: str, args: int) -> UserFunction:
    """The checked function at ``spec``, guarded (ending the process: a UserCodeError naming it)."""
    return UserFunction(spec, key, check_signature(load_object(spec, key), key, spec, expected, args))


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
    return _user(spec, key, REWARD_SIGNATURE, 2)


def resolve_filter(spec: str, key: str = "dynamic_sampling.filter") -> Callable[..., Any] | None:
    """``std`` (the built-in) gives None; an import path gives the checked function."""
    if spec in GROUP_FILTERS or not is_import_path(spec):
        GROUP_FILTERS.get(spec)
        return None
    return _user(spec, key, FILTER_SIGNATURE, 1)


def resolve_loader(spec: str, key: str = "data.loader") -> Callable[..., Any]:
    return _user(spec, key, LOADER_SIGNATURE, 1)


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
    return UserFunction(spec, key, check_signature(obj, key, spec, TEMPLATE_SIGNATURE, 1))


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
