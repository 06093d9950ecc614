"""Small explicit registries for the real extension seams (advantage estimator, loss aggregation,
group filter, reward function, rollout engine, prompt template).

A registry is a name -> object dict that refuses duplicates and lists the valid names when a lookup
fails::

    AGGREGATIONS = Registry("loss aggregation mode")

    @AGGREGATIONS.register("token-mean")
    def token_mean(...): ...

    AGGREGATIONS.get("token-mean")

An entry whose module is heavy to import can be registered by its import path
(``register_path("hf", "dapo_rl.rollout.hf_engine:HFRolloutEngine")``): the name is known at once
(the config checks it when it loads) and the module is imported on the first ``get``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A lookup of an unknown name, or a second registration of the same name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class _ImportPath(str):
    """A registered ``module:attribute`` imported on the first lookup."""


class Registry(Generic[T]):
    """A named dict with a decorator for registration and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; used bare (``register("x", fn)``) or as a decorator."""

        def add(item: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def register_path(self, name: str, path: str) -> None:
        """Register ``module:attribute`` under ``name`` without importing it (see the module doc)."""
        self.register(name, _ImportPath(path))  # type: ignore[arg-type]

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the valid ones."""
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(sorted(self._items))}"
            )
        item = self._items[name]
        if isinstance(item, _ImportPath):
            module, _, attr = item.partition(":")
            item = self._items[name] = getattr(importlib.import_module(module), attr)
        return item

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
