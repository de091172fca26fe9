"""Name -> factory registries whose keys are the strings written in params.yaml."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pipeline.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict filled by a decorator; an unknown name fails with the list of valid ones.

    `Registry(kind)` holds what its own module registers. `Registry(kind, package, names)` is
    lazy: each name is registered by the module of the same name in `package` (objective `kd` by
    `pipeline/objectives/kd.py`), imported the first time that name is asked for. So listing or
    checking names imports nothing (the CLI's `--help` stays free of torch), and a stage imports
    only the member it runs; a test checks that the names and the modules agree.
    """

    def __init__(self, kind: str, package: str | None = None, names: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package
        self._lazy = tuple(names)

    def register(self, name: str) -> Callable[[T], T]:
        """Register the decorated object under `name`."""

        def add(item: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise ConfigError naming the valid choices."""
        if name not in self._items and name in self._lazy:
            importlib.import_module(f"{self._package}.{name}")
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Return every registered name, sorted (a lazy registry's without importing them)."""
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy
