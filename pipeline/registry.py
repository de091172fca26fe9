"""Name -> factory registries whose keys are the strings written in params.yaml.

A registry over a package is lazy: the names come from the package's source (the
`@<REGISTRY>.register("name")` calls, read without importing anything), and the module that
registers a name is imported the first time that name is asked for. So a stage imports only the
model, objective or target it runs, and its `dvc.yaml` deps can name exactly those files.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")


def declarations(package: Path, registry: str) -> dict[str, str]:
    """Name -> module stem, for every `<registry>.register("name")` call in `package/*.py`.

    Read from the source without importing it (the CLI lists objectives in `--help` without
    importing torch); a test checks the result equals what importing registers.
    """
    found: dict[str, str] = {}
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func, arg = node.func, node.args[0]
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "register"
                and isinstance(func.value, ast.Name)
                and func.value.id == registry
                and isinstance(arg, ast.Constant)
            ):
                found[arg.value] = module.stem
    return found


def declared_names(package: Path, registry: str) -> list[str]:
    """The names registered in `package`, sorted (see `declarations`)."""
    return sorted(declarations(package, registry))


class Registry(Generic[T]):
    """A dict filled by a decorator; an unknown name fails with the list of valid ones.

    `Registry(kind)` holds what its module registers itself. `Registry(kind, package=__name__,
    variable="NAME")` in a package's `__init__.py` is lazy over the package's modules.
    """

    def __init__(self, kind: str, package: str | None = None, variable: str = "") -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package
        self._modules: dict[str, str] = {}
        if package is not None:
            folder = Path(importlib.import_module(package).__path__[0])
            self._modules = declarations(folder, variable)

    def register(self, name: str) -> Callable[[T], T]:
        """Register the decorated object under `name`."""

        def add(item: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def module(self, name: str) -> str:
        """The dotted module that registers `name` (lazy registries), for imports and deps."""
        return f"{self._package}.{self._modules[name]}"

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise ConfigError naming the valid choices."""
        if name not in self._items and name in self._modules:
            importlib.import_module(self.module(name))
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            )
        return self._items[name]

    def load_all(self) -> None:
        """Import every module of a lazy registry (to list or check every member)."""
        for name in self._modules:
            self.get(name)

    def names(self) -> list[str]:
        """Return every registered name, sorted (a lazy registry's without importing them)."""
        return sorted(set(self._items) | set(self._modules))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._modules
