"""Saving and loading fitted estimators in rnnfast's pickle-free file format (:mod:`rnnfast.io`).

A file holds the estimator's class (``kind`` "estimator.<class name>"), its parameters (``config``),
the network's arrays (``model/<name>``), unless saved with ``include_optimizer=False`` the optimizer's
(``optimizer/<param>/<slot>``) and, as JSON, what fitting learnt (input kind, task, classes or target
scaling, epochs, seed), the optimizer's scalars (``null`` without its state) and the history.

Loading checks all of it before building anything: the parameters as the constructor would (types, ranges;
``n_threads`` an int >= 1 or null), the fitted state's types and sizes (at most
:data:`rnnfast.nn._serial.MAX_SIZE` features, units, outputs), class labels of a bounded dtype, then the
name, dtype and shape of every parameter the network would have against the arrays the file declares, and
the optimizer's arrays against the parameters. Only then is the network built and its arrays read.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from types import SimpleNamespace
from typing import Any, Optional, Union

import numpy as np

from rnnfast import __version__ as _VERSION
from rnnfast import nn
from rnnfast._validation import check_bool, check_int, check_option
from rnnfast.estimators.inputs import FEATURES, TOKENS, InputSpec
from rnnfast.estimators.memory import rebuild_network
from rnnfast.estimators.network import (NORMS, build_optimizer, optimizer_name, recurrent_plan, recurrent_width,
                                       stacked_layers)
from rnnfast.estimators.params import ADDED_DEFAULTS, ARCH_KEYS, OPT_KEYS, Params, jsonable
from rnnfast.estimators.targets import CLASSIFICATION, CTC, REGRESSION, TargetSpec
from rnnfast.io import Archive, save_archive
from rnnfast.nn import _serial
from rnnfast.nn._serial import MAX_SIZE

__all__ = ["save_estimator", "from_archive", "network_descriptions"]

PathLike = Union[str, "os.PathLike[str]"]
#: Class-label dtypes a file may give (strings are bounded separately: see ``_classes``).
_LABEL_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|[US][0-9]{1,9}|O)")
_MAX_LABEL_CHARS = 64  # a string label dtype may be this wide whatever its labels (else as wide as the longest)


# ---------------------------------------------------------------------------------------- saving
def _arrays(est, include_optimizer: bool) -> dict:
    arrays = {f"model/{k}": v for k, v in est.model_.state_dict().items()}
    if include_optimizer:
        for pname, slots in est.optimizer_.state_dict()["state"].items():
            for slot, a in slots.items():
                arrays[f"optimizer/{pname}/{slot}"] = a
    return arrays


def _extra(est, include_optimizer: bool) -> dict:
    inputs, targets = est._specs
    fitted = {"input_kind": inputs.kind, "n_features_in": inputs.n_features_in, "vocab_size": inputs.vocab_size,
              "task": targets.task, "per_step": targets.per_step, "n_outputs": targets.n_outputs,
              "y_1d": targets.y_1d, "n_epochs": est.n_epochs_, "seed": est.seed_, "arch": est._arch_, "opt": est._opt_}
    osd = est.optimizer_.state_dict()
    optimizer = {"class": osd["optimizer"], "hyper": osd["hyper"], "steps": osd["steps"]}
    extra = {"rnnfast_version": _VERSION, "fitted": fitted, "history": est.history_,
             "optimizer": optimizer if include_optimizer else None}
    if targets.task in (CLASSIFICATION, CTC):
        c = targets.classes
        values = [v.decode("latin-1") for v in c.tolist()] if c.dtype.kind == "S" else c.tolist()
        extra["classes"] = {"values": values, "dtype": c.dtype.str}
        if targets.task == CTC:
            extra["label_strings"] = targets.strings
    else:
        extra["y_mean"] = targets.y_mean.tolist()
        extra["y_scale"] = targets.y_scale.tolist()
    return extra


def save_estimator(est, path: PathLike, include_optimizer: bool = True) -> None:
    """Write the fitted ``est`` to ``path`` atomically (see :meth:`rnnfast.LSTM.save`)."""
    include_optimizer = check_bool(include_optimizer, "include_optimizer")
    precision = getattr(est, "precision_", None)  # a quantized estimator (rnnfast.quantize): no optimizer state
    include_optimizer = include_optimizer and precision is None
    config = {k: jsonable(v) for k, v in est.get_params().items()}
    save_archive(path, f"estimator.{type(est).__name__}", config, _arrays(est, include_optimizer),
                 _extra(est, include_optimizer), precision=precision)


# ---------------------------------------------------------------------------------------- checking
def _scalar(value: Any, name: str) -> Any:
    """A JSON scalar from a file: null, true/false, an int, a finite float or a short string."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= 64:
        return value
    raise ValueError(f"{name} must be a finite number, a short string, true/false or null, got {str(value)[:40]}")


