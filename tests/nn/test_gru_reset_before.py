"""rnnfast.nn.GRU(reset_after=False), the "reset before" GRU (Keras ``reset_after=False``, ONNX
``linear_before_reset=0``): every kernel path against the plain-numpy reference, finite differences,
``step``, Keras 3, and ``reset_after`` wherever the layer's or an estimator's arguments are kept."""
import json
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnfast as rf
from rnnfast._kernels import _recurrent as kern
from rnnfast._planner import TABLE, Call, Cell, Plan, candidates, plan_call
import reference as ref
from gradcheck import numeric_grad
from nn.test_recurrent import _PLANS, back, problem, run

CELL = "gru_rb"  # the reference's name for it
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
# the batch-1 kernel, threads sharing out the units (two barriers a step here), rows in place or panels
_LATENCY = [Plan("latency", "step", "units", 2), Plan("latency", "gemm", "units", 2),
            Plan("latency", "step", "units", 2, panels=True), Plan("latency", "gemm", "none", 1, panels=True),
            Plan("latency", "step", "none", 1)]
_BLAS = [Plan("blas", "gemm", "rows", 2), Plan("blas", "gemm", "none", 1)]


def gru(I, H, **kw):
    return rf.nn.GRU(I, H, reset_after=False, **kw)


def as64(a):
    return None if a is None else np.asarray(a, np.float64)


def check_against_reference(m, x, h0, lengths, dout, dh, L, bidir, tol, n_threads=None):
    """Forward (inference and training) and backward of ``m`` against the float64 reference."""
    sd = {k: as64(v) for k, v in m.state_dict().items()}
    ro, rh, _ = ref.forward(CELL, as64(x), sd, L, bidir, as64(h0), None, lengths)
    for training in (False, True):
        m.train(training)
        out, hn, _ = run(m, x, h0, None, lengths, n_threads=n_threads)
        np.testing.assert_allclose(out, ro, **tol)
        np.testing.assert_allclose(hn, rh, **tol)
        if lengths is not None:
            for b, n in enumerate(lengths):
                assert np.all(out[b, n:] == 0)
    dx, dh0, _ = back(m, dout, dh, None, n_threads=n_threads)
    rdx, rdh0, _, rg = ref.backward(CELL, as64(x), sd, as64(dout), as64(dh), None, L, bidir, as64(h0), None,
                                    lengths)
    gtol = tol if x.dtype == np.float64 else dict(rtol=1e-4, atol=5e-5)
    np.testing.assert_allclose(dx, rdx, **gtol)
    np.testing.assert_allclose(dh0, rdh0, **gtol)
    assert set(m.grads) == set(rg)
    for k in rg:
        np.testing.assert_allclose(m.grads[k], rg[k], err_msg=k, **gtol)


# ---------------------------------------------------------------------------------------------------
# the reference itself, and the default plans


