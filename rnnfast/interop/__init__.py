"""Models in from and out to ONNX, PyTorch and Keras 3.

Every converter imports its framework lazily, so ``import rnnfast.interop`` needs only numpy; the
array-level Keras converters (:func:`keras_weights`, :func:`load_keras_weights`) need no Keras at all.
"""
from __future__ import annotations

from rnnfast._lazy import lazy_names

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


__getattr__, __dir__ = lazy_names("rnnfast.interop", _WHERE)
