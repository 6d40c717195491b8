"""rnnfast.nn.LSTM(..., proj_size=P) against torch.nn.LSTM(proj_size=P) with the same weights: outputs, final
states and every gradient (input, initial states, parameters incl. ``weight_hr_l{k}``), over lengths,
bidirectional and stacked layers (also hypothesis-drawn); finite differences in float64; streaming ``step``;
bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rnnfast as rf
from gradcheck import check_params, numeric_grad

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

B, T, I, H, P = 5, 6, 4, 7, 3
LENGTHS = np.array([3, 6, 1, 6, 4])
TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-10, 1e-12)}


def close(actual, desired, dtype, what=""):
    rtol, atol = TOL[dtype]
    desired = np.asarray(desired)
    scale = max(1.0, float(np.abs(desired).max()))
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol * scale, err_msg=what)


def pair(dtype, num_layers=1, bidirectional=False, bias=True, seed=0):
    torch.manual_seed(seed)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    t = torch.nn.LSTM(I, H, num_layers=num_layers, bias=bias, batch_first=True, bidirectional=bidirectional,
                      proj_size=P, dtype=tdt)
    layer = rf.nn.LSTM(I, H, num_layers=num_layers, bias=bias, bidirectional=bidirectional, proj_size=P,
                       dtype=dtype)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return t, layer


def torch_run(t, x, h0, c0, lengths):
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    if lengths is None:
        out, (hn, cn) = t(xt, (h0t, c0t))
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out, (hn, cn) = t(packed, (h0t, c0t))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return (xt, h0t, c0t), out, hn, cn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("ragged", [False, True])
def test_matches_torch(dtype, num_layers, bidirectional, ragged):
    t, layer = pair(dtype, num_layers, bidirectional)
    rng = np.random.default_rng(1)
    D = 2 if bidirectional else 1
    lengths = LENGTHS if ragged else None
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = rng.standard_normal((num_layers * D, B, P)).astype(dtype)
    c0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    out, (hn, cn) = layer(x, (h0, c0), lengths=lengths)
    (xt, h0t, c0t), ot, hnt, cnt = torch_run(t, x, h0, c0, lengths)
    assert out.shape == (B, T, D * P) and hn.shape == (num_layers * D, B, P) and cn.shape == (num_layers * D, B, H)
    close(out, ot.detach().numpy(), dtype, "out")
    close(hn, hnt.detach().numpy(), dtype, "h_n")
    close(cn, cnt.detach().numpy(), dtype, "c_n")
    if ragged:
        assert not np.any(out[2, 1:])  # zero past the length
    g, gh, gc = (rng.standard_normal(a.shape).astype(dtype) for a in (out, hn, cn))
    loss = (ot * torch.tensor(g)).sum() + (hnt * torch.tensor(gh)).sum() + (cnt * torch.tensor(gc)).sum()
    loss.backward()
    dx, (dh0, dc0) = layer.backward(g, (gh, gc))
    close(dx, xt.grad.numpy(), dtype, "dx")
    close(dh0, h0t.grad.numpy(), dtype, "dh0")
    close(dc0, c0t.grad.numpy(), dtype, "dc0")
    for name, p in t.named_parameters():
        close(layer.grads[name], p.grad.numpy(), dtype, name)


def test_state_dict_keys_and_shapes():
    layer = rf.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes["weight_hr_l0"] == shapes["weight_hr_l1_reverse"] == (P, H)
    assert shapes["weight_hh_l0"] == (4 * H, P)
    assert shapes["weight_ih_l1"] == (4 * H, 2 * P)
    t = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P)
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == shapes


def test_no_bias_and_time_major():
    t, layer = pair(np.float64, bias=False)
    layer = rf.nn.LSTM(I, H, bias=False, batch_first=False, proj_size=P, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((B, T, I))
    out, (hn, cn) = layer(x.swapaxes(0, 1))
    _, ot, hnt, _ = torch_run(t, x, np.zeros((1, B, P)), np.zeros((1, B, H)), None)
    close(out.swapaxes(0, 1), ot.detach().numpy(), np.float64)
    close(hn, hnt.detach().numpy(), np.float64)


def test_finite_differences_float64():
    """Every gradient of a stacked bidirectional projected LSTM over ragged lengths."""
    layer = rf.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 3))
    h0, c0 = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 4))
    lengths = np.array([2, 4, 1])
    w_out, w_h, w_c = rng.standard_normal((3, 4, 4)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 4))

    def objective():
        out, (hn, cn) = layer(x, (h0, c0), lengths=lengths)
        return float(np.sum(out * w_out) + np.sum(hn * w_h) + np.sum(cn * w_c))

    objective()
    layer.zero_grad()
    dx, (dh0, dc0) = layer.backward(w_out, (w_h, w_c))
    np.testing.assert_allclose(dx, numeric_grad(objective, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dh0, numeric_grad(objective, h0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dc0, numeric_grad(objective, c0), rtol=1e-6, atol=1e-8)
    check_params(layer, objective)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_and_step_match_forward(dtype):
    _, layer = pair(dtype, num_layers=2)
    layer.eval()
    x = np.random.default_rng(5).standard_normal((B, T, I)).astype(dtype)
    out, (hn, cn) = layer(x)
    state = None
    for t in range(T):
        y, state = layer.step(x[:, t], state)
        close(y, out[:, t], dtype, f"step {t}")
    close(state[0], hn, dtype)
    close(state[1], cn, dtype)
    y1, (h1, c1) = layer.step(x[0, 0])  # unbatched
    assert y1.shape == (P,) and h1.shape == (2, P) and c1.shape == (2, H)


def test_unbatched():
    t, layer = pair(np.float64)
    x = np.random.default_rng(6).standard_normal((T, I))
    out, (hn, cn) = layer(x)
    ot, (hnt, cnt) = t(torch.tensor(x))
    close(out, ot.detach().numpy(), np.float64)
    assert hn.shape == (1, P) and cn.shape == (1, H)


def test_bad_input():
    with pytest.raises(ValueError, match="proj_size"):
        rf.nn.LSTM(I, H, proj_size=H)
    with pytest.raises(ValueError, match="proj_size"):
        rf.nn.LSTM(I, H, proj_size=-1)
    with pytest.raises(TypeError):
        rf.nn.LSTM(I, H, proj_size=1.5)
    with pytest.raises(TypeError):
        rf.nn.GRU(I, H, proj_size=2)
    layer = rf.nn.LSTM(I, H, proj_size=P)
    x = np.zeros((B, T, I), np.float32)
    with pytest.raises(ValueError, match="h"):  # h0 must be P wide
        layer(x, (np.zeros((1, B, H), np.float32), np.zeros((1, B, H), np.float32)))
    with pytest.raises(ValueError, match="c"):  # c0 must be H wide
        layer(x, (np.zeros((1, B, P), np.float32), np.zeros((1, B, P), np.float32)))
    out, _ = layer(x)
    with pytest.raises(ValueError, match="dout"):
        layer.backward(np.zeros((B, T, H), np.float32))
    with pytest.raises(AttributeError):
        layer.proj_size = 2


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_hypothesis_shapes_and_lengths(data):
    """Random sizes, stacks, directions and lengths: outputs and every gradient as torch's (float64)."""
    h = data.draw(st.integers(2, 6), "H")
    p, i = data.draw(st.integers(1, h - 1), "P"), data.draw(st.integers(1, 4), "I")
    b, t = data.draw(st.integers(1, 4), "B"), data.draw(st.integers(1, 6), "T")
    L, bi = data.draw(st.integers(1, 2), "L"), data.draw(st.booleans(), "bidirectional")
    lengths = np.array(data.draw(st.lists(st.integers(1, t), min_size=b, max_size=b), "lengths"))
    torch.manual_seed(0)
    tm = torch.nn.LSTM(i, h, num_layers=L, bidirectional=bi, batch_first=True, proj_size=p, dtype=torch.float64)
    layer = rf.nn.LSTM(i, h, num_layers=L, bidirectional=bi, proj_size=p, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(0)
    D = 2 if bi else 1
    x = rng.standard_normal((b, t, i))
    h0, c0 = rng.standard_normal((L * D, b, p)), rng.standard_normal((L * D, b, h))
    out, (hn, cn) = layer(x, (h0, c0), lengths=lengths)
    (xt, h0t, c0t), ot, hnt, cnt = torch_run(tm, x, h0, c0, lengths)
    close(out, ot.detach().numpy(), np.float64, "out")
    close(hn, hnt.detach().numpy(), np.float64, "h_n")
    g = rng.standard_normal(out.shape)
    ((ot * torch.tensor(g)).sum() + hnt.sum() + cnt.sum()).backward()
    dx, (dh0, dc0) = layer.backward(g, (np.ones_like(hn), np.ones_like(cn)))
    close(dx, xt.grad.numpy(), np.float64, "dx")
    close(dh0, h0t.grad.numpy(), np.float64, "dh0")
    close(dc0, c0t.grad.numpy(), np.float64, "dc0")
    for name, prm in tm.named_parameters():
        close(layer.grads[name], prm.grad.numpy(), np.float64, name)
