"""Models in from and out to ONNX, PyTorch and Keras 3.

Every converter imports its framework lazily, so ``import rnnfast.interop`` needs only numpy; the
array-level Keras converters (:func:`keras_weights`, :func:`load_keras_weights`) need no Keras at all.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the private module that defines it
_WHERE = {
    "to_onnx": "_onnx_export",
    "from_onnx": "_onnx_import",
    "from_torch": "_torch",
    "to_torch": "_torch",
    "from_keras": "_keras",
    "to_keras": "_keras",
    "keras_weights": "_keras",
    "load_keras_weights": "_keras",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rnnfast.interop' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rnnfast.interop.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
