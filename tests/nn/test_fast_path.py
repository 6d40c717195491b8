"""The eval-mode fast paths (issues 10 and 13): repeated inference calls skip re-deriving what depends only
on the call's layout, and a recurrent layer followed by a LastStep head (the classifier and regressor
estimators' networks) gives the head its result from the layer's final states without unpacking the whole
(B, T, D H) output. Results are bit for bit those of the full path."""
import itertools
import threading

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import nn
from rnnfast.nn import sequential

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _states(st):
    return st if isinstance(st, tuple) else (st,)


def _net(cell, bi, layers, dt, head_bi=None):
    lay = CELLS[cell](5, 7, num_layers=layers, bidirectional=bi, dtype=dt, seed=1)
    head = nn.LastStep(bidirectional=bi if head_bi is None else head_bi)
    return lay, nn.Sequential(nn.Stateful(lay), head, nn.Linear(7 * (2 if bi else 1), 3, dtype=dt, seed=2)).eval()


@pytest.mark.parametrize("cell,bi,layers,dt", list(itertools.product(CELLS, [False, True], [1, 2],
                                                                        [np.float32, np.float64])))
def test_last_step_head_equals_full_output_bit_for_bit(cell, bi, layers, dt, monkeypatch):
    lay, net = _net(cell, bi, layers, dt)
    taken = []
    real = type(lay)._forward_last

    def spy(self, *a, **k):
        res = real(self, *a, **k)
        taken.append(res is not None)
        return res

    monkeypatch.setattr(type(lay), "_forward_last", spy)
    rng = np.random.default_rng(3)
    for B, ragged, nth in itertools.product([1, 3, 9], [False, True], [1, 2]):
        x = rng.standard_normal((B, 11, 5)).astype(dt)
        lens = rng.integers(1, 12, B) if ragged else None
        got = net(x, lengths=lens, n_threads=nth)
        out, st = lay(x, lengths=lens, n_threads=nth)
        want = net.layers[2](net.layers[1](out, lengths=lens))
        assert got.dtype == want.dtype and np.array_equal(got, want)
        # the wrapper keeps the state as its forward does
        assert all(np.array_equal(a, b) for a, b in zip(_states(net.layers[0].last_state), _states(st)))
    assert taken and all(taken)


def test_head_that_reads_the_reverse_half_at_the_last_step_runs_the_full_path():
    # LastStep(bidirectional=False) after a bidirectional layer reads the reverse direction's output after
    # ONE step, which no final state holds: the layers run one by one, as before
    lay, net = _net("lstm", True, 1, np.float64, head_bi=False)
    x = np.random.default_rng(0).standard_normal((4, 6, 5))
    out, _ = lay(x)
    assert np.array_equal(net(x), net.layers[2](out[:, -1]))


def test_training_mode_and_layer_norm_take_the_full_path():
    lay = nn.LSTM(5, 7, layer_norm=True, dtype=np.float64, seed=0).eval()
    x = np.zeros((2, 3, 5))
    assert lay._forward_last(x) is None
    assert lay._forward_last(x[0]) is None  # unbatched
    assert lay.train()._forward_last(x) is None


@pytest.mark.parametrize("est_cls,bi,layers", [(rf.LSTMClassifier, False, 1), (rf.GRUClassifier, True, 2),
                                               (rf.RNNRegressor, True, 1), (rf.LSTMRegressor, False, 2)])
def test_estimator_predictions_unchanged(est_cls, bi, layers, monkeypatch):
    rng = np.random.default_rng(1)
    X = [rng.standard_normal((int(n), 2)).astype(np.float32) for n in rng.integers(1, 10, 40)]  # ragged
    y = rng.integers(0, 3, 40) if "Classifier" in est_cls.__name__ else rng.standard_normal(40)
    est = est_cls(hidden_size=6, num_layers=layers, bidirectional=bi, epochs=1, random_state=0,
                  n_threads=1).fit(X, y)
    real, taken = sequential._last_step, []
    monkeypatch.setattr(sequential, "_last_step", lambda *a: taken.append(real(*a)) or taken[-1])
    fast = est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)
    assert taken and all(r is not None for r in taken)
    monkeypatch.setattr(sequential, "_last_step", lambda *a: None)  # as before: layer, then head
    slow = est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)
    assert np.array_equal(fast, slow)