def test_reference_is_the_reset_before_formula_and_differs_from_reset_after():
    rng = np.random.default_rng(0)
    I, H = 3, 4
    p = {"weight_ih_l0": rng.standard_normal((3 * H, I)), "weight_hh_l0": rng.standard_normal((3 * H, H)),
         "bias_ih_l0": rng.standard_normal(3 * H), "bias_hh_l0": rng.standard_normal(3 * H)}
    x, h = rng.standard_normal((1, 1, I)), rng.standard_normal((1, 1, H))

    def sig(a):
        return 1 / (1 + np.exp(-a))

    W, U, b, c = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
    gi, hh = W @ x[0, 0] + b, h[0, 0]
    r = sig(gi[:H] + U[:H] @ hh + c[:H])
    z = sig(gi[H:2 * H] + U[H:2 * H] @ hh + c[H:2 * H])
    n = np.tanh(gi[2 * H:] + U[2 * H:] @ (r * hh) + c[2 * H:])
    want = (1 - z) * n + z * hh
    out, _, _ = ref.forward(CELL, x, p, h0=h)
    np.testing.assert_allclose(out[0, 0], want, rtol=1e-12)
    assert not np.allclose(ref.forward("gru", x, p, h0=h)[0], out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L,bidir", [(1, False), (1, True), (2, False), (3, True)])
@pytest.mark.parametrize("ragged", [False, True])
def test_matches_reference(dtype, L, bidir, ragged):
    x, h0, _, lengths, dout, dh, _ = problem("gru", 5, 6, 4, 3, L, bidir, dtype, 7, ragged)
    m = gru(4, 3, num_layers=L, bidirectional=bidir, dtype=dtype, seed=3)
    check_against_reference(m, x, h0, lengths, dout, dh, L, bidir, TOL[dtype])


# ---------------------------------------------------------------------------------------------------
# every float32 kernel path, forced


@pytest.mark.parametrize("plan", _PLANS + _BLAS, ids=str)
@pytest.mark.parametrize("B,H", [(2, 40), (5, 33), (3, 70)])
@pytest.mark.parametrize("ragged", [False, True])
def test_float32_forced_plans(plan, B, H, ragged):
    """The few-rows kernel, the packed row tasks (either product layout) and BLAS per step; H = 33 and 70
    leave shares of units that end inside a 32-column panel; a row of length 1 ends at t = 0."""
    x, h0, _, lengths, dout, dh, _ = problem("gru", B, 7, 9, H, 2, False, np.float32, 40 + B, ragged)
    if ragged:
        lengths[0] = 1
    m = gru(9, H, num_layers=2, seed=41 + B)
    m._forced_plan = plan
    assert m.plan_for(x) == plan
    check_against_reference(m, x, h0, lengths, dout, dh, 2, False, TOL[np.float32], plan.threads)


@pytest.mark.parametrize("plan", [p for p in _PLANS + _BLAS if p.kernel != "units"], ids=str)
def test_float32_forced_row_task_plans_bidirectional(plan):
    x, h0, _, lengths, dout, dh, _ = problem("gru", 6, 7, 9, 24, 2, True, np.float32, 7)
    m = gru(9, 24, num_layers=2, bidirectional=True, seed=8)
    m._forced_plan = plan
    check_against_reference(m, x, h0, lengths, dout, dh, 2, True, TOL[np.float32], plan.threads)


@pytest.mark.parametrize("plan", _LATENCY, ids=str)
@pytest.mark.parametrize("H,T", [(40, 9), (33, 40)])
def test_float32_batch1_kernel(plan, H, T):
    x, h0, _, lengths, dout, dh, _ = problem("gru", 1, T, 9, H, 2, False, np.float32, 3, ragged=False)
    m = gru(9, H, num_layers=2, seed=4)
    m._forced_plan = plan
    check_against_reference(m, x, h0, lengths, dout, dh, 2, False, TOL[np.float32], plan.threads)


@pytest.mark.parametrize("plan", [Plan("units", "step", "units", 2), Plan("latency", "step", "units", 2),
                                  Plan("latency", "gemm", "units", 2, panels=True)], ids=str)
def test_unit_sharing_kernels_go_on_alone_after_a_long_wait(plan):
    """Every wait counts as long (spin 0): thread 0 goes on alone from a barrier, which for this cell may be
    either of a step's two, forward and backward, with the reference's results."""
    B = 1 if plan.kernel == "latency" else 3
    x, h0, _, lengths, dout, dh, _ = problem("gru", B, 7, 9, 40, 2, False, np.float32, 5, ragged=B > 1)
    m = gru(9, 40, num_layers=2, seed=6)
    m._forced_plan = plan
    old = kern.set_latency_spin_ns(0)
    try:
        check_against_reference(m, x, h0, lengths, dout, dh, 2, False, TOL[np.float32], plan.threads)
    finally:
        kern.set_latency_spin_ns(old)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("plan", [Plan("units", "step", "units", 2), Plan("packed", "step", "rows", 2)], ids=str)
def test_inference_reads_and_writes_in_place(batch_first, plan):
    """Equal lengths in inference: the kernels making x_t W_ih^T step by step read the caller's input and
    write its output where they are; the same answer as BLAS on packed copies."""
    x = np.random.default_rng(3).standard_normal((8, 6, 5)).astype(np.float32)
    m = gru(5, 40, batch_first=batch_first, seed=2).eval()
    xin = x if batch_first else np.ascontiguousarray(x.swapaxes(0, 1))
    m._forced_plan = Plan("blas", "gemm", "none", 1)
    want = m(xin)[0]
    m._forced_plan = plan
    np.testing.assert_allclose(m(xin)[0], want, rtol=1e-5, atol=1e-6)


def test_reset_after_true_is_todays_gru_bit_for_bit():
    x = np.random.default_rng(1).standard_normal((3, 8, 5)).astype(np.float32)
    a, b = rf.nn.GRU(5, 16, seed=2).eval(), rf.nn.GRU(5, 16, seed=2, reset_after=True).eval()
    assert a.reset_after and a._cell is Cell.GRU
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    c = gru(5, 16, seed=2).eval()
    c.load_state_dict(a.state_dict())
    assert np.abs(c(x)[0] - a(x)[0]).max() > 1e-3  # the two forms differ


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 6), T=st.integers(1, 7), I=st.integers(1, 5), H=st.integers(1, 9), L=st.integers(1, 2),
       bidir=st.booleans(), data=st.data())
