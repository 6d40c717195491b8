"""Saving and loading fitted estimators in rnnfast's pickle-free file format (:mod:`rnnfast.io`).

A file holds the estimator's class (``kind`` "estimator.<class name>"), its parameters (``config``),
the network's and optimizer's arrays (``model/<name>``, ``optimizer/<param>/<slot>``) and, as JSON,
what fitting learnt (input kind, task, classes or target scaling, epochs, seed), the optimizer's
scalars and the history. Loading checks all of it before building anything.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Union

import numpy as np

from rnnfast import __version__ as _VERSION
from rnnfast._validation import check_option
from rnnfast.estimators.inputs import FEATURES, TOKENS, InputSpec
from rnnfast.estimators.network import build_model, build_optimizer, optimizer_name
from rnnfast.estimators.params import ARCH_KEYS, OPT_KEYS, jsonable
from rnnfast.estimators.targets import CLASSIFICATION, REGRESSION, TargetSpec
from rnnfast.io import FormatError, load_archive, save_archive

__all__ = ["save_estimator", "restore", "load"]

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------------------- saving
def _arrays(est) -> dict:
    arrays = {f"model/{k}": v for k, v in est.model_.state_dict().items()}
    for pname, slots in est.optimizer_.state_dict()["state"].items():
        for slot, a in slots.items():
            arrays[f"optimizer/{pname}/{slot}"] = a
    return arrays


def _extra(est) -> dict:
    inputs, targets = est._specs
    fitted = {"input_kind": inputs.kind, "n_features_in": inputs.n_features_in, "vocab_size": inputs.vocab_size,
              "task": targets.task, "per_step": targets.per_step, "n_outputs": targets.n_outputs,
              "y_1d": targets.y_1d, "n_epochs": est.n_epochs_, "seed": est.seed_, "arch": est._arch_, "opt": est._opt_}
    osd = est.optimizer_.state_dict()
    extra = {"rnnfast_version": _VERSION, "fitted": fitted, "history": est.history_,
             "optimizer": {"class": osd["optimizer"], "hyper": osd["hyper"], "steps": osd["steps"]}}
    if targets.task == CLASSIFICATION:
        c = targets.classes
        values = [v.decode("latin-1") for v in c.tolist()] if c.dtype.kind == "S" else c.tolist()
        extra["classes"] = {"values": values, "dtype": c.dtype.str}
    else:
        extra["y_mean"] = targets.y_mean.tolist()
        extra["y_scale"] = targets.y_scale.tolist()
    return extra


#: Parameters newer than some files: a file without them loads with their defaults.
ADDED_LATER = frozenset({"distributed"})


def save_estimator(est, path: PathLike) -> None:
    """Write the fitted ``est`` to ``path`` atomically (see :meth:`rnnfast.LSTM.save`)."""
    config = {k: jsonable(v) for k, v in est.get_params().items()}
    save_archive(path, f"estimator.{type(est).__name__}", config, _arrays(est), _extra(est))


# ---------------------------------------------------------------------------------------- loading
def _target_spec(f: dict, extra: dict) -> TargetSpec:
    task = check_option(f["task"], "task", (CLASSIFICATION, REGRESSION))
    n_outputs, per_step, y_1d = int(f["n_outputs"]), bool(f["per_step"]), bool(f["y_1d"])
    if task == CLASSIFICATION:
        c = extra["classes"]
        dt = np.dtype(c["dtype"])
        if dt.kind not in "biufUSO":
            raise ValueError(f"unsupported class label dtype {dt}")
        values = [v.encode("latin-1") for v in c["values"]] if dt.kind == "S" else c["values"]
        classes = np.array(values, dtype=dt)
        if classes.shape != (n_outputs,):
            raise ValueError("classes do not match the number of outputs")
        return TargetSpec(task, per_step, n_outputs, y_1d, classes=classes)
    y_mean = np.asarray(extra["y_mean"], dtype=np.float64)
    y_scale = np.asarray(extra["y_scale"], dtype=np.float64)
    if y_mean.shape != (n_outputs,) or y_scale.shape != (n_outputs,):
        raise ValueError("y_mean / y_scale do not match the number of outputs")
    return TargetSpec(task, per_step, n_outputs, y_1d, y_mean=y_mean, y_scale=y_scale)


def _optimizer_state(est, arrays: dict, o: dict) -> dict:
    slots: dict = {}
    for k, a in arrays.items():
        if k.startswith("optimizer/"):
            pname, slot = k[len("optimizer/"):].rsplit("/", 1)
            slots.setdefault(pname, {})[slot] = a
    state = {n: slots.get(n, {}) for n, _ in est.model_.named_parameters()}
    hyper = dict(o["hyper"])
    if "betas" in hyper and isinstance(hyper["betas"], list):
        hyper["betas"] = tuple(hyper["betas"])
    return {"optimizer": o["class"], "hyper": hyper, "steps": o["steps"], "state": state}


def _history(extra: dict) -> dict:
    history = extra.get("history", {})
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ValueError("history must map names to lists")
    return {str(k): [float(x) for x in v] for k, v in history.items()}


def restore(est, arrays: dict, extra: dict) -> None:
    """Rebuild ``est``'s fitted state from a saved file's arrays and extra (raises on any mismatch)."""
    f = extra["fitted"]
    p = est._validate_params()
    kind = check_option(f["input_kind"], "input_kind", (FEATURES, TOKENS))
    inputs = InputSpec(kind, int(f["n_features_in"]), f["vocab_size"])
    targets = _target_spec(f, extra)
    est.seed_ = int(f["seed"])
    est._set_specs(inputs, targets)
    est._arch_ = {k: f["arch"][k] for k in ARCH_KEYS}
    est._opt_ = {k: f["opt"][k] for k in OPT_KEYS + ("lr",)}
    est.model_ = build_model(est._layer_cls, p, inputs, targets.per_step, targets.n_outputs, est.seed_)
    est.model_.load_state_dict({k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")})
    o = extra["optimizer"]
    est.optimizer_ = build_optimizer(est.model_, dataclasses.replace(p, optimizer=optimizer_name(o["class"])))
    est.optimizer_.load_state_dict(_optimizer_state(est, arrays, o))
    est.history_ = _history(extra)
    est.n_epochs_ = int(f["n_epochs"])
    est.model_.eval()


def load(path: PathLike) -> Any:
    """Load an estimator written by ``save`` (:meth:`rnnfast.LSTM.save`).

    Nothing in the file is executed: it is parsed as JSON and ``.npy`` arrays (no pickle), and checked.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    LSTM, GRU, RNN or one of their ``*Classifier`` / ``*Regressor`` forms
        Fitted, in the state it was saved in (predictions are bit-identical; training can continue).

    Raises
    ------
    rnnfast.io.FormatError
        The file is damaged, truncated, not an rnnfast file, or holds something other than an estimator.
    FileNotFoundError
    """
    from rnnfast.estimators import ESTIMATORS
    kind, config, arrays, extra = load_archive(path, kind=lambda k: k.startswith("estimator."))
    cls = ESTIMATORS.get(kind.split(".", 1)[1])
    if cls is None:
        raise FormatError(f"{path}: holds an unknown estimator {kind!r}")
    names = set(cls._get_param_names())
    if set(config) != names and set(config) != names - ADDED_LATER:
        raise FormatError(f"{path}: the saved parameters do not match {cls.__name__}'s: missing "
                          f"{sorted(names - set(config))}, unexpected {sorted(set(config) - names)}")
    est = cls(**config)
    try:
        restore(est, arrays, extra)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise FormatError(f"{path}: damaged estimator state ({type(e).__name__}: {e})") from None
    return est