@pytest.mark.parametrize("cell", list(CELLS))
def test_repeated_calls_return_fresh_arrays(cell):
    lay = CELLS[cell](3, 4, num_layers=2, seed=0).eval()
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((2, 5, 3)).astype(np.float32) for _ in range(2))
    o1, s1 = lay(x1)
    keep = [o1.copy()] + [s.copy() for s in _states(s1)]
    o2, s2 = lay(x2)
    assert o1 is not o2 and not np.shares_memory(o1, o2)
    assert all(np.array_equal(a, b) for a, b in zip(keep, [o1, *_states(s1)]))
    # the fast path (an ndarray of the layer's dtype) equals the checked one (a list, converted)
    o3, s3 = lay(x1.tolist())
    assert np.array_equal(o3, o1) and all(np.array_equal(a, b) for a, b in zip(_states(s3), _states(s1)))
    if cell == "lstm":
        h, c = s2
        h[...] = 7
        assert not np.any(c == 7)  # h_n and c_n share one block but no element


def test_last_step_results_are_not_the_workspace():
    lay, net = _net("gru", False, 1, np.float32)
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((3, 4, 5)).astype(np.float32) for _ in range(2))
    r1, _ = lay._forward_last(x1)
    keep = r1.copy()
    lay._forward_last(x2)
    assert np.array_equal(r1, keep)


def test_concurrent_eval_calls_on_one_network_match_serial():
    lay, net = _net("lstm", True, 2, np.float64)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((int(b), 7, 5)) for b in rng.integers(1, 6, 24)]
    want = [net(x) for x in xs] + [lay(x)[0] for x in xs]
    got = [None] * len(want)

    def work(k):
        for i in range(k, len(xs), 4):
            got[i] = net(xs[i])
            got[len(xs) + i] = lay(xs[i])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


# ---------------------------------------------------------------------------------------------- kept Forward
# A plain inference call (a batch-first array of the layer's dtype, no state, no lengths) runs on the filled
# kernel arguments its workspace kept from the last such call of the same layout (_k.Forward, _eval_fast).

