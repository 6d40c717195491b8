"""One training-mode layer used from several threads at once.

Before: ``backward`` used whichever thread's forward had run last (363 of 400 calls with a 0.5 ms gap gave
another thread's gradient, silently) and the rest raised a misleading BackwardStateError. Now each thread's
``backward`` differentiates that thread's own ``forward`` (per-thread caches, as PyTorch's autograd keeps a
graph per call) and gradients accumulate under the layer's lock, so the sum is the serial sum.
"""
import threading
import time

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import BackwardStateError

N_THREADS, ROUNDS = 4, 15


def _lstm():
    return rf.nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)


def _gru():
    return rf.nn.GRU(3, 5, dtype=np.float64, seed=1)


def _linear():
    return rf.nn.Linear(3, 5, dtype=np.float64, seed=2)


def _sequential():
    return rf.nn.Sequential(rf.nn.LSTM(3, 4, dtype=np.float64, seed=3), rf.nn.MeanPool(),
                            rf.nn.Linear(4, 5, dtype=np.float64, seed=4))


def _first(res):
    return res[0] if isinstance(res, tuple) else res


def _inputs(make, k):
    """Thread k's input (its own shape and lengths, so a mixed-up cache cannot pass) and output gradient."""
    rng = np.random.default_rng(100 + k)
    B, T = 2 + k % 3, 3 + k
    x = rng.standard_normal((B, T, 3))
    lengths = rng.integers(1, T + 1, size=B) if make is not _linear else None
    layer = make()
    out = _first(layer(x) if lengths is None else layer(x, lengths=lengths))
    return x, lengths, rng.standard_normal(out.shape)


def _run(layer, x, lengths, dout, gap_s):
    out = _first(layer(x) if lengths is None else layer(x, lengths=lengths))
    time.sleep(gap_s)  # another thread's forward lands here
    return out, _first(layer.backward(dout))


def _run_threads(target, n, timeout=60.0):
    errors, threads = [], []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    for k in range(n):
        threads.append(threading.Thread(target=wrap, args=(k,), daemon=True))
        threads[-1].start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("make", [_lstm, _gru, _linear, _sequential])
def test_each_thread_backward_uses_its_own_forward(make):
    layer = make()
    data = [_inputs(make, k) for k in range(N_THREADS)]
    # the serial answers, and the gradient sum they give
    want, grads_one = [], []
    for x, lengths, dout in data:
        layer.zero_grad()
        want.append(_run(layer, x, lengths, dout, 0.0))
        grads_one.append({k: g.copy() for k, g in layer.grads.items()})
    layer.zero_grad()
    got = [[] for _ in range(N_THREADS)]
    start = threading.Barrier(N_THREADS)

    def work(k):
        x, lengths, dout = data[k]
        start.wait(timeout=30)
        for _ in range(ROUNDS):
            got[k].append(_run(layer, x, lengths, dout, 0.0005))

    _run_threads(work, N_THREADS)
    for k in range(N_THREADS):
        for out, dx in got[k]:
            np.testing.assert_array_equal(out, want[k][0])
            np.testing.assert_allclose(dx, want[k][1], rtol=1e-12, atol=1e-14)
    for name, g in layer.grads.items():
        total = ROUNDS * sum(one[name] for one in grads_one)
        np.testing.assert_allclose(g, total, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("make", [_lstm, _linear, _sequential])
def test_backward_in_a_thread_without_a_forward_says_so(make):
    """A thread's cache is its own: backward in a thread that ran no forward is refused, with a message that
    says caches are per thread, even while another thread's forward is pending."""
    layer = make()
    x, lengths, dout = _inputs(make, 0)
    _first(layer(x) if lengths is None else layer(x, lengths=lengths))
    caught = []

    def other(_):
        with pytest.raises(BackwardStateError, match="in this thread") as e:
            layer.backward(dout)
        caught.append(e)

    _run_threads(other, 1)
    assert caught
    layer.backward(dout)  # the main thread's forward is still there, untouched


def test_eval_and_load_state_dict_drop_every_threads_cache():
    layer = _lstm()
    x, lengths, dout = _inputs(_lstm, 0)
    ready, go = threading.Event(), threading.Event()
    result = []

    def other(_):
        layer(x, lengths=lengths)
        ready.set()
        go.wait(timeout=30)
        try:
            layer.backward(dout)
        except BackwardStateError as e:
            result.append(e)

    t = threading.Thread(target=other, args=(0,), daemon=True)
    t.start()
    assert ready.wait(timeout=30)
    layer.load_state_dict(layer.state_dict())  # new weights: no cache of the old ones may be used
    go.set()
    t.join(timeout=30)
    assert not t.is_alive() and len(result) == 1
