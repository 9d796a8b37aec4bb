"""Built-in methods. Third-party methods register through entry points instead."""


def builtin_methods() -> list[type]:
    from .cellflow import CellFlow
    from .reference import Identity, Oracle

    return [Identity, Oracle, CellFlow]
