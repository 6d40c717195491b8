"""rf.nn.LSTM / GRU with ``layer_norm=True``: the kernel (rnnfast._kernels._lncell) against the plain-numpy
reference (tests/reference_ln.py) on ragged, stacked, bidirectional batches, finite differences in float64,
``step`` against the whole sequence, and bad input."""
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnfast as rf
import reference_ln as ref
from gradcheck import numeric_grad

TOL = {np.float32: dict(rtol=1e-5, atol=3e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
CELLS = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU}


def layer(cell, I, H, dtype=np.float64, seed=0, **kw):
    """A layer-normalized layer whose gains and biases are not the trivial 1 and 0."""
    m = CELLS[cell](I, H, layer_norm=True, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    sd = m.state_dict()
    for k, v in sd.items():
        if k.startswith("layernorm"):
            sd[k] = (v + rng.normal(0, 0.3, v.shape)).astype(dtype)
    m.load_state_dict(sd)
    return m


def states(cell, L, B, H, rng):
    h0 = rng.normal(size=(L, B, H))
    c0 = rng.normal(size=(L, B, H))
    return (h0, c0) if cell == "lstm" else h0, h0, (c0 if cell == "lstm" else None)


def final(cell, s):
    return (s[0], s[1]) if cell == "lstm" else (s, None)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L, bidir, lengths", [(1, False, None), (2, True, [7, 3, 5, 1]), (3, False, [2, 7, 7, 4]),
                                               (1, True, [7, 7, 7, 7])])
def test_matches_reference(cell, dtype, L, bidir, lengths):
    rng = np.random.default_rng(1)
    B, T, I, H = 4, 7, 5, 6
    m = layer(cell, I, H, dtype, num_layers=L, bidirectional=bidir)
    x = rng.normal(size=(B, T, I))
    hx, h0, c0 = states(cell, L * (2 if bidir else 1), B, H, rng)
    sd = {k: np.asarray(v, np.float64) for k, v in m.state_dict().items()}
    ro, rh, rc = ref.forward(cell, x.astype(dtype), sd, L, bidir, h0.astype(dtype),
                             None if c0 is None else c0.astype(dtype), lengths)
    for training in (False, True):
        m.train(training)
        out, s = m(x, hx, lengths=lengths)
        h_n, c_n = final(cell, s)
        assert out.dtype == dtype and out.shape == (B, T, H * (2 if bidir else 1))
        np.testing.assert_allclose(out, ro, **TOL[dtype])
        np.testing.assert_allclose(h_n, rh, **TOL[dtype])
        if cell == "lstm":
            np.testing.assert_allclose(c_n, rc, **TOL[dtype])
        if lengths is not None:
            for b, n in enumerate(lengths):
                assert not out[b, n:].any()  # zero past each length


