"""LSTM / RNN float32 training's weight gradients on rf's kernel (csrc/rf_gemm.h's rf_gemm_tn_cols, par_gemm_tn:
[dW_ih, dW_hh]^T = [X, H_prev]^T dG over all rows), against a float64 reference and against the BLAS product
it replaces where it runs (_recurrent's TN_MIN_ROWS / TN_MAX_OUT, forced here by set_tn_rule): K, P and Q
past every block edge, beta, thread counts (one sum order: the product equal bit for bit); then layers of every kind it
serves (stacked, bidirectional, ragged, relu, every kernel), gradients accumulating over two backward calls,
and PyTorch with the same weights."""
import contextlib

import numpy as np
import pytest

from rnnfast._kernels import _recurrent as _k
from rnnfast.nn import GRU, LSTM, RNN

ALWAYS = (0, 1 << 40)
NEVER = (1 << 30, 0)


@contextlib.contextmanager
def tn_rule(rule):
    old = _k.set_tn_rule(*rule)
    try:
        yield
    finally:
        _k.set_tn_rule(*old)


# (K rows summed, P rows of C, Q columns): K around the 256-row blocks, P around 8-row blocks and 256-row
# m-blocks, Q around 32-column panels and the 16-panel groups
SHAPES = [(0, 5, 7), (1, 1, 1), (1, 3, 33), (255, 8, 32), (256, 9, 31), (257, 17, 65), (700, 212, 800),
          (513, 300, 520), (1030, 40, 160)]


@pytest.mark.parametrize("K,P,Q", SHAPES)
def test_gemm_tn_matches_float64(K, P, Q):
    rng = np.random.default_rng(K + P + Q)
    L = rng.standard_normal((K, P)).astype(np.float32)
    R = rng.standard_normal((K, Q)).astype(np.float32)
    C0 = rng.standard_normal((P, Q)).astype(np.float32)
    ref0 = L.astype(np.float64).T @ R.astype(np.float64)
    for beta in (0.0, 0.5):
        ref = ref0 + beta * C0
        outs = []
        for nth in (1, 2, 3):
            C = C0.copy()
            _k.gemm_tn(L, R, C, beta, nth)
            assert np.abs(C - ref).max() <= 2e-6 * max(1.0, np.abs(ref).max()) * max(1.0, np.sqrt(K)), (beta, nth)
            outs.append(C)
        for C in outs[1:]:  # (threads take whole columns: each output summed in one order)
            assert np.array_equal(C, outs[0])
    s0 = rng.standard_normal(Q).astype(np.float32)
    s = s0.copy()
    _k.gemm_tn(L, R, np.zeros((P, Q), np.float32), 0.0, 2, colsum=s)  # (the bias gradients, as rf_colsum_add)
    want = s0.copy()
    for k in range(K):
        want += R[k]
    assert np.array_equal(s, want)
    C = np.full((P, Q), np.nan, np.float32)
    _k.gemm_tn(L, R, C, 0.0, 2)  # (beta 0 ignores what C held, as BLAS)
    assert np.isfinite(C).all()


def test_gemm_tn_refuses_mismatched_shapes():
    a = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError):
        _k.gemm_tn(a, np.zeros((5, 2), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError):
        _k.gemm_tn(a, np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32))


def test_the_rule_is_in_the_buffer_table():
    """tnp (the product's scratch on rf's kernel) is in the table of an LSTM / RNN float32 kernel's backward
    from TN_MIN_ROWS rows up to TN_MAX_OUT elements of the product, never for GRU or BLAS's kernel."""
    lstm, gru = int(_k.Cell.CELL_LSTM), int(_k.Cell.CELL_GRU)
    packed, blas = int(_k.Kernel.KERNEL_PACKED), int(_k.Kernel.KERNEL_BLAS)
    F, H = 12, 200
    with tn_rule((2048, 1 << 18)):
        def has(cell, N, kernel=packed, h=H):
            return "tnp" in _k.dir_buffers(cell, F, h, 512, N, True, False, kernel, False, False, 2, True)
        assert has(lstm, 12800) and not has(lstm, 2047) and has(lstm, 2048)
        assert not has(lstm, 12800, h=256)  # ((12 + 256) 1024 elements > 2^18)
        assert not has(gru, 12800) and not has(lstm, 12800, kernel=blas)
        shapes = _k.dir_buffers(lstm, F, H, 512, 12800, True, False, packed, False, False, 3, True)
        assert shapes["tnp"] == (3 * int(_k.gemm_tn_scratch(F + H)),)


