"""Built-in methods. Third-party methods register through entry points instead."""


def builtin_methods() -> list[type]:
    from .reference import Identity, Oracle

    return [Identity, Oracle]
