"""Fuzzing the estimators: fit / predict on random small inputs (arrays, 2-D arrays, lists of ragged
sequences), random and bad labels. Each call either gives the answer of the float64 numpy reference run
on the fitted weights (tests/reference.py through :func:`_reference_outputs`) or raises TypeError /
ValueError with a message; never a crash, never a silent wrong answer. Counts come from the hypothesis
profile (tests/conftest.py); ``--hypothesis-profile=fuzz`` is the release run.
"""
import re

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import reference as ref
import rnnfast as rf
from rnnfast import nn
from rnnfast.nn.stateful import Stateful

N = settings().max_examples  # the profile's count (ci: 100, fuzz: 20,000)
ESTIMATORS = {"lstm": rf.LSTM, "gru": rf.GRU, "rnn": rf.RNN}
CELL_OF = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}


# ------------------------------------------------------------------------------ the reference
def _pad(X):
    """Float sequences as (B, T, F) float64 and their lengths (a list of ragged (T_i, F) arrays is padded)."""
    if isinstance(X, list):
        T = max(len(a) for a in X)
        out = np.zeros((len(X), T, np.shape(X[0])[1]))
        for i, a in enumerate(X):
            out[i, :len(a)] = a
        return out, np.array([len(a) for a in X])
    X = np.asarray(X, np.float64)
    if X.ndim == 2:
        X = X[:, :, None]
    return X, np.full(len(X), X.shape[1])


def _reference_outputs(model, X, lengths):
    """The network's output in float64 by tests/reference.py and plain numpy, layer by layer."""
    h = X
    B, T = X.shape[:2]
    valid = np.arange(T)[None, :] < lengths[:, None]
    for layer in model.layers:
        layer = layer.layer if isinstance(layer, Stateful) else layer
        p = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
        if type(layer) in CELL_OF:
            h = ref.forward(CELL_OF[type(layer)], h, p, layer.num_layers, layer.bidirectional, lengths=lengths,
                            nonlinearity=layer.nonlinearity)[0]
        elif isinstance(layer, nn.LastStep):
            last = h[np.arange(B), lengths - 1]
            if layer.bidirectional:  # the reverse direction ends at step 0
                H = h.shape[2] // 2
                last = np.concatenate([last[:, :H], h[:, 0, H:]], axis=1)
            h = last
        elif isinstance(layer, nn.MeanPool):
            h = (h * valid[:, :, None]).sum(axis=1) / lengths[:, None]
        elif isinstance(layer, nn.MaxPool):
            h = np.where(valid[:, :, None], h, -np.inf).max(axis=1)
        elif isinstance(layer, nn.Linear):
            h = h @ p["weight"].T + p.get("bias", 0.0)
        elif not isinstance(layer, nn.Dropout):
            raise AssertionError(f"no reference for {layer!r}")
    return h


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ inputs
@st.composite
def datasets(draw):
    n = draw(st.integers(1, 6))
    F = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["array", "array", "ragged", "ragged", "2d"]))  # 2-D floats are refused
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    if kind == "ragged":
        X = [rng.standard_normal((int(t), F)).astype(dt) for t in rng.integers(1, 6, n)]
    elif kind == "2d":
        X = rng.standard_normal((n, draw(st.integers(1, 5)))).astype(dt)
    else:
        X = rng.standard_normal((n, draw(st.integers(1, 5)), F)).astype(dt)
    task = draw(st.sampled_from(["int", "str", "float", "float2", "bool"]))
    if task == "int":
        y = rng.integers(0, 3, n)
    elif task == "str":
        y = np.array(["a", "bb", "c"])[rng.integers(0, 3, n)]
    elif task == "bool":
        y = rng.integers(0, 2, n).astype(bool)
    elif task == "float":
        y = rng.standard_normal(n)
    else:
        y = rng.standard_normal((n, 2))
    return X, y, task


def _model(draw_kw):
    cls = ESTIMATORS[draw_kw.pop("cell")]
    return cls(epochs=1, batch_size=4, hidden_size=3, verbose=0, random_state=0, n_threads=1, **draw_kw)


ARCH = st.fixed_dictionaries({"cell": st.sampled_from(sorted(ESTIMATORS)), "bidirectional": st.booleans(),
                              "pooling": st.sampled_from(["last", "mean", "max"]),
                              "dtype": st.sampled_from(["float32", "float64"])})


def _check_refusal(call, *names):
    with pytest.raises((TypeError, ValueError)) as e:
        call()
    assert len(str(e.value)) > 10 and (not names or any(n in str(e.value) for n in names)), str(e.value)


