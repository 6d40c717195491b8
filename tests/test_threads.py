"""rnnfast.set_num_threads / get_num_threads, the default thread count, its limit, and the BLAS hold."""
import os
import sys
import threading
import time

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
    assert _threads.blas_control() is not None  # looked up at the first call (threadpoolctl is lazy)
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


# ------------------------------------------------------------------------------ the thread-count limit
# Before the limit, n_threads=100000 started that many OpenMP threads in the batch-1 kernel: a segfault
# (50,000: "libgomp: Thread creation failed", exit 1). Every entry point now refuses a count above
# MAX_THREADS with a ValueError naming the argument and the limit, and the kernels clamp to it as well.

def test_max_threads_is_documented_and_public():
    assert rf.MAX_THREADS == _threads.MAX_THREADS == 256
    assert "MAX_THREADS" in (_threads.__doc__ or "") + (rf.set_num_threads.__doc__ or "")


@pytest.mark.parametrize("bad", [rf.MAX_THREADS + 1, 50_000, 100_000, 2**31, 2**63, 2**100])
def test_per_call_n_threads_above_the_limit(bad):
    m = rf.nn.LSTM(8, 8, seed=0).eval()
    with pytest.raises(ValueError, match=rf"n_threads must be at most {rf.MAX_THREADS} .*got {bad}"):
        m(np.zeros((1, 3, 8), np.float32), n_threads=bad)


@pytest.mark.parametrize("bad,err,msg", [(0, ValueError, "n_threads must be >= 1"),
                                         (-5, ValueError, "n_threads must be >= 1"),
                                         (True, TypeError, "n_threads must be an int"),
                                         (2.0, TypeError, "n_threads must be an int"),
                                         ("4", TypeError, "n_threads must be an int"),
                                         (np.int64(300), ValueError, "at most 256")])
def test_per_call_n_threads_bad_values(bad, err, msg):
    m = rf.nn.GRU(4, 4, seed=0)
    with pytest.raises(err, match=msg):
        m(np.zeros((2, 3, 4), np.float32), n_threads=bad)


def test_limit_itself_is_accepted():
    m = rf.nn.RNN(4, 4, seed=0).eval()
    x = np.ones((2, 3, 4), np.float32)
    np.testing.assert_array_equal(m(x, n_threads=rf.MAX_THREADS)[0], m(x, n_threads=1)[0])


@pytest.mark.parametrize("bad", [rf.MAX_THREADS + 1, 2**40])
def test_set_num_threads_above_the_limit(bad):
    with pytest.raises(ValueError, match=rf"n must be at most {rf.MAX_THREADS}"):
        rf.set_num_threads(bad)
    assert rf.get_num_threads() <= rf.MAX_THREADS


def test_default_never_exceeds_the_limit(monkeypatch):
    monkeypatch.setattr(_threads, "_available", 100_000)
    monkeypatch.setattr(_threads, "_num_threads", None)
    assert rf.get_num_threads() == rf.MAX_THREADS


def test_estimator_and_trainer_refuse_too_many_threads():
    X = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(ValueError, match="n_threads must be at most"):
        rf.LSTM(hidden_size=2, epochs=1, verbose=0, n_threads=100_000).fit(X, np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="n_threads must be at most"):
        rf.train.Trainer(rf.nn.LSTM(2, 2), None, n_threads=100_000)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        rf.train.Trainer(rf.nn.LSTM(2, 2), None, n_threads=True)


_MODEL_FILE_CHILD = r"""
import json, sys, zipfile
import numpy as np, rnnfast as rf
from rnnfast.io import FormatError
X = np.random.default_rng(0).standard_normal((8, 5, 3)).astype(np.float32)
m = rf.LSTM(hidden_size=4, epochs=1, verbose=0, random_state=0).fit(X, np.arange(8) % 2)
m.save("good.rnnfast")
with zipfile.ZipFile("good.rnnfast") as z:
    data = {n: z.read(n) for n in z.namelist()}
meta = json.loads(data["rnnfast.json"])
meta["config"]["n_threads"] = 100000
data["rnnfast.json"] = json.dumps(meta).encode()
with zipfile.ZipFile("bad.rnnfast", "w") as z:
    for n, b in data.items():
        z.writestr(n, b)
np.save("X.npy", X[:1])
try:
    rf.load("bad.rnnfast").predict(X[:1])
except (FormatError, ValueError) as e:
    print("REFUSED", type(e).__name__, e)
"""


