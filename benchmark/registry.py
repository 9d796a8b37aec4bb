"""Name -> object registries for methods and tasks.

Built-ins register in code. Third-party packages are found through entry
points (groups `cellflow_bench.methods` and `cellflow_bench.tasks`): installing
a plugin makes it appear in `python -m benchmark list` without editing the
suite. Entry points are the only strings ever turned into code.

Names are known before anything is imported: a built-in is registered as a
loader and an entry point is loaded only when its name is asked for, so a
misspelt name is refused before torch is imported.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from benchmark.errors import BenchmarkError

T = TypeVar("T")

METHOD_GROUP = "cellflow_bench.methods"
TASK_GROUP = "cellflow_bench.tasks"


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None, builtins: Callable[[], dict[str, Callable[[], T]]]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins  # name -> loader
        self._loaders: dict[str, Callable[[], T]] | None = None
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def _index(self) -> dict[str, Callable[[], T]]:
        if self._loaders is None:
            self._loaders = {}
            for name, loader in self._builtins().items():
                self._loaders[name] = loader
                self._origin[name] = "built-in"
            if self.group:
                for ep in entry_points(group=self.group):
                    if ep.name in self._loaders:
                        continue  # built-ins win; a plugin cannot shadow them
                    self._loaders[ep.name] = self._plugin_loader(ep)
                    self._origin[ep.name] = f"plugin {ep.value}"
        return self._loaders

    def _plugin_loader(self, ep: Any) -> Callable[[], T]:
        def load() -> T:
            obj = ep.load()
            # a task plugin may name a factory instead of a Task
            return obj() if self.kind == "task" and callable(obj) and not hasattr(obj, "loader") else obj
        return load

    def _try_load(self, name: str) -> T | None:
        if name not in self._items:
            loader = self._index()[name]
            try:
                self._items[name] = loader()
            except Exception as e:  # a broken plugin must not break the suite
                if self._origin[name] == "built-in":
                    raise
                self._origin[name] = f"broken plugin {self._origin[name].removeprefix('plugin ')}: {type(e).__name__}: {e}"
                del self._loaders[name]
                return None
        return self._items[name]

    def register(self, name: str, obj: T) -> None:
        self._index()[name] = lambda: obj
        self._items[name] = obj
        self._origin[name] = "registered at run time"

    def check(self, name: str) -> None:
        """Refuse an unknown name without importing anything."""
        if name not in self._index():
            hint = self._origin.get(name)
            extra = f" ({hint})" if hint else ""
            raise BenchmarkError(f"unknown {self.kind} {name!r}{extra}; available: {', '.join(sorted(self._index()))}")

    def get(self, name: str) -> T:
        self.check(name)
        obj = self._try_load(name)
        if obj is None:
            self.check(name)  # names the broken plugin
        return obj

    def names(self) -> list[str]:
        return sorted(self._index())

    def origin(self, name: str) -> str:
        self._index()
        return self._origin.get(name, "?")

    def broken(self) -> dict[str, str]:
        for name in list(self._index()):
            self._try_load(name)
        return {k: v for k, v in self._origin.items() if v.startswith("broken")}


def _builtin_methods() -> dict[str, Callable[[], Any]]:
    from methods import builtin_methods

    return builtin_methods()


def _builtin_tasks() -> dict[str, Callable[[], Any]]:
    from tasks.published import published_tasks
    from tasks.synthetic import builtin_tasks

    return {t.name: (lambda t=t: t) for t in [*builtin_tasks(), *published_tasks()]}


METHODS: Registry = Registry("method", METHOD_GROUP, _builtin_methods)
TASKS: Registry = Registry("task", TASK_GROUP, _builtin_tasks)
