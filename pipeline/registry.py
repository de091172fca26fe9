"""Name -> factory registries whose keys are the strings written in params.yaml."""

from collections.abc import Callable
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