def _with_added(value: Any, keys) -> Any:
    """``value`` (a saved dict) with the parameters added since older files were written, at the value those
    files mean (``ADDED_DEFAULTS``), for those of ``keys``; anything else is returned as it is."""
    if not isinstance(value, dict):
        return value
    return {**{k: v for k, v in ADDED_DEFAULTS.items() if k in keys}, **value}


def _dict(value: Any, name: str, keys: tuple = ()) -> dict:
    if not isinstance(value, dict) or not set(keys) <= set(value):
        raise ValueError(f"{name} must be an object holding {sorted(keys)}")
    return value


def _classes(extra: dict, n_outputs: int) -> np.ndarray:
    c = _dict(extra.get("classes"), "classes", ("values", "dtype"))
    values, dtype = c["values"], c["dtype"]
    if not isinstance(dtype, str) or not _LABEL_DTYPE.fullmatch(dtype):
        raise ValueError(f"unsupported class label dtype {str(dtype)[:40]!r}")
    if not isinstance(values, list) or len(values) != n_outputs:
        raise ValueError("classes do not match the number of outputs")
    values = [_scalar(v, "a class label") if not isinstance(v, str) else v for v in values]
    dt = np.dtype(dtype)
    if dt.kind in "US":
        chars = dt.itemsize // (4 if dt.kind == "U" else 1)
        longest = max((len(v) for v in values if isinstance(v, str)), default=0)
        if chars > max(_MAX_LABEL_CHARS, longest):
            raise ValueError(f"class label dtype {dtype} is wider than its labels ({longest} characters)")
        if dt.kind == "S":
            values = [v.encode("latin-1") for v in values]
    return np.array(values, dtype=dt)


def _target_spec(f: dict, extra: dict) -> TargetSpec:
    task = check_option(f["task"], "task", (CLASSIFICATION, REGRESSION, CTC))
    n_outputs = check_int(f["n_outputs"], "n_outputs", 1, MAX_SIZE)
    per_step, y_1d = check_bool(f["per_step"], "per_step"), check_bool(f["y_1d"], "y_1d")
    if task == CLASSIFICATION:
        return TargetSpec(task, per_step, n_outputs, y_1d, classes=_classes(extra, n_outputs))
    if task == CTC:  # the labels, and the blank (output 0)
        return TargetSpec(task, per_step, n_outputs, y_1d, classes=_classes(extra, n_outputs - 1),
                          strings=check_bool(extra.get("label_strings", False), "label_strings"))
    moments = []
    for key in ("y_mean", "y_scale"):
        v = extra.get(key)
        if (not isinstance(v, list) or len(v) != n_outputs
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise ValueError(f"{key} must be {n_outputs} finite numbers")
        moments.append(np.asarray(v, dtype=np.float64))
    return TargetSpec(task, per_step, n_outputs, y_1d, y_mean=moments[0], y_scale=moments[1])


def _history(extra: dict) -> dict:
    history = extra.get("history", {})
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ValueError("history must map names to lists")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for v in history.values() for x in v):
        raise ValueError("history must hold numbers")
    return {str(k): [float(x) for x in v] for k, v in history.items()}


