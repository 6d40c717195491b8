"""rf.nn.freeze: a read-only snapshot for inference whose recurrent layers pack their weights once.

The frozen copy must give the original's results bit for bit on every kernel that packs (the paths of
test_packs.py), read its kept packs at later calls (shown by corrupting them), refuse every way of writing
its weights, and stop trusting its packs as soon as a weight is writeable again.
"""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnfast as rf
from rnnfast.nn import GRU, LSTM, Linear, Sequential, freeze, is_frozen
from rnnfast.nn.seq2seq import Seq2SeqModel, beam_decode, greedy_decode

from _pack_paths import IDS, PATHS, pack_path_layer as _layer, pin_threads as _pin_threads

pytestmark = pytest.mark.usefixtures("reference_machine")


def _same(got, want):
    got, want = np.asarray(got[0]), np.asarray(want[0])
    assert np.array_equal(got, want), np.abs(got - want).max()


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_frozen_layer_is_the_original_and_reads_its_kept_packs(path):
    layer, x = _layer(*path)
    frozen = freeze(layer)
    _pin_threads(frozen)
    assert is_frozen(frozen) and not is_frozen(layer) and not frozen.training
    x2 = x[::-1].copy()
    for xi in (x, x, x2, x):  # the first call packs, the others read the kept packs (fast path too)
        _same(frozen(xi, n_threads=2), layer(xi, n_threads=2))
    (entry,) = frozen._packs.values()
    # the packs are read, not made again: spoiling them spoils the next result
    for bufs, *_ in entry.packs:
        for buf in bufs.values():
            buf[...] = 0
    assert not np.array_equal(frozen(x, n_threads=2)[0], layer(x, n_threads=2)[0])


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_frozen_packs_per_thread_count(path):
    layer, x = _layer(*path)
    frozen = freeze(layer)
    _pin_threads(frozen)
    want = {n: layer(x, n_threads=n) for n in (1, 2)}
    for n in (2, 1, 2, 1):
        _same(frozen(x, n_threads=n), want[n])
    hoisted = [e for e in frozen._packs.values() if e.key[0][1]]  # (kernel_args: kernel, hoist, ...)
    assert all("wpp" in bufs for e in hoisted for bufs, *_ in e.packs)  # W_ih^T kept whole too


@pytest.mark.parametrize("B, T", [(2, 8), (3, 4), (2, 9), (8, 6)])
def test_frozen_matches_the_original_where_the_projection_reads_w_ih_in_place(B, T, proj_in_place):
    """A few rows on a big W_ih (at most 32, a multiple of 4: _recurrent.proj_in_place) read W_ih's rows in
    place, frozen or not, so the frozen copy keeps giving the original's bits; other row counts (18, 48)
    take its kept pack."""
    layer = LSTM(512, 64, seed=B).eval()  # (W_ih 512 KB: proj_in_place lifts the size limits)
    frozen = freeze(layer)
    x = np.random.default_rng(B).standard_normal((B, T, 512)).astype(np.float32)
    for n in (2, 1, 2):
        _same(frozen(x, n_threads=n), layer(x, n_threads=n))


@pytest.mark.parametrize("path", [PATHS[0], PATHS[4], PATHS[10]], ids=[IDS[0], IDS[4], IDS[10]])
def test_a_weight_made_writeable_again_ends_the_trust(path):
    layer, x = _layer(*path)
    frozen = freeze(layer)
    _pin_threads(frozen)
    _same(frozen(x, n_threads=2), layer(x, n_threads=2))
    w = dict(frozen.named_parameters())["weight_hh_l0"]
    w.flags.writeable = True
    w[0, 0] += 0.25
    layer._params["weight_hh_l0"][0, 0] += 0.25
    assert not is_frozen(frozen)
    for _ in range(2):
        _same(frozen(x, n_threads=2), layer(x, n_threads=2))
    frozen.train()  # (an ordinary layer again)


def test_replacing_a_parameter_ends_the_trust():
    layer, x = _layer(*PATHS[4])
    frozen = freeze(layer)
    _pin_threads(frozen)
    frozen(x, n_threads=2)
    new = frozen._params["weight_hh_l0"] * np.float32(0.5)
    new.flags.writeable = False
    frozen._params["weight_hh_l0"] = new
    layer._params["weight_hh_l0"][...] *= np.float32(0.5)
    assert not is_frozen(frozen)
    _same(frozen(x, n_threads=2), layer(x, n_threads=2))


def test_frozen_weights_cannot_change_and_the_original_stays_free():
    layer = LSTM(6, 8, num_layers=2, seed=0)
    frozen = freeze(layer)
    weights = dict(frozen.named_parameters())
    with pytest.raises(ValueError, match="read-only"):
        weights["weight_hh_l0"][0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        weights["weight_hh_l1"] += 1.0
    with pytest.raises(ValueError, match="frozen"):
        frozen.load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="frozen"):
        frozen.train()
    with pytest.raises(ValueError, match="read-only"):
        rf.train.SGD(frozen, lr=0.1).step()
    x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    before = frozen(x)[0]
    layer._params["weight_hh_l0"][...] = 0  # the original changes, the snapshot does not
    layer.train()
    assert np.array_equal(frozen(x)[0], before)
    assert not np.array_equal(layer.eval()(x)[0], before)
    with pytest.raises(TypeError, match="freeze takes"):
        freeze(np.zeros(3))


def test_pickled_frozen_layer_stays_frozen():
    layer, x = _layer(*PATHS[8])
    frozen = pickle.loads(pickle.dumps(freeze(layer)))
    _pin_threads(frozen)
    assert is_frozen(frozen) and not frozen._params["weight_ih_l0"].flags.writeable
    assert all(a.ctypes.data % 64 == 0 for _, a in frozen.named_parameters())
    for _ in range(2):
        _same(frozen(x, n_threads=2), layer(x, n_threads=2))
    assert frozen._packs


