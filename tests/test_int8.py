"""int8 inference kernels (rnnfast/_kernels/_int8.pyx, csrc/rf_int8.h).

The kernels against a plain-numpy twin of the same quantization scheme (per-row u8 inputs with a zero
point, per-channel symmetric int8 weights, int32 sums, float32 cell maths), every instruction path this
CPU runs against the scalar one (bit for bit), lengths / bidirectional / stacked / streaming against
their definitions, and the error against float32.

Accuracy contract (random layers, I=32..128, H=64..256, T=20..50, weights U(-1/sqrt(H), 1/sqrt(H)) as
PyTorch initialises them): LSTM, GRU and RNN outputs within 2e-2 relative L2 and 5e-2 max absolute of
float32 (measured here, B=16: 0.60-0.80e-2 relative L2, 0.4-1.6e-2 max absolute, RMS 0.7-3.2e-3
against an output RMS of 0.11-0.40; ONNX Runtime int8 gives about 1e-2
relative L2 on the same layers).
"""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast._kernels import _int8 as k

f32 = np.float32
MODES = {"lstm": 4, "gru": 3, "rnn": 1}
PATHS = [p for p in k.ISAS if k.ISAS.index(p) <= k.ISAS.index(k.best_isa())]


# --------------------------------------------------------------------------------- numpy reference


def quant_rows(X):
    """u8 per row: (q, scale, zero point), as csrc/rf_int8.h describes."""
    X = np.asarray(X, f32)
    lo = np.minimum(f32(0), X.min(1))
    hi = np.maximum(f32(0), X.max(1))
    sc = ((hi - lo) / f32(255)).astype(f32)
    sc = np.where(sc > 0, sc, f32(1)).astype(f32)
    inv = (f32(1) / sc).astype(f32)
    zp = np.clip(np.rint(-lo * inv), 0, 255).astype(f32)
    q = np.clip(np.rint(X * inv[:, None]) + zp[:, None], 0, 255).astype(np.int64)
    return q, sc, zp.astype(np.int64)


def quant_weights(W):
    W = np.asarray(W, f32)
    sw = (np.abs(W).max(1) / f32(127)).astype(f32)
    q = np.clip(np.rint(W / np.where(sw > 0, sw, f32(1))[:, None]), -127, 127).astype(np.int64)
    return q, sw


def qmatmul(X, W):
    """The dequantized int8 product X W^T of the scheme."""
    q, sc, zp = quant_rows(X)
    qw, sw = quant_weights(W)
    adj = (q @ qw.T - zp[:, None] * qw.sum(1)[None, :]).astype(f32)
    return (adj * (sc[:, None] * sw[None, :])).astype(f32)


def sig(x):
    return 1 / (1 + np.exp(-x))


def cell_ref(mode, xw, hw, b_ih, b_hh, h, c, relu=False):
    """One step of the cell from the two products (exact activations, float64)."""
    H = h.shape[1]
    if mode == "lstm":
        i, f, g, o = np.split(((xw + hw) + (b_ih + b_hh)).astype(np.float64), 4, 1)
        c = (sig(f) * c + sig(i) * np.tanh(g)).astype(f32)
        return (sig(o) * np.tanh(c)).astype(f32), c
    if mode == "gru":
        a, q, bs = xw.astype(np.float64), hw.astype(np.float64), b_ih + b_hh
        r = sig(a[:, :H] + bs[:H] + q[:, :H])
        z = sig(a[:, H:2 * H] + bs[H:2 * H] + q[:, H:2 * H])
        n = np.tanh(a[:, 2 * H:] + b_ih[2 * H:] + r * (q[:, 2 * H:] + b_hh[2 * H:]))
        return ((1 - z) * n + z * h).astype(f32), c
    a = (xw + hw) + (b_ih + b_hh)
    return (np.maximum(a, 0) if relu else np.tanh(a.astype(np.float64))).astype(f32), c


def direction_ref(mode, w, x, h, c, relu=False):
    """One direction over x (B, T, F), every row all T steps: (y (B, T, H), h_T, c_T)."""
    w_ih, w_hh, b_ih, b_hh = w
    ys = []
    for t in range(x.shape[1]):
        h, c = cell_ref(mode, qmatmul(x[:, t], w_ih), qmatmul(h, w_hh), b_ih, b_hh, h, c, relu)
        ys.append(h)
    return np.stack(ys, 1), h, c


