"""The estimators' parameter table and its validation.

``PARAMETER_CONSTRAINTS`` says what each constructor argument may be (as scikit-learn's
``_parameter_constraints``); :func:`validate` checks an estimator's ``get_params()`` against it, adds
the checks that involve two parameters, and returns a frozen :class:`Params`. Errors follow
:mod:`rnnfast._validation`: TypeError for a wrong type, ValueError for a bad value.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import numpy as np

from rnnfast._validation import THREADS, AnyOf, Boolean, FloatDtype, Integer, Options, Real, validate_params

__all__ = ["Params", "PARAMETER_CONSTRAINTS", "validate", "OPTIMIZER_NAMES", "REGRESSION_LOSS_NAMES",
           "ARCH_KEYS", "ADDED_DEFAULTS", "OPT_KEYS", "jsonable"]

OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
REGRESSION_LOSS_NAMES = ("mse", "mae", "huber")
#: Parameters that shape the network: changing one makes a warm start impossible.
ARCH_KEYS = ("hidden_size", "num_layers", "bidirectional", "dropout", "pooling", "embedding_dim", "dtype",
             "nonlinearity", "reset_after", "normalization", "layer_norm", "recurrent_dropout", "proj_size")
#: Parameters added after saved files existed, with the value a file written before them means.
ADDED_DEFAULTS = {"reset_after": True, "distributed": None, "normalization": None, "layer_norm": False,
                  "recurrent_dropout": 0.0, "proj_size": 0}
#: Parameters of the optimizer: changing one starts a new optimizer on a warm start.
OPT_KEYS = ("optimizer", "weight_decay", "momentum")

PARAMETER_CONSTRAINTS = {
    "hidden_size": Integer(1),
    "num_layers": Integer(1),
    "nonlinearity": Options("tanh", "relu"),
    "reset_after": Boolean(),  # GRU estimators only (rnnfast.nn.GRU's form)
    "layer_norm": Boolean(),  # layer-normalized cells (LSTM and GRU; rnnfast.nn.LSTM's layer_norm)
    "bidirectional": Boolean(),
    "dropout": Real(0.0, 1.0, closed="left"),
    "recurrent_dropout": Real(0.0, 1.0, closed="left"),  # rnnfast.nn.LSTM/GRU/RNN's
    "proj_size": Integer(0),  # LSTM estimators only (rnnfast.nn.LSTM's projection)
    "pooling": Options("last", "mean", "max"),
    "return_sequences": AnyOf(Options("auto"), Boolean()),
    "embedding_dim": Integer(1),
    "vocab_size": Integer(2, allow_none=True),
    "epochs": Integer(0),
    "batch_size": Integer(1),
    "optimizer": Options(*OPTIMIZER_NAMES),
    "lr": Real(0.0, closed="right"),
    "weight_decay": Real(0.0),
    "momentum": Real(0.0, 1.0, closed="left"),
    "loss": Options("auto", "cross_entropy", *REGRESSION_LOSS_NAMES, "ctc"),
    "clip_norm": Real(0.0, closed="neither", allow_none=True),
    "clip_value": Real(0.0, closed="neither", allow_none=True),
    "validation_split": Real(0.0, 1.0, closed="left"),
    "shuffle": Boolean(),
    "bucket": Boolean(),
    "early_stopping": Boolean(),
    "patience": Integer(0),
    "tbptt": Integer(1, allow_none=True),
    "warm_start": Boolean(),
    "random_state": Integer(0, allow_none=True),
    "verbose": AnyOf(Boolean(), Integer(0, 2)),
    "dtype": FloatDtype(),
    "n_threads": THREADS,
    "distributed": Options("auto", "mpi", allow_none=True),
    "normalization": Options("batch", "layer", allow_none=True),
}


@dataclasses.dataclass(frozen=True)
class Params:
    """An estimator's parameters, checked and converted (``dtype`` is a ``numpy.dtype``)."""

    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    pooling: str
    return_sequences: Union[str, bool]
    embedding_dim: int
    vocab_size: Optional[int]
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    loss: str
    clip_norm: Optional[float]
    clip_value: Optional[float]
    validation_split: float
    shuffle: bool
    bucket: bool
    early_stopping: bool
    patience: int
    tbptt: Optional[int]
    warm_start: bool
    random_state: Optional[int]
    verbose: int
    dtype: np.dtype
    n_threads: Optional[int]
    nonlinearity: str = "tanh"
    reset_after: bool = True
    distributed: Optional[str] = None
    normalization: Optional[str] = None
    layer_norm: bool = False
    recurrent_dropout: float = 0.0
    proj_size: int = 0

    def arch(self) -> dict:
        """The parameters that shape the network, JSON-able (what a saved file records)."""
        return {k: (self.dtype.name if k == "dtype" else getattr(self, k)) for k in ARCH_KEYS}

    def opt(self) -> dict:
        """The optimizer's parameters and the learning rate."""
        return {k: getattr(self, k) for k in OPT_KEYS + ("lr",)}


def validate(params: Mapping[str, Any]) -> Params:
    """Check the constructor arguments ``params`` (an estimator's ``get_params()``).

    Returns
    -------
    Params

    Raises
    ------
    TypeError
        A parameter of the wrong type.
    ValueError
        A parameter with a bad value, or two that do not go together.
    """
    v = validate_params(params, PARAMETER_CONSTRAINTS)
    v["verbose"] = int(v["verbose"])
    if v["momentum"] and v["optimizer"] not in ("sgd", "rmsprop"):
        raise ValueError(f"momentum applies to optimizer='sgd' or 'rmsprop', not {v['optimizer']!r}")
    if v["tbptt"] and v["bidirectional"]:
        raise ValueError("tbptt needs a unidirectional model: the reverse direction reads the whole sequence")
    if v.get("proj_size", 0) >= v["hidden_size"]:
        raise ValueError(f"proj_size must be smaller than hidden_size ({v['hidden_size']}), got {v['proj_size']}")
    return Params(**v)


def jsonable(value: Any) -> Any:
    """A parameter value as JSON: numpy scalars become Python numbers, dtypes their names."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.dtype, type)):
        return np.dtype(value).name
    return value

