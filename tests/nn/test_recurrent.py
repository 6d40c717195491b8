"""rnnfast.nn.LSTM / GRU / RNN against the plain-numpy reference, finite differences and the API contract."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

import rnnfast as rf
from rnnfast._planner import TABLE, Plan, ThreadPolicy
import reference as ref
from gradcheck import numeric_grad

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def make(cell, I, H, **kw):
    if cell == "lstm":
        return rf.nn.LSTM(I, H, **kw)
    if cell == "gru":
        return rf.nn.GRU(I, H, **kw)
    return rf.nn.RNN(I, H, nonlinearity=cell.split("_")[1], **kw)


def base(cell):
    return cell.split("_")[0]


def act(cell):
    return cell.split("_")[1] if cell.startswith("rnn") else "tanh"


def run(m, x, h0, c0, lengths, **kw):
    """forward -> (out, h_n, c_n or None)."""
    hx = None if h0 is None else ((h0, c0) if m._mode == "lstm" else h0)
    out, st_ = m(x, hx, lengths=lengths, **kw)
    if m._mode == "lstm":
        return out, st_[0], st_[1]
    return out, st_, None


def back(m, dout, dh, dc, **kw):
    ds = (dh, dc) if m._mode == "lstm" else dh
    dx, dst = m.backward(dout, ds, **kw)
    if m._mode == "lstm":
        return dx, dst[0], dst[1]
    return dx, dst, None


def problem(cell, B, T, I, H, L, bidir, dtype, seed, ragged=True):
    rng = np.random.default_rng(seed)
    D = 2 if bidir else 1
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if base(cell) == "lstm" else None
    lengths = None
    if ragged:
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = 1 if B > 1 else T
        if B > 2:
            lengths[-1] = T
    dout = rng.standard_normal((B, T, D * H)).astype(dtype)
    dh = rng.standard_normal((L * D, B, H)).astype(dtype)
    dc = rng.standard_normal((L * D, B, H)).astype(dtype) if base(cell) == "lstm" else None
    return x, h0, c0, lengths, dout, dh, dc


def unpack_masks(m):
    """The dropout masks of the last training forward, as the reference takes them ((B, T, D*H) each)."""
    plan = m._cache["plan"]
    DH = m._D * m.hidden_size
    return [plan.unpack(mk, DH) for mk in m._cache["masks"][:-1]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L,bidir", [(1, False), (1, True), (2, False), (3, True)])
@pytest.mark.parametrize("ragged", [False, True])
def test_matches_reference(cell, dtype, L, bidir, ragged):
    B, T, I, H = 5, 6, 4, 3
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, bidir, dtype, 7, ragged)
    m = make(cell, I, H, num_layers=L, bidirectional=bidir, dtype=dtype, seed=3)
    out, hn, cn = run(m, x, h0, c0, lengths)
    assert out.dtype == dtype and hn.dtype == dtype
    ro, rh, rc = ref.forward(base(cell), x, m.state_dict(), L, bidir, h0, c0, lengths, nonlinearity=act(cell))
    tol = TOL[dtype]
    np.testing.assert_allclose(out, ro, **tol)
    np.testing.assert_allclose(hn, rh, **tol)
    if cn is not None:
        np.testing.assert_allclose(cn, rc, **tol)
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert np.all(out[b, n:] == 0)
    dx, dh0, dc0 = back(m, dout, dh, dc)
    rdx, rdh0, rdc0, rg = ref.backward(base(cell), x, m.state_dict(), dout, dh, dc, L, bidir, h0, c0, lengths,
                                       nonlinearity=act(cell))
    np.testing.assert_allclose(dx, rdx, **tol)
    np.testing.assert_allclose(dh0, rdh0, **tol)
    if dc0 is not None:
        np.testing.assert_allclose(dc0, rdc0, **tol)
    assert set(m.grads) == set(rg)
    for k in rg:
        np.testing.assert_allclose(m.grads[k], rg[k], err_msg=k, **tol)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_dropout_matches_reference_with_same_masks(cell, bias):
    B, T, I, H, L = 4, 5, 3, 4, 3
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, True, np.float64, 11)
    m = make(cell, I, H, num_layers=L, bidirectional=True, dropout=0.4, bias=bias, dtype=np.float64, seed=5)
    out, hn, cn = run(m, x, h0, c0, lengths)
    masks = unpack_masks(m)
    for mk in masks:
        assert set(np.unique(mk)) <= {0.0, 1 / 0.6}
    ro, rh, rc = ref.forward(base(cell), x, m.state_dict(), L, True, h0, c0, lengths, masks=masks,
                             nonlinearity=act(cell))
    np.testing.assert_allclose(out, ro, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn, rh, rtol=1e-10, atol=1e-12)
    dx, dh0, dc0 = back(m, dout, dh, dc)
    rdx, rdh0, rdc0, rg = ref.backward(base(cell), x, m.state_dict(), dout, dh, dc, L, True, h0, c0, lengths,
                                       masks=masks, nonlinearity=act(cell))
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, rdh0, rtol=1e-10, atol=1e-12)
    for k in rg:
        np.testing.assert_allclose(m.grads[k], rg[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # eval mode: no dropout at all
    m.eval()
    out_eval, _, _ = run(m, x, h0, c0, lengths)
    ro2, _, _ = ref.forward(base(cell), x, m.state_dict(), L, True, h0, c0, lengths, nonlinearity=act(cell))
    np.testing.assert_allclose(out_eval, ro2, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# finite differences (float64): every input, initial state and parameter; t = 0 and padded rows


def _objective(m, x, h0, c0, lengths, dout, dh, dc, seed):
    m._rng = np.random.default_rng(seed)  # same dropout masks every evaluation
    out, hn, cn = run(m, x, h0, c0, lengths)
    m._cache = None
    v = np.sum(out * dout) + np.sum(hn * dh)
    if cn is not None:
        v += np.sum(cn * dc)
    return v


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L,bidir,dropout", [(1, False, 0.0), (2, True, 0.0), (2, True, 0.3)])
def test_finite_differences(cell, L, bidir, dropout):
    B, T, I, H = 4, 4, 3, 3
    x, h0, c0, _, dout, dh, dc = problem(cell, B, T, I, H, L, bidir, np.float64, 21)
    lengths = np.array([T, 1, 3, 2])  # includes 1 and T; rows 1-3 are padded
    if cell == "rnn_relu":  # keep away from the kink of relu
        x *= 0.5
    m = make(cell, I, H, num_layers=L, bidirectional=bidir, dropout=dropout, dtype=np.float64, seed=2)
    m._rng = np.random.default_rng(99)
    run(m, x, h0, c0, lengths)
    dx, dh0, dc0 = back(m, dout, dh, dc)

    def f():
        return _objective(m, x, h0, c0, lengths, dout, dh, dc, 99)

    checks = [("x", x, dx), ("h0", h0, dh0)]
    if c0 is not None:
        checks.append(("c0", c0, dc0))
    for name, p in m._params.items():
        checks.append((name, p, m.grads[name]))
    for name, arr, analytic in checks:
        numeric = numeric_grad(f, arr)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)
    # gradient wrt padded positions of x is exactly zero; dout there is ignored
    for b, n in enumerate(lengths):
        assert np.all(dx[b, n:] == 0)


def test_padded_dout_is_ignored():
    x, h0, c0, lengths, dout, dh, dc = problem("lstm", 4, 5, 3, 2, 2, True, np.float64, 4)
    m = rf.nn.LSTM(3, 2, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    run(m, x, h0, c0, lengths)
    g1 = back(m, dout, dh, dc)
    grads1 = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    dout2 = dout.copy()
    for b, n in enumerate(lengths):
        dout2[b, n:] = 1e6
    run(m, x, h0, c0, lengths)
    g2 = back(m, dout2, dh, dc)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    for k in grads1:
        np.testing.assert_array_equal(grads1[k], m.grads[k])


# ---------------------------------------------------------------------------------------------------
# hypothesis: shapes and lengths


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(CELLS), B=st.integers(1, 6), T=st.integers(1, 7), I=st.integers(1, 5),
       H=st.integers(1, 6), L=st.integers(1, 3), bidir=st.booleans(), data=st.data(),
       n_threads=st.integers(1, 3))
def test_hypothesis_shapes(cell, B, T, I, H, L, bidir, data, n_threads):
    lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    x, h0, c0, _, dout, dh, dc = problem(cell, B, T, I, H, L, bidir, np.float64, B * 100 + T)
    m = make(cell, I, H, num_layers=L, bidirectional=bidir, dtype=np.float64, seed=1)
    out, hn, cn = run(m, x, h0, c0, lengths, n_threads=n_threads)
    ro, rh, rc = ref.forward(base(cell), x, m.state_dict(), L, bidir, h0, c0, lengths, nonlinearity=act(cell))
    np.testing.assert_allclose(out, ro, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn, rh, rtol=1e-10, atol=1e-12)
    dx, dh0, dc0 = back(m, dout, dh, dc, n_threads=n_threads)
    rdx, rdh0, rdc0, rg = ref.backward(base(cell), x, m.state_dict(), dout, dh, dc, L, bidir, h0, c0, lengths,
                                       nonlinearity=act(cell))
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, rdh0, rtol=1e-10, atol=1e-12)
    for k in rg:
        np.testing.assert_allclose(m.grads[k], rg[k], rtol=1e-10, atol=1e-12, err_msg=k)


# ---------------------------------------------------------------------------------------------------
# layout options, step, threads


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_false_and_unbatched(cell):
    x, h0, c0, lengths, dout, dh, dc = problem(cell, 3, 5, 4, 3, 2, True, np.float64, 8)
    a = make(cell, 4, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=4)
    b = make(cell, 4, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=4, batch_first=False)
    oa, ha, ca = run(a, x, h0, c0, lengths)
    ob, hb, cb = run(b, x.transpose(1, 0, 2), h0, c0, lengths)
    np.testing.assert_array_equal(oa, ob.transpose(1, 0, 2))
    np.testing.assert_array_equal(ha, hb)
    dxa = back(a, dout, dh, dc)[0]
    dxb = back(b, dout.transpose(1, 0, 2), dh, dc)[0]
    np.testing.assert_array_equal(dxa, dxb.transpose(1, 0, 2))
    # unbatched (T, I) equals a batch of one
    a.eval()
    o1, h1, _ = run(a, x[0], h0[:, 0], None if c0 is None else c0[:, 0], None)
    o2, h2, _ = run(a, x[:1], h0[:, :1], None if c0 is None else c0[:, :1], None)
    np.testing.assert_allclose(o1, o2[0], rtol=1e-14)
    np.testing.assert_allclose(h1, h2[:, 0], rtol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,H", [(3, 5), (9, 40)])
def test_step_matches_sequence(cell, dtype, B, H):
    T, I, L = 6, 4, 2
    x, h0, c0, _, _, _, _ = problem(cell, B, T, I, H, L, False, dtype, 3)
    m = make(cell, I, H, num_layers=L, dtype=dtype, seed=6).eval()
    out, hn, cn = run(m, x, h0, c0, None)
    # Same formulas and cell kernels; the products may round differently (a float32 sequence of 4 steps
    # or more runs the packed or few-rows kernels, a step BLAS's GEMM), so a step equals the sequence to
    # rounding: exactly when both run BLAS, to a few ulp otherwise.
    if m.plan_for(x).kernel == "blas" and B < 4:  # (BLAS rounds by row block from 4 rows on)
        eq = np.testing.assert_array_equal
    else:
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)

        def eq(a, b):
            np.testing.assert_allclose(a, b, **tol)
    state = (h0, c0) if base(cell) == "lstm" else h0
    for t in range(T):
        y, state = m.step(x[:, t], state)
        eq(y, out[:, t])
    if base(cell) == "lstm":
        eq(state[0], hn)
        eq(state[1], cn)
    else:
        eq(state, hn)
    y1, _ = m.step(x[0, 0])  # unbatched, zero state
    y2, _ = m.step(x[:1, 0])
    eq(y1, y2[0])
    # weights changed in place: step sees the change
    for _, p in m.named_parameters():
        p *= 0.5
    out2, _, _ = run(m, x, h0, c0, None)
    y3, _ = m.step(x[:, 0], (h0, c0) if base(cell) == "lstm" else h0)
    eq(y3, out2[:, 0])


@pytest.mark.parametrize("cell", CELLS)
def test_step_fast_path_threads_batches_and_foreign_states(cell, monkeypatch):
    """``step`` reuses its kernel arguments between calls: across thread counts, batch sizes, states
    that are strided views or of another dtype, and biases changed in place, it equals the sequence."""
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    T, I, H, L = 5, 6, 20, 2
    m = make(cell, I, H, num_layers=L, seed=4).eval()
    for B in (1, 3, 1, 5):
        x, h0, c0, _, _, _, _ = problem(cell, B, T, I, H, L, False, np.float32, B)
        for n_threads in (1, 2):
            out, hn, cn = run(m, x, h0, c0, None, n_threads=n_threads)
            # a float64 state, and one that is a strided view
            h_wide = np.zeros((L, B, 2 * H), np.float32)
            h_wide[:, :, ::2] = h0
            state = (h0.astype(np.float64), c0[:, :, :]) if base(cell) == "lstm" else h_wide[:, :, ::2]
            for t in range(T):
                y, state = m.step(x[:, t], state, n_threads=n_threads)
                np.testing.assert_allclose(y, out[:, t], rtol=1e-5, atol=1e-6)
            h_last = state[0] if base(cell) == "lstm" else state
            np.testing.assert_allclose(h_last, hn, rtol=1e-5, atol=1e-6)
    if m.bias:
        for name, p in m.named_parameters():
            if name.startswith("bias"):
                p += 0.25
        x, h0, c0, _, _, _, _ = problem(cell, 1, 1, I, H, L, False, np.float32, 9)
        out, _, _ = run(m, x, h0, c0, None)
        y, _ = m.step(x[:, 0], (h0, c0) if base(cell) == "lstm" else h0)
        np.testing.assert_allclose(y, out[:, 0], rtol=1e-5, atol=1e-6)


def test_step_threads_pause_and_choice(monkeypatch):
    """The first batch-1 step after a pause runs on one thread (waking the others can cost far more than
    the step); steps that follow closely run the way that has lately been faster, the other way now and
    then. Same results either way. (A fake clock in the layer's ThreadPolicy; the thread counts it
    chose are recorded by a subclass.)"""
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    clock = [50.0]
    seen = []

    class Recording(ThreadPolicy):
        def step_threads(self, threads):
            out = super().step_threads(threads)
            seen.append(out[0])
            return out

    m = rf.nn.GRU(3, 8, seed=0).eval()
    m.thread_policy = Recording(clock=lambda: clock[0], perf=lambda: clock[0])
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    ys, s = [], None
    for t in range(12):
        y, s = m.step(x[t % 4], s, n_threads=2)
        ys.append(y)
        clock[0] += 1e-5
    # a cold step, then a few warm steps each way to measure them
    assert seen[0] == 1 and set(seen) == {1, 2}
    ref_out, _ = m(np.tile(x, (3, 1))[None], n_threads=1)
    np.testing.assert_allclose(np.stack(ys), ref_out[0], rtol=1e-6, atol=1e-7)
    clock[0] += 1.0
    m.step(x[0], s, n_threads=2)
    assert seen[-1] == 1
    monkeypatch.setattr(m.thread_policy, "step_time", lambda split, took: None)
    period, explore = TABLE["step_period"], TABLE["step_explore"]
    for times, many in (([25e-6, 14e-6], 2), ([25e-6, 40e-6], 1)):
        m.thread_policy.step_ewma = list(times)
        del seen[:]
        for _ in range(period):
            clock[0] += 1e-5
            m.step(x[0], s, n_threads=2)
        assert seen.count(many) == period - explore


def test_step_refuses_bidirectional():
    with pytest.raises(ValueError, match="unidirectional"):
        rf.nn.GRU(2, 3, bidirectional=True).step(np.zeros((1, 2)))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,I,H", [(33, 7, 5, 6), (37, 30, 24, 41)])
def test_thread_counts_agree(cell, B, T, I, H):
    """Any thread count gives the same results; the larger shape is big enough that the backward's
    products are shared out among the threads (par_gemms cuts them by rows of C)."""
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, 2, True, np.float64, 12)
    outs = []
    for nt in (1, 2, 3, 8):
        m = make(cell, I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=4)
        o = run(m, x, h0, c0, lengths, n_threads=nt)
        g = back(m, dout, dh, dc, n_threads=nt)
        outs.append((o, g, {k: v.copy() for k, v in m.grads.items()}))
    for o, g, gr in outs[1:]:
        for a, b in zip(o + g, outs[0][0] + outs[0][1]):
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        for k in gr:
            np.testing.assert_allclose(gr[k], outs[0][2][k], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_many_threads_share_one_eval_layer(cell):
    m = make(cell, 8, 16, num_layers=2, bidirectional=True, seed=0).eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((int(rng.integers(1, 9)), int(rng.integers(1, 12)), 8)).astype(np.float32)
              for _ in range(24)]
    lens = [rng.integers(1, x.shape[1] + 1, size=x.shape[0]) for x in inputs]
    expected = [run(m, x, None, None, ln, n_threads=1) for x, ln in zip(inputs, lens)]
    results = [None] * len(inputs)
    errors = []

    def worker(idx):
        try:
            for _ in range(5):
                for i in range(idx, len(inputs), 6):
                    results[i] = run(m, inputs[i], None, None, lens[i], n_threads=2)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, exp in zip(results, expected):
        for a, b in zip(got, exp):
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert m._cache is None  # eval mode keeps nothing


# ---------------------------------------------------------------------------------------------------
# parameters, grads, modes


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_keys_and_round_trip(cell):
    m = make(cell, 3, 4, num_layers=2, bidirectional=True, seed=1)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[base(cell)]
    sd = m.state_dict()
    assert list(sd) == [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert sd["weight_ih_l0"].shape == (G * 4, 3)
    assert sd["weight_ih_l1_reverse"].shape == (G * 4, 8)
    assert sd["weight_hh_l1"].shape == (G * 4, 4)
    assert all(v.dtype == np.float32 for v in sd.values())
    k = 1 / np.sqrt(4)
    assert all(np.abs(v).max() <= k for v in sd.values())
    m2 = make(cell, 3, 4, num_layers=2, bidirectional=True, seed=2).eval()
    m2.load_state_dict({n: v.astype(np.float64) for n, v in sd.items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.eval()(x)[0], m2(x)[0])
    sd["weight_ih_l0"][...] = 0  # a copy: the layer is unchanged
    assert np.any(m.state_dict()["weight_ih_l0"] != 0)
    nb = make(cell, 3, 4, bias=False)
    assert set(nb.state_dict()) == {"weight_ih_l0", "weight_hh_l0"}


def test_same_seed_same_weights():
    a, b = rf.nn.LSTM(3, 4, seed=7), rf.nn.LSTM(3, 4, seed=7)
    for k in a.state_dict():
        np.testing.assert_array_equal(a.state_dict()[k], b.state_dict()[k])


@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate_and_zero(cell):
    x, h0, c0, lengths, dout, dh, dc = problem(cell, 3, 4, 2, 3, 1, False, np.float64, 0)
    m = make(cell, 2, 3, dtype=np.float64, seed=0)
    for _ in range(2):
        run(m, x, h0, c0, lengths)
        back(m, dout, dh, dc)
    two = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    assert all(np.all(v == 0) for v in m.grads.values())
    run(m, x, h0, c0, lengths)
    back(m, dout, dh, dc)
    for k in two:
        np.testing.assert_allclose(two[k], 2 * m.grads[k], rtol=1e-13)


def test_backward_without_forward_or_in_eval_or_twice():
    m = rf.nn.LSTM(2, 3)
    with pytest.raises(ValueError, match="without a preceding"):
        m.backward(np.zeros((1, 1, 3)))
    x = np.zeros((1, 2, 2), np.float32)
    m.eval()(x)
    with pytest.raises(ValueError, match="eval mode"):
        m.backward(np.zeros((1, 2, 3)))
    m.train()
    m(x)
    m.backward(np.zeros((1, 2, 3)))
    with pytest.raises(RuntimeError, match="twice"):
        m.backward(np.zeros((1, 2, 3)))


def test_optional_state_gradients_and_states():
    m = rf.nn.LSTM(2, 3, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 2))
    out, (h, c) = m(x)
    dx, (dh0, dc0) = m.backward(np.ones_like(out))
    m.zero_grad()
    out2, _ = m(x, (np.zeros((1, 2, 3)), np.zeros((1, 2, 3))))
    np.testing.assert_array_equal(out, out2)
    dx2, _ = m.backward(np.ones_like(out), (None, np.zeros((1, 2, 3))))
    np.testing.assert_array_equal(dx, dx2)


def test_nonfinite_activations_never_nan():
    m = rf.nn.LSTM(2, 3, seed=0).eval()
    x = np.array([[[1e30, -1e30], [-1e30, 1e30], [88.7, -89.0]]], np.float32)
    out, (h, c) = m(x)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(h))
    g = rf.nn.GRU(2, 3, seed=0).eval()
    assert np.all(np.isfinite(g(x)[0]))


def test_input_conversion_once():
    m = rf.nn.GRU(3, 2, dtype=np.float64, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((4, 5, 6))[:, :, ::2]  # non-contiguous
    a = m(x)[0]
    b = m(np.ascontiguousarray(x))[0]
    np.testing.assert_array_equal(a, b)
    c = m(x.astype(np.float32))[0]
    assert c.dtype == np.float64
    d = m(np.arange(30).reshape(2, 5, 3))[0]  # integers are converted
    assert d.dtype == np.float64
    assert m(x.tolist())[0].shape == (4, 5, 2)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (4, 3)])
def test_results_never_alias_reused_buffers(cell, shape):
    """Buffers are reused between calls; what a call returned must not change afterwards."""
    B, T = shape
    rng = np.random.default_rng(0)
    m = make(cell, 3, 4, num_layers=2, bidirectional=B > 1, seed=0)
    x1, x2 = rng.standard_normal((2, B, T, 3)).astype(np.float32)
    out1, st1 = m(x1)
    dx1 = m.backward(np.ones_like(out1))[0]
    keep = (out1.copy(), dx1.copy())
    out2, _ = m(x2)
    m.backward(-np.ones_like(out2))
    np.testing.assert_array_equal(out1, keep[0])
    np.testing.assert_array_equal(dx1, keep[1])
    if not m.bidirectional:
        m.eval()
        y1, _ = m.step(x1[:, 0])
        y1c = y1.copy()
        m.step(x2[:, 0])
        np.testing.assert_array_equal(y1, y1c)


def _assert_f32_forward(got, want, lengths=None):
    """float32 (out, h_n, c_n or None) against the float64 reference's, and zeros past each length."""
    for g, w in zip(got, want):
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert np.all(got[0][b, n:] == 0)


