"""Public names of a package defined in its private modules and imported on first use (PEP 562), so that
importing the package costs nothing and its optional frameworks load only when a name is used."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_names(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``where``: public name -> the module (relative
    to ``package``) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list:
        return sorted(set(importlib.import_module(package).__dict__) | set(where))

    return __getattr__, __dir__
