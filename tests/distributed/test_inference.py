"""rnnfast.distributed.predict: the same outputs as the model in this process, in input order, on every
backend (2 local workers); Ray is started once for the module, Dask's local cluster once per call."""
import importlib.util
import os
import tempfile

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.distributed import inference, predict

# the folder of the rnnfast these tests import (installed, or a checkout on PYTHONPATH), for Ray's workers
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rf.__file__)))
HAVE_RAY = importlib.util.find_spec("ray") is not None
HAVE_DASK = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A fitted model file, 10 input files of different sizes and the model's own outputs for them."""
    d = tmp_path_factory.mktemp("inference")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3)).astype(np.float32)
    model = rf.LSTM(hidden_size=8, epochs=1, random_state=0, n_threads=1).fit(X, rng.integers(0, 3, 40))
    model.save(d / "model.rnnfast")
    paths = []
    for i in range(10):
        paths.append(str(d / f"x{i}.npy"))
        np.save(paths[-1], rng.standard_normal((3 + i, 6, 3)).astype(np.float32))
    expected = [model.predict_proba(np.load(p)) for p in paths]
    return str(d / "model.rnnfast"), paths, expected


@pytest.fixture(scope="module")
def ray_started():
    if not HAVE_RAY:
        pytest.skip('needs Ray (pip install "rnnfast[ray]")')
    import ray
    path = os.pathsep.join(filter(None, [PKG_PARENT, os.environ.get("PYTHONPATH")]))
    # Ray puts the driver's working directory first on its workers' sys.path: start it outside the checkout,
    # whose rnnfast/ is uncompiled unless built in place (tests/_source_tree.py)
    cwd = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    finally:
        os.chdir(cwd)
    yield
    ray.shutdown()


def _check(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_processes_paths_and_arrays_in_input_order(files):
    model_path, paths, expected = files
    seen = []
    got = predict(model_path, paths, num_workers=2, backend="processes", method="predict_proba",
                  progress=lambda done, total: seen.append((done, total)))
    _check(got, expected)
    assert seen == [(i, 10) for i in range(1, 11)]
    arrays = (np.load(p) for p in paths)  # an iterable without a length
    _check(predict(model_path, arrays, backend="processes", method="predict_proba", threads=1), expected)
    labels = predict(model_path, paths[:3], backend="processes", num_workers=1)
    assert [lab.shape for lab in labels] == [(3,), (4,), (5,)]


def test_ray_actors(files, ray_started):
    import ray
    model_path, paths, expected = files
    # paths and arrays mixed in one call, one input a task (actors start once per call: that is most of its time)
    inputs = [p if i % 2 else np.load(p) for i, p in enumerate(paths)]
    _check(predict(model_path, inputs, num_workers=2, backend="ray", method="predict_proba", threads=1,
                   chunk_size=1), expected)
    # a pool started with no inputs, as a service does; its actors' OpenMP / BLAS pools pinned to `threads`
    assert predict(model_path, [], num_workers=2, backend="ray", threads=1, keep_workers=True) == []
    (actors,) = inference._RAY_POOLS.values()
    env = ray.get([a.__ray_call__.remote(lambda self: [os.environ.get(v) for v in inference._THREAD_VARS])
                   for a in actors])
    assert env == [["1"] * 3] * 2
    seen = []
    _check(predict(model_path, paths[::-1], num_workers=2, backend="ray", method="predict_proba", threads=1,
                   progress=lambda done, total: seen.append((done, total))), expected[::-1])  # on the kept actors
    assert seen == [(i, 10) for i in range(1, 11)]
    assert list(inference._RAY_POOLS.values()) == [actors]
    inference.release()
    assert not inference._RAY_POOLS


def test_ray_a_model_that_does_not_load_fails_once(ray_started, tmp_path):
    bad = tmp_path / "bad.rnnfast"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="could not load"):
        predict(bad, [str(bad)], num_workers=1, backend="ray", threads=1)
    assert not inference._RAY_POOLS


@pytest.mark.skipif(not HAVE_DASK, reason='needs dask.distributed (pip install "rnnfast[dask]")')
def test_dask_workers(files):
    """The same contract as Ray's: paths and arrays, input order, progress, retries."""
    model_path, paths, expected = files
    inputs = [p if i % 2 else np.load(p) for i, p in enumerate(paths)]
    seen = []
    _check(predict(model_path, inputs, num_workers=2, backend="dask", method="predict_proba",
                   progress=lambda done, total: seen.append(done)), expected)
    assert seen == list(range(1, 11))
    with pytest.raises(RuntimeError, match=r"input 1 failed 2 time\(s\); last error: FileNotFoundError"):
        predict(model_path, [paths[0], paths[0] + ".missing.npy"], num_workers=2, backend="dask", retries=1)


