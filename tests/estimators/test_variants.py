"""The estimators' ``recurrent_dropout`` (LSTM, GRU, RNN) and ``proj_size`` (LSTM): the network they build,
training, reproducibility, save / load (files written before these parameters load as 0), streaming."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import io as rio
from rnnfast.estimators.params import validate
from rnnfast.estimators.persistence import network_descriptions
from rnnfast.nn import _serial

FAST = dict(n_threads=1, random_state=0, epochs=2, batch_size=16)


def _data(n=64, T=8):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, T, 2)).astype(np.float32)
    return X, np.where(X[:, :, 0].sum(axis=1) > 0, "pos", "neg")


def _recurrent(est):
    return est.model_.layers[0].layer  # the Stateful wrapper's layer


@pytest.mark.parametrize("cls,kw", [(rf.LSTM, dict(recurrent_dropout=0.3, proj_size=3)),
                                    (rf.GRU, dict(recurrent_dropout=0.3)), (rf.RNN, dict(recurrent_dropout=0.3))])
def test_fit_save_load(cls, kw, tmp_path):
    X, y = _data()
    est = cls(hidden_size=5, bidirectional=True, **kw, **FAST).fit(X, y)
    layer = _recurrent(est)
    assert layer.recurrent_dropout == 0.3 and getattr(layer, "proj_size", 0) == kw.get("proj_size", 0)
    again = cls(hidden_size=5, bidirectional=True, **kw, **FAST).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), again.predict_proba(X))  # seeded masks
    plain = cls(hidden_size=5, bidirectional=True, **dict(kw, recurrent_dropout=0.0), **FAST).fit(X, y)
    assert not np.array_equal(plain.predict_proba(X), est.predict_proba(X))
    est.save(tmp_path / "m.rnnfast")
    loaded = rf.load(tmp_path / "m.rnnfast")
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


@pytest.mark.parametrize("kw", [dict(proj_size=2), dict(proj_size=2, bidirectional=True, num_layers=2),
                                dict(recurrent_dropout=0.2, return_sequences=True)])
def test_network_as_the_loader_derives_it(kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4, 2))
    y = rng.integers(0, 3, (6, 4)) if kw.get("return_sequences") else rng.integers(0, 3, 6)
    est = rf.LSTM(hidden_size=3, epochs=0, random_state=0, **kw).fit(X, y)
    inputs, targets = est._specs
    descs = network_descriptions("LSTM", validate(est.get_params()), inputs, targets.per_step, targets.n_outputs)
    shapes = {k: v.shape for k, v in est.model_.state_dict().items()}
    assert {k: v[1] for k, v in _serial.param_shapes(descs).items()} == shapes


def test_old_files_load_as_zero(tmp_path):
    """A file written before recurrent_dropout / proj_size existed (neither in its parameters nor in its
    recorded architecture) loads, with both 0."""
    X, y = _data()
    est = rf.GRU(hidden_size=4, **FAST).fit(X, y)
    est.save(tmp_path / "new.rnnfast")
    kind, config, arrays, extra = rio.load_archive(tmp_path / "new.rnnfast")
    del config["recurrent_dropout"]
    for k in ("recurrent_dropout", "proj_size"):
        del extra["fitted"]["arch"][k]
    rio.save_archive(tmp_path / "old.rnnfast", kind, config, arrays, extra)
    old = rf.load(tmp_path / "old.rnnfast")
    assert old.recurrent_dropout == 0.0 and _recurrent(old).recurrent_dropout == 0.0
    np.testing.assert_array_equal(old.predict_proba(X), est.predict_proba(X))


def test_sequential_save_load_with_projection(tmp_path):
    model = rf.nn.Sequential(rf.nn.LSTM(2, 5, proj_size=3, recurrent_dropout=0.1, seed=0), rf.nn.LastStep(),
                             rf.nn.Linear(3, 2, seed=1)).eval()
    model.save(tmp_path / "s.rnnfast")
    back = rf.load(tmp_path / "s.rnnfast")
    assert back.layers[0].proj_size == 3 and back.layers[0].recurrent_dropout == 0.1
    x = np.random.default_rng(1).standard_normal((3, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(back(x), model(x))


def test_predict_step_with_projection():
    X, y = _data()
    est = rf.LSTM(hidden_size=5, proj_size=2, **FAST).fit(X, y)
    proba = est.predict_proba(X[:3])
    state = None
    for t in range(X.shape[1]):
        out, state = est.predict_proba_step(X[:3, t], state)
    np.testing.assert_allclose(out, proba, rtol=1e-5, atol=1e-6)


def test_bad_parameters():
    X, y = _data(8)
    with pytest.raises(ValueError, match="proj_size"):
        rf.LSTM(hidden_size=3, proj_size=3).fit(X, y)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        rf.GRU(recurrent_dropout=1.0).fit(X, y)
    with pytest.raises(TypeError):
        rf.GRU(proj_size=2)
