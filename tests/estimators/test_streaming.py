"""Streaming prediction on the estimators: predict_step / predict_proba_step equal the whole-sequence
predict (float32 within 1e-6, float64 within 1e-12), with caller-owned state and any batch size."""
import threading

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.estimators import StreamState

TOL = {"float32": 1e-6, "float64": 1e-12}


def _data(n=24, T=9, F=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, F))
    return X, rng


def _fit(cls, X, y, **kw):
    kw.setdefault("dtype", "float32")
    return cls(hidden_size=12, epochs=2, batch_size=8, random_state=0, **kw).fit(X.astype(kw["dtype"]), y)


def _stream(est, X, method="predict_proba_step"):
    state, outs = None, []
    for t in range(X.shape[1]):
        y_t, state = getattr(est, method)(X[:, t], state)
        outs.append(y_t)
    return outs, state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [rf.LSTMClassifier, rf.GRUClassifier, rf.RNNClassifier])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_sequence_classifier_matches_predict_on_every_prefix(cls, pooling, dtype):
    X, _ = _data()
    X = X.astype(dtype)
    y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    est = _fit(cls, X, y, pooling=pooling, num_layers=2, dtype=dtype)
    probs, _ = _stream(est, X)
    labels, _ = _stream(est, X, "predict_step")
    for t in (0, 3, X.shape[1] - 1):
        np.testing.assert_allclose(probs[t], est.predict_proba(X[:, :t + 1]), rtol=0, atol=TOL[dtype])
        assert labels[t].tolist() == est.predict(X[:, :t + 1]).tolist()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_step_regressor_matches_predict(dtype):
    X, rng = _data()
    X = X.astype(dtype)
    y = np.cumsum(X[:, :, 0], axis=1)  # one target per step
    est = _fit(rf.LSTMRegressor, X, y, dtype=dtype)
    assert est.per_step_
    pred = est.predict(X)
    outs, state = _stream(est, X, "predict_step")
    np.testing.assert_allclose(np.stack(outs, axis=1), pred, rtol=0, atol=10 * TOL[dtype] * np.abs(pred).max())
    assert state.steps == X.shape[1] and state.batch_size == X.shape[0]


def test_per_step_classifier_and_multi_output_regressor():
    X, _ = _data()
    X = X.astype(np.float32)
    y = (X[:, :, 1] > 0).astype(int)
    est = _fit(rf.GRUClassifier, X, y)
    labels, _ = _stream(est, X, "predict_step")
    assert np.array_equal(np.stack(labels, axis=1), est.predict(X))
    reg = _fit(rf.RNNRegressor, X, np.stack([X[:, :, 0].sum(1), X[:, :, 1].max(1)], axis=1))
    outs, _ = _stream(reg, X, "predict_step")
    assert outs[-1].shape == (X.shape[0], 2)
    np.testing.assert_allclose(outs[-1], reg.predict(X), atol=1e-5)


def test_token_model_and_single_rows():
    rng = np.random.default_rng(1)
    X = rng.integers(1, 20, size=(30, 7))
    y = X[:, -1] % 3
    est = rf.LSTMClassifier(hidden_size=8, embedding_dim=6, epochs=1, random_state=0).fit(X, y)
    probs, _ = _stream(est, X)
    np.testing.assert_allclose(probs[-1], est.predict_proba(X), atol=1e-6)
    # one sequence: a scalar id per step gives an unbatched answer
    state = None
    for t in range(X.shape[1]):
        p, state = est.predict_proba_step(int(X[4, t]), state)
    assert p.shape == (3,) and state.batch_size == 1
    np.testing.assert_allclose(p, est.predict_proba(X[4:5])[0], atol=1e-6)
    label, _ = est.predict_step(X[4, 0])
    assert label == est.predict(X[4:5, :1])[0]
    with pytest.raises(ValueError, match=r"\[1, 20\)"):
        est.predict_step(np.array([0, 3]))
    with pytest.raises(TypeError, match="integer token ids"):
        est.predict_step(np.array([1.5]))


def test_feature_single_row_is_unbatched():
    X, _ = _data()
    X = X.astype(np.float32)
    est = _fit(rf.LSTMRegressor, X, X[:, :, 0].sum(1))
    state = None
    for t in range(X.shape[1]):
        v, state = est.predict_step(X[2, t], state)
    assert np.ndim(v) == 0
    np.testing.assert_allclose(v, est.predict(X[2:3])[0], atol=1e-5)


def test_state_is_the_callers_and_never_changed():
    """The state is a new object each step (an old one branches the stream); threads streaming different
    sequences through one estimator get what each would alone."""
    X, _ = _data(n=8, T=12)
    X = X.astype(np.float32)
    est = _fit(rf.GRUClassifier, X, (X[:, :, 0].sum(1) > 0).astype(int), pooling="mean")
    _, s3 = _stream(est, X[:, :3])
    rec = s3.recurrent.copy()
    a, _ = est.predict_proba_step(X[:, 3], s3)
    b, _ = est.predict_proba_step(X[:, 3], s3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s3.recurrent, rec)
    ref = [est.predict_proba(X[i:i + 1])[0] for i in range(8)]
    got = [None] * 8

    def run(i):
        state = None
        for _ in range(20):
            state = None
            for t in range(X.shape[1]):
                p, state = est.predict_proba_step(X[i, t], state)
        got[i] = p

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    for i in range(8):
        np.testing.assert_allclose(got[i], ref[i], atol=1e-6)


def test_refusals():
    X, _ = _data()
    X = X.astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    with pytest.raises(rf.estimators.NotFittedError):
        rf.LSTMClassifier().predict_step(X[:, 0])
    bi = _fit(rf.LSTMClassifier, X, y, bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional"):
        bi.predict_step(X[:, 0])
    est = _fit(rf.LSTMClassifier, X, y)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        est.predict_step(X[:, 0, :2])
    with pytest.raises(ValueError, match="NaN"):
        est.predict_step(np.full((2, 3), np.nan))
    _, state = est.predict_step(X[:4, 0])
    with pytest.raises(ValueError, match="batch of 4"):
        est.predict_step(X[:5, 1], state)
    with pytest.raises(TypeError, match="StreamState"):
        est.predict_step(X[:4, 1], {"h": 0})
    with pytest.raises(TypeError, match="real numbers"):
        est.predict_step(np.array([["a", "b", "c"]]))
    reg = _fit(rf.LSTMRegressor, X, X[:, 0, 0])
    with pytest.raises(AttributeError, match="classification"):
        reg.predict_proba_step(X[:, 0])
    assert isinstance(state, StreamState)


@pytest.mark.parametrize("kw", [{"tbptt": 3}, {"dropout": 0.3, "num_layers": 2}, {"nonlinearity": "relu"}])
def test_truncated_bptt_dropout_and_relu_models_stream(kw):
    X, _ = _data()
    X = X.astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    cls = rf.RNNClassifier if "nonlinearity" in kw else rf.LSTMClassifier
    est = _fit(cls, X, y, **kw)
    probs, _ = _stream(est, X)
    np.testing.assert_allclose(probs[-1], est.predict_proba(X), rtol=0, atol=1e-6)
