"""Building what an estimator trains: the network, its optimizer and its loss.

The network is an :class:`rnnfast.nn.Sequential` of [``Embedding``] -> recurrent layer (wrapped in
``Stateful`` for truncated BPTT) -> [``LastStep`` / ``MeanPool`` / ``MaxPool``] -> [``Dropout``] ->
``Linear``. Its initial weights come from four generators spawned from the estimator's seed, so the
same ``random_state`` builds the same network.
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

__all__ = ["OPTIMIZERS", "REGRESSION_LOSSES", "seed_sequence", "build_model", "build_optimizer", "make_loss",
           "optimizer_name"]

OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}
REGRESSION_LOSSES = {"mse": MSE, "mae": MAE, "huber": Huber}


def seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The seed sequence of one use of randomness (0: weights, 3: the validation split)."""
    return np.random.SeedSequence(seed, spawn_key=key)


def _pooling(p: Params):
    if p.pooling == "last":
        return nn.LastStep(bidirectional=p.bidirectional)
    return {"mean": nn.MeanPool, "max": nn.MaxPool}[p.pooling]()


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
    kw = dict(num_layers=p.num_layers, dropout=p.dropout if p.num_layers > 1 else 0.0,
              bidirectional=p.bidirectional, dtype=dt, seed=gens[1])
    if layer_cls is nn.RNN:
        kw["nonlinearity"] = p.nonlinearity
    if layer_cls is nn.GRU:
        kw["reset_after"] = p.reset_after
    layers.append(Stateful(layer_cls(in_size, p.hidden_size, **kw)))
    if not per_step:
        layers.append(_pooling(p))
    if p.dropout > 0:
        layers.append(nn.Dropout(p.dropout, seed=gens[2]))
    width = p.hidden_size * (2 if p.bidirectional else 1)
    layers.append(nn.Linear(width, n_outputs, dtype=dt, seed=gens[3]))
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