def _assert_f32_backward(m, cell, f64, sd, L, bidir, lengths, n_threads):
    """float32 backward of ``m`` (after its forward) against the float64 reference; ``f64`` holds
    (x, h0, c0, dout, dh_n, dc_n) in float64."""
    dout, dh, dc = (None if a is None else a.astype(np.float32) for a in f64[3:])
    dx, dh0, _ = back(m, dout, dh, dc, n_threads=n_threads)
    rdx, rdh0, _, rg = ref.backward(base(cell), f64[0], sd, f64[3], f64[4], f64[5], L, bidir, f64[1], f64[2],
                                    lengths, nonlinearity=act(cell))
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dh0, rdh0, rtol=1e-4, atol=2e-5)
    for k in rg:
        np.testing.assert_allclose(m.grads[k], rg[k], rtol=1e-4, atol=5e-5, err_msg=k)


@pytest.fixture(params=[False, True], ids=["no-prefetch", "prefetch"])
def gemm_prefetch(request):
    """Run with the packed kernel prefetching the next chunk of weights at every size (it does so only
    for weights larger than L2), or not at all."""
    from rnnfast._kernels import _recurrent as kern

    old = kern.set_gemm_pf_bytes(0 if request.param else 1 << 62)
    yield request.param
    kern.set_gemm_pf_bytes(old)


