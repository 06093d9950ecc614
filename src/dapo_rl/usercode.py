"""User code named by import path (``package.module:function`` or ``path/to/file.py:function``):
imported once per process, picklable by its path (a worker process imports it itself), and
guarded when called, so that whatever it does to its process the run ends with a documented exit
code and a message naming it:

- ``sys.exit(...)`` (``SystemExit``) and ``os._exit(...)`` inside the call become
  :class:`~dapo_rl.errors.UserCodeError` (exit code 2) naming the function; ``os._exit`` is
  swapped for a raising stand-in for the duration of the call. A C extension that ends the process
  cannot be stopped this way: reward functions run in worker processes for that reason
  (:mod:`dapo_rl.rewards.runner`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_rl.errors import UserCodeError


class PluginError(ValueError):
    """An import path in the configuration that cannot be used; the message names key and path."""


class _ProcessExit(BaseException):
    """Raised by the stand-in for ``os._exit`` during a guarded call (user code cannot catch it
    with ``except Exception``)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _refuse_exit(code: int = 0) -> None:
    raise _ProcessExit(code)


def guarded_call(fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; ending the process from inside raises :class:`UserCodeError`
    naming ``what`` (e.g. ``"reward function 'my.py:score'"``)."""
    real_exit = os._exit
    os._exit = _refuse_exit
    try:
        return fn(*args, **kwargs)
    except SystemExit as exc:
        raise UserCodeError(
            f"{what} called sys.exit({exc.code!r}): user code must return a value, not end the process"
        ) from None
    except _ProcessExit as exc:
        raise UserCodeError(
            f"{what} called os._exit({exc.code!r}): user code must return a value, not end the process"
        ) from None
    finally:
        os._exit = real_exit


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
            guarded_call(loader_spec.loader.exec_module, f"{key}={spec!r} (importing {path})", mod)
        except UserCodeError:
            del sys.modules[name]
            raise
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"{key}={spec!r}: importing {path} failed: {exc!r}") from exc
        return mod
    try:
        return guarded_call(importlib.import_module, f"{key}={spec!r} (importing {module})", module)
    except UserCodeError:
        raise
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


class UserFunction:
    """A user function known by its import path ``spec`` (config key ``key``): called through
    :func:`guarded_call`, pickled as its path, its signature and attributes those of the function."""

    def __init__(self, spec: str, key: str, fn: Callable[..., Any] | None = None) -> None:
        self.spec, self.key, self._fn = spec, key, fn
        self.__qualname__ = spec

    @property
    def fn(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = load_object(self.spec, self.key)
        return self._fn

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return guarded_call(self.fn, f"{self.key}={self.spec!r}", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # attributes set on the function (reward traits)
        if (name.startswith("__") and name != "__dapo_reward_traits__") or name in ("_fn", "spec", "key"):
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (UserFunction, (self.spec, self.key))

    def __repr__(self) -> str:
        return f"UserFunction({self.spec!r})"
