"""Weight packs kept between inference calls (rnnfast.nn._packs): never stale, whatever changes the weights.

Every test runs with KEEP_PACKS on and compares with the same calls packing at every call (KEEP_PACKS off),
bit for bit: a kept pack holds the same floats in the same layout, so any difference is a stale pack.
"""
import pickle
import threading

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import LSTM, _packs

from _pack_paths import I_SIZE, IDS, PATHS, pack_path_layer as _layer, pin_threads as _pin_threads

# the shapes select their kernel paths by the reference machine's caches (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("reference_machine")


@pytest.fixture(autouse=True)
def keep(monkeypatch):
    monkeypatch.setattr(_packs, "KEEP_PACKS", True)
    monkeypatch.setattr(_packs, "KEEP_MIN_BYTES", 0)  # (the small test layers keep their packs too)


def _reference(layer, x, monkeypatch, n_threads=2):
    """The call packing its weights at this call (as before kept packs)."""
    monkeypatch.setattr(_packs, "KEEP_PACKS", False)
    try:
        return layer(x, n_threads=n_threads)
    finally:
        monkeypatch.setattr(_packs, "KEEP_PACKS", True)


def _assert_same(got, want):
    got, want = np.asarray(got[0]), np.asarray(want[0])
    assert np.array_equal(got, want), np.abs(got - want).max()


def _change_in_place(layer):
    layer._params["weight_hh_l0"][0, 0] += 0.25  # one float of W_hh


def _change_w_ih(layer):
    layer._params["weight_ih_l0"][-1, -1] -= 0.5  # one float of W_ih (packed too unless the plan hoists)


def _assign(layer):
    layer._params["weight_hh_l0"] = layer._params["weight_hh_l0"] * np.float32(0.5)


def _load(layer):
    sd = layer.state_dict()
    last = sorted(k for k in sd if k.startswith("weight_hh"))[-1]  # the last layer-direction's
    sd[last] = -sd[last]
    layer.load_state_dict(sd)


def _train_step(layer):
    """A training forward, backward and SGD step in place, then eval again."""
    layer.train()
    x = np.ones((2, 4, I_SIZE), np.float32)
    out, _ = layer(x)
    layer.zero_grad()
    layer.backward(np.ones_like(out))
    for name, p in layer.named_parameters():
        p -= np.float32(0.1) * layer.grads[name]
    layer.eval()


CHANGES = [_change_in_place, _change_w_ih, _assign, _load, _train_step]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_kept_packs_follow_every_weight_change(path, change, monkeypatch):
    layer, x = _layer(*path)
    first = layer(x, n_threads=2)
    _assert_same(first, _reference(layer, x, monkeypatch))
    _assert_same(layer(x, n_threads=2), first)  # from the kept packs
    assert layer._packs, "the call kept no packs"
    change(layer)
    want = _reference(layer, x, monkeypatch)
    assert not np.array_equal(want[0], first[0])
    _assert_same(layer(x, n_threads=2), want)
    _assert_same(layer(x, n_threads=2), want)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_kept_packs_per_thread_count(path, monkeypatch):
    layer, x = _layer(*path)
    want = {n: _reference(layer, x, monkeypatch, n) for n in (1, 2)}
    for n in (2, 1, 2, 1, 2):
        _assert_same(layer(x, n_threads=n), want[n])


def test_a_pack_made_for_other_threads_is_refused(monkeypatch):
    """The few-rows and batch-1 kernels' packs depend on the threads that run; the kernel refuses one made for
    another count (it returns -1 before computing anything) and the layer packs anew."""
    for args in (PATHS[4], PATHS[0]):
        layer, x = _layer(*args)
        want = layer(x, n_threads=2)
        (key, entry), = layer._packs.items()
        nk = entry.packs[0][3]
        assert nk[0] == 2
        nk[0] = 5  # as if made on 5 threads
        _assert_same(layer(x, n_threads=2), want)
        assert layer._packs[key] is not entry and layer._packs[key].packs[0][3][0] == 2


