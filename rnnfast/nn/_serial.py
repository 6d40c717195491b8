"""Describing layers as JSON and back: what :meth:`rnnfast.nn.Sequential.save` writes and :func:`rnnfast.load`
reads (kind ``"nn.Sequential"``).

A layer is described as ``{"class": name, "config": {argument: value}}`` -- its constructor's arguments
(all but ``seed``), read from the attributes of the same names -- and a :class:`~rnnfast.nn.Stateful` wrapper
as ``{"class": "Stateful", "layer": <the wrapped layer's description>}``. Only the classes of :data:`LAYERS`
are described (a subclass may behave differently: it is refused).

Before a layer is built from a file, :func:`param_shapes` derives the name and shape of every parameter it
would allocate from its description alone (with BatchNorm's running statistics, :func:`is_buffer`), and the
loader compares them with the arrays the file declares: a configuration asking for more than the file holds
is refused before any allocation.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import numpy as np

from rnnfast.io import Archive, FormatError, save_archive
from rnnfast.nn._layer_norm import ln_param_shapes
from rnnfast.nn.layers import Attention, Dropout, Embedding, LastStep, Linear, MaxPool, MeanPool
from rnnfast.nn.normalization import BUFFERS, BatchNorm, LayerNorm
from rnnfast.nn.recurrent import GRU, LSTM, RNN
from rnnfast.nn.stateful import Stateful

__all__ = ["LAYERS", "MAX_SIZE", "MAX_LAYERS", "describe", "describe_layers", "param_shapes", "check_declared",
           "build", "save_sequential", "save_checkpoint", "from_archive", "KIND", "is_buffer"]

KIND = "nn.Sequential"
#: The layer classes a file may name.
LAYERS = {cls.__name__: cls for cls in (LSTM, GRU, RNN, Embedding, Linear, Dropout, LastStep, MeanPool, MaxPool,
                                        Attention, BatchNorm, LayerNorm)}
#: Largest size (features, units, vocabulary...) a loaded configuration may give.
MAX_SIZE = 2 ** 24
#: Most stacked recurrent layers (``num_layers``) and most layers of a Sequential in a loaded file.
MAX_LAYERS = 1024
_SKIP = ("self", "seed")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_INT_ARRAYS = {"num_batches_tracked": np.dtype(np.int64)}  # arrays not of the layer's float dtype
_MAX_AXES = 8  # most axes of a LayerNorm's normalized_shape in a loaded file


def is_buffer(key: str) -> bool:
    """Whether the state-dict entry ``key`` ("<index>.<name>" or a layer's own name) is a statistic (BatchNorm's
    running mean, ...) rather than a trained parameter: it has no gradient and no optimizer state."""
    return key.rpartition(".")[2] in BUFFERS


def _arguments(cls: type) -> list[str]:
    return [n for n in inspect.signature(cls).parameters if n not in _SKIP]


# ---------------------------------------------------------------------------------------- describing
def describe(layer: Any) -> dict:
    """The JSON description of ``layer`` (TypeError for a class outside :data:`LAYERS`)."""
    if type(layer) is Stateful:
        return {"class": "Stateful", "layer": describe(layer.layer)}
    name = type(layer).__name__
    if LAYERS.get(name) is not type(layer):
        raise TypeError(f"cannot describe a {name} layer: Sequential.save writes {', '.join(LAYERS)} and "
                        "Stateful (save other models' state_dict() with rnnfast.io.save_archive)")
    config = {arg: getattr(layer, arg) for arg in _arguments(type(layer))}
    config = {k: np.dtype(v).name if isinstance(v, (np.dtype, type)) else list(v) if isinstance(v, tuple) else v
              for k, v in config.items()}
    if name == "Attention" and config["kind"] != "additive":
        config["hidden_size"] = None  # the layer stores key_size there; the constructor refuses it
    return {"class": name, "config": config}


def describe_layers(model: Any) -> list[dict]:
    """The descriptions of a Sequential's layers, in order."""
    return [describe(layer) for layer in model.layers]


# ---------------------------------------------------------------------------------------- checking
def _size(config: dict, key: str, default: Any = None, low: int = 1, high: int = MAX_SIZE) -> int:
    v = config.get(key, default)
    if type(v) is not int or not low <= v <= high:
        raise FormatError(f"{key} must be an int in [{low}, {high}], got {str(v)[:40]}")
    return v