def test_hypothesis_shapes_and_plans(B, T, I, H, L, bidir, data):
    """Any shape (H down to 1: a thread with no units), any lengths, any float32 plan the kernels take for
    it (batch 1: the latency kernel; one direction: the few-rows one), against the reference."""
    lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    plans = _BLAS + [p for p in _PLANS if p.kernel == "packed" or not bidir]
    if B == 1 and not bidir:
        plans += _LATENCY
    plan = data.draw(st.sampled_from(plans))
    x, h0, _, _, dout, dh, _ = problem("gru", B, T, I, H, L, bidir, np.float32, B * 100 + T)
    m = gru(I, H, num_layers=L, bidirectional=bidir, seed=1)
    m._forced_plan = plan
    check_against_reference(m, x, h0, lengths, dout, dh, L, bidir, TOL[np.float32], plan.threads)


# ---------------------------------------------------------------------------------------------------
# finite differences (float64): inputs, initial states, parameters; t = 0 and padded rows


@pytest.mark.parametrize("L,bidir,dropout,bias", [(1, False, 0.0, True), (2, True, 0.0, True),
                                                  (2, True, 0.3, False)])
def test_finite_differences(L, bidir, dropout, bias):
    B, T, I, H = 4, 4, 3, 3
    x, h0, _, _, dout, dh, _ = problem("gru", B, T, I, H, L, bidir, np.float64, 21)
    lengths = np.array([T, 1, 3, 2])  # a row ending at t = 0; rows 1-3 are padded
    m = gru(I, H, num_layers=L, bidirectional=bidir, dropout=dropout, bias=bias, dtype=np.float64, seed=2)
    m._rng = np.random.default_rng(99)
    run(m, x, h0, None, lengths)
    dx, dh0, _ = back(m, dout, dh, None)

    def f():
        m._rng = np.random.default_rng(99)  # the same dropout masks every evaluation
        out, hn, _ = run(m, x, h0, None, lengths)
        m._cache = None
        return np.sum(out * dout) + np.sum(hn * dh)

    checks = [("x", x, dx), ("h0", h0, dh0)] + [(k, p, m.grads[k]) for k, p in m._params.items()]
    for name, arr, analytic in checks:
        np.testing.assert_allclose(analytic, numeric_grad(f, arr), rtol=1e-6, atol=1e-7, err_msg=name)
    for b, n in enumerate(lengths):
        assert np.all(dx[b, n:] == 0)