def test_float64_keeps_nothing(monkeypatch):
    layer = LSTM(I_SIZE, 128, seed=3, dtype=np.float64).eval()
    x = np.ones((3, 20, I_SIZE))
    layer(x, n_threads=2)
    assert not layer._packs
    twin = LSTM(I_SIZE, 128, seed=3).eval()
    twin.load_state_dict(layer.state_dict())  # the same weights cast to float32
    got = twin(x, n_threads=2)
    np.testing.assert_allclose(got[0], layer(x, n_threads=2)[0], atol=1e-5)
    assert twin._packs


def test_training_calls_keep_nothing(monkeypatch):
    layer = LSTM(I_SIZE, 40, num_layers=2, dropout=0.3, seed=3).eval()
    _pin_threads(layer)
    x = np.ones((8, 12, I_SIZE), np.float32)
    want = _reference(layer, x, monkeypatch)
    _assert_same(layer(x, n_threads=2), want)
    assert layer._packs
    layer.train()
    before = dict(layer._packs)
    out, _ = layer(x, n_threads=2)  # (with dropout between the layers)
    layer.backward(np.ones_like(out))
    assert layer._packs == before  # training packs at every call, as before
    layer.eval()
    _assert_same(layer(x, n_threads=2), want)


def test_release_memory_and_pickling_drop_kept_packs(monkeypatch):
    layer, x = _layer(*PATHS[4])
    want = layer(x, n_threads=2)
    assert layer._packs
    copy = pickle.loads(pickle.dumps(layer))
    assert copy._packs == {} and copy._pack_skip == 0
    _pin_threads(copy)
    _assert_same(copy(x, n_threads=2), want)
    layer.release_memory()
    assert layer._packs == {}
    _assert_same(layer(x, n_threads=2), want)


def test_workspace_limit_bounds_kept_packs(monkeypatch):
    layer, x = _layer(*PATHS[10])
    want = _reference(layer, x, monkeypatch)
    rf.set_workspace_limit(0)
    try:
        for _ in range(3):
            _assert_same(layer(x, n_threads=2), want)
            assert layer._packs == {}
            assert layer._pool == []
    finally:
        rf.set_workspace_limit(None)
    assert layer._pack_skip > 0  # (refused packs: the next calls pack in their workspace, not in new buffers)
    for _ in range(_packs._SKIP + 1):
        _assert_same(layer(x, n_threads=2), want)
    assert layer._packs


def test_weights_changing_at_every_call_pack_as_before(monkeypatch):
    """Packs that go stale unused (an optimizer stepping between calls) stop being kept for a while."""
    layer, x = _layer(*PATHS[4])
    for i in range(6):
        layer._params["weight_hh_l0"][1, 2] = np.float32(i * 0.01)
        _assert_same(layer(x, n_threads=2), _reference(layer, x, monkeypatch))
    assert layer._pack_skip > 0


def test_estimator_predict_after_more_training():
    """An estimator's predict (eval calls) after partial_fit (optimizer steps on the same arrays)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 20, 4)).astype(np.float32)
    y = np.array([0, 1, 0])
    est = rf.GRU(hidden_size=40, epochs=1, batch_size=3, n_threads=2, random_state=0).fit(X, y)
    est.predict_proba(X)
    layers = [m for m in est.model_ if hasattr(m, "_packs")]
    assert any(m._packs for m in layers), "predict kept no packs"
    for m in layers:
        _pin_threads(m)
    for _ in range(2):
        est.partial_fit(X, y)
        got = est.predict_proba(X)
        _packs.KEEP_PACKS = False
        try:
            want = est.predict_proba(X)
        finally:
            _packs.KEEP_PACKS = True
        assert np.array_equal(got, want)


@pytest.mark.parametrize("args", [PATHS[0], PATHS[5], PATHS[11]], ids=[IDS[0], IDS[5], IDS[11]])
def test_concurrent_calls_share_kept_packs(args, monkeypatch):
    """Threads calling one layer at once (the first calls all making packs at the same time), with the
    weights changed between rounds: every result equals the per-call packing's."""
    layer, x = _layer(*args)
    errors = []

    def hammer(want, barrier):
        barrier.wait()
        for _ in range(5):
            got = layer(x, n_threads=2)
            if not np.array_equal(got[0], want[0]):
                errors.append(np.abs(got[0] - want[0]).max())

    for round_ in range(3):
        want = _reference(layer, x, monkeypatch)
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=hammer, args=(want, barrier)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        layer._params["weight_hh_l0"][round_, 0] += 0.5


