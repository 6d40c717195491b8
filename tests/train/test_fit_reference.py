"""Bit-identical results of ``rnnfast.train.fit`` against arrays saved before the training stack was redesigned.

``data/fit_reference.npz`` was written by running this file as a script on the code before the Trainer
(``PYTHONPATH=. python tests/train/test_fit_reference.py``); the test reruns the same calls and asserts exact
equality of the final weights, the history, the per-batch logs and the predictions. Regenerate it only when a
change of the numbers is intended.
"""
import os
import sys
import warnings

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _threads, nn
from rnnfast.train import (MSE, Adam, Callback, CrossEntropy, EarlyStopping, ReduceLROnPlateau, SGD, Stateful,
                           StepLR, evaluate, fit, predict)

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fit_reference.npz")


class _BatchLog(Callback):
    """Records every batch's running loss (exercises the per-batch hook)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def _sum_abs(out, target, mask, sw):
    """A user metric in the (numerator, denominator) form."""
    return float(np.abs(out).sum()), float(out.shape[0])


def _data(seed, N, T, F, varlen):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, F))
    lengths = rng.integers(1, T + 1, N) if varlen else None
    return rng, X, lengths


def _classification():
    rng, X, lengths = _data(0, 40, 9, 3, True)
    y = rng.integers(0, 3, 40)
    sw = rng.uniform(0.5, 1.5, 40)
    m = nn.Sequential(nn.LSTM(3, 6, seed=1, dtype=np.float64), nn.LastStep(), nn.Dropout(0.3, seed=4),
                      nn.Linear(6, 3, seed=2, dtype=np.float64))
    opt = Adam(m, lr=0.02)
    log = _BatchLog()
    h = fit(m, CrossEntropy(), opt, X, y, lengths, sample_weight=sw, epochs=4, batch_size=8, seed=3,
            metrics=["accuracy", _sum_abs], validation_split=0.25,
            schedule=ReduceLROnPlateau(opt, patience=0, factor=0.5),
            callbacks=[log, EarlyStopping(patience=5)], n_threads=1)
    ev = evaluate(m, CrossEntropy(), X, y, lengths, metrics=["accuracy"])
    return m, h, {"batch_loss": np.array(log.losses), "pred": predict(m, X, lengths),
                  "eval": np.array([ev["loss"], ev["accuracy"]])}


def _regression():
    rng, X, _ = _data(1, 30, 7, 2, False)
    y = rng.standard_normal((30, 2))
    m = nn.Sequential(nn.GRU(2, 5, seed=1, dtype=np.float64), nn.LastStep(), nn.Linear(5, 2, seed=2,
                                                                                       dtype=np.float64))
    opt = SGD(m, lr=0.1, momentum=0.9)
    h = fit(m, MSE(), opt, X, y, epochs=3, batch_size=7, seed=5, metrics=["mae", "mse"], clip_norm=0.5,
            clip_value=0.4, schedule=StepLR(opt, step_size=1, gamma=0.7), validation_data=(X[:9], y[:9]),
            bucket=False, n_threads=1)
    return m, h, {"pred": predict(m, X)}


def _tbptt_per_step():
    rng, X, lengths = _data(2, 24, 11, 3, True)
    y = rng.integers(0, 4, (24, 11))
    m = nn.Sequential(Stateful(nn.LSTM(3, 5, num_layers=2, dropout=0.2, seed=1, dtype=np.float64)),
                      nn.Linear(5, 4, seed=2, dtype=np.float64))
    h = fit(m, CrossEntropy(), Adam(m, lr=0.01), X, y, lengths, per_step=True, epochs=3, batch_size=6, seed=7,
            tbptt=4, metrics=["accuracy"], validation_split=0.25, n_threads=1)
    return m, h, {"pred": predict(m, X, lengths, per_step=True)}


def _stateful():
    rng, X, lengths = _data(3, 16, 10, 2, True)
    y = rng.integers(0, 2, 16)
    m = nn.Sequential(Stateful(nn.GRU(2, 4, seed=1, dtype=np.float64)), nn.LastStep(),
                      nn.Linear(4, 2, seed=2, dtype=np.float64))
    h = fit(m, CrossEntropy(), Adam(m, lr=0.01), X, y, lengths, epochs=3, batch_size=4, seed=11, tbptt=3,
            stateful=True, shuffle=False, metrics=["accuracy"], n_threads=1)
    return m, h, {"pred": predict(m, X, lengths)}


CASES = {"clf": _classification, "reg": _regression, "tbptt": _tbptt_per_step, "stateful": _stateful}


def run_cases():
    """Every case's arrays, keyed ``<case>/<what>``."""
    before = _threads._num_threads
    rf.set_num_threads(1)
    try:
        out = {}
        for name, case in CASES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m, h, extra = case()
            for k, v in m.state_dict().items():
                out[f"{name}/w/{k}"] = v
            for k, v in h.history.items():
                out[f"{name}/h/{k}"] = np.array(v)
            out[f"{name}/counts"] = np.array([h.optimizer_steps, h.sequences, h.time_steps, len(h.epoch)])
            for k, v in extra.items():
                out[f"{name}/{k}"] = np.asarray(v)
        return out
    finally:
        rf.set_num_threads(before)


def test_fit_matches_saved_reference():
    ref = np.load(PATH)
    got = run_cases()
    assert sorted(got) == sorted(ref.files)
    bad = [k for k in ref.files if not np.array_equal(got[k], ref[k], equal_nan=True)]
    assert not bad, f"not bit-identical: {bad}"


if __name__ == "__main__":
    if "--write" not in sys.argv:
        pytest.main([__file__, "-q", "-p", "no:cacheprovider"])
    else:
        os.makedirs(os.path.dirname(PATH), exist_ok=True)
        np.savez_compressed(PATH, **run_cases())
        print(PATH, os.path.getsize(PATH), "bytes")