def net_ref(mode, ws, x, lengths, h0, c0, relu=False):
    """The whole network, one row at a time (quantization is per row, so this is the batch's answer)."""
    B, T, _ = x.shape
    L, D = len(ws), len(ws[0])
    H = ws[0][0][1].shape[1]
    out = np.zeros((B, T, D * H), f32)
    hn = np.zeros((L * D, B, H), f32)
    cn = np.zeros((L * D, B, H), f32)
    for b in range(B):
        n = int(lengths[b])
        inp = x[b:b + 1, :n]
        for l in range(L):
            y = np.zeros((1, n, D * H), f32)
            for d in range(D):
                src = inp if d == 0 else inp[:, ::-1]
                c = c0[l * D + d, b:b + 1] if c0 is not None else None
                yd, hT, cT = direction_ref(mode, ws[l][d], src, h0[l * D + d, b:b + 1], c, relu)
                y[:, :, d * H:(d + 1) * H] = yd if d == 0 else yd[:, ::-1]
                hn[l * D + d, b] = hT[0]
                if cT is not None:
                    cn[l * D + d, b] = cT[0]
            inp = y
        out[b, :n] = inp[0]
    return out, hn, cn


# ------------------------------------------------------------------------------------------ helpers


def make_weights(mode, F, H, L=1, D=1, seed=0):
    rng = np.random.default_rng(seed)
    G, s = MODES[mode], 1 / np.sqrt(H)
    ws = []
    for l in range(L):
        Fl = F if l == 0 else D * H
        ws.append([tuple(rng.uniform(-s, s, shape).astype(f32)
                         for shape in ((G * H, Fl), (G * H, H), (G * H,), (G * H,))) for _ in range(D)])
    return ws


def float_layer(mode, ws, F, relu=False):
    """The float32 rnnfast layer holding the weights ``ws`` (make_weights' nesting)."""
    L, D = len(ws), len(ws[0])
    H = ws[0][0][1].shape[1]
    cls = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[mode]
    kw = {"nonlinearity": "relu"} if relu else {}
    layer = cls(F, H, num_layers=L, bidirectional=D == 2, seed=0, **kw)
    sd = {}
    for l, dirs in enumerate(ws):
        for d, w in enumerate(dirs):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            for name, a in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), w):
                sd[name + sfx] = a
    layer.load_state_dict(sd)
    return layer.eval()


def quantized(mode, ws, F, relu=False):
    return rf.quantize(float_layer(mode, ws, F, relu), "int8")


def run(mode, ws, x, lengths=None, h0=None, c0=None, n_threads=1, relu=False):
    """(out, h_n, c_n) of the int8 model (c_n None but for LSTM)."""
    q = quantized(mode, ws, x.shape[2], relu)
    hx = None if h0 is None else ((h0, c0) if mode == "lstm" else h0)
    out, st = q.forward(x, hx, lengths=lengths, n_threads=n_threads)
    return (out, *st) if mode == "lstm" else (out, st, None)


@pytest.fixture
def path():
    """Restores the automatic path after a test that forces one."""
    yield
    k.set_isa(None)


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("B,T,F,H", [(1, 9, 5, 20), (5, 6, 33, 40), (37, 4, 70, 64)])
def test_kernel_matches_reference(mode, B, T, F, H):
    ws = make_weights(mode, F, H, seed=B)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F)).astype(f32)
    h0 = (0.5 * rng.standard_normal((1, B, H))).astype(f32)
    c0 = (0.5 * rng.standard_normal((1, B, H))).astype(f32) if mode == "lstm" else None
    out, hn, cn = run(mode, ws, x, h0=h0, c0=c0)
    ref, hr, cr = net_ref(mode, ws, x, np.full(B, T), h0, c0)
    # the same integers; only the cells' fast activations (about 1 ulp) and the order of two float
    # additions differ, and a rounding tie they move could shift one u8 by one step
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(hn, hr, rtol=0, atol=2e-5)
    if mode == "lstm":
        np.testing.assert_allclose(cn, cr, rtol=0, atol=5e-5)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("B", [1, 3, 40])
def test_every_path_gives_the_same_bits(mode, B, path):
    ws = make_weights(mode, 45, 48, L=2, D=2, seed=3)
    x = np.random.default_rng(2).standard_normal((B, 7, 45)).astype(f32)
    lengths = np.random.default_rng(3).integers(1, 8, B) if B > 1 else None
    results = {}
    for p in PATHS:
        k.set_isa(p)
        for nth in (1, 2):
            results[p, nth] = run(mode, ws, x, lengths, n_threads=nth)
    base = results["scalar", 1]
    for key, res in results.items():
        for a, b in zip(base[:3], res[:3]):
            if a is not None:
                assert np.array_equal(a, b), key


def test_forced_amx_covers_small_products(path):
    """Forced AMX runs even a one-row product on tiles (auto keeps those for VNNI)."""
    if "amx" not in PATHS:
        pytest.skip("this CPU has no AMX-INT8")
    ws = make_weights("lstm", 16, 32)
    x = np.random.default_rng(0).standard_normal((1, 5, 16)).astype(f32)
    k.set_isa("amx")
    assert k.current_isa() == "amx"
    a = run("lstm", ws, x)[0]
    k.set_isa("scalar")
    assert np.array_equal(a, run("lstm", ws, x)[0])