# ---------------------------------------------------------------------------------------------------
# streaming step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,H,n_threads", [(1, 40, 1), (1, 40, 2), (3, 5, 2), (9, 40, 2)])
def test_step_matches_sequence(dtype, B, H, n_threads, monkeypatch):
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)  # batch 1 shares out the units too
    T, I, L = 6, 4, 2
    x, h0, _, _, _, _, _ = problem("gru", B, T, I, H, L, False, dtype, 3)
    m = gru(I, H, num_layers=L, dtype=dtype, seed=6).eval()
    out, hn, _ = run(m, x, h0, None, None, n_threads=n_threads)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    state = h0
    for t in range(T):
        y, state = m.step(x[:, t], state, n_threads=n_threads)
        np.testing.assert_allclose(y, out[:, t], **tol)
    np.testing.assert_allclose(state, hn, **tol)
    y1, _ = m.step(x[0, 0])  # unbatched, zero state
    np.testing.assert_allclose(y1, m.step(x[:1, 0])[0][0], **tol)
    with pytest.raises(ValueError, match="unidirectional"):
        gru(I, H, bidirectional=True).step(x[:, 0])


# ---------------------------------------------------------------------------------------------------
# Keras 3 (PyTorch backend: tests/conftest.py sets KERAS_BACKEND)


def _keras_gru(I, H, seed):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(seed)
    layer = keras.layers.GRU(H, reset_after=False, return_sequences=True, return_state=True)
    layer.build((None, None, I))
    rng = np.random.default_rng(seed)
    kernel, rec, bias = (w.astype(np.float32) for w in layer.get_weights())
    layer.set_weights([kernel, rec, (0.5 * rng.standard_normal(bias.shape)).astype(np.float32)])
    return layer


def _from_keras(layer, I, H):
    """An rnnfast GRU with a Keras reset-before GRU's weights: kernels (I, 3H) in gate order z, r, h become
    (3H, I) in r, z, n; Keras's one bias is b_ih + b_hh, so it loads as bias_ih with bias_hh = 0."""
    from rnnfast.interop._gates import from_order

    kernel, rec, bias = layer.get_weights()
    m = gru(I, H).eval()
    m.load_state_dict({"weight_ih_l0": from_order(kernel.T, "keras", "gru"),
                       "weight_hh_l0": from_order(rec.T, "keras", "gru"),
                       "bias_ih_l0": from_order(bias, "keras", "gru"), "bias_hh_l0": np.zeros(3 * H, np.float32)})
    return m