# ------------------------------------------------------------------------------ the tests
@settings(max_examples=max(10, N // 4))
@given(datasets(), ARCH)
def test_fit_and_predict_match_the_reference(data, arch):
    X, y, task = data
    note((task, arch))
    m = _model(dict(arch))
    try:
        m.fit(X, y)
    except (TypeError, ValueError) as e:  # e.g. a single class: refused, with a message
        assert len(str(e)) > 10
        event("fit refused: " + re.sub(r"\(.*", "", str(e))[:40])
        return
    event(f"compared with the reference: {m.task_}")
    Xp, lengths = _pad(X)
    Xp = Xp.astype(arch["dtype"]).astype(np.float64)
    out = _reference_outputs(m.model_, Xp, lengths)
    tol = dict(rtol=5e-4, atol=5e-5) if arch["dtype"] == "float32" else dict(rtol=1e-9, atol=1e-10)
    if m.task_ == "classification":
        want = _softmax(out)
        _assert_rows_close(m.predict_proba(X), want, lengths, m.per_step_, tol)
        labels = np.asarray(m.classes_)[np.argmax(want, axis=-1)]
        top2 = np.sort(want, axis=-1)
        sure = top2[..., -1] - top2[..., -2] > 1e-3  # an argmax within rounding may go either way
        for i, got in enumerate(_rows(m.predict(X), lengths, m.per_step_, flat=False)):
            keep = sure[i][:lengths[i]] if m.per_step_ else sure[i]
            w = labels[i][:lengths[i]] if m.per_step_ else labels[i]
            assert np.array_equal(np.asarray(got)[keep], np.asarray(w)[keep])
    else:
        want = out * m.y_scale_ + m.y_mean_
        _assert_rows_close(m.predict(X), want, lengths, m.per_step_, tol)


def _rows(a, lengths, per_step, flat=True):
    """Each sequence's answer: per step, its valid steps only (a list of ragged answers, or a padded array)."""
    rows = []
    for i, n in enumerate(lengths):
        r = np.asarray(a[i])
        r = r[:n] if per_step else r
        rows.append(r.astype(np.float64).reshape(-1) if flat else r)
    return rows


def _assert_rows_close(got, want, lengths, per_step, tol):
    assert len(got) == len(lengths)
    for g, w in zip(_rows(got, lengths, per_step), _rows(want, lengths, per_step)):
        np.testing.assert_allclose(g, w, **tol)


@settings(max_examples=max(10, N // 2))
@given(st.sampled_from(["nan_x", "inf_x", "nan_y", "inf_y", "short_y", "long_y", "ragged_features", "empty",
                        "4d", "object_y", "complex_x", "str_x", "none_y", "y_2d_wrong", "bad_list"]),
       st.sampled_from(sorted(ESTIMATORS)), st.integers(0, 2**16))
def test_bad_data_is_refused(what, cell, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((5, 3, 2)).astype(np.float32)
    y = rng.standard_normal(5)
    if what == "nan_x":
        X[rng.integers(5), rng.integers(3), rng.integers(2)] = np.nan
    elif what == "inf_x":
        X[rng.integers(5), 0, 0] = -np.inf
    elif what == "nan_y":
        y[rng.integers(5)] = np.nan
    elif what == "inf_y":
        y[rng.integers(5)] = np.inf
    elif what == "short_y":
        y = y[:4]
    elif what == "long_y":
        y = np.append(y, 1.0)
    elif what == "ragged_features":
        X = [rng.standard_normal((3, 2)), rng.standard_normal((2, 3))]
        y = y[:2]
    elif what == "empty":
        X, y = X[:0], y[:0]
    elif what == "4d":
        X = X[..., None]
    elif what == "object_y":
        y = np.array([1, "a", None, 2.0, (1,)], dtype=object)
    elif what == "complex_x":
        X = X.astype(np.complex64)
    elif what == "str_x":
        X = X.astype(str)
    elif what == "none_y":
        y = None
    elif what == "y_2d_wrong":
        y = rng.standard_normal((5, 3, 2, 1))
    elif what == "bad_list":
        X = [rng.standard_normal((3, 2)), "abc", None, 1, 2]
    m = _model({"cell": cell})
    _check_refusal(lambda: m.fit(X, y))


@settings(max_examples=max(10, N // 4))
@given(datasets(), st.sampled_from(["nan", "features", "empty", "4d", "ragged_features", "complex", "ok"]),
       st.sampled_from(sorted(ESTIMATORS)))
def test_predict_on_new_inputs(data, what, cell):
    """A fitted model's predict on new input of every kind: the same answer as each sequence alone (padding
    and batching never change a result), or a refusal."""
    X, y, task = data
    m = _model({"cell": cell})
    try:
        m.fit(X, y)
    except (TypeError, ValueError):
        return
    rng = np.random.default_rng(1)
    F = 1 if not isinstance(X, list) and np.ndim(X) == 2 else np.shape(X[0])[-1]
    Xn = [rng.standard_normal((int(t), F)) for t in rng.integers(1, 6, 4)]
    if what == "nan":
        Xn[0][0, 0] = np.nan
    elif what == "features":
        Xn = [a[:, :0] if F == 1 else a[:, :-1] for a in Xn] if F > 1 else [np.ones((2, 2))]
    elif what == "empty":
        Xn = np.zeros((0, 3, F))
    elif what == "4d":
        Xn = np.zeros((2, 3, F, 1))
    elif what == "ragged_features":
        Xn = [np.ones((2, F)), np.ones((2, F + 1))]
    elif what == "complex":
        Xn = [a.astype(np.complex128) for a in Xn]
    if what != "ok":
        if what == "nan":
            # NaN in a sequence: refused, or NaN only in that sequence's answer
            try:
                out = m.predict_proba(Xn) if m.task_ == "classification" else m.predict(Xn)
            except (TypeError, ValueError) as e:
                assert len(str(e)) > 10
                return
            rows = _rows(out, [len(a) for a in Xn], m.per_step_)
            assert all(np.all(np.isfinite(r)) for r in rows[1:])
            return
        _check_refusal(lambda: m.predict(Xn))
        return
    fn = m.predict_proba if m.task_ == "classification" else m.predict
    lengths = [len(a) for a in Xn]
    together = _rows(fn(Xn), lengths, m.per_step_)
    alone = [_rows(fn([a]), lengths[i:i + 1], m.per_step_)[0] for i, a in enumerate(Xn)]
    for t, a in zip(together, alone):
        np.testing.assert_allclose(t, a, rtol=1e-4, atol=1e-5)
        assert np.all(np.isfinite(t))