@dataclasses.dataclass(frozen=True)
class _Fitted:
    """The fitted state a file's ``extra`` holds, checked."""

    inputs: InputSpec
    targets: TargetSpec
    seed: int
    n_epochs: int
    arch: dict
    opt: dict
    optimizer: Optional[dict]
    history: dict


def _optimizer_scalars(o: Any) -> Optional[dict]:
    if o is None:
        return None
    o = _dict(o, "optimizer", ("class", "hyper", "steps"))
    if not isinstance(o["class"], str):
        raise ValueError("the optimizer class must be a string")
    optimizer_name(o["class"])  # ValueError for an unknown one
    hyper = {}
    for k, v in _dict(o["hyper"], "optimizer hyperparameters").items():
        hyper[k] = tuple(_scalar(x, k) for x in v) if isinstance(v, list) and len(v) <= 4 else _scalar(v, k)
    return {"optimizer": o["class"], "hyper": hyper, "steps": check_int(o["steps"], "optimizer steps", 0)}


def _fitted(extra: dict) -> _Fitted:
    f = _dict(extra.get("fitted"), "fitted", ("input_kind", "n_features_in", "vocab_size", "task", "per_step",
                                               "n_outputs", "y_1d", "n_epochs", "seed", "arch", "opt"))
    kind = check_option(f["input_kind"], "input_kind", (FEATURES, TOKENS))
    inputs = InputSpec(kind, check_int(f["n_features_in"], "n_features_in", 1, MAX_SIZE),
                       check_int(f["vocab_size"], "vocab_size", 2, MAX_SIZE, allow_none=kind == FEATURES))
    arch, opt = _dict(_with_added(f["arch"], ARCH_KEYS), "arch", ARCH_KEYS), _dict(f["opt"], "opt", OPT_KEYS + ("lr",))
    return _Fitted(inputs, _target_spec(f, extra), check_int(f["seed"], "seed", 0, 2 ** 128),
                   check_int(f["n_epochs"], "n_epochs", 0), {k: _scalar(arch[k], k) for k in ARCH_KEYS},
                   {k: _scalar(opt[k], k) for k in OPT_KEYS + ("lr",)}, _optimizer_scalars(extra.get("optimizer")),
                   _history(extra))


def network_descriptions(layer_name: str, p: Params, inputs: InputSpec, per_step: bool, n_outputs: int) -> list:
    """The layers :func:`rnnfast.estimators.network.build_model` builds, as :mod:`rnnfast.nn._serial`
    descriptions (parameter shapes only: the tests check they agree with the built network)."""
    dt = p.dtype.name
    layers: list = []
    if inputs.kind == TOKENS:
        layers.append({"class": "Embedding", "config": {"num_embeddings": inputs.vocab_size,
                                                        "embedding_dim": p.embedding_dim, "dtype": dt}})
    in_size = p.embedding_dim if inputs.kind == TOKENS else inputs.n_features_in
    for what, size in recurrent_plan(p, in_size):
        if what == "recurrent":
            rec = {"input_size": size, "hidden_size": p.hidden_size, "bidirectional": p.bidirectional, "dtype": dt,
                   "num_layers": stacked_layers(p),
                   **({"layer_norm": True} if p.layer_norm else {}),
                   **({"proj_size": p.proj_size} if p.proj_size else {})}
            layers.append({"class": "Stateful", "layer": {"class": layer_name, "config": rec}})
        elif what in NORMS:
            cls = NORMS[what]
            first = "num_features" if cls is nn.BatchNorm else "normalized_shape"
            layers.append({"class": cls.__name__, "config": {first: size, "dtype": dt}})
        else:
            layers.append({"class": "Dropout", "config": {}})
    if not per_step:
        layers.append({"class": "LastStep", "config": {}})
    if p.dropout > 0:
        layers.append({"class": "Dropout", "config": {}})
    layers.append({"class": "Linear", "config": {"in_features": recurrent_width(p), "out_features": n_outputs, "dtype": dt}})
    return layers