@pytest.fixture
def serpentine():
    """Odd steps of the batch-1 and few-rows kernels read the weights in reverse at every size (they do so
    only for a thread's weights beyond rf_serp_min_bytes)."""
    from rnnfast._kernels import _recurrent as kern

    old = kern.set_serp_min_bytes(0)
    yield
    kern.set_serp_min_bytes(old)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,H", [(13, 40), (4, 33), (9, 8)])
def test_float32_packed_kernel_edges(cell, B, H, gemm_prefetch):
    """float32 with B >= 4 and T >= 4 runs the pre-packed per-step kernel: ragged panels (H not a
    multiple of its 32 columns) and row blocks (B not a multiple of 8), with and without prefetching."""
    T, I, L = 5, 7, 2
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, True, np.float32, 31)
    m = make(cell, I, H, num_layers=L, bidirectional=True, dtype=np.float32, seed=8)
    out, hn, cn = run(m, x, h0, c0, lengths, n_threads=2)
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, True, f64[1], f64[2], lengths, nonlinearity=act(cell))
    np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=2e-6)
    _assert_f32_backward(m, cell, f64, sd, L, True, lengths, 2)
    # eval mode: LSTM and RNN form each step's gates from [x_t, h_{t-1}] in one packed product, GRU
    # makes x_t W_ih^T at each step in a product of its own; an input width (7, then 2H) that is no
    # multiple of anything
    m.eval()
    from rnnfast._kernels import _recurrent as kern

    old = kern.set_gemm_kc(5)  # K in chunks of 5: chunks straddle the [x_t, h_{t-1}] boundary
    try:
        out5 = run(m, x, h0, c0, lengths)[0]
    finally:
        kern.set_gemm_kc(old)
    np.testing.assert_allclose(out5, ro, rtol=1e-5, atol=2e-6)
    for n_threads in (1, 2, 3):
        _assert_f32_forward(run(m, x, h0, c0, lengths, n_threads=n_threads), (ro, rh, rc), lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("B", [1, 6])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "float64"])
