"""Variational recurrent dropout (``recurrent_dropout=p``) on rnnfast.nn.LSTM / GRU / RNN: a plain-numpy
reference with the layer's own masks, finite differences in float64 with the masks fixed (the layer reseeded
before every forward), the draw order the docstring states, eval mode = the plain layer, bad input."""
import numpy as np
import pytest

import rnnfast as rf
from gradcheck import check_params, numeric_grad

B, T, I, H = 4, 5, 3, 6
LENGTHS = np.array([2, 5, 1, 4])
CLASSES = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _cell(mode, p, x, h, c, m, relu):
    """One step of one row: returns (h', c'); ``m`` masks h in the recurrent products only."""
    hm = h * m
    if mode == "lstm":
        a = p["wi"] @ x + p["bi"] + p["wh"] @ hm + p["bh"]
        i, f, g, o = np.split(a, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (p["wr"] @ h if "wr" in p else h), c
    if mode in ("gru", "gru_rb"):
        gi, gh = np.split(p["wi"] @ x + p["bi"], 3), np.split(p["wh"] @ hm + p["bh"], 3)
        r, z = _sigmoid(gi[0] + gh[0]), _sigmoid(gi[1] + gh[1])
        if mode == "gru":
            n = np.tanh(gi[2] + r * gh[2])
        else:  # reset before: the n gate's product over r * (masked h)
            n = np.tanh(gi[2] + np.split(p["wh"], 3)[2] @ (r * hm) + np.split(p["bh"], 3)[2])
        return (1 - z) * n + z * h, c  # the direct path uses the unmasked h
    a = p["wi"] @ x + p["bi"] + p["wh"] @ hm + p["bh"]
    return (np.maximum(a, 0) if relu else np.tanh(a)), c


def reference(layer, x, lengths, h0, c0, masks):
    """Forward of ``layer`` (its state_dict) with recurrent masks ``masks`` [layer * D + d] (B, P)."""
    sd, mode = layer.state_dict(), layer._mode
    if mode == "gru" and not layer.reset_after:
        mode = "gru_rb"
    L, D = layer.num_layers, 2 if layer.bidirectional else 1
    P = layer.proj_size if mode == "lstm" and layer.proj_size else layer.hidden_size
    hn, cn = np.zeros_like(h0), np.zeros_like(c0)
    inp = x
    for li in range(L):
        out = np.zeros((B, x.shape[1], D * P))
        for d in range(D):
            k, sfx = li * D + d, f"_l{li}" + ("_reverse" if d else "")
            p = {"wi": sd["weight_ih" + sfx], "wh": sd["weight_hh" + sfx], "bi": sd["bias_ih" + sfx],
                 "bh": sd["bias_hh" + sfx]}
            if "weight_hr" + sfx in sd:
                p["wr"] = sd["weight_hr" + sfx]
            for b in range(B):
                h, c = h0[k, b].copy(), c0[k, b].copy()
                steps = range(lengths[b] - 1, -1, -1) if d else range(lengths[b])
                for t in steps:
                    h, c = _cell(mode, p, inp[b, t], h, c, masks[k][b], layer.nonlinearity == "relu")
                    out[b, t, d * P:(d + 1) * P] = h
                hn[k, b], cn[k, b] = h, c
        inp = out
    return out, hn, cn


def make(mode, dtype=np.float64, seed=0, **kw):
    return CLASSES[mode](I, H, dtype=dtype, seed=seed, recurrent_dropout=0.4, **kw)


def run(layer, x, h0, c0, lengths):
    hx = (h0, c0) if layer._mode == "lstm" else h0
    out, st = layer(x, hx, lengths=lengths)
    return (out, *st) if layer._mode == "lstm" else (out, st, None)


CASES = [("lstm", {}), ("lstm", {"proj_size": 4}), ("gru", {}), ("gru", {"reset_after": False}), ("rnn", {}),
         ("rnn", {"nonlinearity": "relu"})]


@pytest.mark.parametrize("mode,kw", CASES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_matches_numpy_reference(mode, kw, num_layers, bidirectional):
    layer = make(mode, num_layers=num_layers, bidirectional=bidirectional, **kw)
    P = kw.get("proj_size", H)
    LD = num_layers * (2 if bidirectional else 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((LD, B, P)), rng.standard_normal((LD, B, H))
    out, hn, cn = run(layer, x, h0, c0, LENGTHS)
    masks = layer.recurrent_masks
    assert len(masks) == LD and all(m.shape == (B, P) for m in masks)
    ro, rh, rc = reference(layer, x, LENGTHS, h0, c0 if mode == "lstm" else np.zeros((LD, B, H)), masks)
    np.testing.assert_allclose(out, ro, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn, rh, rtol=1e-10, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(cn, rc, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,kw", CASES)
def test_float32_matches_float64(mode, kw):
    l64, l32 = make(mode, seed=3, **kw), make(mode, np.float32, seed=3, **kw)
    l32.load_state_dict({k: v.astype(np.float32) for k, v in l64.state_dict().items()})
    l64.reseed(9), l32.reseed(9)
    x = np.random.default_rng(2).standard_normal((B, T, I))
    o64 = l64(x, lengths=LENGTHS)[0]
    o32 = l32(x.astype(np.float32), lengths=LENGTHS)[0]
    for m32, m64 in zip(l32.recurrent_masks, l64.recurrent_masks):
        np.testing.assert_allclose(m32, m64, rtol=1e-7)
    np.testing.assert_allclose(o32, o64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,kw", CASES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_finite_differences_with_mask_fixed(mode, kw, num_layers, bidirectional):
    """Every gradient (x incl. t = 0 and padded rows, initial states, parameters); the masks are fixed by
    reseeding the layer before every forward."""
    layer = make(mode, num_layers=num_layers, bidirectional=bidirectional, dropout=0.3 if num_layers > 1 else 0.0,
                 **kw)
    P = kw.get("proj_size", H)
    LD = num_layers * (2 if bidirectional else 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((LD, B, P)), rng.standard_normal((LD, B, H))
    D = 2 if bidirectional else 1
    w_out, w_h, w_c = rng.standard_normal((B, T, D * P)), rng.standard_normal((LD, B, P)), rng.standard_normal(
        (LD, B, H))

    def objective():
        layer.reseed(11)
        out, hn, cn = run(layer, x, h0, c0, LENGTHS)
        return float(np.sum(out * w_out) + np.sum(hn * w_h) + (np.sum(cn * w_c) if cn is not None else 0.0))

    objective()
    assert any(np.any(m == 0) for m in layer.recurrent_masks)  # the masks drop something
    layer.zero_grad()
    lstm = mode == "lstm"
    dx, dst = layer.backward(w_out, (w_h, w_c) if lstm else w_h)
    dh0 = dst[0] if lstm else dst
    np.testing.assert_allclose(dx, numeric_grad(objective, x), rtol=1e-6, atol=1e-8)
    assert not np.any(dx[2, 1:])  # padded steps: no gradient
    np.testing.assert_allclose(dh0, numeric_grad(objective, h0), rtol=1e-6, atol=1e-8)
    if lstm:
        np.testing.assert_allclose(dst[1], numeric_grad(objective, c0), rtol=1e-6, atol=1e-8)
    check_params(layer, objective)


def test_draw_order_and_scaling():
    """Per layer, per direction: rng.random((B, P)) < 1 - p, scaled by 1 / (1 - p), in the caller's row order."""
    layer = rf.nn.LSTM(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.25, seed=0)
    layer.reseed(5)
    layer(np.ones((B, T, I), np.float32), lengths=LENGTHS)
    rng = np.random.default_rng(5)
    for m in layer.recurrent_masks:
        expect = (rng.random((B, H)) < 0.75).astype(np.float32) / np.float32(0.75)
        np.testing.assert_array_equal(m, expect)


def test_one_mask_per_sequence_constant_over_time():
    """A row whose mask drops unit j never lets h_{t-1}[j] into the recurrent product, at any step: the output
    equals a layer whose W_hh column j is zero, run without dropout, for that row."""
    layer = rf.nn.RNN(I, H, recurrent_dropout=0.5, dtype=np.float64, seed=1)
    x = np.random.default_rng(6).standard_normal((B, 8, I))
    out, _ = layer(x)
    m = layer.recurrent_masks[0]
    for b in range(B):
        plain = rf.nn.RNN(I, H, dtype=np.float64)
        sd = layer.state_dict()
        sd["weight_hh_l0"] = sd["weight_hh_l0"] * m[b][None, :]
        plain.load_state_dict(sd)
        np.testing.assert_allclose(out[b], plain.eval()(x[b:b + 1])[0][0], rtol=1e-12, atol=1e-14)


def test_fraction_dropped():
    layer = rf.nn.GRU(I, 400, recurrent_dropout=0.3, seed=0)
    layer(np.zeros((50, 2, I), np.float32))
    assert abs(np.mean(layer.recurrent_masks[0] == 0) - 0.3) < 0.02


def test_seed_reproducible_and_fresh_masks_per_call():
    x = np.random.default_rng(7).standard_normal((B, T, I)).astype(np.float32)
    a, b = make("lstm", np.float32, seed=3), make("lstm", np.float32, seed=3)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    first = a.recurrent_masks[0].copy()
    a(x)
    assert not np.array_equal(first, a.recurrent_masks[0])


@pytest.mark.parametrize("mode,kw", [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}), ("rnn", {})])
def test_eval_is_the_plain_layer(mode, kw):
    layer, plain = make(mode, seed=2, **kw), CLASSES[mode](I, H, dtype=np.float64, seed=2, **kw)
    x = np.random.default_rng(8).standard_normal((B, T, I))
    layer.eval(), plain.eval()
    np.testing.assert_array_equal(layer(x, lengths=LENGTHS)[0], plain(x, lengths=LENGTHS)[0])
    layer.train()
    assert not np.allclose(layer(x)[0], plain(x)[0])
    state = None
    for t in range(T):  # streaming steps never drop
        y, state = layer.step(x[:, t], state)
    np.testing.assert_allclose(y, plain(x)[0][:, -1], rtol=1e-12)


def test_bad_input():
    for bad in (1.0, -0.1, 2):
        with pytest.raises(ValueError, match="recurrent_dropout"):
            rf.nn.LSTM(I, H, recurrent_dropout=bad)
    with pytest.raises(TypeError, match="recurrent_dropout"):
        rf.nn.GRU(I, H, recurrent_dropout="0.1")
    layer = rf.nn.LSTM(I, H, recurrent_dropout=0.2)
    with pytest.raises(AttributeError):
        layer.recurrent_dropout = 0.5
    assert "recurrent_dropout=0.2" in repr(layer)