@pytest.mark.parametrize("mode", list(MODES))
def test_lengths_bidirectional_stacked(mode):
    B, T, F, H = 6, 9, 11, 24
    ws = make_weights(mode, F, H, L=2, D=2, seed=5)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, F)).astype(f32)
    lengths = np.array([3, 9, 1, 7, 9, 4])
    h0 = (0.3 * rng.standard_normal((4, B, H))).astype(f32)
    c0 = (0.3 * rng.standard_normal((4, B, H))).astype(f32) if mode == "lstm" else None
    out, hn, cn = run(mode, ws, x, lengths, h0, c0, n_threads=2)
    ref, hr, cr = net_ref(mode, ws, x, lengths, h0, c0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-5)
    np.testing.assert_allclose(hn, hr, rtol=0, atol=3e-5)
    if mode == "lstm":
        np.testing.assert_allclose(cn, cr, rtol=0, atol=6e-5)
    for b, n in enumerate(lengths):
        assert not out[b, n:].any()  # zero past each length
    # full rows: the kernels read the caller's batch-first input and write the output in place (strided)
    out, hn, cn = run(mode, ws, x, None, h0, c0, n_threads=2)
    ref, hr, cr = net_ref(mode, ws, x, np.full(B, T), h0, c0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-5)
    np.testing.assert_allclose(hn, hr, rtol=0, atol=3e-5)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_fast_cells_agree_with_the_float_cells(mode):
    """The division-free AVX-512 passes give rf_cells_impl.h's results to a few float32 ulp."""
    if not k.set_fast_cells(True):
        pytest.skip("no AVX-512: the float cells run")
    ws = make_weights(mode, 16, 64, seed=4)
    x = (3 * np.random.default_rng(0).standard_normal((32, 1, 16))).astype(f32)
    h0 = (0.5 * np.random.default_rng(1).standard_normal((1, 32, 64))).astype(f32)
    c0 = (2 * np.random.default_rng(2).standard_normal((1, 32, 64))).astype(f32) if mode == "lstm" else None
    fast = run(mode, ws, x, h0=h0, c0=c0)
    try:
        k.set_fast_cells(False)
        slow = run(mode, ws, x, h0=h0, c0=c0)
    finally:
        k.set_fast_cells(True)
    for a, b in zip(fast, slow):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_row_does_not_depend_on_its_batch(mode):
    """Per-row quantization: a sequence gives the same bits alone (the batch-1 kernel) and in a batch of
    40 (the rows kernel, AMX-sized) with lengths."""
    ws = make_weights(mode, 20, 48, L=2, D=2, seed=8)
    x = np.random.default_rng(9).standard_normal((40, 7, 20)).astype(f32)
    lengths = np.random.default_rng(10).integers(1, 8, 40)
    out = run(mode, ws, x, lengths, n_threads=2)[0]
    for b in (0, 17, 39):
        alone = run(mode, ws, x[b:b + 1, :lengths[b]], n_threads=2)[0]
        assert np.array_equal(alone[0], out[b, :lengths[b]])


