"""Building what an estimator trains: the network, its optimizer and its loss.

The network is an :class:`rnnfast.nn.Sequential` of [``Embedding``] -> recurrent layer (wrapped in
``Stateful`` for truncated BPTT) -> [``LastStep`` / ``MeanPool`` / ``MaxPool``] -> [``Dropout``] ->
``Linear``. With ``normalization`` the recurrent layer is ``num_layers`` one-layer ones, each followed by a
``BatchNorm`` / ``LayerNorm`` (and ``Dropout`` between them), as :func:`recurrent_plan` lists. Its initial
weights come from four generators spawned from the estimator's seed, so the same ``random_state`` builds the
same network.
"""
from __future__ import annotations

from typing import Optional, Type

import numpy as np

from rnnfast import nn
from rnnfast.estimators.inputs import TOKENS, InputSpec
from rnnfast.estimators.params import Params
from rnnfast.estimators.targets import CLASSIFICATION, CTC, EncodedTargets, class_weights
from rnnfast.train.ctc import CTCLoss
from rnnfast.nn.stateful import Stateful
from rnnfast.train.losses import MAE, MSE, CrossEntropy, Huber
from rnnfast.train.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["OPTIMIZERS", "REGRESSION_LOSSES", "NORMS", "seed_sequence", "stacked_layers", "recurrent_plan",
           "build_model", "build_optimizer", "make_loss", "optimizer_name"]

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}
REGRESSION_LOSSES = {"mse": MSE, "mae": MAE, "huber": Huber}
NORMS = {"batch": nn.BatchNorm, "layer": nn.LayerNorm}


def seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The seed sequence of one use of randomness (0: weights, 3: the validation split)."""
    return np.random.SeedSequence(seed, spawn_key=key)


def _pooling(p: Params):
    if p.pooling == "last":
        return nn.LastStep(bidirectional=p.bidirectional)
    return {"mean": nn.MeanPool, "max": nn.MaxPool}[p.pooling]()


def stacked_layers(p: Params) -> int:
    """``num_layers`` of each recurrent layer of the network: all of them in one without normalization."""
    return p.num_layers if p.normalization is None else 1


def recurrent_width(p: Params) -> int:
    """The features a recurrent layer of ``p`` outputs per step (``proj_size`` when it projects)."""
    return (p.proj_size or p.hidden_size) * (2 if p.bidirectional else 1)


def recurrent_plan(p: Params, in_size: int) -> list:
    """The recurrent part of the network as ``(what, size)`` pairs, in order: ``("recurrent", input size)``
    (holding ``num_layers`` layers without normalization, one with it), ``(normalization, features)``
    ("batch" or "layer", a key of :data:`NORMS`) and ``("dropout", 0)``; what :func:`build_model` builds and the loader checks a file against."""
    if p.normalization is None:
        return [("recurrent", in_size)]
    width = recurrent_width(p)
    plan: list = []
    for i in range(p.num_layers):
        if i and p.dropout > 0:
            plan.append(("dropout", 0))
        plan += [("recurrent", width if i else in_size), (p.normalization, width)]
    return plan


def build_model(layer_cls: Type, p: Params, inputs: InputSpec, per_step: bool, n_outputs: int,
                seed: int) -> nn.Sequential:
    """The network for ``inputs`` with ``n_outputs`` outputs (per step or per sequence), seeded by ``seed``.

    Parameters
    ----------
    layer_cls : rnnfast.nn.LSTM, rnnfast.nn.GRU or rnnfast.nn.RNN
    p : Params
    inputs : InputSpec
    per_step : bool
        One output per time step (no pooling).
    n_outputs : int
    seed : int

    Returns
    -------
    rnnfast.nn.Sequential
    """
    dt = p.dtype
    gens = [np.random.default_rng(s) for s in seed_sequence(seed, 0).spawn(4)]
    layers: list = []
    if inputs.kind == TOKENS:
        layers.append(nn.Embedding(inputs.vocab_size, p.embedding_dim, padding_idx=0, dtype=dt, seed=gens[0]))
        in_size = p.embedding_dim
    else:
        in_size = inputs.n_features_in
    stacked = stacked_layers(p)
    kw = dict(num_layers=stacked, dropout=p.dropout if stacked > 1 else 0.0,
              bidirectional=p.bidirectional, dtype=dt, seed=gens[1])
    if layer_cls is nn.RNN:
        kw["nonlinearity"] = p.nonlinearity
    if layer_cls is nn.GRU:
        kw["reset_after"] = p.reset_after
    if p.layer_norm:
        if layer_cls is nn.RNN:
            raise ValueError("layer_norm=True applies to the LSTM and GRU estimators (rnnfast.nn.RNN has no "
                             "layer-normalized cell)")
        kw["layer_norm"] = True
    if p.recurrent_dropout:
        kw["recurrent_dropout"] = p.recurrent_dropout
    if p.proj_size:
        kw["proj_size"] = p.proj_size
    for what, size in recurrent_plan(p, in_size):
        if what == "recurrent":
            layers.append(Stateful(layer_cls(size, p.hidden_size, **kw)))
        elif what in NORMS:
            layers.append(NORMS[what](size, dtype=dt))
        else:
            layers.append(nn.Dropout(p.dropout, seed=gens[2]))
    if not per_step:
        layers.append(_pooling(p))
    if p.dropout > 0:
        layers.append(nn.Dropout(p.dropout, seed=gens[2]))
    layers.append(nn.Linear(recurrent_width(p), n_outputs, dtype=dt, seed=gens[3]))
    return nn.Sequential(*layers)


def build_optimizer(model: nn.Sequential, p: Params):
    """The optimizer ``p`` names, over ``model``'s parameters."""
    kw = {"lr": p.lr, "weight_decay": p.weight_decay}
    if p.optimizer in ("sgd", "rmsprop"):
        kw["momentum"] = p.momentum
    return OPTIMIZERS[p.optimizer](model, **kw)


def optimizer_name(class_name: str) -> str:
    """The ``optimizer`` parameter's value for an optimizer class name (ValueError if unknown)."""
    name = {cls.__name__: key for key, cls in OPTIMIZERS.items()}.get(class_name)
    if name is None:
        raise ValueError(f"unknown optimizer {class_name!r}")
    return name


def make_loss(p: Params, targets: EncodedTargets, class_weight: Optional[object] = None):
    """The loss for the task of ``targets``: cross-entropy (weighted by ``class_weight``), CTC or ``p.loss``."""
    if targets.spec.task == CTC:
        if class_weight is not None:
            raise ValueError("class_weight does not apply to loss='ctc'")
        return CTCLoss()
    if targets.spec.task == CLASSIFICATION:
        if p.loss not in ("auto", "cross_entropy"):
            raise ValueError(f"loss={p.loss!r} is for regression; classification uses cross-entropy")
        return CrossEntropy(weight=class_weights(class_weight, targets))
    class_weights(class_weight, targets)  # refuses a class weight for regression
    if p.loss == "cross_entropy":
        raise ValueError("loss='cross_entropy' needs class labels in y (got floats: regression)")
    return REGRESSION_LOSSES["mse" if p.loss == "auto" else p.loss]()
