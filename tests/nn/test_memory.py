"""Memory a model keeps between calls: rf.set_workspace_limit, release_memory, and pickling without
transient state (layers, Sequential, Stateful, estimators)."""
import os
import pickle
import textwrap

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import LSTM, LastStep, Linear, Sequential, Stateful, _packs
from tests._child import run_python


@pytest.fixture
def limit():
    """Set a workspace limit for one test and restore "no limit" after it."""
    yield rf.set_workspace_limit
    rf.set_workspace_limit(None)


def _pooled_bytes(layer):
    return sum(ws.nbytes for ws in layer._pool)


def test_workspace_limit_validation():
    with pytest.raises(TypeError, match="nbytes"):
        rf.set_workspace_limit(1.5)
    with pytest.raises(TypeError, match="nbytes"):
        rf.set_workspace_limit(True)
    with pytest.raises(ValueError, match="nbytes"):
        rf.set_workspace_limit(-1)
    assert rf.get_workspace_limit() is None


def test_limit_frees_large_workspaces_and_keeps_small_ones(limit):
    layer = LSTM(8, 32).eval()
    rng = np.random.default_rng(0)
    small, big = rng.standard_normal((2, 5, 8), np.float32), rng.standard_normal((64, 300, 8), np.float32)
    ref_small, ref_big = layer(small)[0], layer(big)[0]
    layer.release_memory()
    layer(small)
    kept = _pooled_bytes(layer) + _packs.kept_bytes(layer)  # (what the layer holds between calls)
    assert 0 < kept < 100_000
    limit(kept + 1000)
    out_big = layer(big)[0]
    assert _pooled_bytes(layer) <= kept + 1000        # the big call's workspace was freed after it
    np.testing.assert_array_equal(out_big, ref_big)   # results do not depend on the limit
    np.testing.assert_array_equal(layer(small)[0], ref_small)
    assert _pooled_bytes(layer) > 0                   # small calls still reuse a workspace
    lengths = np.full(64, 300)
    lengths[::2] = 7
    layer(big, lengths=lengths)
    assert all(p.nbytes <= kept + 1000 for p in layer._plans.values())  # nor is its batch layout kept
    limit(0)
    layer(small)
    assert layer._pool == []


def test_limit_applies_to_training_and_steps(limit):
    layer = LSTM(4, 16)
    x = np.ones((3, 6, 4), np.float32)
    limit(0)
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    layer.eval().step(np.ones((3, 4), np.float32))
    assert layer._pool == []


def test_release_memory_on_layers_sequential_and_estimator():
    model = Sequential(Stateful(LSTM(4, 8)), LastStep(), Linear(8, 2)).eval()
    x = np.ones((5, 7, 4), np.float32)
    ref = model(x)
    assert model[0].layer._pool
    model.release_memory()
    assert model[0].layer._pool == [] and model[0].layer._plans == {}
    np.testing.assert_array_equal(model(x), ref)
    est = rf.LSTMClassifier(hidden_size=8, epochs=1, random_state=0)
    est.release_memory()  # unfitted: nothing to free
    X = np.random.default_rng(0).standard_normal((20, 6, 3)).astype(np.float32)
    est.fit(X, np.arange(20) % 2)
    p = est.predict_proba(X)
    est.release_memory()
    assert est.model_[0].layer._pool == []
    np.testing.assert_array_equal(est.predict_proba(X), p)


def test_pickled_layers_leave_out_caches():
    seq = Sequential(Stateful(LSTM(4, 8)), LastStep(), Linear(8, 2))
    x = np.ones((5, 7, 4), np.float32)
    seq(x)  # training mode: caches for backward, a carried state
    copy = pickle.loads(pickle.dumps(seq))
    assert copy._tuple_out is None and copy[0].last_state is None and copy[0].layer._cache is None
    assert copy[2]._cache is None
    seq.eval()
    np.testing.assert_array_equal(copy.eval()(x), seq(x))
    # a pickled layer still trains: its gradients and an optimizer over them stay connected
    opt = rf.train.optimizers.SGD(seq, lr=0.1)
    seq2, opt2 = pickle.loads(pickle.dumps((seq, opt)))
    seq2.train()
    out = seq2(x)
    seq2.backward(np.ones_like(out))
    opt2.step()
    assert not np.array_equal(seq2.state_dict()["2.weight"], seq.state_dict()["2.weight"])


