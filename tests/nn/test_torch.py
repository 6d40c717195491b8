"""rnnfast.nn.LSTM / GRU / RNN against torch.nn.LSTM / GRU / RNN with the same weights.

Every check loads a torch module's ``state_dict()`` into the rnnfast layer and compares outputs, final
states and all gradients (input, initial states, every parameter) for the loss

    loss = sum(out * dout) + sum(h_n * dh_n) (+ sum(c_n * dc_n) for LSTM)

with random ``dout``/``dh_n``/``dc_n``: torch through autograd, rnnfast through ``backward`` + ``grads``.
Variable lengths go through ``pack_padded_sequence(enforce_sorted=False)`` / ``pad_packed_sequence`` on
the torch side (DESIGN.md section 2).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnnfast as rf  # noqa: E402

B, T, I, H = 6, 7, 5, 6
# Ragged, unsorted, includes 1 and T.
LENGTHS = np.array([3, 7, 1, 5, 7, 2], dtype=np.int64)

TOL = {
    np.float32: dict(rtol=1e-5, atol=1e-6),
    np.float64: dict(rtol=1e-10, atol=1e-12),
}


def close(actual, desired, dtype, err_msg=""):
    """assert_allclose with rtol 1e-5 (float32) / 1e-10 (float64) and a small atol (1e-6 / 1e-12).

    The atol is scaled by the array's largest magnitude when that exceeds 1: a gradient entry is a sum of
    many terms, and one that nearly cancels to ~0.01 inside an array of entries ~10 carries float32
    rounding noise of the larger terms (~1e-6), which a purely elementwise relative bound would reject.
    """
    desired = np.asarray(desired)
    tol = TOL[dtype]
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=err_msg)


TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}

MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_torch():
    """One torch thread: at these tiny sizes threads only cost time (a lot, on a busy machine).

    rnnfast calls pass ``n_threads`` explicitly for the same reason (1 unless a test is about threads).
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# --------------------------------------------------------------------------- helpers
def _kwargs(mode):
    if mode == "rnn_tanh":
        return dict(nonlinearity="tanh")
    if mode == "rnn_relu":
        return dict(nonlinearity="relu")
    return {}


def _classes(mode):
    if mode == "lstm":
        return torch.nn.LSTM, rf.nn.LSTM
    if mode == "gru":
        return torch.nn.GRU, rf.nn.GRU
    return torch.nn.RNN, rf.nn.RNN


def make_pair(mode, num_layers=1, bidirectional=False, bias=True, dtype=np.float64, batch_first=True,
              dropout=0.0, seed=0, input_size=I, hidden_size=H, convert=True):
    """A torch module and an rnnfast layer holding the same weights."""
    tcls, rcls = _classes(mode)
    torch.manual_seed(seed)
    tmod = tcls(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                dropout=dropout, bidirectional=bidirectional, **_kwargs(mode))
    tmod = tmod.to(TORCH_DTYPE[dtype])
    rmod = rcls(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                dropout=dropout, bidirectional=bidirectional, dtype=dtype, seed=seed + 1, **_kwargs(mode))
    sd = tmod.state_dict()
    if convert:
        sd = {k: v.detach().cpu().numpy() for k, v in sd.items()}
    rmod.load_state_dict(sd)
    return tmod, rmod