def _count_full_path(monkeypatch, lay):
    calls = []
    real = type(lay)._run

    def spy(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(type(lay), "_run", spy)
    return calls


def _full_path(lay, x, nth):
    """The same call on the full path: lengths all T lay the batch out as none do."""
    B, T, _ = x.shape
    return lay(x, lengths=np.full(B, T), n_threads=nth)


@pytest.mark.parametrize("cell,bi,layers,dt", list(itertools.product(CELLS, [False, True], [1, 2],
                                                                        [np.float32, np.float64])))
def test_kept_forward_equals_full_path_bit_for_bit(cell, bi, layers, dt, monkeypatch):
    lay = CELLS[cell](6, 9, num_layers=layers, bidirectional=bi, dtype=dt, seed=3).eval()
    calls = _count_full_path(monkeypatch, lay)
    rng = np.random.default_rng(4)
    layouts = slack = 0
    for B, nth in itertools.product([1, 2, 3, 6], [1, 2]):  # batch 1, few rows and packed kernels
        layouts += 1
        slack += 2 if B == 1 and nth == 2 else 0  # (a busy machine may send batch 1 to one thread: a new plan)
        for _ in range(3):  # new inputs (and results) at every call
            x = rng.standard_normal((B, 5, 6)).astype(dt)
            got, gst = lay(x, n_threads=nth)
            want, wst = _full_path(lay, x, nth)
            assert got.dtype == dt and np.array_equal(got, want)
            assert all(np.array_equal(a, b) for a, b in zip(_states(gst), _states(wst)))
    # each layout's first plain call ran the full path (and kept its arguments), the next two did not
    assert layouts * (1 + 3) <= len(calls) <= layouts * (1 + 3) + slack


@pytest.mark.parametrize("cell", list(CELLS))
def test_kept_forward_reads_weights_written_in_place(cell):
    lay = CELLS[cell](4, 8, dtype=np.float32, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)
    lay(x), lay(x)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        lay._params[name][...] *= 0.5  # as an optimizer or load_state_dict writes them
        fresh = CELLS[cell](4, 8, dtype=np.float32, seed=0).eval()
        fresh.load_state_dict(lay.state_dict())
        assert np.array_equal(lay(x)[0], fresh(x)[0])


def test_kept_forward_follows_layout_changes(monkeypatch):
    lay = nn.LSTM(5, 7, dtype=np.float32, seed=0).eval()
    calls = _count_full_path(monkeypatch, lay)
    rng = np.random.default_rng(1)
    big = rng.standard_normal((4, 12, 5)).astype(np.float32)
    for x in [big, big[:, ::2], big[:2], big, big[:, ::2], np.asfortranarray(big), big[1:2]]:
        got = lay(x)[0]
        assert np.array_equal(got, _full_path(lay, np.ascontiguousarray(x), None)[0])
    assert len(calls) > 7  # a new layout takes the full path, whatever the last call's was


def test_kept_forward_holds_no_caller_array():
    import weakref

    lay = nn.GRU(3, 5, dtype=np.float32, seed=0).eval()
    x = np.ones((2, 4, 3), np.float32)
    lay(x)
    x2 = np.ones((2, 4, 3), np.float32)
    out, h = lay(x2)  # (a kept run)
    refs = [weakref.ref(a) for a in (x2, out, h)]
    del x2, out, h
    assert all(r() is None for r in refs)


def test_kept_forward_runs_again_only_on_new_arrays():
    lay = nn.RNN(3, 4, dtype=np.float32, seed=0).eval()
    ws = lay._pool[0] if lay._pool else None
    lay(np.ones((1, 2, 3), np.float32))
    ws = lay._pool[-1]
    fw = ws.fast[4]
    with pytest.raises(ValueError, match="new arrays"):
        fw.run()


@pytest.mark.parametrize("first,then", [(True, False), (False, True)])
def test_kept_packs_switched_take_the_full_path_once(first, then, monkeypatch):
    """Switching KEEP_PACKS between calls: the next call takes the full path (its arguments then point at
    kept packs or at the workspace's), the one after the kept arguments again."""
    from rnnfast.nn import _packs

    lay = nn.LSTM(5, 16, dtype=np.float32, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((3, 6, 5)).astype(np.float32)
    monkeypatch.setattr(_packs, "KEEP_MIN_BYTES", 0)  # (a small layer: kept packs all the same)
    monkeypatch.setattr(_packs, "KEEP_PACKS", first)
    want = lay(x)[0]
    assert bool(lay._packs) == first
    monkeypatch.setattr(_packs, "KEEP_PACKS", then)
    calls = _count_full_path(monkeypatch, lay)
    assert np.array_equal(lay(x)[0], want) and np.array_equal(lay(x)[0], want)
    assert len(calls) == 1


@pytest.mark.parametrize("cell,bi", [("lstm", False), ("gru", True)])
def test_kept_forward_serves_the_last_step_head(cell, bi, monkeypatch):
    lay, net = _net(cell, bi, 2, np.float32)
    calls = _count_full_path(monkeypatch, lay)
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = rng.standard_normal((4, 6, 5)).astype(np.float32)
        got = net(x)
        out, _ = _full_path(lay, x, None)
        assert np.array_equal(got, net.layers[2](net.layers[1](out)))
    # the head's calls: the first on the full path, the next two on the kept arguments (beside the three
    # _full_path calls)
    assert len(calls) == 3 + 1


@pytest.mark.parametrize("cell", list(CELLS))
def test_step_without_state_after_one_with_state_starts_from_zeros(cell):
    # the kept step arguments point at each call's state; a call without one goes back to zeros
    lay = CELLS[cell](4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    h = rng.standard_normal((2, 3, 6)).astype(np.float32)
    state = (h, h + 1) if cell == "lstm" else h
    lay.step(x, state)
    y, _ = lay.step(x)
    fresh = CELLS[cell](4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    assert np.array_equal(y, fresh.step(x)[0])
    assert not np.array_equal(y, lay.step(x, state)[0])


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_small_calls_on_several_threads_while_awake(cell, monkeypatch):
    """A small plain inference call (below the planner's min_parallel_flops) runs on several threads only
    while the thread policy finds them awake and faster (ThreadPolicy.small_threads), with the same
    output as on one thread; cold, as after a pause, on one."""
    from rnnfast._planner import TABLE
    cls = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell]
    layer = cls(2, 8, bidirectional=True, batch_first=True, seed=1).eval()
    x = np.random.default_rng(0).standard_normal((12, TABLE["small_min_t"], 2)).astype(np.float32)
    ref, _ = layer(x, n_threads=1)
    used = []
    run = type(layer)._eval_fast_run

    def spy(self, x_, nth, ws, last, kp):
        used.append(kp.threads)
        return run(self, x_, nth, ws, last, kp)

    monkeypatch.setattr(type(layer), "_eval_fast_run", spy)
    now = [1.0]
    pol = layer.thread_policy
    pol.perf = lambda: now[0]  # (a frozen clock: every call follows the last at once)
    outs = [layer(x, n_threads=2)[0] for _ in range(12)]
    key = ("small", 12, TABLE["small_min_t"], 2)
    assert key in pol.small and used[0] == 1 and 2 in used  # cold first, then both ways tried
    for out in outs:
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    pol.small[key].ewma = [3e-5, 1e-5]  # several faster: taken (but for the exploring calls)
    used.clear()
    for _ in range(8):
        layer(x, n_threads=2)
    assert used.count(2) >= 6
    now[0] += 1.0  # a pause: one thread
    used.clear()
    layer(x, n_threads=2)
    assert used == [1]
    # a forced plan or one thread asked for: no small-call rule
    assert layer._small_key(12, TABLE["small_min_t"], 1) is None
    layer._forced_plan = layer.plan_for(x, n_threads=2)
    assert layer._small_key(12, TABLE["small_min_t"], 2) is None