def _fitted(tmp_path, **kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 15, 4)).astype(np.float32)
    y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    est = rf.LSTMClassifier(hidden_size=32, epochs=2, batch_size=16, random_state=0, **kw).fit(X, y)
    est.predict(rng.standard_normal((256, 40, 4)).astype(np.float32))  # fills the workspaces
    return est, X, y


@pytest.mark.parametrize("kw", [{}, {"dropout": 0.2, "num_layers": 2}, {"tbptt": 5}])
def test_pickled_estimator_is_the_size_of_its_file_and_trains_on(tmp_path, kw):
    est, X, y = _fitted(tmp_path, **kw)
    path = tmp_path / "m.rnnfast"
    est.save(path)
    blob = pickle.dumps(est)
    assert len(blob) <= 1.2 * os.path.getsize(path) + 8192
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    assert copy.classes_.tolist() == est.classes_.tolist() and copy.n_epochs_ == est.n_epochs_
    # training further continues exactly where the original does (weights, optimizer moments, epochs)
    for m in (est, copy):
        m.set_params(warm_start=True, epochs=1).fit(X, y)
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    assert copy.history_ == est.history_


def test_pickled_unfitted_estimator():
    est = rf.GRURegressor(hidden_size=4)
    copy = pickle.loads(pickle.dumps(est))
    assert copy.get_params() == est.get_params() and not hasattr(copy, "model_")


_RSS_CHILD = textwrap.dedent("""
    import gc, os, sys
    import numpy as np, rnnfast as rf

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 10, 16)).astype(np.float32)
    est = rf.LSTMRegressor(hidden_size=64, epochs=1, random_state=0, n_threads=1).fit(X, X[:, 0, 0])
    big = rng.standard_normal((128, 1000, 16)).astype(np.float32)  # 8 MB in, ~70 MB of workspace
    if sys.argv[1] == "limit":
        rf.set_workspace_limit(4 << 20)
    for _ in range(3):
        est.predict(X)
    gc.collect()
    before = rss()
    est.predict(big)
    gc.collect()
    peak = rss()
    if sys.argv[1] == "release":
        est.release_memory()
    gc.collect()
    print(before, peak, rss())
""")


@pytest.mark.parametrize("how", ["release", "limit"])
def test_rss_returns_after_a_large_request(tmp_path, how):
    """RSS (read from /proc/self/statm in a fresh child) comes back within 10% of its level before one
    large request, once release_memory() runs or with a workspace limit set."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    script = tmp_path / "rss.py"
    script.write_text(_RSS_CHILD)
    res = run_python([str(script), how], cwd=str(tmp_path), timeout=120)
    assert res.returncode == 0, res.stderr
    before, peak, after = map(int, res.stdout.split())
    if how == "release":
        assert peak > before + 30 * 2**20  # the request did cost memory while it was kept
    assert after <= 1.10 * before, (before / 2**20, peak / 2**20, after / 2**20)


def test_joblib_round_trip_with_memmap(tmp_path):
    """joblib (GridSearchCV, MLflow) stores what pickling keeps; a copy loaded memory-mapped read-only
    predicts identically and trains on (the arrays are copied into the rebuilt network)."""
    joblib = pytest.importorskip("joblib")
    est, X, y = _fitted(tmp_path)
    path = tmp_path / "m.joblib"
    joblib.dump(est, path)
    copy = joblib.load(path, mmap_mode="r")
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    copy.set_params(warm_start=True, epochs=1).fit(X, y)
    assert copy.n_epochs_ == est.n_epochs_ + 1


def test_release_memory_keeps_the_thread_policy():
    layer = LSTM(3, 4).eval()
    policy = layer.thread_policy
    layer(np.ones((1, 5, 3), np.float32))
    layer.release_memory()
    assert layer.thread_policy is policy and layer._pool == []
    assert pickle.loads(pickle.dumps(layer)).thread_policy is not policy