def _flag(config: dict, key: str, default: bool) -> bool:
    v = config.get(key, default)
    if type(v) is not bool:
        raise FormatError(f"{key} must be true or false, got {str(v)[:40]}")
    return v


def _recurrent_shapes(name: str, c: dict) -> dict:
    G, H = _GATES[name], _size(c, "hidden_size")
    I, L = _size(c, "input_size"), _size(c, "num_layers", 1, high=MAX_LAYERS)
    D = 2 if _flag(c, "bidirectional", False) else 1
    bias = _flag(c, "bias", True)
    P = (_size(c, "proj_size", 0, low=0) or H) if name == "LSTM" else H  # (files before proj_size: 0)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(L):
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            shapes["weight_ih" + sfx] = (G * H, I if layer == 0 else D * P)
            shapes["weight_hh" + sfx] = (G * H, P)
            if bias:
                shapes["bias_ih" + sfx] = shapes["bias_hh" + sfx] = (G * H,)
            if P != H:
                shapes["weight_hr" + sfx] = (P, H)
    if name != "RNN" and _flag(c, "layer_norm", False):
        shapes.update((k, (n,)) for k, n, _ in ln_param_shapes(name == "LSTM", H, L, D))
    return shapes


def _attention_shapes(c: dict) -> dict:
    Q, K = _size(c, "query_size"), _size(c, "key_size")
    kind = c.get("kind", "dot")
    if kind == "general":
        return {"weight": (Q, K)}
    if kind == "additive":
        A = K if c.get("hidden_size") is None else _size(c, "hidden_size")
        return {"query_weight": (A, Q), "key_weight": (A, K), "v": (A,)}
    return {}


def _batchnorm_shapes(c: dict) -> dict:
    F = (_size(c, "num_features"),)
    shapes: dict[str, tuple[int, ...]] = {"weight": F, "bias": F} if _flag(c, "affine", True) else {}
    if _flag(c, "track_running_stats", True):
        shapes.update({"running_mean": F, "running_var": F, "num_batches_tracked": ()})
    return shapes


def _layernorm_shapes(c: dict) -> dict:
    dims = c.get("normalized_shape")
    if not isinstance(dims, list) or not 1 <= len(dims) <= _MAX_AXES:
        dims = [dims]  # an int (checked next), or refused there
    shape = tuple(_size({"normalized_shape": d}, "normalized_shape") for d in dims)
    if not _flag(c, "elementwise_affine", True):
        return {}
    return {"weight": shape, **({"bias": shape} if _flag(c, "bias", True) else {})}


_SHAPES: dict[str, Callable[[dict], dict]] = {
    "LSTM": lambda c: _recurrent_shapes("LSTM", c), "GRU": lambda c: _recurrent_shapes("GRU", c),
    "RNN": lambda c: _recurrent_shapes("RNN", c),
    "Embedding": lambda c: {"weight": (_size(c, "num_embeddings"), _size(c, "embedding_dim"))},
    "Linear": lambda c: {"weight": (_size(c, "out_features"), _size(c, "in_features")),
                         **({"bias": (c["out_features"],)} if _flag(c, "bias", True) else {})},
    "Attention": _attention_shapes, "BatchNorm": _batchnorm_shapes, "LayerNorm": _layernorm_shapes,
}


def _checked(desc: Any) -> tuple[str, dict]:
    """(class name, config) of a description from a file, its keys and value types checked."""
    if not isinstance(desc, dict):
        raise FormatError(f"a layer description must be an object, got {type(desc).__name__}")
    if desc.get("class") == "Stateful":
        if set(desc) != {"class", "layer"}:
            raise FormatError("a Stateful description holds class and layer only")
        return "Stateful", {}
    name = desc.get("class")
    if set(desc) != {"class", "config"} or not isinstance(name, str) or name not in LAYERS:
        raise FormatError(f"unknown layer {str(name)[:80]!r} (a file may name {', '.join(LAYERS)}, Stateful)")
    config = desc["config"]
    if not isinstance(config, dict) or not set(config) <= set(_arguments(LAYERS[name])):
        raise FormatError(f"{name}: bad configuration (its keys must be constructor arguments)")
    for k, v in config.items():
        if isinstance(v, list) and len(v) <= _MAX_AXES and all(type(e) is int for e in v):
            continue  # a shape (LayerNorm's normalized_shape)
        if not (v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))):
            raise FormatError(f"{name}: {k} must be a finite number, a string, true/false, null or a short list "
                              "of ints")
        if isinstance(v, str) and len(v) > 64:
            raise FormatError(f"{name}: {k} is a string of {len(v)} characters")
    if "dtype" in config and config["dtype"] not in ("float32", "float64"):
        raise FormatError(f"{name}: dtype must be 'float32' or 'float64', got {str(config['dtype'])[:40]!r}")
    return name, config


