"""Name -> factory registries whose keys are the strings written in params.yaml."""

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict filled by a decorator; an unknown name fails with the list of valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

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
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def declared_names(package: Path, registry: str) -> list[str]:
    """Names registered with `@<registry>.register("name")` in a package's modules, sorted.

    Read from the source without importing it (the CLI lists objectives in `--help` without
    importing torch); a test checks the result equals the imported registry's names.
    """
    names = set()
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
                names.add(arg.value)
    return sorted(names)
