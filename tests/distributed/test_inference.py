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
    model_path, paths, expected = files
    # paths and arrays mixed in one call (actors start once per call: that is most of its time)
    inputs = [p if i % 2 else np.load(p) for i, p in enumerate(paths)]
    _check(predict(model_path, inputs, num_workers=2, backend="ray", method="predict_proba", threads=1,
                   keep_workers=True), expected)
    assert len(inference._RAY_POOLS) == 1
    _check(predict(model_path, paths[::-1], num_workers=2, backend="ray", method="predict_proba", threads=1),
           expected[::-1])  # on the kept actors
    inference.release()
    assert not inference._RAY_POOLS


@pytest.mark.skipif(not HAVE_DASK, reason='needs dask.distributed (pip install "rnnfast[dask]")')
def test_dask_workers(files):
    model_path, paths, expected = files
    _check(predict(model_path, paths, num_workers=2, backend="dask", method="predict_proba"), expected)


def test_a_failed_input_is_retried_then_reported(files, tmp_path):
    model_path, paths, _ = files
    bad = str(tmp_path / "missing.npy")
    with pytest.raises(RuntimeError, match=r"input 1 failed 3 time\(s\); last error: FileNotFoundError"):
        predict(model_path, [paths[0], bad, paths[1]], backend="processes", retries=2)
    with pytest.raises(RuntimeError, match=r"input 0 failed 1 time"):
        predict(model_path, [bad], backend="processes", retries=0)


def test_flaky_tasks_succeed_on_a_retry():
    from concurrent.futures import Future
    calls = {}

    def submit(i, item):
        calls[i] = calls.get(i, 0) + 1
        f = Future()
        if i % 2 and calls[i] < 3:
            f.set_exception(OSError("worker lost"))
        else:
            f.set_result(np.array([item]))
        return f

    got = inference._drive(submit, iter(range(7)), window=3, retries=2, progress=lambda: None)
    assert [int(g[0]) for g in got] == list(range(7))
    assert calls == {i: (3 if i % 2 else 1) for i in range(7)}


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