@pytest.mark.parametrize("bidir", [False, True])
def test_eval_reads_input_and_writes_output_in_place(cell, batch_first, B, layout, bidir):
    """Inference over equal lengths writes the caller's output array in place (the reverse direction
    backwards into its half) and reads the input in place where its layout allows (the per-step input
    product of B >= 4; one direction time-major: any), else packs it. Every layout gives the reference's answer,
    in fresh arrays."""
    T, I, H, L = 7, 5, 36, 2
    x, h0, c0, _, _, _, _ = problem(cell, B, T, I, H, L, bidir, np.float64, 21)
    m = make(cell, I, H, num_layers=L, batch_first=batch_first, bidirectional=bidir, seed=3).eval()
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    ro, rh, rc = ref.forward(base(cell), x, sd, L, bidir, h0, c0, None, nonlinearity=act(cell))
    xin = x if batch_first else np.ascontiguousarray(x.swapaxes(0, 1))
    if layout == "contiguous":
        xin = xin.astype(np.float32)
    elif layout == "strided":
        wide = np.zeros(xin.shape[:2] + (2 * I,), np.float32)
        wide[..., ::2] = xin
        xin = wide[..., ::2]
    hx = (h0.astype(np.float32), c0.astype(np.float32)) if base(cell) == "lstm" else h0.astype(np.float32)
    first = None
    for _ in range(2):
        out, state = m(xin, hx)
        if not batch_first:
            out = out.swapaxes(0, 1)
        np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
        hn = state[0] if base(cell) == "lstm" else state
        np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=2e-6)
        if first is None:
            first = out
        else:
            assert not np.shares_memory(first, out)
            np.testing.assert_array_equal(first, out)


