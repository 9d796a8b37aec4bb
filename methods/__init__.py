"""Built-in methods. Third-party methods register through entry points instead."""


def builtin_methods() -> list[type]:
    from .cellflow import CellFlow
    from .impa import IMPA
    from .phendiff import PhenDiff
    from .reference import Identity, Oracle

    return [Identity, Oracle, CellFlow, IMPA, PhenDiff]
