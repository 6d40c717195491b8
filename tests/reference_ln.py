"""Plain-numpy reference of the layer-normalized LSTM and GRU (``rf.nn.LSTM(..., layer_norm=True)``).

A slow, simple oracle for tests: loops over sequences and time steps one at a time, computing in float64
whatever the input dtype. Conventions as tests/reference.py (batch_first, lengths as PyTorch's packed
sequences: outputs zero past each length, final states at each sequence's last step, the reverse direction
starting there; h0 / h_n index = layer * D + direction). LN(a) = (a - mean(a)) / sqrt(var(a) + eps) over
one row.

    LSTM:  pre = gx * LN(W_ih x) + bx + gh * LN(W_hh h) + bh + b_ih + b_hh    (blocks i, f, g, o)
           c' = f * c + i * g;   h' = o * tanh(gc * LN(c') + bc)
    GRU:   ax = gx * LN(W_ih x) + bx + b_ih;   ah = gh * LN(W_hh h) + bh + b_hh   (blocks r, z, n)
           r = sigma(ax_r + ah_r), z = sigma(ax_z + ah_z), n = tanh(ax_n + r * ah_n)
           h' = (1 - z) * n + z * h

Parameters: a dict with the layer's state-dict keys (weight_ih_l{k}, ..., layernorm_x_gamma_l{k}, ...).
"""
import numpy as np

EPS = 1e-5


def _ln(a, gamma, beta):
    mu = a.mean()
    return gamma * (a - mu) / np.sqrt(((a - mu) ** 2).mean() + EPS) + beta


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _p(params, name, sfx, shape=None):
    v = params.get(name + sfx)
    return np.zeros(shape) if v is None else np.asarray(v, np.float64)


def _step(cell, x, h, c, params, sfx):
    """One step of one sequence: (h', c')."""
    W_ih, W_hh = _p(params, "weight_ih", sfx), _p(params, "weight_hh", sfx)
    GH, H = W_hh.shape[0], W_hh.shape[1]
    ax = _ln(W_ih @ x, _p(params, "layernorm_x_gamma", sfx), _p(params, "layernorm_x_beta", sfx))
    ah = _ln(W_hh @ h, _p(params, "layernorm_h_gamma", sfx), _p(params, "layernorm_h_beta", sfx))
    ax = ax + _p(params, "bias_ih", sfx, GH)
    ah = ah + _p(params, "bias_hh", sfx, GH)
    if cell == "lstm":
        a = ax + ah
        i, f, g, o = _sigmoid(a[:H]), _sigmoid(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), _sigmoid(a[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(_ln(c, _p(params, "layernorm_c_gamma", sfx), _p(params, "layernorm_c_beta", sfx)))
        return h, c
    r = _sigmoid(ax[:H] + ah[:H])
    z = _sigmoid(ax[H:2 * H] + ah[H:2 * H])
    n = np.tanh(ax[2 * H:] + r * ah[2 * H:])
    return (1 - z) * n + z * h, None


def forward(cell, x, params, num_layers=1, bidirectional=False, h0=None, c0=None, lengths=None):
    """``cell`` "lstm" or "gru"; x (B, T, I). Returns (out (B, T, D H), h_n, c_n (None for GRU)), float64."""
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape
    D = 2 if bidirectional else 1
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    h0 = np.zeros((num_layers * D, B, H)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((num_layers * D, B, H)) if c0 is None else np.asarray(c0, np.float64)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    inp = x
    for layer in range(num_layers):
        out = np.zeros((B, T, D * H))
        for d in range(D):
            k, sfx = layer * D + d, f"_l{layer}" + ("_reverse" if d else "")
            for b in range(B):
                h, c = h0[k, b], c0[k, b]
                steps = range(lens[b] - 1, -1, -1) if d else range(lens[b])
                for t in steps:
                    h, c = _step(cell, inp[b, t], h, c, params, sfx)
                    out[b, t, d * H:(d + 1) * H] = h
                h_n[k, b] = h
                if cell == "lstm":
                    c_n[k, b] = c
        inp = out
    return inp, h_n, (c_n if cell == "lstm" else None)