def test_load_state_dict_copies_into_live_arrays():
    m = rf.nn.GRU(3, 4, seed=0)
    live = dict(m.named_parameters())
    sd = rf.nn.GRU(3, 4, seed=1).state_dict()
    m.load_state_dict(sd)
    for k, v in m.named_parameters():
        assert v is live[k]
        np.testing.assert_array_equal(v, sd[k])


def test_dropout_one_drops_everything_between_layers():
    m = rf.nn.LSTM(3, 4, num_layers=2, dropout=1.0, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out, _ = m(x)
    ref_m = rf.nn.LSTM(4, 4, seed=0, dtype=np.float64).eval()
    ref_m.load_state_dict({k.replace("_l1", "_l0"): v for k, v in m.state_dict().items() if "_l1" in k})
    np.testing.assert_allclose(out, ref_m(np.zeros((2, 5, 4)))[0], rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [1, 5, 33, 150])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("T", [1, 6, 40])
def test_float32_batch1_latency_kernel(cell, H, n_threads, T, monkeypatch, serpentine):
    """float32, one sequence, one direction runs the batch-1 kernel (threads share out the hidden units,
    reading the weights in place 16 rows at a time, or from panels packed per call from T = 32 on;
    backward likewise, each thread making its columns of dh_{t-1} = dG_t W_hh); training and inference,
    against the float64 reference. I = 19 and H = 33 leave remainders of the
    16-wide loops and a zero-padded last panel; H = 150 puts 150, 75 or 50 units on a thread, so odd
    steps, which run 64-row chunks last first (rf_latency_prod, here at every size), end on a partial chunk (one thread,
    LSTM and RNN: over all G H rows at once); T = 40 on one thread takes x W_ih^T from one GEMM
    first, the other cases make it step by step."""
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)  # split even tiny weights
    _assert_batch1_f32(cell, 19, H, T, None, n_threads, 5, 9)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("T,length", [(40, 13), (40, 35), (6, 1)])
def test_float32_batch1_kernel_stops_at_the_sequence_length(cell, n_threads, T, length, monkeypatch):
    """One sequence shorter than the input's T: the batch-1 kernels run its own steps only (they once
    ran all T, past the end of the packed rows, and crashed); padding stays zero, final states and
    every gradient match the float64 reference."""
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    _assert_batch1_f32(cell, 19, 33, T, np.array([length]), n_threads, 6, 5)


def _assert_batch1_f32(cell, I, H, T, lengths, n_threads, seed_x, seed_m):
    """A 2-layer float32 layer at batch 1 (inference, training, backward) against the float64 reference."""
    L = 2
    x, h0, c0, _, dout, dh, dc = problem(cell, 1, T, I, H, L, False, np.float32, seed_x)
    m = make(cell, I, H, num_layers=L, dtype=np.float32, seed=seed_m)
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, False, f64[1], f64[2], lengths, nonlinearity=act(cell))
    for training in (False, True):
        m.train(training)
        out, hn, cn = run(m, x, h0, c0, lengths, n_threads=n_threads)
        np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
        if lengths is not None:
            assert np.all(out[0, lengths[0]:] == 0)
        np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=2e-6)
        if cn is not None:
            np.testing.assert_allclose(cn, rc, rtol=1e-5, atol=2e-6)
    _assert_f32_backward(m, cell, f64, sd, L, False, lengths, n_threads)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_batch1_kernel_panels_match_rows_in_place(cell, n_threads, monkeypatch):
    """The batch-1 kernel's packed panels (long calls) give what its in-place rows give (short calls),
    at sizes whose shares span several 64-wide panels and end in a narrower one (H = 150 on two threads:
    75 units a thread, panels of 64 and 16 columns; I = 70 ends a 16-row block of the transposition)."""
    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    I, H, T = 70, 150, 33
    m = make(cell, I, H, dtype=np.float32, seed=4).eval()
    x = np.random.default_rng(1).standard_normal((1, T, I)).astype(np.float32)
    panels = m(x, n_threads=n_threads)[0]
    monkeypatch.setitem(TABLE, "latency_panel_min_t", T + 1)
    m.release_memory()  # (the kept kernel arguments name the panel buffer)
    rows = m(x, n_threads=n_threads)[0]
    np.testing.assert_allclose(panels, rows, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(panels, rows)  # (the two paths sum in different orders)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [3, 40])
def test_batch1_kernel_goes_on_alone_after_a_long_wait(cell, T, monkeypatch):
    """When a thread of the batch-1 kernel waits too long at a step's barrier, thread 0 runs the rest
    of the call alone. Forced here (every wait counts as too long): the results stay those of the
    reference, for training (saved gates) and inference."""
    from rnnfast._kernels import _recurrent as kern

    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    I, H, L = 5, 24, 2
    x, h0, c0, _, dout, dh, dc = problem(cell, 1, T, I, H, L, False, np.float32, 12)
    m = make(cell, I, H, num_layers=L, dtype=np.float32, seed=2)
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, False, f64[1], f64[2], None, nonlinearity=act(cell))
    old = kern.set_latency_spin_ns(0)
    try:
        for training in (False, True):
            m.train(training)
            m.thread_policy = ThreadPolicy()
            out, hn, cn = run(m, x, h0, c0, None, n_threads=2)
            np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
            np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=2e-6)
            assert m.thread_policy.stats["busy"] >= 1  # and the layer noted a busy call
        m.thread_policy = ThreadPolicy()
        _assert_f32_backward(m, cell, f64, sd, L, False, None, 2)  # (backward has the same kernel)
        assert m.thread_policy.stats["busy"] >= 1
    finally:
        kern.set_latency_spin_ns(old)


