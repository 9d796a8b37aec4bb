"""Name -> object registries for methods, tasks and feature extractors.

Built-ins register in code. Third-party packages are found through entry
points (groups `cellflow_bench.methods` and `cellflow_bench.tasks`): installing
a plugin makes it appear in `python -m benchmark list` without editing the
suite. Entry points are the only strings ever turned into code.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from benchmark.errors import BenchmarkError

T = TypeVar("T")

METHOD_GROUP = "cellflow_bench.methods"
TASK_GROUP = "cellflow_bench.tasks"


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None, builtins: Callable[[], dict[str, T]]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._items: dict[str, T] | None = None
        self._origin: dict[str, str] = {}

    def _load(self) -> dict[str, T]:
        if self._items is None:
            self._items = {}
            for name, obj in self._builtins().items():
                self._items[name] = obj
                self._origin[name] = "built-in"
            if self.group:
                for ep in entry_points(group=self.group):
                    if ep.name in self._items:
                        continue  # built-ins win; a plugin cannot shadow them
                    try:
                        obj = ep.load()
                    except Exception as e:  # a broken plugin must not break the suite
                        self._origin[ep.name] = f"broken plugin {ep.value}: {type(e).__name__}: {e}"
                        continue
                    self._items[ep.name] = obj() if self.kind == "task" and callable(obj) and not hasattr(obj, "loader") else obj
                    self._origin[ep.name] = f"plugin {ep.value}"
        return self._items

    def register(self, name: str, obj: T) -> None:
        self._load()[name] = obj
        self._origin[name] = "registered at run time"

    def get(self, name: str) -> T:
        items = self._load()
        if name not in items:
            hint = self._origin.get(name)
            extra = f" ({hint})" if hint else ""
            raise BenchmarkError(f"unknown {self.kind} {name!r}{extra}; available: {', '.join(sorted(items))}")
        return items[name]

    def names(self) -> list[str]:
        return sorted(self._load())

    def origin(self, name: str) -> str:
        self._load()
        return self._origin.get(name, "?")

    def broken(self) -> dict[str, str]:
        self._load()
        return {k: v for k, v in self._origin.items() if v.startswith("broken")}


def _builtin_methods() -> dict[str, Any]:
    from methods import builtin_methods

    return {m.name: m for m in builtin_methods()}


def _builtin_tasks() -> dict[str, Any]:
    from tasks.published import published_tasks
    from tasks.synthetic import builtin_tasks

    return {t.name: t for t in [*builtin_tasks(), *published_tasks()]}


METHODS: Registry = Registry("method", METHOD_GROUP, _builtin_methods)
TASKS: Registry = Registry("task", TASK_GROUP, _builtin_tasks)