def _check_optimizer(ar: Archive, p: Params, fitted: _Fitted, expected: dict) -> None:
    """Refuse ``ar`` unless its optimizer arrays are one set of slots per parameter, each of the parameter's
    dtype and shape, that the saved optimizer accepts with its hyperparameters and step count (tried on a
    one-element stand-in: nothing of the network's size is built)."""
    slots: dict = {}
    for name, d in ar.declared.items():
        if name.startswith("model/"):
            continue
        pname, _, slot = name[len("optimizer/"):].rpartition("/") if name.startswith("optimizer/") else ("", "", "")
        if fitted.optimizer is None or pname not in expected or expected[pname] != (d.dtype, d.shape):
            raise ar.fail(f"array {name[:80]!r} is not a parameter's optimizer state of its shape")
        slots.setdefault(pname, set()).add(slot)
    if fitted.optimizer is None:
        return
    kinds = {frozenset(slots.get(n, ())) for n in expected}
    if len(kinds) != 1:
        raise ar.fail("the parameters' optimizer states hold different slots")
    w = np.zeros(1, p.dtype)
    stand_in = SimpleNamespace(named_parameters=lambda: [("w", w)], grads={"w": np.zeros(1, p.dtype)})
    with ar.reading("the optimizer state"):
        name = optimizer_name(fitted.optimizer["optimizer"])
        opt = build_optimizer(stand_in, dataclasses.replace(p, optimizer=name))  # type: ignore[arg-type]
        opt.load_state_dict(dict(fitted.optimizer, state={"w": {s: w for s in kinds.pop()}}))


def _check_arrays(ar: Archive, est, p: Params, fitted: _Fitted) -> None:
    """Refuse ``ar`` unless its arrays are exactly what the network and optimizer would hold."""
    layers = network_descriptions(est._layer_cls.__name__, p, fitted.inputs, fitted.targets.per_step,
                                  fitted.targets.n_outputs)
    with ar.reading("the network's configuration"):
        expected = _serial.param_shapes(layers)
    _serial.check_declared(ar, expected, prefix="model/")
    _check_optimizer(ar, p, fitted, {k: v for k, v in expected.items() if not _serial.is_buffer(k)})


# ---------------------------------------------------------------------------------------- building
def _restore(est, p: Params, fitted: _Fitted, ar: Archive) -> None:
    # every array is read (and its checksum checked) before the network is built: a damaged one costs
    # no more than the arrays the file declares
    weights = {k[len("model/"):]: a for k, a in ar.read_all("model/").items()}
    slots: dict = {}
    for k, a in ar.read_all("optimizer/").items():
        pname, slot = k[len("optimizer/"):].rsplit("/", 1)
        slots.setdefault(pname, {})[slot] = a
    est.seed_ = fitted.seed
    est._set_specs(fitted.inputs, fitted.targets)
    est._arch_, est._opt_ = fitted.arch, fitted.opt
    o = fitted.optimizer
    state = None if o is None else dict(o, state={n: slots.get(n, {}) for n in weights if not _serial.is_buffer(n)})
    rebuild_network(est, p, weights, state)
    est.history_ = fitted.history
    est.n_epochs_ = fitted.n_epochs


def from_archive(ar: Archive) -> Any:
    """The estimator an open ``estimator.*`` archive holds (FormatError when anything does not fit)."""
    from rnnfast.estimators import ESTIMATORS
    cls = ESTIMATORS.get(ar.kind.split(".", 1)[1])
    if cls is None:
        raise ar.fail(f"holds an unknown estimator {ar.kind[:80]!r}")
    names = set(cls._get_param_names())
    config = _with_added(ar.config, names)
    if set(config) != names:
        raise ar.fail(f"the saved parameters do not match {cls.__name__}'s: missing "
                      f"{sorted(names - set(config))}, unexpected {sorted(set(config) - names)[:5]}")
    with ar.reading("the estimator's parameters"):
        est = cls(**{k: _scalar(v, k) for k, v in config.items()})
        p = est._validate_params()
    with ar.reading("the fitted state"):
        fitted = _fitted(ar.extra)
    _check_arrays(ar, est, p, fitted)
    with ar.reading("the estimator state"):
        _restore(est, p, fitted, ar)
    return est