def test_a_failed_input_is_retried_then_reported(files, tmp_path):
    model_path, paths, _ = files
    bad = str(tmp_path / "missing.npy")
    with pytest.raises(RuntimeError, match=r"input 1 failed 3 time\(s\); last error: FileNotFoundError"):
        predict(model_path, [paths[0], bad, paths[1]], backend="processes", retries=2)
    with pytest.raises(RuntimeError, match=r"input 0 failed 1 time"):
        predict(model_path, [bad], backend="processes", retries=0)


def _flaky_runner(calls, fail_until=3):
    """A runner of _drive whose one-input tasks of odd inputs fail until their ``fail_until``-th try, and whose
    tasks of several inputs fail when they hold an odd input."""
    from concurrent.futures import Future

    def submit(items):
        f = Future()
        for item in items:
            calls[item] = calls.get(item, 0) + 1
        if any(item % 2 and (len(items) > 1 or calls[item] < fail_until) for item in items):
            f.set_exception(OSError("worker lost"))
        else:
            f.set_result([np.array([item]) for item in items])
        return f

    return inference._Futures(submit, window=3)


def test_flaky_tasks_succeed_on_a_retry():
    calls = {}
    tasks = inference._chunks(iter(range(7)), None, None, 2)
    got = inference._drive(_flaky_runner(calls), tasks, retries=2, progress=lambda: None)
    assert [int(g[0]) for g in got] == list(range(7))
    assert calls == {i: (3 if i % 2 else 1) for i in range(7)}


def test_a_failed_chunk_is_run_again_one_input_a_task():
    calls, seen = {}, []
    tasks = inference._chunks(list(range(8)), 8, 4, 2)  # [0..3], [4..7]: both fail as chunks
    got = inference._drive(_flaky_runner(calls, fail_until=1), tasks, retries=0, progress=lambda: seen.append(1))
    assert [int(g[0]) for g in got] == list(range(8)) and len(seen) == 8
    assert calls == {i: 2 for i in range(8)}  # once in its chunk, once on its own
    with pytest.raises(RuntimeError, match=r"input [13] failed 1 time\(s\)"):
        inference._drive(_flaky_runner({}, fail_until=3), inference._chunks(list(range(4)), 4, 2, 1), retries=0,
                         progress=lambda: None)


class _FakeRay:
    """What _RayActors uses of ray: wait (everything submitted is done), get and RayActorError."""

    class exceptions:
        class RayActorError(Exception):
            pass

    def __init__(self):
        self.results = {}

    @staticmethod
    def wait(refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(self.results[ref], Exception):
            raise self.results[ref]
        return self.results[ref]


class _FakeActor:
    def __init__(self, ray, dead=False):
        self.ray, self.dead, self.calls = ray, dead, []
        self.predict = self  # actor.predict.remote(items, method)

    def remote(self, items, method):
        ref = object()
        self.calls.append(list(items))
        self.ray.results[ref] = (self.ray.exceptions.RayActorError("died") if self.dead
                                 else [np.array([x]) for x in items])
        return ref


def test_ray_tasks_go_to_the_least_busy_live_actor():
    ray = _FakeRay()
    live, dead = _FakeActor(ray), _FakeActor(ray, dead=True)
    got = inference._drive(inference._RayActors(ray, [live, dead], "predict"),
                           inference._chunks(range(8), 8, 1, 2), retries=1, progress=lambda: None)
    assert [int(g[0]) for g in got] == list(range(8))
    assert dead.calls == [[1], [3]]  # alternately while both looked alive, never after it failed
    assert live.calls == [[0], [2], [1], [3], [4], [5], [6], [7]]


def test_chunks_shrink_to_one_input():
    sizes = [len(t) for t in inference._chunks(range(64), 64, None, 2)]
    assert sum(sizes) == 64 and sizes[0] == 8 and sizes[-6:] == [1] * 6
    assert sizes == sorted(sizes, reverse=True) and len(sizes) < 32
    assert [len(t) for t in inference._chunks(iter(range(5)), None, None, 2)] == [1] * 5
    assert [len(t) for t in inference._chunks(range(5), 5, 2, 2)] == [2, 2, 1]
    assert [t[0] for t in inference._chunks(range(5), 5, 2, 2)] == [(0, 0), (2, 2), (4, 4)]


def test_bad_arguments(files):
    model_path, paths, _ = files
    with pytest.raises(ValueError, match="backend"):
        predict(model_path, paths, backend="spark")
    with pytest.raises(TypeError, match="num_workers"):
        predict(model_path, paths, num_workers=1.5)
    with pytest.raises(ValueError, match="num_workers"):
        predict(model_path, paths, num_workers=0)
    with pytest.raises(TypeError, match="list of .npy paths"):
        predict(model_path, paths[0])
    with pytest.raises(TypeError, match="list of .npy paths"):
        predict(model_path, 3)
    with pytest.raises(FileNotFoundError):
        predict(model_path + ".nope", paths)
    with pytest.raises(TypeError, match="model_path"):
        predict(None, paths)
    with pytest.raises(ValueError, match="address"):
        predict(model_path, paths, backend="processes", address="x:1")