def make_data(mode, num_layers, bidirectional, dtype, seed=0, batch=B, steps=T, batch_first=True,
              input_size=I, hidden_size=H):
    """x, h0, c0 (None unless LSTM), dout, dh_n, dc_n (None unless LSTM) as numpy arrays."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    LD = num_layers * D
    xshape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    oshape = xshape[:2] + (D * hidden_size,)
    x = rng.standard_normal(xshape).astype(dtype)
    h0 = (0.5 * rng.standard_normal((LD, batch, hidden_size))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((LD, batch, hidden_size))).astype(dtype) if mode == "lstm" else None
    dout = rng.standard_normal(oshape).astype(dtype)
    dh = rng.standard_normal((LD, batch, hidden_size)).astype(dtype)
    dc = rng.standard_normal((LD, batch, hidden_size)).astype(dtype) if mode == "lstm" else None
    return x, h0, c0, dout, dh, dc


def run_torch(tmod, mode, x, h0, c0, dout, dh, dc, lengths=None, backward=True):
    """Forward (+ autograd backward) in torch. Returns dict of numpy arrays."""
    batch_first = tmod.batch_first
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True) if h0 is not None else None
    c0t = torch.tensor(c0, requires_grad=True) if c0 is not None else None
    if mode == "lstm":
        hx = (h0t, c0t) if h0t is not None else None
    else:
        hx = h0t
    tmod.zero_grad(set_to_none=True)
    if lengths is None:
        out, st = tmod(xt, hx)
    else:
        steps = x.shape[1] if batch_first else x.shape[0]
        packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        out_p, st = tmod(packed, hx)
        out, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=steps)
    if mode == "lstm":
        h_n, c_n = st
    else:
        h_n, c_n = st, None
    res = dict(out=out.detach().numpy(), h_n=h_n.detach().numpy(),
               c_n=None if c_n is None else c_n.detach().numpy())
    if backward:
        loss = (out * torch.tensor(dout)).sum() + (h_n * torch.tensor(dh)).sum()
        if c_n is not None:
            loss = loss + (c_n * torch.tensor(dc)).sum()
        loss.backward()
        res["dx"] = xt.grad.numpy()
        res["dh0"] = None if h0t is None else h0t.grad.numpy()
        res["dc0"] = None if c0t is None else c0t.grad.numpy()
        res["grads"] = {k: p.grad.numpy() for k, p in tmod.named_parameters()}
    return res


def run_rf(rmod, mode, x, h0, c0, dout, dh, dc, lengths=None, backward=True, n_threads=1):
    """Forward (+ backward) in rnnfast. Returns dict of numpy arrays."""
    if mode == "lstm":
        hx = (h0, c0) if h0 is not None else None
        dstate = (dh, dc)
    else:
        hx = h0
        dstate = dh
    rmod.zero_grad()
    out, st = rmod.forward(x, hx, lengths=lengths, n_threads=n_threads)
    if mode == "lstm":
        h_n, c_n = st
    else:
        h_n, c_n = st, None
    res = dict(out=out, h_n=h_n, c_n=c_n)
    if backward:
        dx, dst = rmod.backward(dout, dstate, n_threads=n_threads)
        if mode == "lstm":
            dh0, dc0 = dst
        else:
            dh0, dc0 = dst, None
        res.update(dx=dx, dh0=dh0, dc0=dc0, grads={k: g.copy() for k, g in rmod.grads.items()})
    return res


def assert_match(rres, tres, dtype, backward=True):
    for key in ("out", "h_n", "c_n") + (("dx", "dh0", "dc0") if backward else ()):
        if tres.get(key) is None:
            assert rres.get(key) is None, key
            continue
        r = rres[key]
        assert r.shape == tres[key].shape, (key, r.shape, tres[key].shape)
        assert r.dtype == np.dtype(dtype), (key, r.dtype)
        close(r, tres[key], dtype, err_msg=key)
    if backward:
        assert set(rres["grads"]) == set(tres["grads"])
        for k, g in tres["grads"].items():
            assert rres["grads"][k].shape == g.shape, k
            close(rres["grads"][k], g, dtype, err_msg=f"grads[{k!r}]")


# --------------------------------------------------------------------------- the full grid
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_forward_backward_matches_torch(ragged, mode, num_layers, bidirectional, bias, dtype):
    tmod, rmod = make_pair(mode, num_layers, bidirectional, bias, dtype, seed=num_layers)
    data = make_data(mode, num_layers, bidirectional, dtype, seed=7 + num_layers)
    lengths = LENGTHS if ragged else None
    tres = run_torch(tmod, mode, *data, lengths=lengths)
    rres = run_rf(rmod, mode, *data, lengths=lengths)
    assert_match(rres, tres, dtype)
    if ragged:
        # outputs past each length are exactly zero
        for b, n in enumerate(LENGTHS):
            assert np.all(rres["out"][b, n:] == 0)
            assert np.all(rres["dx"][b, n:] == 0)


EDGE_LENGTHS = {
    "all_T": [T] * B,  # lengths given but nothing is padded
    "max_below_T": [3, 5, 1, 5, 4, 2],  # every row padded
    "all_one": [1] * B,
    "ties": [4, 4, 2, 2, 4, 2],
    "torch_tensor": torch.tensor([3, 7, 1, 5, 7, 2]),
    "single_row": [3],
}


@pytest.mark.parametrize("case", list(EDGE_LENGTHS))
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_edge_lengths_match_torch(mode, case):
    dtype = np.float64
    lengths = EDGE_LENGTHS[case]
    tmod, rmod = make_pair(mode, 2, True, True, dtype, seed=3)
    data = make_data(mode, 2, True, dtype, seed=5, batch=len(lengths))
    tres = run_torch(tmod, mode, *data, lengths=np.asarray(lengths))
    rres = run_rf(rmod, mode, *data, lengths=lengths)
    assert_match(rres, tres, dtype)


def test_state_dict_keys_and_shapes_match_torch():
    for mode in MODES:
        for bias in (True, False):
            tmod, rmod = make_pair(mode, 2, True, bias, np.float32)
            tsd = tmod.state_dict()
            rsd = rmod.state_dict()
            assert list(rsd) == list(tsd)
            for k, v in tsd.items():
                assert rsd[k].shape == tuple(v.shape)
                np.testing.assert_array_equal(rsd[k], v.numpy())
            assert set(rmod.grads) == set(tsd)


# --------------------------------------------------------------------------- single cases
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("mode", MODES)
def test_batch_first_false(mode, ragged):
    dtype = np.float64
    tmod, rmod = make_pair(mode, 2, True, True, dtype, batch_first=False, seed=3)
    data = make_data(mode, 2, True, dtype, seed=11, batch_first=False)
    lengths = LENGTHS if ragged else None
    tres = run_torch(tmod, mode, *data, lengths=lengths)
    rres = run_rf(rmod, mode, *data, lengths=lengths)
    assert rres["out"].shape == (T, B, 2 * H)
    assert_match(rres, tres, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_load_torch_tensors_directly(mode, dtype):
    tmod, rmod = make_pair(mode, 2, True, True, dtype, seed=5, convert=False)
    for k, v in tmod.state_dict().items():
        np.testing.assert_array_equal(rmod.state_dict()[k], v.numpy())
    data = make_data(mode, 2, True, dtype, seed=13)
    tres = run_torch(tmod, mode, *data, lengths=LENGTHS)
    rres = run_rf(rmod, mode, *data, lengths=LENGTHS)
    assert_match(rres, tres, dtype)


def test_load_float32_torch_tensors_into_float64_layer():
    """A float32 torch state_dict loads into a float64 layer (converted once)."""
    torch.manual_seed(0)
    tmod = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
    rmod = rf.nn.LSTM(I, H, num_layers=2, dtype=np.float64)
    rmod.load_state_dict(tmod.state_dict())
    for k, v in tmod.state_dict().items():
        assert rmod.state_dict()[k].dtype == np.float64
        np.testing.assert_array_equal(rmod.state_dict()[k], v.numpy().astype(np.float64))
    tmod = tmod.double()
    data = make_data("lstm", 2, False, np.float64, seed=2)
    assert_match(run_rf(rmod, "lstm", *data), run_torch(tmod, "lstm", *data), np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_default_zero_states_and_no_dstate(mode):
    """hx omitted == zeros in torch; dstate omitted == zero gradient wrt the final states."""
    dtype = np.float64
    tmod, rmod = make_pair(mode, 2, True, True, dtype, seed=4)
    x, h0, c0, dout, dh, dc = make_data(mode, 2, True, dtype, seed=4)
    zh = np.zeros_like(dh)
    zc = None if dc is None else np.zeros_like(dc)
    tres = run_torch(tmod, mode, x, None, None, dout, zh, zc, lengths=LENGTHS)
    out, st = rmod(x, None, lengths=LENGTHS, n_threads=1)
    dx, _ = rmod.backward(dout, n_threads=1)
    close(out, tres["out"], dtype)
    h_n = st[0] if mode == "lstm" else st
    close(h_n, tres["h_n"], dtype)
    close(dx, tres["dx"], dtype)
    for k, g in tres["grads"].items():
        close(rmod.grads[k], g, dtype, err_msg=k)


@pytest.mark.parametrize("n_threads", [1, 2, 4])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_threads_match_torch(mode, n_threads):
    dtype = np.float64
    tmod, rmod = make_pair(mode, 2, True, True, dtype, seed=9)
    data = make_data(mode, 2, True, dtype, seed=9)
    tres = run_torch(tmod, mode, *data, lengths=LENGTHS)
    rres = run_rf(rmod, mode, *data, lengths=LENGTHS, n_threads=n_threads)
    assert_match(rres, tres, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_input_matches_torch(mode):
    dtype = np.float64
    tmod, rmod = make_pair(mode, 2, True, True, dtype, seed=6)
    x, h0, c0, dout, dh, dc = make_data(mode, 2, True, dtype, seed=6, batch=1)
    x, dout, h0, dh = x[0], dout[0], h0[:, 0], dh[:, 0]
    c0 = None if c0 is None else c0[:, 0]
    dc = None if dc is None else dc[:, 0]
    tres = run_torch(tmod, mode, x, h0, c0, dout, dh, dc)
    rres = run_rf(rmod, mode, x, h0, c0, dout, dh, dc)
    assert rres["out"].shape == (T, 2 * H)
    assert_match(rres, tres, dtype)


def test_gradients_accumulate_like_torch():
    """Two backward passes without zero_grad add up, as torch's .grad does."""
    dtype = np.float64
    tmod, rmod = make_pair("gru", 2, True, True, dtype, seed=8)
    d1 = make_data("gru", 2, True, dtype, seed=1)
    d2 = make_data("gru", 2, True, dtype, seed=2)
    g1 = run_torch(tmod, "gru", *d1, lengths=LENGTHS)["grads"]
    g2 = run_torch(tmod, "gru", *d2)["grads"]
    rmod.zero_grad()
    for (x, h0, _, dout, dh, _), lengths in ((d1, LENGTHS), (d2, None)):
        rmod(x, h0, lengths=lengths, n_threads=1)
        rmod.backward(dout, dh, n_threads=1)
    for k in g1:
        close(rmod.grads[k], g1[k] + g2[k], dtype, err_msg=k)


