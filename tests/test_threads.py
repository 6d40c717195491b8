"""rnnfast.set_num_threads / get_num_threads and the default thread count."""
import os

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _threads
from rnnfast._kernels import _recurrent


def test_default_is_available_cpus():
    rf.set_num_threads(None)
    n = rf.get_num_threads()
    assert n == _threads.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_set_and_reset():
    try:
        rf.set_num_threads(3)
        assert rf.get_num_threads() == 3
    finally:
        rf.set_num_threads(None)
    assert rf.get_num_threads() == _threads.available_cpus()


@pytest.mark.parametrize("bad,err", [(0, ValueError), (-1, ValueError), (2.0, TypeError), ("2", TypeError),
                                     (True, TypeError)])
def test_set_refuses_bad_values(bad, err):
    with pytest.raises(err):
        rf.set_num_threads(bad)


def test_cgroup_quota_caps(monkeypatch):
    monkeypatch.setattr(_threads, "_cgroup_quota", lambda: 1)
    assert _threads.available_cpus(refresh=True) == 1
    monkeypatch.undo()
    _threads.available_cpus(refresh=True)


def test_blas_held_to_one_thread_only_during_calls():
    # scipy's wheels ship OpenBLAS: rnnfast holds it to one thread while a call runs, then restores it
    assert _recurrent.has_blas_thread_control()
    before = _recurrent.blas_threads_now()
    m = rf.nn.GRU(4, 8, seed=0)
    x = np.ones((8, 3, 4), np.float32)
    out, _ = m(x)
    m.backward(np.ones_like(out))
    assert _recurrent.blas_threads_now() == before


def test_results_do_not_depend_on_default_thread_count():
    m = rf.nn.LSTM(4, 8, seed=0, dtype=np.float64).eval()
    x = np.random.default_rng(0).standard_normal((16, 5, 4))
    try:
        rf.set_num_threads(1)
        a = m(x)[0]
        rf.set_num_threads(2)
        b = m(x)[0]
    finally:
        rf.set_num_threads(None)
    np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_after_threads_runs_single_threaded():
    """GNU OpenMP cannot start threads again in a forked child (its first parallel region would wait
    forever): rnnfast runs such a child single-threaded, with the same answers (gunicorn --preload)."""
    import signal
    import warnings as w

    m = rf.nn.LSTM(16, 32, seed=0).eval()
    x = np.ones((8, 10, 16), np.float32)
    a = m(x, n_threads=2)[0]
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 4
        try:
            signal.alarm(20)
            with w.catch_warnings(record=True) as caught:
                w.simplefilter("always")
                b = m(x, n_threads=2)[0]
            ok = np.allclose(a, b, rtol=1e-6, atol=1e-7) and any("forked" in str(c.message) for c in caught)
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
