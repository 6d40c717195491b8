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