# --------------------------------------------------------------------------- step
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("zero_state", [False, True], ids=["h0", "nostate"])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_step_matches_torch_sequence(mode, dtype, zero_state):
    tmod, rmod = make_pair(mode, 2, False, True, dtype, seed=12)
    rmod.eval()
    x, h0, c0, *_ = make_data(mode, 2, False, dtype, seed=12)
    state = (h0, c0) if mode == "lstm" else h0
    if zero_state:
        h0 = np.zeros_like(h0)
        c0 = None if c0 is None else np.zeros_like(c0)
        state = None
    tres = run_torch(tmod, mode, x, h0, c0, None, None, None, backward=False)
    for t in range(T):
        y, state = rmod.step(x[:, t], state, n_threads=1)
        assert y.shape == (B, H)
        close(y, tres["out"][:, t], dtype, err_msg=f"t={t}")
    if mode == "lstm":
        close(state[0], tres["h_n"], dtype)
        close(state[1], tres["c_n"], dtype)
    else:
        close(state, tres["h_n"], dtype)


# --------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_dropout_eval_mode_matches_torch(mode, dtype):
    tmod, rmod = make_pair(mode, 2, True, True, dtype, dropout=0.5, seed=14)
    tmod.eval()
    rmod.eval()
    data = make_data(mode, 2, True, dtype, seed=14)
    with torch.no_grad():
        tres = run_torch(tmod, mode, *data, lengths=LENGTHS, backward=False)
    rres = run_rf(rmod, mode, *data, lengths=LENGTHS, backward=False)
    assert_match(rres, tres, dtype, backward=False)
    # and eval is deterministic
    rres2 = run_rf(rmod, mode, *data, lengths=LENGTHS, backward=False)
    np.testing.assert_array_equal(rres2["out"], rres["out"])
