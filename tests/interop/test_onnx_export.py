"""rnnfast.interop.to_onnx: onnxruntime reproduces rnnfast (float32, 1e-5) on ragged, stacked, bidirectional
layers, Sequential models with each pooling, and fitted estimators; dynamic shapes; refusals."""
import json
import sys
import tempfile

import numpy as np
import pytest
from _child import run_python

import rnnfast as rf
from rnnfast import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from rnnfast.interop import to_onnx  # noqa: E402

TOL = 1e-5


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def close(got, want, tol=TOL):
    want = np.asarray(want, np.float64)
    err = np.max(np.abs(np.asarray(got, np.float64) - want)) / max(1.0, np.max(np.abs(want)))
    assert err < tol, err


def make_layer(cell, layers, bidirectional, batch_first, I=3, H=4):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "rnn-relu": nn.RNN}[cell]
    kw = {"nonlinearity": "relu"} if cell == "rnn-relu" else {}
    layer = cls(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, seed=1, **kw)
    return layer.eval()


def as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-relu"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_layer_ragged_with_initial_state(cell, layers, bidirectional, batch_first):
    layer = make_layer(cell, layers, bidirectional, batch_first)
    rng = np.random.default_rng(0)
    B, T, LD = 4, 6, layers * (2 if bidirectional else 1)
    x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4, 1], np.int32)
    h0 = rng.standard_normal((LD, B, 4)).astype(np.float32)
    c0 = rng.standard_normal((LD, B, 4)).astype(np.float32)
    proto = to_onnx(layer, initial_state=True)
    names = [i.name for i in proto.graph.input]
    assert names == ["x", "lengths", "h0"] + (["c0"] if cell == "lstm" else [])
    feed = {"x": x, "lengths": lengths, "h0": h0, "c0": c0}
    got = session(proto).run(None, {k: feed[k] for k in names})
    out, state = layer(x, (h0, c0) if cell == "lstm" else h0, lengths=lengths)
    assert [o.name for o in proto.graph.output] == ["y", "h_n"] + (["c_n"] if cell == "lstm" else [])
    for g, w in zip(got, [out] + as_list(state)):
        assert g.shape == w.shape
        close(g, w)
    # without the optional inputs: full rows from zero states
    got = session(to_onnx(layer, lengths=False)).run(None, {"x": x})
    out, state = layer(x)
    for g, w in zip(got, [out] + as_list(state)):
        close(g, w)


def test_dynamic_batch_and_time():
    layer = make_layer("lstm", 2, True, True)
    sess = session(to_onnx(layer))
    rng = np.random.default_rng(1)
    for B, T in ((2, 3), (5, 9)):
        x = rng.standard_normal((B, T, 3)).astype(np.float32)
        lengths = rng.integers(1, T + 1, B).astype(np.int32)
        y, h_n, c_n = sess.run(None, {"x": x, "lengths": lengths})
        out, (h, c) = layer(x, lengths=lengths)
        close(y, out)
        close(h_n, h)
        close(c_n, c)


def test_gru_reset_before():
    layer = nn.GRU(3, 4, num_layers=2, bidirectional=True, reset_after=False, seed=0).eval()
    proto = to_onnx(layer)
    gru_nodes = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert all(onnx.helper.get_attribute_value(a) == 0 for n in gru_nodes for a in n.attribute
               if a.name == "linear_before_reset")
    x = np.random.default_rng(2).standard_normal((3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 3, 1], np.int32)
    y, h_n = session(proto).run(None, {"x": x, "lengths": lengths})
    out, h = layer(x, lengths=lengths)
    close(y, out)
    close(h_n, h)


