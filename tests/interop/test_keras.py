"""rnnfast.interop's Keras 3 converters against real Keras 3 on its PyTorch backend (tests/conftest.py sets
KERAS_BACKEND=torch): every layer kind each way, stacked and bidirectional Sequentials, round trips, the
array-level keras_weights / load_keras_weights, refusals."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

import rnnfast as rf  # noqa: E402
from rnnfast.interop import from_keras, keras_weights, load_keras_weights, to_keras  # noqa: E402

# Keras's own variables trip numpy 2's copy-keyword deprecation on every get_weights(); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

L = keras.layers
nn = rf.nn
B, T, I, H = 3, 6, 4, 5
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def x_seq(dtype=np.float32, seed=0, features=I):
    return np.random.default_rng(seed).standard_normal((B, T, features)).astype(dtype)


def ids(seed=0):
    return np.random.default_rng(seed).integers(0, 11, (B, T))


def k_out(k, x):
    return keras.ops.convert_to_numpy(k(x, training=False))


def rf_out(m, x):
    m.eval()
    out = m(x)
    return out[0] if isinstance(out, tuple) else out


def close(a, b, dtype=np.float32):
    np.testing.assert_allclose(a, b, **TOL[dtype])


def keras_model(*layers, shape=(None, I), dtype="float32", seed=0):
    """A built Keras Sequential with every weight random (biases too: Keras starts them at zero)."""
    m = keras.Sequential([keras.Input(shape=shape, dtype=dtype)] + list(layers))
    rng = np.random.default_rng(seed)
    m.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in m.get_weights()])
    return m


def same_weights(a, b):
    wa, wb = keras_weights(a), keras_weights(b)
    assert [w.shape for w in wa] == [w.shape for w in wb]
    for u, v in zip(wa, wb):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------------------------------ from Keras
def _recurrent(kind, **kw):
    if kind == "lstm":
        return L.LSTM(H, **kw)
    if kind.startswith("gru"):
        return L.GRU(H, reset_after=kind == "gru", **kw)
    return L.SimpleRNN(H, activation=kind.split("_")[1], **kw)


KINDS = ["lstm", "gru", "gru_before", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", KINDS)
def test_from_keras_recurrent(kind, bidirectional, return_sequences):
    layer = _recurrent(kind, return_sequences=return_sequences)
    if bidirectional:
        layer = L.Bidirectional(layer)
    km = keras_model(layer, seed=1)
    x = x_seq()
    m = from_keras(km.layers[0])
    if return_sequences:
        assert isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) and m.bidirectional == bidirectional
    else:
        assert isinstance(m, nn.Sequential) and isinstance(m[1], nn.LastStep) and m[1].bidirectional == bidirectional
    close(rf_out(m, x), k_out(km, x))
    same_weights(from_keras(to_keras(m)), m)


def test_from_keras_stacked_bidirectional_sequential():
    km = keras_model(L.Embedding(11, I), L.Bidirectional(L.LSTM(H, return_sequences=True)),
                     L.Bidirectional(L.LSTM(H)), L.Dropout(0.3), L.Dense(3), shape=(None,), dtype="int32", seed=2)
    m = from_keras(km)
    assert [type(a) for a in m.layers] == [nn.Embedding, nn.LSTM, nn.LastStep, nn.Dropout, nn.Linear]
    assert m[1].num_layers == 2 and m[1].bidirectional and m[2].bidirectional
    x = ids()
    close(rf_out(m, x), k_out(km, x))
    back = to_keras(m)
    assert [type(a) for a in back.layers] == [type(a) for a in km.layers]
    close(k_out(back, x), k_out(km, x))


def test_from_keras_levels_that_do_not_merge():
    """Different widths or kinds stay separate rnnfast layers; a GRU over an LSTM over a SimpleRNN."""
    km = keras_model(L.SimpleRNN(H, return_sequences=True), L.LSTM(H + 1, return_sequences=True),
                     L.Bidirectional(L.GRU(H, return_sequences=True)), L.GRU(H, return_sequences=True),
                     L.GlobalAveragePooling1D(), L.Dense(2, use_bias=False), seed=3)
    m = from_keras(km)
    assert [type(a) for a in m.layers] == [nn.RNN, nn.LSTM, nn.GRU, nn.GRU, nn.MeanPool, nn.Linear]
    assert m[5].bias is False
    x = x_seq(seed=3)
    close(rf_out(m, x), k_out(km, x))


def test_from_keras_dense_embedding_dropout_pool():
    x = x_seq(seed=4)
    for km, inp in ((keras_model(L.Dense(3), seed=4), x), (keras_model(L.GlobalMaxPooling1D(), L.Dense(2)), x),
                    (keras_model(L.Embedding(11, 3), shape=(None,), dtype="int32"), ids(4))):
        m = from_keras(km)
        close(rf_out(m, inp), k_out(km, inp))
    assert isinstance(from_keras(keras_model(L.Dense(3)).layers[0]), nn.Linear)
    drop = from_keras(L.Dropout(0.25))
    assert isinstance(drop, nn.Dropout) and drop.p == 0.25


# -------------------------------------------------------------------------------------------- to Keras
def _rf_models(dtype=np.float32):
    kw = dict(dtype=dtype)
    return {
        "lstm": nn.LSTM(I, H, seed=0, **kw),
        "gru_L2bi": nn.GRU(I, H, num_layers=2, bidirectional=True, seed=1, **kw),
        "rnn_relu_nobias": nn.RNN(I, H, nonlinearity="relu", bias=False, seed=2, **kw),
        "linear": nn.Linear(I, 3, seed=3, **kw),
        "seq_last": nn.Sequential(nn.LSTM(I, H, num_layers=2, dropout=0.2, seed=4, **kw), nn.LastStep(),
                                  nn.Linear(H, 2, seed=5, **kw)),
        "seq_bi_last": nn.Sequential(nn.Embedding(11, I, padding_idx=0, seed=6, **kw),
                                     nn.GRU(I, H, bidirectional=True, seed=7, **kw), nn.LastStep(bidirectional=True),
                                     nn.Dropout(0.5), nn.Linear(2 * H, 3, seed=8, **kw)),
        "seq_pools": nn.Sequential(nn.RNN(I, H, seed=9, **kw), nn.MeanPool(), nn.Linear(H, 2, seed=10, **kw)),
        "seq_max": nn.Sequential(nn.Linear(I, H, seed=11, **kw), nn.MaxPool()),
    }


@pytest.mark.parametrize("name", list(_rf_models()))
def test_to_keras_and_back(name):
    m = _rf_models()[name]
    x = ids(5) if name == "seq_bi_last" else x_seq(seed=5)
    k = to_keras(m)
    assert k.built
    for u, v in zip(k.get_weights(), keras_weights(m)):
        np.testing.assert_array_equal(u, v)
    want = rf_out(m, x)
    close(k_out(k, x), want)
    back = from_keras(k)
    close(rf_out(back, x), want)
    same_weights(back, m)


def test_to_keras_float64():
    m = _rf_models(np.float64)["gru_L2bi"]
    x = x_seq(np.float64, seed=6)
    k = to_keras(m)
    assert k.get_weights()[0].dtype == np.float64
    close(k_out(k, x), rf_out(m, x), np.float64)
    assert from_keras(k)[0].dtype == np.float64


def test_to_keras_estimator():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, T, 2))
    clf = rf.GRUClassifier(hidden_size=4, bidirectional=True, epochs=2, n_threads=1, random_state=0)
    clf.fit(X, rng.integers(0, 3, 20))
    logits = k_out(to_keras(clf), X.astype(np.float32))
    close(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), clf.predict_proba(X))
    same_weights(from_keras(to_keras(clf)), clf)


# ------------------------------------------------------------------------------- array level, no Keras
def test_keras_weights_layout():
    lstm = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    assert [w.shape for w in keras_weights(lstm)] == [(I, 4 * H), (H, 4 * H), (4 * H,)] * 2 + \
        [(2 * H, 4 * H), (H, 4 * H), (4 * H,)] * 2
    sd = lstm.state_dict()
    np.testing.assert_array_equal(keras_weights(lstm)[2], sd["bias_ih_l0"] + sd["bias_hh_l0"])
    assert [w.shape for w in keras_weights(nn.GRU(I, H))] == [(I, 3 * H), (H, 3 * H), (2, 3 * H)]
    assert [w.shape for w in keras_weights(nn.RNN(I, H, bias=False))] == [(I, H), (H, H)]
    assert [w.shape for w in keras_weights(nn.Linear(I, 3))] == [(I, 3), (3,)]
    assert [w.shape for w in keras_weights(nn.Embedding(7, 2))] == [(7, 2)]
    assert keras_weights(nn.Dropout(0.1)) == [] and keras_weights(nn.MeanPool()) == []


def test_load_keras_weights_round_trip_and_bias_split():
    a = nn.Sequential(nn.Embedding(11, I, seed=0), nn.LSTM(I, H, bidirectional=True, seed=1), nn.LastStep(True),
                      nn.Linear(2 * H, 2, seed=2))
    b = nn.Sequential(nn.Embedding(11, I, seed=3), nn.LSTM(I, H, bidirectional=True, seed=4), nn.LastStep(True),
                      nn.Linear(2 * H, 2, seed=5))
    load_keras_weights(b, keras_weights(a))
    same_weights(b, a)
    assert not np.any(b[1].state_dict()["bias_hh_l0"])  # the summed bias loads as bias_ih
    x = ids(1)
    close(rf_out(b, x), rf_out(a, x))


def test_load_keras_weights_refuses_bad_arrays():
    gru = nn.GRU(I, H)
    before = gru.state_dict()
    good = keras_weights(nn.GRU(I, H, seed=1))
    with pytest.raises(ValueError, match="3 arrays expected"):
        load_keras_weights(gru, good[:2])
    with pytest.raises(ValueError, match="reset_after=False"):
        load_keras_weights(gru, good[:2] + [good[2][0]])
    with pytest.raises(ValueError, match=r"arrays\[0\].*shape"):
        load_keras_weights(gru, [good[0].T] + good[1:])
    with pytest.raises(TypeError, match="list of arrays"):
        load_keras_weights(gru, {"kernel": good[0]})
    with pytest.raises(TypeError, match="numeric"):
        load_keras_weights(gru, [good[0].astype(str)] + good[1:])
    with pytest.raises(TypeError, match="Attention"):
        keras_weights(nn.Attention(2, 2))
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# --------------------------------------------------------------------------------------------- refusals
REFUSED = {
    "lstm_relu": (lambda: L.LSTM(H, activation="relu"), "activation='relu'"),
    "hard_sigmoid": (lambda: L.GRU(H, recurrent_activation="hard_sigmoid"), "recurrent_activation='hard_sigmoid'"),
    "rnn_selu": (lambda: L.SimpleRNN(H, activation="selu"), "activation='selu'"),
    "merge_sum": (lambda: L.Bidirectional(L.LSTM(H), merge_mode="sum"), "merge_mode='sum'"),
    "go_backwards": (lambda: L.LSTM(H, go_backwards=True), "go_backwards"),
    "stateful": (lambda: L.GRU(H, stateful=True), "stateful=True"),
    "dense_softmax": (lambda: L.Dense(3, activation="softmax"), "activation='softmax'"),
    "masking": (lambda: L.Masking(), "lengths="),
    "conv": (lambda: L.Conv1D(2, 2), "unsupported Keras layer Conv1D"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_from_keras_refusals(case):
    make, match = REFUSED[case]
    batch = (B, T, I) if case != "stateful" else (B, T, I)
    km = keras.Sequential([keras.Input(batch_shape=batch), make()])
    with pytest.raises(ValueError, match=match):
        from_keras(km)


def test_from_keras_refuses_models_and_objects():
    emb = keras_model(L.Embedding(5, 2, mask_zero=True), shape=(None,), dtype="int32")
    with pytest.raises(ValueError, match="mask_zero"):
        from_keras(emb)
    inp = keras.Input((None, I))
    with pytest.raises(ValueError, match="only Keras Sequential"):
        from_keras(keras.Model(inp, L.LSTM(H)(inp)))
    with pytest.raises(ValueError, match="not built"):
        from_keras(L.LSTM(H))
    with pytest.raises(TypeError, match="Keras 3 layer"):
        from_keras(nn.LSTM(I, H))
    with pytest.warns(UserWarning, match="recurrent_dropout"):
        from_keras(keras_model(L.LSTM(H, recurrent_dropout=0.2)))


def test_to_keras_refusals():
    with pytest.raises(ValueError, match="right after a recurrent layer"):
        to_keras(nn.Sequential(nn.Linear(I, H), nn.LastStep()))
    with pytest.raises(ValueError, match="bidirectional"):
        to_keras(nn.Sequential(nn.LSTM(I, H, bidirectional=True), nn.LastStep()))
    with pytest.raises(ValueError, match="batch_first=False"):
        to_keras(nn.Sequential(nn.LSTM(I, H, batch_first=False), nn.Linear(H, 2)))
    with pytest.raises(TypeError, match="Attention"):
        to_keras(nn.Sequential(nn.LSTM(I, H), nn.Attention(H, H)))


def test_gru_reset_before_layout():
    gru = nn.GRU(I, H, reset_after=False, bidirectional=True)
    assert [w.shape for w in keras_weights(gru)] == [(I, 3 * H), (H, 3 * H), (3 * H,)] * 2
    k = to_keras(gru)
    assert k.forward_layer.reset_after is False
    x = x_seq(seed=8)
    close(k_out(k, x), rf_out(gru, x))
    back = from_keras(k)
    assert back.reset_after is False
    same_weights(back, gru)


def test_unroll_and_unit_forget_bias_are_accepted():
    km = keras_model(L.LSTM(H, unroll=True, unit_forget_bias=False, return_sequences=True), shape=(T, I), seed=9)
    x = x_seq(seed=9)
    close(rf_out(from_keras(km), x), k_out(km, x))
