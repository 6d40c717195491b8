"""Training an estimator's network: the validation set, warm starts and the run over :func:`rnnfast.train.fit`.

``validation_split`` here takes a *random* fraction of the sequences (seeded by ``random_state``), where
:func:`rnnfast.train.fit`'s takes the *last* fraction; both keep their behaviour, so a model fitted
either way is reproducible.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Optional, Sequence

import numpy as np

from rnnfast.estimators.inputs import EncodedInput
from rnnfast.estimators.network import build_optimizer, seed_sequence
from rnnfast.estimators.params import ARCH_KEYS, OPT_KEYS, Params
from rnnfast.estimators.targets import CLASSIFICATION, CTC, EncodedTargets
from rnnfast.train import fit as fit_loop
from rnnfast.train.callbacks import Callback, EarlyStopping
from rnnfast.train.data import SequenceDataset

__all__ = ["Encoded", "EpochCounter", "split_validation", "apply_param_changes", "run_epochs"]


@dataclasses.dataclass(frozen=True, eq=False)
class Encoded:
    """One encoded ``(X, y, sample_weight)``."""

    inputs: EncodedInput
    targets: EncodedTargets
    sample_weight: Optional[np.ndarray] = None

    def dataset(self) -> SequenceDataset:
        spec = self.targets.spec  # CTC: outputs per step, but a label sequence per sequence
        return SequenceDataset(self.inputs.X, self.targets.y, self.inputs.lengths, self.sample_weight,
                               per_step=spec.per_step and spec.task != CTC)


class EpochCounter(Callback):
    """Counts the estimator's completed epochs as they end, so a checkpoint saved by a later callback
    of the same epoch resumes after it."""

    def __init__(self, estimator):
        self.estimator = estimator

    def on_epoch_end(self, epoch, logs=None):
        self.estimator.n_epochs_ = epoch + 1


def split_validation(data: SequenceDataset, fraction: float, seed: int):
    """A random validation subset of ``fraction`` of the sequences (seeded by ``seed``): (train, validation).

    Raises
    ------
    ValueError
        When either part would be empty.
    """
    n = len(data)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={fraction} of {n} sequences leaves {n - n_val} for training and "
                         f"{n_val} for validation; both need at least one")
    perm = np.random.default_rng(seed_sequence(seed, 3)).permutation(n)
    return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))


def apply_param_changes(est, p: Params) -> None:
    """Apply parameter changes made since the last fit to a fitted estimator (warm start, ``partial_fit``):
    refuse a change of the network, start a new optimizer for a change of its settings, take a new ``lr``."""
    arch = p.arch()
    for k in ARCH_KEYS:
        if arch[k] != est._arch_[k]:
            raise ValueError(f"{k} changed from {est._arch_[k]!r} to {arch[k]!r} since the model was fitted; "
                             "refit from scratch (warm_start=False) to change the network")
    opt = p.opt()
    if any(opt[k] != est._opt_[k] for k in OPT_KEYS):
        warnings.warn("the optimizer settings changed: a new optimizer starts (its moments are lost)",
                      RuntimeWarning, stacklevel=3)
        est.optimizer_ = build_optimizer(est.model_, p)
    elif p.lr != est._opt_["lr"]:
        est.optimizer_.lr = p.lr  # else the optimizer keeps its own (possibly scheduled) rate
    est._opt_ = opt


def _callbacks(est, callbacks: Optional[Sequence], early: bool, monitor: str, patience: int) -> list:
    cbs = list(callbacks or [])
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be rnnfast.train.callbacks.Callback objects, got {type(cb).__name__}")
    if early:
        cbs.append(EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    return [EpochCounter(est)] + cbs


def run_epochs(est, loss, train: SequenceDataset, val: Optional[SequenceDataset], p: Params, epochs: int,
               callbacks: Optional[Sequence] = None, early: bool = False) -> None:
    """Train ``est.model_`` with ``est.optimizer_`` for ``epochs`` more epochs, continuing ``est.history_``;
    the model is left in eval mode."""
    cbs = _callbacks(est, callbacks, early, "val_loss" if val is not None else "loss", p.patience)
    metrics = ["accuracy"] if est.task_ == CLASSIFICATION else None
    fit_loop(est.model_, loss, est.optimizer_, train, epochs=epochs, batch_size=p.batch_size, shuffle=p.shuffle,
             bucket=p.bucket, validation_data=val, clip_norm=p.clip_norm, clip_value=p.clip_value, metrics=metrics,
             callbacks=cbs, tbptt=p.tbptt, seed=est.seed_, initial_epoch=est.n_epochs_, history=est.history_,
             n_threads=p.n_threads, verbose=p.verbose, estimator=est, distributed=p.distributed)
    est.model_.eval()