def _gru_reset_before(x, sd):
    """numpy GRU, reset before the product: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn) (one layer, forward)."""
    W, R, bi, bh = (sd[k].astype(np.float64) for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    H = R.shape[1]
    h, out = np.zeros((x.shape[0], H)), []
    for t in range(x.shape[1]):
        gi = x[:, t] @ W.T + bi
        r = 1 / (1 + np.exp(-(gi[:, :H] + h @ R[:H].T + bh[:H])))
        z = 1 / (1 + np.exp(-(gi[:, H:2 * H] + h @ R[H:2 * H].T + bh[H:2 * H])))
        n = np.tanh(gi[:, 2 * H:] + (r * h) @ R[2 * H:].T + bh[2 * H:])
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def test_gru_reset_before_formula_in_onnx():
    """A reset-before GRU exports to linear_before_reset=0 with the same weights and biases: ONNX Runtime
    computes the numpy formula and rnnfast.nn.GRU(reset_after=False)'s answer, not the reset-after one."""
    layer = nn.GRU(3, 4, seed=0, reset_after=False).eval()
    x = np.random.default_rng(8).standard_normal((2, 5, 3)).astype(np.float32)
    y, _ = session(to_onnx(layer, lengths=False)).run(None, {"x": x})
    close(y, _gru_reset_before(x.astype(np.float64), layer.state_dict()))
    close(y, layer(x)[0])
    after = nn.GRU(3, 4, seed=0).eval()
    assert np.abs(y - after(x)[0]).max() > 1e-3  # and it is not the reset-after formula


POOLS = {"last": lambda: nn.LastStep(), "last-bi": lambda: nn.LastStep(bidirectional=True),
         "mean": lambda: nn.MeanPool(), "max": lambda: nn.MaxPool(), "none": lambda: None}


@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("tokens", [False, True])
def test_sequential_pooling_respects_lengths(pool, tokens):
    first = nn.Embedding(12, 3, padding_idx=0, seed=0) if tokens else nn.Linear(3, 3, seed=0)
    layers = [first, nn.GRU(3, 4, bidirectional=True, seed=0), nn.Dropout(0.3), POOLS[pool](), nn.Linear(8, 2, seed=1)]
    model = nn.Sequential(*[layer for layer in layers if layer is not None]).train(False)
    rng = np.random.default_rng(3)
    x = rng.integers(1, 12, (4, 6)) if tokens else rng.standard_normal((4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 1, 3, 5], np.int32)
    proto = to_onnx(model)
    assert proto.graph.input[0].type.tensor_type.elem_type == (onnx.TensorProto.INT64 if tokens else
                                                               onnx.TensorProto.FLOAT)
    (y,) = session(proto).run(None, {"x": x, "lengths": lengths})
    close(y, model(x, lengths=lengths))
    (y,) = session(to_onnx(model, lengths=False, opset=18)).run(None, {"x": x})
    close(y, model(x))


def _ragged(rng, n, F=2):
    return [rng.standard_normal((int(t), F)).astype(np.float32) for t in rng.integers(2, 8, n)]


def _padded(seqs):
    T = max(len(s) for s in seqs)
    x = np.zeros((len(seqs), T, seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    return x, np.array([len(s) for s in seqs], np.int32)


def test_bidirectional_two_layer_classifier_predict_proba():
    rng = np.random.default_rng(4)
    X = _ragged(rng, 24)
    y = np.array(["b", "a", "c"] * 8)
    est = rf.GRUClassifier(hidden_size=5, num_layers=2, bidirectional=True, epochs=1, batch_size=8,
                           random_state=0).fit(X, y)
    proto = to_onnx(est)  # one call
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["rnnfast.classes"]) == ["a", "b", "c"] and meta["rnnfast.output"] == "predict_proba"
    x, lengths = _padded(X[:7])
    (proba,) = session(proto).run(None, {"x": x, "lengths": lengths})
    close(proba, est.predict_proba(X[:7]))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_regressor_values_in_target_units(pooling):
    rng = np.random.default_rng(5)
    X = _ragged(rng, 16)
    y = np.stack([[100.0 + 10 * s.sum(), -3.0 + s.mean()] for s in X])
    est = rf.LSTMRegressor(hidden_size=4, pooling=pooling, epochs=1, random_state=0).fit(X, y)
    x, lengths = _padded(X)
    (pred,) = session(to_onnx(est)).run(None, {"x": x, "lengths": lengths})
    close(pred, est.predict(X))
    est1 = rf.RNNRegressor(hidden_size=4, epochs=1, random_state=0).fit(X, y[:, 0])
    (pred,) = session(to_onnx(est1)).run(None, {"x": x, "lengths": lengths})
    assert pred.shape == (16,)
    close(pred, est1.predict(X))


def test_token_estimator_lengths_from_ids_or_input():
    rng = np.random.default_rng(6)
    ids = rng.integers(1, 9, (12, 7))
    for i, n in enumerate(rng.integers(2, 8, 12)):
        ids[i, n:] = 0  # trailing zeros are padding
    y = np.arange(12) % 2
    est = rf.LSTM(hidden_size=4, embedding_dim=3, bidirectional=True, epochs=1, random_state=0).fit(ids, y)
    want = est.predict_proba(ids)
    (proba,) = session(to_onnx(est, lengths=False)).run(None, {"x": ids})
    close(proba, want)
    lengths = (7 - np.argmax(ids[:, ::-1] != 0, axis=1)).astype(np.int32)
    (proba,) = session(to_onnx(est)).run(None, {"x": ids, "lengths": lengths})
    close(proba, want)


def test_per_step_classifier_zero_past_lengths():
    rng = np.random.default_rng(7)
    X = _ragged(rng, 10)
    y = [rng.integers(0, 3, len(s)) for s in X]
    est = rf.RNNClassifier(hidden_size=4, epochs=1, random_state=0).fit(X, y)
    x, lengths = _padded(X)
    (proba,) = session(to_onnx(est)).run(None, {"x": x, "lengths": lengths})
    want = est.predict_proba(X)
    for i, n in enumerate(lengths):
        close(proba[i, :n], want[i])
        assert not proba[i, n:].any()


def test_writes_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    proto = to_onnx(make_layer("gru", 1, False, True), path)
    assert onnx.load(str(path)) == proto


class Unknown:
    def forward(self, x):
        return x

    def backward(self, d):
        return d


def test_refusals():
    with pytest.raises(ValueError, match=r"layer 1 \(Attention\)"):
        to_onnx(nn.Sequential(nn.LSTM(3, 4), nn.Attention(4, 4)))
    with pytest.raises(ValueError, match=r"layer 0 \(Unknown\)"):
        to_onnx(nn.Sequential(Unknown()))
    with pytest.raises(TypeError, match="to_onnx takes"):
        to_onnx(np.zeros(3))
    with pytest.raises(ValueError, match="initial_state"):
        to_onnx(nn.Sequential(nn.LSTM(3, 4)), initial_state=True)
    with pytest.raises(ValueError, match="opset"):
        to_onnx(nn.LSTM(3, 4), opset=9)
    with pytest.raises(TypeError, match="lengths"):
        to_onnx(nn.LSTM(3, 4), lengths="yes")
    with pytest.raises(rf.estimators.NotFittedError):
        to_onnx(rf.LSTM())
    with pytest.raises(ValueError, match="proj_size"):
        to_onnx(nn.LSTM(3, 4, proj_size=2))


def test_onnx_is_imported_lazily_with_a_hint(monkeypatch):
    code = "import sys, rnnfast.interop._onnx_export, rnnfast.interop._onnx_import; print('onnx' in sys.modules)"
    r = run_python(["-c", code], cwd=tempfile.gettempdir(), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "rnnfast\[onnx\]"'):
        to_onnx(nn.LSTM(3, 4))
