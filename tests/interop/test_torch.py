"""rnnfast.interop.from_torch / to_torch against real PyTorch: layers (outputs, final states and every
gradient, through tests/nn/test_torch.py's helpers), Sequentials with pooling over ragged lengths,
fitted estimators, round trips, refusals."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnfast as rf  # noqa: E402
from nn.test_torch import (LENGTHS, MODES, TORCH_DTYPE, _classes, _kwargs, assert_match, close,  # noqa: E402
                           make_data, run_rf, run_torch)
from rnnfast.interop import from_torch, to_torch  # noqa: E402

I, H = 5, 6  # tests/nn/test_torch.py's sizes (make_data)
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_torch():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _torch_layer(mode, num_layers, bidirectional, dtype, batch_first=True, seed=0):
    torch.manual_seed(seed)
    tcls, _ = _classes(mode)
    return tcls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                **_kwargs(mode)).to(TORCH_DTYPE[dtype])


def _rf_layer(mode, num_layers, bidirectional, dtype, batch_first=True, seed=0):
    _, rcls = _classes(mode)
    return rcls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype,
                seed=seed, **_kwargs(mode))


def _same_layer(a, b):
    """Same settings and exactly the same weights."""
    assert type(a) is type(b)
    for k in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "dropout",
              "nonlinearity", "dtype", "training"):
        assert getattr(a, k) == getattr(b, k), k
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# ------------------------------------------------------------------------------------------- layers
STACKS = pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2bi"])
RAGGED = pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])


@RAGGED
@DTYPES
@STACKS
@pytest.mark.parametrize("mode", MODES)
def test_from_torch_layer(mode, num_layers, bidirectional, dtype, ragged):
    tmod = _torch_layer(mode, num_layers, bidirectional, dtype, seed=num_layers)
    rmod = from_torch(tmod)
    assert rmod.dtype == dtype and rmod.num_layers == num_layers and rmod.bidirectional == bidirectional
    data = make_data(mode, num_layers, bidirectional, dtype, seed=3)
    lengths = LENGTHS if ragged else None
    assert_match(run_rf(rmod, mode, *data, lengths=lengths), run_torch(tmod, mode, *data, lengths=lengths), dtype)


@RAGGED
@DTYPES
@STACKS
@pytest.mark.parametrize("mode", MODES)
def test_to_torch_layer(mode, num_layers, bidirectional, dtype, ragged):
    rmod = _rf_layer(mode, num_layers, bidirectional, dtype, seed=4)
    tmod = to_torch(rmod)
    assert isinstance(tmod, _classes(mode)[0])
    assert tmod.weight_ih_l0.dtype == TORCH_DTYPE[dtype]
    data = make_data(mode, num_layers, bidirectional, dtype, seed=5)
    lengths = LENGTHS if ragged else None
    assert_match(run_rf(rmod, mode, *data, lengths=lengths), run_torch(tmod, mode, *data, lengths=lengths), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_batch_first_false_both_ways(mode):
    dtype = np.float64
    tmod = _torch_layer(mode, 2, True, dtype, batch_first=False, seed=6)
    rmod = from_torch(tmod)
    assert rmod.batch_first is False
    data = make_data(mode, 2, True, dtype, seed=6, batch_first=False)
    assert_match(run_rf(rmod, mode, *data, lengths=LENGTHS), run_torch(tmod, mode, *data, lengths=LENGTHS), dtype)
    assert to_torch(rmod).batch_first is False


@pytest.mark.parametrize("mode", MODES)
def test_layer_round_trips(mode):
    rmod = _rf_layer(mode, 2, True, np.float32, seed=7).eval()
    _same_layer(from_torch(to_torch(rmod)), rmod)
    tmod = _torch_layer(mode, 2, True, np.float64, seed=7)
    back = to_torch(from_torch(tmod))
    assert str(back) == str(tmod)
    for k, v in tmod.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


@DTYPES
def test_linear_embedding_dropout_both_ways(dtype):
    torch.manual_seed(0)
    tdt = TORCH_DTYPE[dtype]
    lin = torch.nn.Linear(I, 3).to(tdt)
    nob = torch.nn.Linear(I, 3, bias=False).to(tdt)
    emb = torch.nn.Embedding(10, I, padding_idx=0).to(tdt)
    x = np.random.default_rng(0).standard_normal((4, 7, I)).astype(dtype)
    ids = np.random.default_rng(1).integers(0, 10, (4, 7))
    with torch.no_grad():
        for tm, inp in ((lin, x), (nob, x), (emb, ids)):
            rm = from_torch(tm)
            want = tm(torch.from_numpy(inp)).numpy()
            close(rm(inp), want, dtype)
            back = to_torch(rm)
            close(back(torch.from_numpy(inp)).numpy(), want, dtype)
    assert from_torch(emb).padding_idx == 0 and to_torch(from_torch(emb)).padding_idx == 0
    assert from_torch(nob).bias is False
    drop = from_torch(torch.nn.Dropout(0.3).eval())
    assert isinstance(drop, rf.nn.Dropout) and drop.p == 0.3 and not drop.training
    np.testing.assert_array_equal(drop(x), x)
    assert to_torch(drop).p == 0.3 and not to_torch(drop).training


# --------------------------------------------------------------------------------------- Sequential
def _models(dtype):
    """rnnfast Sequentials with ragged-length semantics: (model, takes token ids)."""
    nn = rf.nn
    return [
        (nn.Sequential(nn.Embedding(12, I, padding_idx=0, dtype=dtype, seed=0),
                       nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=1),
                       nn.LastStep(bidirectional=True), nn.Dropout(0.5), nn.Linear(2 * H, 3, dtype=dtype, seed=2)),
         True),
        (nn.Sequential(nn.GRU(I, H, dtype=dtype, seed=3), nn.MeanPool(), nn.Linear(H, 2, dtype=dtype, seed=4)), False),
        (nn.Sequential(nn.RNN(I, H, nonlinearity="relu", bidirectional=True, dtype=dtype, seed=5),
                       nn.Linear(2 * H, H, dtype=dtype, seed=6), nn.GRU(H, H, dtype=dtype, seed=7), nn.MaxPool()),
         False),
        (nn.Sequential(nn.LSTM(I, H, dtype=dtype, seed=8), nn.LSTM(H, H, dtype=dtype, seed=9), nn.LastStep()), False),
    ]


def _inputs(tokens, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if tokens:
        return rng.integers(1, 12, (len(LENGTHS), 7))
    return rng.standard_normal((len(LENGTHS), 7, I)).astype(dtype)


@DTYPES
@pytest.mark.parametrize("k", range(4))
def test_sequential_to_torch_over_lengths(k, dtype):
    model, tokens = _models(dtype)[k]
    model.eval()
    x = _inputs(tokens, dtype, seed=k)
    tm = to_torch(model)
    assert type(tm).__name__ == "Sequence" and not tm.training
    with torch.no_grad():
        for lengths in (LENGTHS, None):
            got = tm(torch.from_numpy(x), None if lengths is None else torch.from_numpy(lengths)).numpy()
            close(got, model(x, lengths=lengths), dtype, err_msg=f"lengths={lengths}")
    back = from_torch(tm)
    assert [type(a) for a in back.layers] == [type(a) for a in model.layers]
    assert not back.training
    np.testing.assert_array_equal(back(x, lengths=LENGTHS), model(x, lengths=LENGTHS))


def test_torch_sequential_in():
    """A torch nn.Sequential (one torch can run, and one of recurrent layers it cannot) converts."""
    torch.manual_seed(1)
    runnable = torch.nn.Sequential(torch.nn.Embedding(12, I), torch.nn.Dropout(0.1), torch.nn.Linear(I, 3)).eval()
    ids = _inputs(True, np.float32)
    rm = from_torch(runnable)
    assert isinstance(rm, rf.nn.Sequential) and len(rm) == 3 and not rm.training
    with torch.no_grad():
        close(rm(ids), runnable(torch.from_numpy(ids)).numpy(), np.float32)
    lstm, lin = torch.nn.LSTM(I, H, batch_first=True, bidirectional=True), torch.nn.Linear(2 * H, 2)
    rm = from_torch(torch.nn.Sequential(lstm, torch.nn.Sequential(lin)))
    assert [type(a) for a in rm.layers] == [rf.nn.LSTM, rf.nn.Linear]
    x = _inputs(False, np.float32)
    with torch.no_grad():
        close(rm(x), lin(lstm(torch.from_numpy(x))[0]).numpy(), np.float32)


# ----------------------------------------------------------------------------------------- estimators
def _ragged(n, rng):
    return [rng.standard_normal((int(t), 3)) for t in rng.integers(2, 9, n)]


def _padded(xs):
    T = max(len(x) for x in xs)
    out = np.zeros((len(xs), T, xs[0].shape[1]))
    for i, x in enumerate(xs):
        out[i, :len(x)] = x
    return out, np.array([len(x) for x in xs])


def test_estimators_to_torch():
    rng = np.random.default_rng(0)
    X = _ragged(24, rng)
    clf = rf.LSTMClassifier(hidden_size=5, num_layers=2, bidirectional=True, epochs=2, n_threads=1,
                            random_state=0).fit(X, rng.integers(0, 3, len(X)))
    reg = rf.GRURegressor(hidden_size=4, pooling="mean", epochs=2, n_threads=1,
                          random_state=0).fit(X, rng.standard_normal((len(X), 2)))
    x, lengths = _padded(X)
    with torch.no_grad():
        logits = to_torch(clf)(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(lengths))
        close(torch.softmax(logits, -1).numpy(), clf.predict_proba(X), np.float32)
        out = to_torch(reg)(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(lengths)).numpy()
    close(out * reg.y_scale_ + reg.y_mean_, reg.predict(X), np.float32)
    with pytest.raises(rf.estimators.NotFittedError):
        to_torch(rf.LSTMClassifier())


# ------------------------------------------------------------------------------------------- refusals
def test_refusals():
    with pytest.raises(ValueError, match="bfloat16"):
        from_torch(torch.nn.GRU(I, H).to(torch.bfloat16))
    with pytest.raises(ValueError, match="max_norm"):
        from_torch(torch.nn.Embedding(5, 2, max_norm=1.0))
    with pytest.raises(ValueError, match="Conv1d"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Conv1d(2, 2, 1)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch(rf.nn.LSTM(2, 2))
    with pytest.raises(TypeError, match="Attention"):
        to_torch(rf.nn.Sequential(rf.nn.Attention(2, 2)))
    with pytest.raises(TypeError, match="str"):
        to_torch("model")


def test_gru_reset_before_refused():
    with pytest.raises(ValueError, match="reset_after=False"):
        to_torch(rf.nn.GRU(I, H, reset_after=False))