def test_few_rows_training_ignores_the_batch1_back_off():
    """The back-off serves batch-1 calls: a few-rows training call (B=2, the units kernel) keeps its two
    threads in forward and backward while the layer is backed off."""
    import time

    m = rf.nn.LSTM(8, 512, seed=0).train()
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    assert m.plan_for(x, n_threads=2).kernel == "units"
    m.thread_policy.serial_until = time.monotonic() + 60
    out, _ = m(x, n_threads=2)
    m.backward(np.ones_like(out), n_threads=2)
    assert m.thread_policy.stats["serial"] == 0


def test_batch1_kernel_backs_off_to_one_thread_when_busy(monkeypatch):
    """After a call that found the cores busy, the batch-1 kernel runs on one thread for a while: the
    same answer as a one-thread call, to the bit."""
    import time

    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)

    m = rf.nn.LSTM(4, 37, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((1, 9, 4)).astype(np.float32)
    one = m(x, n_threads=1)[0]
    m.thread_policy.serial_until = time.monotonic() + 60
    np.testing.assert_array_equal(m(x, n_threads=2)[0], one)
    m.thread_policy.serial_until = 0.0
    np.testing.assert_allclose(m(x, n_threads=2)[0], one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("how", ["step", "sequence"])
def test_batch1_busy_call_backs_the_layer_off(how, monkeypatch):
    """Through the layer: calls whose barriers found the cores busy (forced: every wait counts), two in a
    row, send the next calls to one thread for a while; results stay those of one thread. One such call
    alone does not (a transient)."""
    from rnnfast._kernels import _recurrent as kern

    monkeypatch.setitem(TABLE, "latency_min_split_bytes", 0)
    monkeypatch.setitem(TABLE, "step_warm_s", 1e9)
    m = rf.nn.LSTM(4, 8, seed=0).eval()
    x = np.ones((1, 6, 4), np.float32)
    one = m(x, n_threads=1)[0]
    old = kern.set_latency_spin_ns(0)
    try:
        for k in range(2):
            if how == "step":
                m.thread_policy.step_last = m.thread_policy.perf()
                m.thread_policy.step_ewma = [2e-5, 1e-5]
                m.thread_policy.step_n = TABLE["step_explore"]
                m.step(x[:, 0], n_threads=2)
            else:
                m(x, n_threads=2)
            assert (m.thread_policy.serial_until > m.thread_policy.clock()) == (k == 1)
    finally:
        kern.set_latency_spin_ns(old)
    assert m.thread_policy.serial_until > m.thread_policy.clock()
    assert m.plan_for(x, n_threads=2).threads == 1
    np.testing.assert_array_equal(m(x, n_threads=2)[0], one)


def test_step_timing_shrugs_off_one_slow_step():
    """A warm step's time joins its way's running mean capped at twice the mean, so one step that
    waited long moves the mean by 10% at most, while lasting slowness still shows within a few steps."""
    pol = ThreadPolicy()
    for _ in range(3):  # the first two steps after a change of way do not count
        pol.step_time(True, 1e-5)
    assert pol.step_ewma[1] == pytest.approx(1e-5)
    pol.step_time(True, 1e-3)  # one slow step
    assert pol.step_ewma[1] == pytest.approx(1.1e-5)
    for _ in range(30):
        pol.step_time(True, 1e-3)  # slow for good: the mean grows 10% a step
    assert pol.step_ewma[1] > 1e-4


def test_release_memory_drops_kept_buffers():
    m = rf.nn.GRU(3, 4, seed=0)
    x = np.ones((2, 5, 3), np.float32)
    out, _ = m(x)
    assert m._cache is not None
    m.eval()
    m(x)
    assert m._pool and m._plans
    m.release_memory()
    assert m._pool == [] and m._plans == {} and m._cache is None
    np.testing.assert_array_equal(m(x)[0], out)  # still works, same answer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workspace_buffers_start_on_a_cache_line(dtype):
    """The kernels' 64-byte vector loads must not straddle two cache lines (1.5x slower measured)."""
    from rnnfast.nn._rnn_calls import _Workspace  # noqa: PLC0415
    ws = _Workspace()
    for n, size in enumerate((1, 7, 1000, 100_003)):
        a = ws.get(f"a{n}", (size,), dtype)
        assert a.ctypes.data % 64 == 0 and a.size == size and a.dtype == dtype


# Every kernel plan the planner can choose, forced, against the float64 reference: the few-rows kernel
# (threads sharing out the units for every row, csrc/rf_units.h; the weight rows read in place, or packed
# into panels first: "+panels") and the packed kernel with either product
# layout (x_t W_ih^T in each step's product, or one GEMM over all steps first), on ragged batches (a row of
# length 1 ends at t = 0, rows end between steps), stacked, in training (saved gates, backward) and
# inference (per-step scratch, input and output in place at equal lengths).
_PLANS = [Plan("units", "step", "units", 2), Plan("units", "gemm", "units", 2), Plan("units", "step", "units", 3),
          Plan("units", "gemm", "none", 1), Plan("units", "step", "none", 1),
          Plan("units", "step", "units", 2, True), Plan("units", "gemm", "none", 1, True),
          Plan("packed", "step", "rows", 2), Plan("packed", "gemm", "rows", 2),
          Plan("packed", "gemm", "none", 1)]


def _forced_f32_case(cell, plan, B, H, bidir, ragged, seed):
    T, I, L = 7, 9, 2
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, bidir, np.float32, seed, ragged=ragged)
    if ragged:
        lengths[0] = 1  # a sequence that ends at t = 0
    m = make(cell, I, H, num_layers=L, bidirectional=bidir, dtype=np.float32, seed=seed + 1)
    m._forced_plan = plan
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, bidir, f64[1], f64[2], lengths, nonlinearity=act(cell))
    return m, (x, h0, c0, lengths), f64, sd, (ro, rh, rc), L


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("plan", _PLANS, ids=str)
@pytest.mark.parametrize("B,H", [(2, 40), (5, 33), (3, 70)])
@pytest.mark.parametrize("ragged", [False, True])
def test_float32_forced_plans_match_reference(cell, plan, B, H, ragged):
    """Forward (training and inference) and backward of each forced plan match the float64 reference;
    H = 33 and 70 leave shares of units that end inside a 32-column panel."""
    m, (x, h0, c0, lengths), f64, sd, (ro, rh, rc), L = _forced_f32_case(cell, plan, B, H, False, ragged, 40 + B)
    assert m.plan_for(x) == plan
    for training in (False, True):
        m.train(training)
        _assert_f32_forward(run(m, x, h0, c0, lengths), (ro, rh, rc), lengths)
    _assert_f32_backward(m, cell, f64, sd, L, False, lengths, plan.threads)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [1, 2, 3])
