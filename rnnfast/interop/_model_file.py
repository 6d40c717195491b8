"""Layers and Sequential models in rnnfast's pickle-free file (:mod:`rnnfast.io`), for the command line's
``import`` and ``export``.

A file holds ``kind`` "nn.Sequential" with ``config`` ``{"layers": [{"type": "LSTM", "config": {...}}, ...]}``
and the ``state_dict`` as arrays, or ``kind`` "nn.LSTM" / "nn.GRU" / "nn.RNN" with the layer's constructor
arguments. Estimator files (``estimator.*``) and anything else go to :func:`rnnfast.load`.
"""
from __future__ import annotations

import os
from typing import Any, Union

from rnnfast import nn
from rnnfast.interop._onnx_export import recurrent_kind
from rnnfast.io import FormatError, load_archive, save_archive

__all__ = ["save_model", "load_model"]

PathLike = Union[str, "os.PathLike[str]"]

_TYPES = {cls.__name__: cls for cls in (nn.LSTM, nn.GRU, nn.RNN, nn.Embedding, nn.Linear, nn.Dropout, nn.LastStep,
                                        nn.MeanPool, nn.MaxPool)}


def _config(layer: Any) -> dict:
    """The constructor arguments that rebuild ``layer`` (its parameters come from the state dict)."""
    if recurrent_kind(layer) is not None:
        cfg = {k: getattr(layer, k) for k in ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                                              "bidirectional")}
        if isinstance(layer, nn.RNN):
            cfg["nonlinearity"] = layer.nonlinearity
        if isinstance(layer, nn.GRU):
            cfg["reset_after"] = layer.reset_after
        return cfg
    if isinstance(layer, nn.Embedding):
        return {"num_embeddings": layer.num_embeddings, "embedding_dim": layer.embedding_dim,
                "padding_idx": layer.padding_idx}
    if isinstance(layer, nn.Linear):
        return {"in_features": layer.in_features, "out_features": layer.out_features, "bias": layer.bias}
    if isinstance(layer, nn.Dropout):
        return {"p": layer.p}
    if isinstance(layer, nn.LastStep):
        return {"bidirectional": layer.bidirectional}
    if isinstance(layer, (nn.MeanPool, nn.MaxPool)):
        return {}
    raise ValueError(f"{type(layer).__name__} cannot be saved as a layer file")


def save_model(model: Any, path: PathLike) -> None:
    """Write a recurrent layer or a Sequential of the layers in ``_TYPES`` to ``path`` (atomically).

    Parameters
    ----------
    model : rnnfast.nn.LSTM / GRU / RNN or rnnfast.nn.Sequential
    path : str or os.PathLike
    """
    if isinstance(model, nn.Sequential):
        layers = [nn.unwrap(layer) for layer in model.layers]
        config = {"layers": [{"type": type(layer).__name__, "config": _config(layer)} for layer in layers]}
        save_archive(path, "nn.Sequential", config, nn.Sequential(*layers).state_dict())
    elif recurrent_kind(model) is not None:
        save_archive(path, f"nn.{type(model).__name__}", _config(model), model.state_dict())
    else:
        raise TypeError(f"save_model takes a recurrent layer or a Sequential, got {type(model).__name__}")


def _build(type_name: Any, config: Any) -> Any:
    cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None or not isinstance(config, dict):
        raise FormatError(f"unknown layer {type_name!r}")
    return cls(**config)


def load_model(path: PathLike) -> Any:
    """A model file: a layer or Sequential written by :func:`save_model`, else what :func:`rnnfast.load`
    reads (a fitted estimator).

    Raises
    ------
    rnnfast.io.FormatError
        A damaged or foreign file.
    FileNotFoundError
    """
    kind, config, arrays, _ = load_archive(path)
    if not kind.startswith("nn."):
        from rnnfast import load
        return load(path)
    try:
        if kind == "nn.Sequential":
            model = nn.Sequential(*[_build(spec.get("type"), spec.get("config")) for spec in config["layers"]])
        else:
            model = _build(kind[3:], config)
        model.load_state_dict(arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FormatError(f"{os.fspath(path)}: damaged model ({type(e).__name__}: {e})") from None
    return model.train(False)