def test_relu_rnn():
    ws = make_weights("rnn", 8, 16)
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(f32)
    h0 = np.zeros((1, 3, 16), f32)
    out = run("rnn", ws, x, relu=True)[0]
    ref = net_ref("rnn", ws, x, np.full(3, 5), h0, None, relu=True)[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
    assert (out >= 0).all()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("B", [1, 4])
def test_streaming_steps_match_the_sequence(mode, B):
    """step() calls carrying the state give the whole-sequence call's outputs exactly."""
    ws = make_weights(mode, 12, 32, L=2)
    q = quantized(mode, ws, 12)
    x = np.random.default_rng(6).standard_normal((B, 6, 12)).astype(f32)
    full, st_full = q.forward(x, n_threads=2)
    st = None
    for t in range(6):
        y, st = q.step(x[:, t], st, n_threads=2)
        assert np.array_equal(y, full[:, t])
    pairs = zip(st, st_full) if mode == "lstm" else [(st, st_full)]
    for a, b in pairs:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("mode,I,H,T", [("lstm", 128, 256, 30), ("gru", 64, 128, 50), ("rnn", 32, 64, 20)])
def test_error_against_float32(mode, I, H, T):
    """The accuracy contract of the module docstring, against the float32 layer itself."""
    layer = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[mode](I, H, seed=0).eval()
    x = np.random.default_rng(7).standard_normal((8, T, I)).astype(f32)
    ref = layer.forward(x)[0]
    out = rf.quantize(layer, "int8").forward(x)[0]
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < 2e-2
    assert np.abs(out - ref).max() < 5e-2


def test_zero_and_constant_rows_quantize_exactly():
    q, sc, zp = quant_rows(np.zeros((1, 8), f32))
    assert (q == 0).all() and sc[0] == 1 and zp[0] == 0
    ws = make_weights("lstm", 4, 16)
    x = np.zeros((2, 3, 4), f32)  # all-zero input and state: only the biases act
    out = run("lstm", ws, x)[0]
    ref = net_ref("lstm", ws, x, np.full(2, 3), np.zeros((1, 2, 16), f32), np.zeros((1, 2, 16), f32))[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)


def test_nonfinite_input_does_not_crash():
    ws = make_weights("gru", 4, 16)
    x = np.full((2, 3, 4), np.nan, f32)
    x[1] = np.inf
    out = run("gru", ws, x)[0]
    assert out.shape == (2, 3, 16)


def test_paths_and_bad_input(path):
    assert k.best_isa() in k.ISAS
    with pytest.raises(ValueError, match="int8 path"):
        k.set_isa("avx1024")
    with pytest.raises(ValueError, match="int8 path"):
        k.set_isa(3)
    k.set_isa("scalar")
    assert k.current_isa() == "scalar"
    k.set_isa(None)
    assert k.current_isa() == k.best_isa()
    with pytest.raises(ValueError, match="int8 kernels run"):
        k.pack_weights(3, np.zeros((3, 2), f32), np.zeros((3, 1), f32), np.zeros(3, f32), np.zeros(1, f32))
    with pytest.raises(ValueError, match="weights must be"):
        k.pack_weights(1, np.zeros((8, 2), f32), np.zeros((8, 3), f32), np.zeros(8, f32), np.zeros(3, f32))
    pk = k.pack_weights(0, np.ones((4, 3), f32), np.ones((4, 4), f32), np.zeros(4, f32), np.zeros(4, f32))
    # (bs, off, reverse, x, x_strides, h, c, y, ycol, y_strides, n_threads): 2 rows, lengths 2 and 1
    args = [np.array([2, 1], np.intc), np.array([0, 2], np.intc), False, np.zeros((3, 3), f32), (3, 0),
            np.zeros((2, 4), f32), None, np.zeros((3, 4), f32), 0, (4, 0), 1]

    def with_(i, v):
        return args[:i] + [v] + args[i + 1:]

    assert k.run(pk, 0, False, *args) == 0
    with pytest.raises(ValueError, match="pih must be int8"):
        k.run(dict(pk, pih=pk["pih"].astype(np.int16)), 0, False, *args)
    with pytest.raises(ValueError, match="another cell"):
        k.run(pk, 1, False, *with_(6, np.zeros((2, 4), f32)))
    with pytest.raises(ValueError, match="packed layout"):
        k.run(pk, 0, False, *with_(0, np.array([1, 2], np.intc)))
    with pytest.raises(ValueError, match="c is LSTM"):
        k.run(pk, 0, False, *with_(6, np.zeros((2, 4), f32)))
    with pytest.raises(ValueError, match="x holds 6 values"):
        k.run(pk, 0, False, *with_(3, np.zeros((2, 3), f32)))
    with pytest.raises(ValueError, match="bad strides for y"):
        k.run(pk, 0, False, *with_(9, (2, 0)))
    with pytest.raises(ValueError, match="float32"):
        k.run(pk, 0, False, *with_(7, np.zeros((3, 4))))


def test_weights_round_trip_through_files(tmp_path):
    """unpack gives scale * int8; encoding that again gives the same int8 and scales (lossless files),
    and a saved quantized Sequential loads to the same outputs."""
    ws = make_weights("lstm", 10, 24, L=2, seed=9)
    q = quantized("lstm", ws, 10)
    from rnnfast.quantize import get_backend
    be = get_backend("int8")
    for name, w in q.dequantized().items():
        if name.startswith("weight"):
            parts = be.encode(w)
            assert parts[""].dtype == np.int8 and np.abs(parts[""]).max() <= 127
            assert np.array_equal(be.decode(parts), w)
            assert np.array_equal(be.encode(be.decode(parts))[""], parts[""])
    model = rf.nn.Sequential(float_layer("lstm", ws, 10), rf.nn.LastStep(), rf.nn.Linear(24, 3, seed=0))
    qm = rf.quantize(model, "int8")
    x = np.random.default_rng(1).standard_normal((4, 6, 10)).astype(f32)
    path = tmp_path / "m.rnnfast"
    qm.save(path)
    back = rf.load(path)
    assert back.precision == "int8"
    assert np.array_equal(back.forward(x), qm.forward(x))
    with pytest.raises(TypeError):
        back.backward(np.ones((4, 3), f32))
