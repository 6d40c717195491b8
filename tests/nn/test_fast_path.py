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
