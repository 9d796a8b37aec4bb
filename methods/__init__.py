"""Built-in methods. Third-party methods register through entry points instead."""

from importlib import import_module
from typing import Callable


def builtin_methods() -> dict[str, Callable[[], type]]:
    """Name -> loader: a method's module (and torch with it) is imported only when the method is used."""
    where = {"identity": (".reference", "Identity"), "oracle": (".reference", "Oracle"),
             "cellflow": (".cellflow", "CellFlow"), "impa": (".impa", "IMPA"), "phendiff": (".phendiff", "PhenDiff"),
             "mit": (".mit", "MiT")}
    return {name: (lambda m=module, a=attr: getattr(import_module(m, __name__), a)) for name, (module, attr) in where.items()}