def test_reference_differs_from_plain_cell_and_is_normalized():
    """A layer norm really acts: scaling W_ih leaves the output unchanged (LN(s a) = LN(a)), unlike the
    plain LSTM."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 3))
    m = layer("lstm", 3, 4)
    out, _ = m(x)
    sd = m.state_dict()
    sd["weight_ih_l0"] = sd["weight_ih_l0"] * 7.0
    m.load_state_dict(sd)
    np.testing.assert_allclose(m(x)[0], out, atol=2e-4)  # (up to eps = 1e-5 added to the variance)
    plain = rf.nn.LSTM(3, 4, dtype=np.float64, seed=0)
    assert not np.allclose(plain(x)[0], out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("L, bidir, bias", [(2, True, True), (1, False, False)])
def test_finite_differences(cell, L, bidir, bias):
    """Every parameter, x, h0 (and c0) in float64, with padded rows (lengths < T), t = 0 through h0 and
    gradients on the final states."""
    rng = np.random.default_rng(3)
    B, T, I, H = 3, 5, 3, 4
    D = 2 if bidir else 1
    m = layer(cell, I, H, num_layers=L, bidirectional=bidir, bias=bias)
    lengths = [5, 2, 4]
    x = rng.normal(size=(B, T, I))
    hx, h0, c0 = states(cell, L * D, B, H, rng)
    W = rng.normal(size=(B, T, D * H))
    Wh, Wc = rng.normal(size=(L * D, B, H)), rng.normal(size=(L * D, B, H))

    def objective():
        out, s = m(x, hx, lengths=lengths)
        h_n, c_n = final(cell, s)
        return (out * W).sum() + (h_n * Wh).sum() + (0 if c_n is None else (c_n * Wc).sum())

    m.train()
    m.zero_grad()
    m(x, hx, lengths=lengths)
    dx, ds = m.backward(W, (Wh, Wc) if cell == "lstm" else Wh)
    tol = dict(rtol=1e-6, atol=1e-7)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(m.grads[name], numeric_grad(objective, p), err_msg=name, **tol)
    np.testing.assert_allclose(dx, numeric_grad(objective, x), **tol)
    for b, n in enumerate(lengths):
        assert not dx[b, n:].any()  # padded steps get no gradient
    dh0, dc0 = final(cell, ds)
    np.testing.assert_allclose(dh0, numeric_grad(objective, h0), **tol)
    if cell == "lstm":
        np.testing.assert_allclose(dc0, numeric_grad(objective, c0), **tol)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B, bidir, n_threads", [(9, True, 2), (1, False, 1), (16, False, 2)])
def test_float32_gradients_match_float64(cell, B, bidir, n_threads):
    """The float32 kernel (fast activations, packed GEMMs, row-block threads) against the float64 one."""
    rng = np.random.default_rng(4)
    T, I, H, L = 6, 5, 8, 2
    lengths = rng.integers(1, T + 1, size=B)
    x = rng.normal(size=(B, T, I))
    dout = rng.normal(size=(B, T, H * (2 if bidir else 1)))
    res = {}
    for dt in (np.float32, np.float64):
        m = layer(cell, I, H, dt, num_layers=L, bidirectional=bidir)
        m.train()
        m(x, lengths=lengths, n_threads=n_threads)
        dx, _ = m.backward(dout, n_threads=n_threads)
        res[dt] = dx, m.grads
    dx32, g32 = res[np.float32]
    dx64, g64 = res[np.float64]
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-4 * max(1.0, np.abs(g64[k]).max()), err_msg=k)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 3])
def test_step_matches_sequence(cell, dtype, B):
    rng = np.random.default_rng(5)
    T, I, H, L = 6, 4, 5, 2
    m = layer(cell, I, H, dtype, num_layers=L)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    hx, _, _ = states(cell, L, B, H, rng)
    out, s = m(x, hx)
    state = hx
    for t in range(T):
        y, state = m.step(x[:, t], state)
        np.testing.assert_allclose(y, out[:, t], **TOL[dtype])
    for a, b in zip(final(cell, state), final(cell, s)):
        if b is not None:
            np.testing.assert_allclose(a, b, **TOL[dtype])
    y1, s1 = m.step(x[0, 0])  # unbatched
    assert y1.shape == (H,)
    assert (s1[0] if cell == "lstm" else s1).shape == (L, H)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layouts_and_threads_agree(cell):
    """batch_first=False, an unbatched sequence, equal lengths given explicitly and 1 or 2 threads all give
    the same result as the plain batch-first call."""
    rng = np.random.default_rng(6)
    B, T, I, H = 5, 4, 3, 6
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    m = layer(cell, I, H, np.float32)
    out, _ = m(x, n_threads=1)
    np.testing.assert_allclose(m(x, lengths=[T] * B, n_threads=2)[0], out, rtol=1e-6, atol=1e-7)
    tm = layer(cell, I, H, np.float32, batch_first=False)
    np.testing.assert_allclose(tm(x.swapaxes(0, 1))[0].swapaxes(0, 1), out, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m(x[2])[0], out[2], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_time_major_and_unbatched_backward_agree(cell):
    rng = np.random.default_rng(9)
    B, T, I, H = 3, 4, 3, 5
    x, dout = rng.normal(size=(B, T, I)), rng.normal(size=(B, T, 2 * H))
    ms = [layer(cell, I, H, bidirectional=True, batch_first=bf) for bf in (True, False)]
    for m in ms:
        m.train()
    ms[0](x, lengths=[4, 2, 3])
    dx, _ = ms[0].backward(dout)
    ms[1](x.swapaxes(0, 1), lengths=[4, 2, 3])
    dx_tm, _ = ms[1].backward(dout.swapaxes(0, 1))
    np.testing.assert_allclose(dx_tm.swapaxes(0, 1), dx, rtol=1e-12, atol=1e-12)
    for k in ms[0].grads:
        np.testing.assert_allclose(ms[1].grads[k], ms[0].grads[k], rtol=1e-12, atol=1e-12)
    one = layer(cell, I, H, bidirectional=True)
    one.train()
    one(x[1, :2])
    dx1, ds1 = one.backward(dout[1, :2])
    assert dx1.shape == (2, I) and final(cell, ds1)[0].shape == (2, H)


def test_dropout_between_layers_is_seeded_and_training_only():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5, 4))
    a, b = (layer("lstm", 4, 6, num_layers=2, dropout=0.5) for _ in range(2))
    for m in (a, b):
        m.reseed(11)
        m.train()
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    a.eval()
    assert not np.allclose(a(x)[0], b(x)[0])
    dx, _ = b.backward(np.ones((3, 5, 6)))
    assert dx.shape == x.shape and np.isfinite(dx).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_dict_keys_pickle_and_repr(cell):
    m = layer(cell, 3, 4, np.float32, num_layers=2, bidirectional=True)
    sd = m.state_dict()
    G = 4 if cell == "lstm" else 3
    assert sd["weight_ih_l0"].shape == (G * 4, 3) and sd["bias_hh_l1_reverse"].shape == (G * 4,)
    assert sd["layernorm_x_gamma_l1_reverse"].shape == (G * 4,)
    assert sd["layernorm_h_beta_l0"].shape == (G * 4,)
    assert ("layernorm_c_gamma_l0" in sd) == (cell == "lstm")
    assert (CELLS[cell](3, 4, layer_norm=True).state_dict()["layernorm_x_gamma_l0"] == 1).all()
    assert "layer_norm=True" in repr(m) and m.layer_norm
    assert not CELLS[cell](3, 4).layer_norm
    x = np.random.default_rng(8).normal(size=(2, 3, 3)).astype(np.float32)
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m2(x)[0], m(x)[0])
    with pytest.raises(AttributeError):
        m.layer_norm = False
    with pytest.raises((KeyError, ValueError)):
        CELLS[cell](3, 4, num_layers=2, bidirectional=True).load_state_dict(sd)


def test_bad_input():
    with pytest.raises(TypeError):
        rf.nn.LSTM(3, 4, layer_norm="yes")
    with pytest.raises(ValueError, match="reset_after"):
        rf.nn.GRU(3, 4, layer_norm=True, reset_after=False)
    m = rf.nn.LSTM(3, 4, layer_norm=True, bidirectional=True)
    with pytest.raises(ValueError):
        m(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError):
        m(np.zeros((2, 5, 3), np.float32), lengths=[6, 1])
    with pytest.raises(ValueError):
        m(np.zeros((2, 5, 3), np.float32), (np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match="unidirectional"):
        m.step(np.zeros((2, 3), np.float32))
    m.train()
    with pytest.raises(Exception):
        m.backward(np.zeros((2, 5, 8), np.float32))  # no forward before
    m(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError):
        m.backward(np.zeros((2, 5, 4), np.float32))


def test_plan_for_and_tune_refuse_layer_norm_layers():
    m = rf.nn.LSTM(3, 4, layer_norm=True)
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="own kernel"):
        m.plan_for(x)
    with pytest.raises(ValueError, match="own kernel"):
        rf.tune(m, x)


def test_combinations_the_kernel_does_not_do_are_refused():
    with pytest.raises(ValueError, match="proj_size"):
        rf.nn.LSTM(3, 4, layer_norm=True, proj_size=2)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        rf.nn.GRU(3, 4, layer_norm=True, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        rf.nn.LSTM(3, 4, layer_norm=True, recurrent_dropout=0.2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(["lstm", "gru"]), B=st.integers(1, 6), T=st.integers(1, 5), I=st.integers(1, 4),
       H=st.integers(1, 5), L=st.integers(1, 2), bidir=st.booleans(), n_threads=st.integers(1, 2),
       data=st.data())
def test_hypothesis_shapes_lengths_and_threads(cell, B, T, I, H, L, bidir, n_threads, data):
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    rng = np.random.default_rng(B * 100 + T)
    m = layer(cell, I, H, num_layers=L, bidirectional=bidir)
    x = rng.normal(size=(B, T, I))
    out, s = m(x, lengths=lengths, n_threads=n_threads)
    sd = {k: np.asarray(v, np.float64) for k, v in m.state_dict().items()}
    ro, rh, rc = ref.forward(cell, x, sd, L, bidir, lengths=lengths)
    np.testing.assert_allclose(out, ro, **TOL[np.float64])
    h_n, c_n = final(cell, s)
    np.testing.assert_allclose(h_n, rh, **TOL[np.float64])
    if cell == "lstm":
        np.testing.assert_allclose(c_n, rc, **TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_rows_and_large_inputs_stay_finite(dtype):
    """Zero weights make every normalized row constant (variance 0: LN gives 0, eps keeps it finite); huge
    inputs saturate the gates without NaN."""
    m = rf.nn.LSTM(3, 4, layer_norm=True, dtype=dtype)
    sd = {k: np.zeros_like(v) if k.startswith("weight") else v for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    m.train()
    out, _ = m(np.ones((2, 3, 3)))
    assert np.isfinite(out).all()
    dx, _ = m.backward(np.ones_like(out))
    assert np.isfinite(dx).all() and all(np.isfinite(g).all() for g in m.grads.values())
    g = layer("gru", 3, 4, dtype)
    assert np.isfinite(g(np.full((2, 3, 3), 1e30))[0]).all()


def test_blas_threads_are_restored_after_a_call():
    """The kernel holds BLAS to one thread while it runs (its own threads cut the big GEMMs) and gives the
    count back afterwards."""
    from rnnfast._kernels import _recurrent

    if not _recurrent.has_blas_thread_control():
        rf.nn.LSTM(2, 3)(np.zeros((1, 2, 2), np.float32))  # (the first call looks the control up)
    if not _recurrent.has_blas_thread_control():
        pytest.skip("no BLAS thread control here")
    before = _recurrent.blas_threads_now()
    m = layer("lstm", 4, 8, np.float32, num_layers=2)
    m.train()
    out, _ = m(np.ones((16, 5, 4)), n_threads=2)
    m.backward(np.ones_like(out), n_threads=2)
    assert _recurrent.blas_threads_now() == before