@pytest.mark.parametrize("B,T,I,H", [(1, 12, 5, 8), (4, 9, 3, 33)])
def test_matches_keras_reset_after_false(B, T, I, H):
    layer = _keras_gru(I, H, seed=B)
    m = _from_keras(layer, I, H)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    h0 = np.random.default_rng(1).standard_normal((B, H)).astype(np.float32)
    k_out, k_h = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
                  for a in layer(x, initial_state=[h0]))
    out, hn = m(x, h0[None])
    np.testing.assert_allclose(out, k_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hn[0], k_h, rtol=1e-5, atol=1e-5)
    # ragged: Keras's mask against rnnfast's lengths, at the valid steps and the final states
    lengths = np.maximum(1, T - np.arange(B) * 3)
    mask = np.arange(T)[None, :] < lengths[:, None]
    k_out, k_h = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a) for a in layer(x, mask=mask))
    out, hn = m(x, lengths=lengths)
    np.testing.assert_allclose(out[mask], k_out[mask], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hn[0], k_h, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# reset_after in the layer's arguments and in the estimators


def test_layer_argument_repr_pickle_and_state_dict():
    m = gru(3, 4, num_layers=2, bidirectional=True, seed=1)
    assert m.reset_after is False and m._cell is Cell.GRU_RB
    assert "reset_after=False" in repr(m) and "reset_after=True" in repr(rf.nn.GRU(3, 4))
    assert "reset_after=False" in repr(rf.nn.Sequential(m, rf.nn.LastStep()))
    assert set(m.state_dict()) == set(rf.nn.GRU(3, 4, num_layers=2, bidirectional=True).state_dict())
    with pytest.raises(AttributeError):
        m.reset_after = True  # fixed at construction
    with pytest.raises(TypeError, match="reset_after"):
        rf.nn.GRU(3, 4, reset_after=1)
    with pytest.raises(TypeError):
        rf.nn.LSTM(3, 4, reset_after=False)
    x = np.ones((2, 3, 3), np.float32)
    copy = pickle.loads(pickle.dumps(m.eval()))
    assert copy.reset_after is False
    np.testing.assert_array_equal(copy(x)[0], m(x)[0])
    state = m.__getstate__()
    state["_cell"] = Cell.GRU  # a layer pickled before the option existed holds the GRU cell
    old = rf.nn.GRU.__new__(rf.nn.GRU)
    old.__setstate__(state)
    assert old.reset_after is True


def test_planner_knows_the_reset_before_cell():
    assert Cell.GRU_RB.gates == 3 and Cell.GRU_RB.barriers == 2 and Cell.GRU.barriers == 1
    for B, D in ((1, 1), (4, 1), (64, 2)):
        c = Call(Cell.GRU_RB, True, B, 50, B * 50, 256, 256, D)
        assert plan_call(c, 2).kernel == plan_call(Call(Cell.GRU, True, B, 50, B * 50, 256, 256, D), 2).kernel
        assert {p.kernel for p in candidates(c, 2)} <= {"latency", "units", "packed"}
    assert plan_call(Call(Cell.GRU_RB, False, 4, 50, 200, 8, 8), 2).kernel == "blas"
    assert "gru_rb" in Call(Cell.GRU_RB, True, 1, 5, 5, 3, 4).key(2)


def _seqs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 2)).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


@pytest.mark.parametrize("cls", [rf.GRU, rf.GRUClassifier, rf.GRURegressor])
def test_estimators_take_reset_after_and_save_it(cls, tmp_path):
    X, y = _seqs()
    est = cls(hidden_size=4, epochs=1, batch_size=8, reset_after=False, random_state=0).fit(X, y)
    layer = est.model_.find(rf.nn.GRU)
    assert layer.reset_after is False and "reset_after=False" in repr(est)
    assert est.get_params()["reset_after"] is False
    path = tmp_path / "m.rnnfast"
    est.save(path)
    back_ = rf.load(path)
    assert back_.reset_after is False and back_.model_.find(rf.nn.GRU).reset_after is False
    np.testing.assert_array_equal(back_.predict(X), est.predict(X))
    with pytest.raises(ValueError, match="reset_after changed"):
        est.set_params(reset_after=True, warm_start=True).fit(X, y)
    with pytest.raises(TypeError, match="reset_after"):
        cls(reset_after="no", epochs=1).fit(X, y)


def test_old_estimator_files_without_reset_after_load_as_reset_after_true(tmp_path):
    X, y = _seqs()
    est = rf.GRU(hidden_size=4, epochs=1, batch_size=8, random_state=0).fit(X, y)
    path, old = tmp_path / "m.rnnfast", tmp_path / "old.rnnfast"
    est.save(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "rnnfast.json":
                index = json.loads(data)
                del index["config"]["reset_after"]
                del index["extra"]["fitted"]["arch"]["reset_after"]
                data = json.dumps(index).encode()
            dst.writestr(item, data)
    loaded = rf.load(old)
    assert loaded.reset_after is True and loaded.model_.find(rf.nn.GRU).reset_after is True
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


@pytest.mark.parametrize("cls", [rf.LSTM, rf.RNN, rf.LSTMClassifier, rf.RNNRegressor])
def test_other_estimators_have_no_reset_after(cls):
    """As scikit-learn does for a parameter an estimator does not have: not in get_params, refused by
    set_params (ValueError) and by the constructor (TypeError)."""
    assert "reset_after" not in cls().get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'reset_after'"):
        cls().set_params(reset_after=False)
    with pytest.raises(TypeError):
        cls(reset_after=False)