@pytest.mark.parametrize("B,bidir", [(1, True), (2, False), (5, True), (13, False), (32, False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_short_inference_on_the_weight_rows_in_place(cell, T, B, bidir, threads):
    """The plan of short float32 inference calls on big weights (fewer than packed_min_t steps: the few-rows
    kernel on the weight rows in place, x_t W_ih^T in the steps, instead of BLAS), forced on small layers,
    against the float64 reference: ragged rows (one of length 1), stacked, bidirectional, up to 32 rows."""
    plan = Plan("units", "step", "units" if threads > 1 else "none", threads, False)
    I, H, L = 9, 40, 2
    x, h0, c0, lengths, *_ = problem(cell, B, T, I, H, L, bidir, np.float32, 80 + B + T)
    lengths[0] = 1
    m = make(cell, I, H, num_layers=L, bidirectional=bidir, dtype=np.float32, seed=B + T).eval()
    m._forced_plan = plan
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, bidir, f64[1], f64[2], lengths, nonlinearity=act(cell))
    _assert_f32_forward(run(m, x, h0, c0, lengths), (ro, rh, rc), lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kernel, B", [("latency", 1), ("units", 3), ("packed", 5), ("units", 8)])
@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_projection_on_the_input_weight_rows_in_place(cell, kernel, B, bidir, threads, proj_in_place):
    """The input projection over all steps read from W_ih's rows in place (rf_gemv_nb instead of packing,
    up to 32 rows in one pass: groups of 4, 3 or 5), forced on small layers: forward (inference and
    training) and backward against the float64 reference, ragged (a row of length 1; valid rows in one pass
    or not), stacked, bidirectional."""
    from rnnfast._kernels import _recurrent as k
    T, I, H, L = 6, 9, 40, 2
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, bidir, np.float32, 90 + B)
    lengths[0] = 4 if B == 1 else 1   # batch 1: 4 rows, in place
    if B > 1:
        lengths[1] = T - 1
    if kernel == "latency" and bidir:  # (the batch-1 kernel runs one direction)
        kernel = "units"
    ms = [make(cell, I, H, num_layers=L, bidirectional=bidir, dtype=np.float32, seed=B) for _ in range(2)]
    sd = {n: v.astype(np.float64) for n, v in ms[0].state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, rc = ref.forward(base(cell), f64[0], sd, L, bidir, f64[1], f64[2], lengths, nonlinearity=act(cell))
    M = int(lengths.sum())
    assert k.proj_in_place(M, I, 4 * H) == (4 <= M <= 32 and any(M % g == 0 for g in (4, 3, 5)))
    for m, training in zip(ms, (False, True)):
        m.train(training)
        m._forced_plan = Plan(kernel, "gemm", "units" if threads > 1 and kernel != "packed" else "none",
                              threads, False)
        _assert_f32_forward(run(m, x, h0, c0, lengths), (ro, rh, rc), lengths)
    _assert_f32_backward(ms[1], cell, f64, sd, L, bidir, lengths, threads)


def test_projection_in_place_rule(monkeypatch):
    """W_ih's rows in place for the projection: 4 to 32 rows that rf_gemv_nb takes in one pass (groups of
    4, 3 or 5), from 1 MB and 128 inputs (the planner's TABLE, handed to the kernels)."""
    from rnnfast._kernels import _recurrent as k
    from rnnfast.nn import _rnn_calls
    assert k.proj_in_place(20, 1024, 4096) and k.proj_in_place(32, 512, 2048)
    assert all(k.proj_in_place(m, 1024, 4096) for m in (6, 9, 10, 15, 30))  # groups of 3 or 5
    assert not k.proj_in_place(14, 1024, 4096)    # 4s and 2 left: one more pass over W_ih
    assert not k.proj_in_place(29, 1024, 4096)
    assert not k.proj_in_place(3, 1024, 4096)     # fewer than 4
    assert not k.proj_in_place(36, 1024, 4096)    # more rows: the pack pays
    assert k.proj_in_place(16, 256, 3072) and k.proj_in_place(8, 128, 2048)  # 3 MB, 1 MB
    assert not k.proj_in_place(16, 64, 8192)      # narrow
    assert not k.proj_in_place(16, 256, 512)      # 0.5 MB
    monkeypatch.setitem(TABLE, "proj_in_place_rows", 0)
    try:
        _rnn_calls.set_proj_in_place()
        assert not k.proj_in_place(16, 1024, 4096)
    finally:
        monkeypatch.undo()
        _rnn_calls.set_proj_in_place()
    assert k.proj_in_place(16, 1024, 4096)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [2, 3, 4, 8])
@pytest.mark.parametrize("proj", ["step", "gemm"])
@pytest.mark.parametrize("panels", [True, False], ids=["panels", "rows"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_units_kernel_every_row_count(cell, B, proj, panels, threads, serpentine):
    """The few-rows kernel's product for 1 to 4 rows (csrc/rf_units.h, rf_units_few: two panels at a time,
    each K chunk in registers, the stream prefetched ahead) and rf_gemm_packed's above, or on the weight
    rows in place (rf_gemv_nb: 16 (weight row, x row) pairs a block, groups of 4 rows then the 1-3 left),
    forward (training and inference) and backward against the float64 reference: lengths 1..T (B = 8
    passes through every row count), stacked; H = 130 gives shares of 96 and 34 units (three full panels;
    one full and one partial: a pair of panels and one left; a pair whose second is partial) on two threads,
    130 on one, so odd steps, which run a share's 64-unit chunks last first (rf_units_prod_dir, here at
    every size), meet a partial chunk on each; I = 9 and H leave odd segments (the rows: a tail after the
    16-wide chunks) in either segment of [x_t, h_{t-1}]."""
    T, I, H, L = 9, 9, 130, 2
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, False, np.float32, 60 + B)
    lengths = np.minimum(np.arange(B) * T // max(1, B - 1) + 1, T)  # 1 ... T: every row count
    plan = Plan("units", proj, "units" if threads > 1 else "none", threads, panels)
    m = make(cell, I, H, num_layers=L, dtype=np.float32, seed=B)
    m._forced_plan = plan
    assert m.plan_for(x) == plan
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, _ = ref.forward(base(cell), f64[0], sd, L, False, f64[1], f64[2], lengths, nonlinearity=act(cell))
    for training in (False, True):
        m.train(training)
        out, hn, _ = run(m, x, h0, c0, lengths)
        np.testing.assert_allclose(out, ro, rtol=1e-5, atol=5e-6)
        np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=5e-6)
    _assert_f32_backward(m, cell, f64, sd, L, False, lengths, threads)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
def test_few_rows_prefetch_switch_changes_no_bit(cell, threads):
    """The few-rows product's software prefetching (on by default except on AMD processors,
    _recurrent.set_few_prefetch) changes speed only: outputs, states and every gradient of 1 to 4 rows
    (lengths 1..T, the panel plan on one and two threads, training and inference) are bit for bit the
    same with it on and off."""
    from rnnfast._kernels import _recurrent as kern

    B, T, I, H, L = 4, 9, 9, 130, 2
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, False, np.float32, 90)
    lengths = np.array([1, 4, 9, 7])
    m = make(cell, I, H, num_layers=L, dtype=np.float32, seed=5)
    m._forced_plan = Plan("units", "gemm", "units" if threads > 1 else "none", threads, True)
    got = {}
    old = kern.set_few_prefetch(1)
    try:
        for on in (1, 0):
            kern.set_few_prefetch(on)
            m.eval()
            res = list(run(m, x, h0, c0, lengths))
            m.train()
            m.zero_grad()
            res += list(run(m, x, h0, c0, lengths))
            res += list(back(m, dout, dh, dc, n_threads=threads)) + [m.grads[k].copy() for k in sorted(m.grads)]
            got[on] = res
    finally:
        kern.set_few_prefetch(old)
    for a, b in zip(got[1], got[0]):
        if a is not None:
            assert np.array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("H", [128, 100])
def test_input_projection_of_few_rows_split_by_columns(cell, H):
    """A hoisted input projection with fewer rows than columns (B T = 20 rows, G H columns) runs on two threads cut by columns (blocks of 64; H = 100 leaves a cut inside a
    gate): inference and training match the float64 reference, on two threads as on one."""
    B, T, I, L = 2, 10, 300, 1
    x, h0, c0, lengths, dout, dh, dc = problem(cell, B, T, I, H, L, False, np.float32, 70 + H, ragged=False)
    m = make(cell, I, H, dtype=np.float32, seed=3)
    m._forced_plan = Plan("units", "gemm", "units", 2)
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f64 = [None if a is None else a.astype(np.float64) for a in (x, h0, c0, dout, dh, dc)]
    ro, rh, _ = ref.forward(base(cell), f64[0], sd, L, False, f64[1], f64[2], lengths)
    for nth in (2, 1):
        for training in (False, True):
            m.train(training)
            m.zero_grad()
            out, hn, _ = run(m, x, h0, c0, lengths, n_threads=nth)
            np.testing.assert_allclose(out, ro, rtol=1e-5, atol=5e-6)
            np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=5e-6)
        _assert_f32_backward(m, cell, f64, sd, L, False, lengths, nth)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("plan", _PLANS, ids=str)
def test_float32_forced_plans_bidirectional(cell, plan):
    m, (x, h0, c0, lengths), f64, sd, (ro, rh, rc), L = _forced_f32_case(cell, plan, 3, 24, True, True, 7)
    m.train()
    out, hn, cn = run(m, x, h0, c0, lengths)
    np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(hn, rh, rtol=1e-5, atol=2e-6)
    _assert_f32_backward(m, cell, f64, sd, L, True, lengths, plan.threads)
    m.eval()
    np.testing.assert_allclose(run(m, x, h0, c0, lengths)[0], ro, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_float32_units_kernel_reads_and_writes_in_place(cell, batch_first):
    """Inference at equal lengths: the few-rows kernel reads the caller's input and writes its output
    where they are (strided rows), for either layout; the same answer as from packed copies."""
    B, T, I, H = 3, 6, 5, 40
    x = np.random.default_rng(3).standard_normal((B, T, I)).astype(np.float32)
    m = make(cell, I, H, batch_first=batch_first, seed=2).eval()
    xin = x if batch_first else np.ascontiguousarray(x.swapaxes(0, 1))
    m._forced_plan = Plan("packed", "gemm", "none", 1)
    want = m(xin)[0]
    m._forced_plan = Plan("units", "step", "units", 2)
    np.testing.assert_allclose(m(xin)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_units_kernel_goes_on_alone_after_a_long_wait(cell):
    """As the batch-1 kernel: after a long wait at a barrier (forced: every wait counts), thread 0 runs the
    rest of the call alone, forward and backward, with the reference's results."""
    from rnnfast._kernels import _recurrent as kern

    plan = Plan("units", "step", "units", 2)
    m, (x, h0, c0, lengths), f64, sd, (ro, rh, rc), L = _forced_f32_case(cell, plan, 3, 40, False, True, 5)
    old = kern.set_latency_spin_ns(0)
    try:
        m.train()
        out, hn, _ = run(m, x, h0, c0, lengths)
        np.testing.assert_allclose(out, ro, rtol=1e-5, atol=2e-6)
        _assert_f32_backward(m, cell, f64, sd, L, False, lengths, 2)
    finally:
        kern.set_latency_spin_ns(old)


def test_pickled_layer_keeps_parameters_not_buffers_and_runs_read_only():
    """A pickled layer carries its parameters and settings but none of its reused buffers, so a copy
    whose arrays are read-only (joblib's memmap) still runs: the next call makes fresh buffers."""
    import pickle

    m = rf.nn.GRU(3, 5, seed=0).eval()
    x = np.ones((2, 4, 3), np.float32)
    want = m(x)[0]
    assert m._pool and "_pool" not in m.__getstate__()
    copy = pickle.loads(pickle.dumps(m))
    for arr in copy._params.values():
        arr.flags.writeable = False
    np.testing.assert_array_equal(copy(x)[0], want)