def test_frozen_models():
    """Sequential and Seq2SeqModel: every layer frozen, the same results, decoding included."""
    net = Sequential([GRU(5, 32, seed=1), Linear(32, 3, seed=2)]).eval()
    x = np.random.default_rng(1).standard_normal((3, 7, 5)).astype(np.float32)
    frozen = freeze(net)
    assert is_frozen(frozen) and not is_frozen(net)
    for _ in range(2):
        assert np.array_equal(frozen(x), net(x))
    s2s = Seq2SeqModel(9, 8, 16, embedding_dim=4, seed=0, dtype=np.float32)
    src, lengths = np.array([[4, 5, 6], [7, 8, 0]]), np.array([3, 2])
    fs = freeze(s2s)
    assert is_frozen(fs) and not any(a.flags.writeable for _, a in fs.named_parameters())
    for decode, kw in ((greedy_decode, {}), (beam_decode, {"beam_size": 3})):
        assert decode(fs, src, lengths, max_length=6, **kw)[0] == decode(s2s, src, lengths, max_length=6, **kw)[0]


def test_frozen_weights_start_on_a_cache_line():
    """(a deep copy's arrays do not, and the batch-1 kernel reads the weights in place: 14% slower measured)"""
    frozen = freeze(Sequential([GRU(5, 32, seed=1), Linear(32, 3, seed=2)]))
    assert all(a.ctypes.data % 64 == 0 for _, a in frozen.named_parameters())


def test_frozen_estimator():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6, 3)).astype(np.float32), rng.integers(0, 2, 40)
    est = rf.GRUClassifier(hidden_size=16, epochs=2, random_state=0).fit(X, y)
    served = freeze(est)
    assert is_frozen(served) and not is_frozen(est) and served.model_ is not est.model_
    np.testing.assert_array_equal(served.predict_proba(X), est.predict_proba(X))
    with pytest.raises(RuntimeError, match="frozen"):
        served.partial_fit(X, y)
    est.partial_fit(X, y)  # (the original trains on)
    assert not np.array_equal(served.predict_proba(X), est.predict_proba(X))
    with pytest.raises(TypeError, match="fitted estimator"):
        freeze(rf.GRUClassifier())


@pytest.mark.parametrize("path", [PATHS[4], PATHS[8], PATHS[15]], ids=[IDS[4], IDS[8], IDS[15]])
def test_concurrent_first_calls_on_a_frozen_layer(path):
    """Threads racing on a fresh frozen layer: each call makes or reads packs, never a half-made one."""
    import threading
    layer, x = _layer(*path)
    want = layer(x, n_threads=1)
    frozen = freeze(layer)
    _pin_threads(frozen)
    outs, errors = [], []

    def work():
        try:
            for _ in range(5):
                outs.append(frozen(x, n_threads=1)[0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(outs) == 20
    assert all(np.array_equal(o, want[0]) for o in outs)


def test_frozen_layer_streams_steps_as_the_original():
    layer = LSTM(6, 32, num_layers=2, seed=4).eval()
    frozen = freeze(layer)
    x = np.random.default_rng(2).standard_normal((3, 7, 6)).astype(np.float32)
    s1 = s2 = None
    for t in range(7):
        y1, s1 = layer.step(x[:, t], s1)
        y2, s2 = frozen.step(x[:, t], s2)
        assert np.array_equal(y1, y2)
    frozen.release_memory()
    assert frozen._packs == {} and is_frozen(frozen)
    assert np.array_equal(frozen(x)[0], layer(x)[0])


@st.composite
def _call_sequences(draw):
    """A layer (the cell, sizes that reach the batch-1, few-rows and packed kernels) and a sequence of calls:
    batch sizes 1-12 (ragged or not), lengths, initial states and thread counts changing from call to call."""
    cell = draw(st.sampled_from([LSTM, GRU, rf.nn.RNN]))
    I, H = draw(st.sampled_from([3, 40])), draw(st.sampled_from([24, 96]))
    layer = cell(I, H, num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                 seed=draw(st.integers(0, 99))).eval()  # (a training-mode call may plan another kernel)
    calls = []
    for _ in range(draw(st.integers(2, 6))):
        B, T = draw(st.integers(1, 12)), draw(st.integers(1, 30))
        lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
        calls.append((B, T, lengths, draw(st.booleans()), draw(st.sampled_from([1, 2]))))
    return layer, calls


@settings(deadline=None)
@given(_call_sequences(), st.integers(0, 2**16))
def test_frozen_layer_matches_the_original_over_call_sequences(case, seed):
    """Whatever calls come in whatever order (each shape, kernel and thread count keys its own packs), a frozen
    layer answers as the original, bit for bit."""
    layer, calls = case
    frozen = freeze(layer)
    rng = np.random.default_rng(seed)
    D, L = 2 if layer.bidirectional else 1, layer.num_layers
    for B, T, lengths, with_h0, n in calls:
        x = rng.standard_normal((B, T, layer.input_size)).astype(np.float32)
        h0 = None
        if with_h0:
            h0 = rng.standard_normal((D * L, B, layer.hidden_size)).astype(np.float32)
            h0 = (h0, h0 * 0.5) if isinstance(layer, LSTM) else h0
        got = frozen(x, h0, lengths=lengths, n_threads=n)
        want = layer(x, h0, lengths=lengths, n_threads=n)
        _same(got, want)
        for g, w in zip(*(s if isinstance(s, tuple) else (s,) for s in (got[1], want[1]))):
            assert np.array_equal(g, w)