def _layer(cls, I, H, L, bi, seed=0, **kw):
    return cls(I, H, num_layers=L, bidirectional=bi, seed=seed, **kw)


def _train(m, x, lengths, dout, nth, calls=1):
    m.train()
    m.zero_grad()
    for _ in range(calls):
        out, _ = m(x, lengths=lengths, n_threads=nth)
        dx, _ = m.backward(dout, n_threads=nth)
    return dx, {k: g.copy() for k, g in m.grads.items()}


CASES = {  # (class, kwargs, B, T, I, H, layers, bidirectional, ragged); 600 rows or more: past two of the
    # product's 256-row blocks, where BLAS's sums (in blocks of its own) round otherwise
    "lstm": (LSTM, {}, 16, 40, 12, 40, 1, False, False),
    "lstm-stacked-bi-ragged": (LSTM, {}, 12, 90, 9, 24, 2, True, True),
    "rnn-relu-ragged": (RNN, {"nonlinearity": "relu"}, 20, 60, 7, 33, 1, False, True),
    "rnn-tanh-bi": (RNN, {}, 9, 70, 5, 70, 2, True, False),
    "lstm-few-rows": (LSTM, {}, 3, 200, 6, 64, 1, False, False),  # (the few-rows kernel at two threads)
    "lstm-batch-1": (LSTM, {}, 1, 700, 4, 32, 1, False, False),  # (the batch-1 kernel)
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_gradients_match_blas_product(case):
    cls, kw, B, T, I, H, L, bi, ragged = CASES[case]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = None
    if ragged:
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = T
    dout = rng.standard_normal((B, T, H * (2 if bi else 1))).astype(np.float32)
    m = _layer(cls, I, H, L, bi, **kw)
    with tn_rule(NEVER):
        dx0, g0 = _train(m, x, lengths, dout, 2, calls=2)
    for nth in (1, 2):
        with tn_rule(ALWAYS):
            dx, g = _train(m, x, lengths, dout, nth, calls=2)  # (two calls: the gradients accumulate)
        np.testing.assert_allclose(dx, dx0, rtol=1e-5, atol=1e-6)
        for k in g0:
            scale = max(1.0, float(np.abs(g0[k]).max()))
            np.testing.assert_allclose(g[k], g0[k], rtol=2e-5, atol=2e-6 * scale, err_msg=k)
        # (another product ran: its sums' rounding differs somewhere)
        assert not np.array_equal(g["weight_hh_l0"], g0["weight_hh_l0"])


def test_gru_and_float64_keep_blas():
    """GRU's weight gradients are three products (their own specs); float64 runs BLAS: the rule leaves both."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 10, 6))
    for m in (_layer(GRU, 6, 20, 1, False), _layer(LSTM, 6, 20, 1, False, dtype=np.float64)):
        dtype = m.dtype
        xx, dout = x.astype(dtype), rng.standard_normal((8, 10, 20)).astype(dtype)
        with tn_rule(NEVER):
            g0 = _train(m, xx, None, dout, 2)[1]
        with tn_rule(ALWAYS):
            g1 = _train(m, xx, None, dout, 2)[1]
        for k in g0:
            assert np.array_equal(g0[k], g1[k]), k


def test_against_torch_on_rfs_product():
    torch = pytest.importorskip("torch")
    from nn.test_planned_paths import _pair, _torch_run

    rng = np.random.default_rng(4)
    B, T, I, H = 10, 15, 7, 36
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    dout = rng.standard_normal((B, T, 2 * H)).astype(np.float32)
    tmod, rmod = _pair("lstm", I, H, 2, True, np.float32)
    torch.set_num_threads(1)
    t_out, t_dx, t_grads = _torch_run(tmod, x, lengths, dout)
    with tn_rule(ALWAYS):
        dx, g = _train(rmod, x, lengths, dout, 2)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-4, atol=1e-5)
    for k, tg in t_grads.items():
        np.testing.assert_allclose(g[k], tg, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(tg).max())), err_msg=k)