def test_model_file_with_too_many_threads_is_refused_not_a_crash(tmp_path):
    """A model file whose config says n_threads=100000 loaded, then predict on one sequence segfaulted."""
    from tests._child import run_python
    res = run_python(["-c", _MODEL_FILE_CHILD], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REFUSED" in res.stdout and "n_threads" in res.stdout and "256" in res.stdout, res.stdout
    # and the command line (exit -11 before): an error exit that names the setting
    cli = run_python(["-m", "rnnfast", "predict", "bad.rnnfast", "X.npy", "-o", "out.npy"], cwd=tmp_path, timeout=120)
    assert cli.returncode > 0 and "n_threads" in cli.stderr, (cli.returncode, cli.stderr[-2000:])


_KERNEL_CAP_CHILD = r"""
import numpy as np, rnnfast as rf
from rnnfast._kernels import _recurrent as k
m = rf.nn.LSTM(128, 128, seed=0).eval()
x = np.ones((1, 8, 128), np.float32)
out = m._run(x, None, None, None, False, 100000, m._acquire())[0]   # past the Python-side check
a = np.ones((64, 64), np.float32); o = np.empty_like(a)
k.matmul(a, a, o, nthreads=100000)
print("OK", k.set_max_threads(256))
"""


def test_kernels_clamp_a_count_that_skipped_validation(tmp_path):
    """Defence in depth: the kernels start at most MAX_THREADS threads whatever they are given."""
    from tests._child import run_python
    res = run_python(["-c", _KERNEL_CAP_CHILD], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.split() == ["OK", str(rf.MAX_THREADS)]


# ------------------------------------------------------------------------------ which BLAS is held
# The hold used to find scipy's OpenBLAS by a file-name glob in scipy.libs, so a conda or Debian scipy (MKL,
# a system OpenBLAS) got none. It now resolves the thread functions through cython_blas's own library
# handle (threadpoolctl, when installed, picks them). numpy's and scipy's wheels each bundle an OpenBLAS:
# threadpoolctl's view of both is the oracle for which one rnnfast holds.

def _blas_libs():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    libs = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    held = _threads.blas_control()
    if held is None:
        pytest.skip("scipy's BLAS has no thread control here")
    scipy_libs = [c for c in libs if os.path.realpath(c.filepath) == held.path]
    numpy_libs = [c for c in libs if "numpy" in os.path.relpath(c.filepath, numpy_dir).split(os.sep)[0]]
    if len(scipy_libs) != 1 or len(numpy_libs) != 1 or scipy_libs[0] is numpy_libs[0]:
        pytest.skip("needs numpy and scipy each with its own BLAS (the wheels)")
    return scipy_libs[0], numpy_libs[0]


def test_the_held_blas_is_the_one_scipy_calls_not_numpys():
    scipy_lib, numpy_lib = _blas_libs()
    assert "scipy" in scipy_lib.filepath
    ctl = _threads.blas_control()
    assert ctl.api == scipy_lib.internal_api and ctl.found_by == "threadpoolctl"
    before = scipy_lib.get_num_threads(), numpy_lib.get_num_threads()
    try:
        for s, n in ((2, 1), (1, 2)):  # the getter the kernels hold with follows scipy's library only
            scipy_lib.set_num_threads(s)
            numpy_lib.set_num_threads(n)
            assert _recurrent.blas_threads_now() == s == scipy_lib.get_num_threads()
    finally:
        scipy_lib.set_num_threads(before[0])
        numpy_lib.set_num_threads(before[1])


def test_scipys_blas_is_held_at_one_thread_during_a_call_and_numpys_is_untouched():
    scipy_lib, numpy_lib = _blas_libs()
    before = scipy_lib.get_num_threads(), numpy_lib.get_num_threads()
    scipy_lib.set_num_threads(2)
    numpy_lib.set_num_threads(2)
    m = rf.nn.LSTM(128, 128, seed=0).eval()
    x = np.ones((32, 300, 128), np.float32)
    seen_scipy, seen_numpy = set(), set()
    done = threading.Event()

    def call():
        try:
            for _ in range(3):
                m(x, n_threads=1)
        finally:
            done.set()

    t = threading.Thread(target=call, daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            seen_scipy.add(scipy_lib.get_num_threads())
            seen_numpy.add(numpy_lib.get_num_threads())
            time.sleep(0.0005)
        t.join(timeout=60)
        assert not t.is_alive()
        assert 1 in seen_scipy, seen_scipy  # held while the kernel ran
        assert seen_numpy == {2}  # never touched
        assert scipy_lib.get_num_threads() == 2  # restored
    finally:
        scipy_lib.set_num_threads(before[0])
        numpy_lib.set_num_threads(before[1])


def test_without_threadpoolctl_the_lookup_finds_the_same_functions(monkeypatch):
    with_tpc = _threads.find_blas_control()
    assert with_tpc is not None
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import threadpoolctl now fails
    alone = _threads.find_blas_control()
    assert alone is not None and alone.found_by == "dlsym"
    assert (alone.path, alone.api, alone.setter, alone.getter) == \
        (with_tpc.path, with_tpc.api, with_tpc.setter, with_tpc.getter)
    assert "scipy" in alone.path


def test_a_blas_without_known_thread_control_is_left_alone(monkeypatch):
    monkeypatch.setattr(_threads, "_THREAD_SYMBOLS", {"openblas": [("no_such_setter", "no_such_getter")]})
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    assert _threads.find_blas_control() is None