def param_shapes(descs: list) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Every parameter a list of layer descriptions would allocate: ``"<index>.<name>" -> (dtype, shape)``.

    Raises
    ------
    FormatError
        A description that is not valid (unknown class or argument, a size outside [1, :data:`MAX_SIZE`]).
    """
    if not isinstance(descs, list) or len(descs) > MAX_LAYERS:
        raise FormatError(f"layers must be a list of at most {MAX_LAYERS} descriptions")
    out = {}
    for i, desc in enumerate(descs):
        name, config = _checked(desc)
        if name == "Stateful":
            name, config = _checked(desc["layer"])
            if name not in _GATES:
                raise FormatError("Stateful wraps an LSTM, GRU or RNN")
        dtype = np.dtype(config.get("dtype", "float32"))
        for k, shape in _SHAPES.get(name, lambda c: {})(config).items():
            out[f"{i}.{k}"] = (_INT_ARRAYS.get(k, dtype), shape)
    return out


def check_declared(ar: Archive, expected: dict, prefix: str = "") -> None:
    """Refuse ``ar`` unless the arrays named ``prefix + key`` are exactly ``expected`` (dtype, shape)."""
    declared = {k[len(prefix):]: (d.dtype, d.shape) for k, d in ar.declared.items() if k.startswith(prefix)}
    if declared.keys() != expected.keys():
        raise ar.fail(f"the arrays do not match the configuration: missing {sorted(expected.keys() - declared)[:4]}, "
                      f"unexpected {sorted(declared.keys() - expected)[:4]}")
    for k, (dtype, shape) in expected.items():
        if declared[k] != (dtype, shape):
            got = declared[k]
            raise ar.fail(f"array {prefix + k!r} is {got[0].name} {list(got[1])}; the configuration makes "
                          f"{dtype.name} {list(shape)}")


# ---------------------------------------------------------------------------------------- building
def build(desc: dict) -> Any:
    """The layer a (checked) description describes, freshly initialised."""
    name, config = _checked(desc)
    if name == "Stateful":
        return Stateful(build(desc["layer"]))
    return LAYERS[name](**config)


def save_sequential(model: Any, path: Any) -> None:
    """Write a Sequential's layers and parameters to ``path`` (see :meth:`rnnfast.nn.Sequential.save`)."""
    save_archive(path, KIND, {"layers": describe_layers(model)}, model.state_dict())


def save_checkpoint(model: Any, path: Any, extra: dict | None = None) -> str:
    """Write ``model`` as an ``nn.Sequential`` file when it is a Sequential of :data:`LAYERS` (and Stateful
    wrappers), else its ``state_dict()`` alone (kind ``"model.state_dict"``). Returns the kind written."""
    from rnnfast.nn.sequential import Sequential
    layers = None
    if type(model) is Sequential:
        try:
            layers = describe_layers(model)
        except TypeError:
            layers = None
    if layers is None:
        save_archive(path, "model.state_dict", {}, model.state_dict(), extra)
        return "model.state_dict"
    save_archive(path, KIND, {"layers": layers}, model.state_dict(), extra)
    return KIND


def from_archive(ar: Archive) -> Any:
    """The Sequential an open ``nn.Sequential`` archive holds, in eval mode (FormatError if inconsistent)."""
    from rnnfast.nn.sequential import Sequential
    if set(ar.config) != {"layers"}:
        raise ar.fail("an nn.Sequential file's configuration holds its layers only")
    with ar.reading("the layers"):
        expected = param_shapes(ar.config["layers"])
    check_declared(ar, expected)
    with ar.reading("the layers"):
        model = Sequential(*[build(d) for d in ar.config["layers"]])
        model.load_state_dict(ar.read_all())
    return model.train(False)
