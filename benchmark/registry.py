"""One registry mechanism for everything that plugs in: methods, tasks, feature spaces, scorers and channel rules
here, dataset layouts in `tasks.layouts` (each registry lives with the concept's owner where that is below here).

Built-ins register in code. Third-party packages are found through entry
points (groups `cellflow_bench.methods`, `cellflow_bench.tasks` and
`cellflow_bench.features`): installing a plugin makes it appear in `python -m
benchmark list` without editing the suite. Entry points are the only strings
ever turned into code; an entry point may name the object itself or a
zero-argument factory of it.

Names are known before anything is imported: a built-in is registered as a
loader and an entry point is loaded only when its name is asked for, so a
misspelt name is refused before torch is imported.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from benchmark.errors import BenchmarkError

T = TypeVar("T")

METHOD_GROUP = "cellflow_bench.methods"
TASK_GROUP = "cellflow_bench.tasks"
FEATURE_GROUP = "cellflow_bench.features"
# what a run scores unless told otherwise: two feature spaces and the MoA scorer (where a task has MoA labels)
DEFAULT_FEATURES = ("inception", "morphology", "moa")


class Registry(Generic[T]):
    """Names -> objects of one kind. `base` (a function returning the type, so that naming it imports nothing)
    is what every registered object must be, or subclass; None accepts anything."""

    def __init__(self, kind: str, builtins: Callable[[], dict[str, Callable[[], T]]], group: str | None = None,
                 base: Callable[[], type] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._base = base
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

    def _conforms(self, obj: Any) -> bool:
        if self._base is None:
            return True
        base = self._base()
        return isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base))

    def _plugin_loader(self, ep: Any) -> Callable[[], T]:
        def load() -> T:
            obj = ep.load()
            if not self._conforms(obj) and callable(obj):
                obj = obj()  # a factory
            if not self._conforms(obj):
                raise TypeError(f"{ep.value} is not a {self._base().__name__}")
            return obj
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
        if not self._conforms(obj):
            raise BenchmarkError(f"cannot register {name!r} as a {self.kind}: it is not a {self._base().__name__}")
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


# The built-ins of methods and tasks, declared as "module:object" (a function returning them) and resolved when a name
# is first asked for: the foundation imports no method or task module, and no import cycle runs through it.
BUILTIN_METHODS = ("methods:builtin_methods",)
BUILTIN_TASKS = ("tasks.synthetic:builtin_tasks", "tasks.published:published_tasks")


def _declared(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(import_module(module), name)


def _builtin_methods() -> dict[str, Callable[[], Any]]:
    return {name: loader for spec in BUILTIN_METHODS for name, loader in _declared(spec)().items()}


def _builtin_tasks() -> dict[str, Callable[[], Any]]:
    return {t.name: (lambda t=t: t) for spec in BUILTIN_TASKS for t in _declared(spec)()}


def _builtin_features() -> dict[str, Callable[[], Any]]:
    """Feature-space factories (ExtractorContext -> extractor); their module imports torch only when loaded."""
    def factory(name: str) -> Callable[[], Any]:
        def load() -> Any:
            from benchmark.metrics import features

            return getattr(features, name)
        return load

    def cellprofiler() -> Any:
        from benchmark.metrics.cellprofiler import cellprofiler

        return cellprofiler

    return {**{name: factory(name) for name in ("inception", "morphology", "dinov2")}, "cellprofiler": cellprofiler}


def _builtin_scorers() -> dict[str, Callable[[], Any]]:
    def moa() -> Any:
        from benchmark.metrics.moa import MoAScorer

        return MoAScorer()

    return {"moa": moa}


def _builtin_rules() -> dict[str, Callable[[], Any]]:
    from benchmark.metrics.channels import BUILTIN_RULES

    return {r.name: (lambda r=r: r) for r in BUILTIN_RULES}


def _method_base() -> type:
    from benchmark.method import Method

    return Method


def _task_base() -> type:
    return _declared("tasks.task:Task")


def _rule_base() -> type:
    from benchmark.metrics.channels import ChannelRule

    return ChannelRule


METHODS: Registry = Registry("method", _builtin_methods, METHOD_GROUP, _method_base)
TASKS: Registry = Registry("task", _builtin_tasks, TASK_GROUP, _task_base)
FEATURES: Registry = Registry("feature space", _builtin_features, FEATURE_GROUP)
SCORERS: Registry = Registry("scorer", _builtin_scorers)
CHANNEL_RULES: Registry = Registry("channel rule", _builtin_rules, base=_rule_base)


def check_features(names: tuple[str, ...] | list[str]) -> None:
    """Refuse a `--features` name that is neither a feature space nor a scorer, without importing either."""
    known = [*FEATURES.names(), *SCORERS.names()]
    for name in names:
        if name not in known:
            raise BenchmarkError(f"unknown feature space or scorer {name!r}; available: {', '.join(known)}")