def test_workspaces_come_before_kept_packs_under_a_limit(monkeypatch):
    """A limit that holds the workspace but not the packs beside it: the workspace is pooled, the packs go."""
    layer, x = _layer(*PATHS[10])
    want = layer(x, n_threads=2)
    assert layer._packs and layer._pool
    ws_bytes = sum(ws.nbytes for ws in layer._pool)
    rf.set_workspace_limit(ws_bytes + 100)
    try:
        _assert_same(layer(x, n_threads=2), want)
        assert layer._packs == {} and layer._pool
    finally:
        rf.set_workspace_limit(None)


def test_w_ih_packed_whole_or_read_in_place_by_rows(monkeypatch):
    """W_ih^T kept packed whole for the projection over all steps (wpp) serves the calls with enough rows; a
    call with few rows reads W_ih in place and checks nothing of it. A W_ih changed between such calls is
    still caught when the packed copy is next read."""
    from rnnfast._kernels import _recurrent as _k

    I, H, B, T = 256, 256, 8, 12
    layer = LSTM(I, H, seed=5).eval()
    _pin_threads(layer)
    x = np.random.default_rng(6).standard_normal((B, T, I)).astype(np.float32)
    short, full = np.full(B, 2), np.full(B, T)
    assert _k.proj_in_place(B * 2, I, 4 * H) and not _k.proj_in_place(B * T, I, 4 * H)
    w_ih = layer._params["weight_ih_l0"]
    for step, lengths in enumerate([full, short, full, short, short, full, full]):
        if step in (1, 4, 5):
            w_ih[step, -step] += np.float32(0.125)
        want = layer(x, lengths=lengths, n_threads=2)
        monkeypatch.setattr(_packs, "KEEP_PACKS", False)
        ref = layer(x, lengths=lengths, n_threads=2)
        monkeypatch.setattr(_packs, "KEEP_PACKS", True)
        _assert_same(want, ref)
        assert layer._packs


def test_room_keeps_every_timed_plans_packs(monkeypatch):
    """rnnfast.tune and bench/plan_ab.py time plans in turn: within ``room`` each plan's calls run on its own
    kept packs (with _MOST entries the third plan's would push out the first's at every call); after it the
    layer keeps no more than _MOST again."""
    from rnnfast._planner import Plan

    layer, x = _layer(*PATHS[8])  # LSTM B=2 units: several plans that pack
    plans = [Plan("units", "gemm", "units", 2, True), Plan("packed", "gemm", "rows", 2, False),
             Plan("packed", "step", "rows", 2, False), Plan("packed", "step", "none", 1, False)]
    want = _reference(layer, x, monkeypatch)
    with _packs.room(layer, len(plans)):
        for _ in range(2):
            for p in plans:
                layer._forced_plan = p
                layer(x, n_threads=p.threads)
        entries = dict(layer._packs)
        assert len(entries) == len(plans)
        for p in plans:  # (the same entries: nothing was pushed out)
            layer._forced_plan = p
            layer(x, n_threads=p.threads)
            assert all(layer._packs[k] is e for k, e in entries.items())
    layer._forced_plan = None
    assert len(layer._packs) <= _packs._MOST
    _assert_same(layer(x, n_threads=2), want)


def test_small_weights_pack_at_every_call(monkeypatch):
    """Below KEEP_MIN_BYTES of weights packing costs less than checking kept packs: nothing is kept, and the
    repeated call's fast path does not ask again."""
    monkeypatch.setattr(_packs, "KEEP_MIN_BYTES", 64 * 1024)
    small = LSTM(8, 16, seed=0).eval()  # 4 * 16 * 24 floats: 6 KB
    big = LSTM(64, 96, seed=0).eval()   # 4 * 96 * 160 floats: 240 KB
    x_small = np.ones((8, 8, 8), np.float32)
    x_big = np.ones((8, 8, 64), np.float32)
    for layer, x, kept in ((small, x_small, False), (big, x_big, True)):
        want = _reference(layer, x, monkeypatch)
        for _ in range(3):
            _assert_same(layer(x, n_threads=2), want)
        assert bool(layer._packs) is kept
    calls = []
    monkeypatch.setattr(_packs, "keeps", lambda *a: calls.append(a) or False)
    small(x_small, n_threads=2)
    assert calls == []
