"""Plain-numpy reference implementation of PyTorch-style LSTM / GRU / RNN.

This module is a deliberately slow, simple oracle for tests. It loops over the
batch rows and over time steps one at a time, so that every quantity is easy to
read off and check against the maths below. Only numpy is used.

Conventions (identical to ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with
``batch_first=True`` and variable lengths handled via
``pack_padded_sequence(enforce_sorted=False)`` + ``pad_packed_sequence(total_length=T)``):

Shapes
    x      : (B, T, I)
    out    : (B, T, D*H)          D = 2 if bidirectional else 1
    h0, h_n: (num_layers*D, B, H) index = layer*D + direction (0 fwd, 1 reverse)
    c0, c_n: same as h0 (LSTM only)

Parameters (dict, PyTorch names; suffix "_reverse" for direction 1)
    weight_ih_l{k}: (G*H, I) for k = 0, (G*H, D*H) for k > 0
    weight_hh_l{k}: (G*H, H)
    bias_ih_l{k}, bias_hh_l{k}: (G*H,)  -- optional (bias=False => absent => 0)
    G = 4 (LSTM, gate blocks i, f, g, o), 3 (GRU, blocks r, z, n), 1 (RNN).

Cells (x: input at one step, h / c: previous state, sigma = logistic sigmoid)

    LSTM:  a = W_ih x + b_ih + W_hh h + b_hh,   a = [a_i, a_f, a_g, a_o]
           i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
           c' = f * c + i * g
           h' = o * tanh(c')

    GRU:   gi = W_ih x + b_ih = [gi_r, gi_z, gi_n]
           gh = W_hh h + b_hh = [gh_r, gh_z, gh_n]
           r  = sigma(gi_r + gh_r)
           z  = sigma(gi_z + gh_z)
           n  = tanh(gi_n + r * gh_n)
           h' = (1 - z) * n + z * h

    GRU, reset before (cell "gru_rb": Keras reset_after=False, ONNX linear_before_reset=0;
    same parameters):
           r  = sigma(gi_r + gh_r),  z = sigma(gi_z + gh_z)   (as GRU)
           s  = r * h
           n  = tanh(gi_n + W_hn s + b_hn)
           h' = (1 - z) * n + z * h

    RNN:   a  = W_ih x + b_ih + W_hh h + b_hh
           h' = act(a),  act = tanh or relu

Variable lengths
    Row b has L_b = lengths[b] valid steps (1 <= L_b <= T). Only steps t < L_b
    exist for that row:
      * forward direction processes t = 0, 1, ..., L_b - 1 starting from h0;
      * reverse direction processes t = L_b - 1, ..., 0 starting from h0
        (i.e. the reverse pass begins at the row's own last valid step);
      * out[b, t] = 0 for t >= L_b;
      * h_n / c_n hold the state after the last processed step of that row
        (forward: after t = L_b - 1; reverse: after t = 0).

Stacking
    The output of a layer is the concatenation along features of
    [forward output, reverse output]. Layer k >= 1 takes as input
        input_k = out_{k-1} * masks[k-1]
    where masks[k-1] (B, T, D*H) is an already-scaled dropout mask
    (masks=None means no dropout).

Backward
    ``backward`` returns the exact gradients (backpropagation through time,
    derived by hand per cell) of the scalar

        S = sum(out * dout) + sum(h_n * dh_n) + sum(c_n * dc_n)

    with respect to x, h0, c0 and every parameter. dout at padded positions
    (t >= L_b) is ignored; padded steps receive zero gradient.

    Per-step backward formulas (dh', dc' are gradients w.r.t. the new state,
    where dh' already includes the gradient flowing in from ``out`` at that step):

    LSTM:  tc = tanh(c')
           do = dh' * tc
           dC = dc' + dh' * o * (1 - tc^2)           (total gradient on c')
           di = dC * g,  df = dC * c,  dg = dC * i,  dc = dC * f
           da = [di*i(1-i), df*f(1-f), dg*(1-g^2), do*o(1-o)]
           dW_ih += da x^T, dW_hh += da h^T, db_ih += da, db_hh += da
           dx = W_ih^T da,  dh = W_hh^T da

    GRU:   dn = dh' * (1 - z),  dz = dh' * (h - n),  dh = dh' * z
           dan = dn * (1 - n^2)                        (grad of n's pre-activation)
           dr  = dan * gh_n
           dar = dr * r(1-r),  daz = dz * z(1-z)
           dgi = [dar, daz, dan],   dgh = [dar, daz, dan * r]
           dW_ih += dgi x^T, db_ih += dgi, dx  = W_ih^T dgi
           dW_hh += dgh h^T, db_hh += dgh, dh += W_hh^T dgh

    GRU reset before:
           dan = dh' (1 - z)(1 - n^2),  daz = dh' (h - n) z(1-z)
           ds  = W_hn^T dan,  dar = ds * h * r(1-r)
           dgi = [dar, daz, dan]  (dW_ih, db_ih, dx as GRU)
           dW_hh += [dar, daz]^T h (rows r, z) and dan s^T (rows n),  db_hh += [dar, daz, dan]
           dh = dh' z + ds * r + W_hrz^T [dar, daz]

    RNN:   da = dh' * act'(a)   (tanh: 1 - h'^2; relu: 1 if a > 0 else 0)
           dW_ih += da x^T, dW_hh += da h^T, db_ih += da, db_hh += da
           dx = W_ih^T da,  dh = W_hh^T da

All computation is done in the dtype of x (float32 or float64).
"""

import numpy as np

__all__ = ["forward", "backward"]

_NUM_GATES = {"lstm": 4, "gru": 3, "gru_rb": 3, "rnn": 1}


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #
def _sigmoid(a):
    """Numerically stable logistic sigmoid, same dtype as a."""
    e = np.exp(-np.abs(a))
    one = np.ones_like(a)
    return np.where(a >= 0, one / (one + e), e / (one + e)).astype(a.dtype)


def _check_cell(cell, nonlinearity):
    cell = str(cell).lower()
    if cell not in _NUM_GATES:
        raise ValueError("cell must be one of 'lstm', 'gru', 'gru_rb', 'rnn', got %r" % (cell,))
    if cell == "rnn" and nonlinearity not in ("tanh", "relu"):
        raise ValueError("nonlinearity must be 'tanh' or 'relu', got %r" % (nonlinearity,))
    return cell


def _param_names(layer, direction):
    suffix = "_reverse" if direction == 1 else ""
    return {
        "W_ih": "weight_ih_l%d%s" % (layer, suffix),
        "W_hh": "weight_hh_l%d%s" % (layer, suffix),
        "b_ih": "bias_ih_l%d%s" % (layer, suffix),
        "b_hh": "bias_hh_l%d%s" % (layer, suffix),
    }


def _get_layer_params(params, layer, direction, G, H, in_size, dtype):
    """Return dict W_ih, W_hh, b_ih, b_hh (absent biases become zeros)."""
    names = _param_names(layer, direction)
    p = {}
    for short, name in names.items():
        if name in params:
            p[short] = np.array(params[name], dtype=dtype, copy=True)
        elif short.startswith("b"):
            p[short] = np.zeros(G * H, dtype=dtype)
        else:
            raise KeyError("missing parameter %r" % name)
    expected = {"W_ih": (G * H, in_size), "W_hh": (G * H, H),
                "b_ih": (G * H,), "b_hh": (G * H,)}
    for short, shape in expected.items():
        if p[short].shape != shape:
            raise ValueError("parameter %r has shape %s, expected %s"
                             % (names[short], p[short].shape, shape))
    return p


def _prepare(cell, x, params, num_layers, bidirectional, h0, c0, lengths, masks,
             nonlinearity):
    """Validate and normalise inputs. Returns a dict of everything needed."""
    cell = _check_cell(cell, nonlinearity)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    dtype = x.dtype
    if x.ndim != 3:
        raise ValueError("x must have shape (B, T, I)")
    B, T, I = x.shape
    G = _NUM_GATES[cell]
    D = 2 if bidirectional else 1
    H = np.asarray(params["weight_hh_l0"]).shape[1]

    # every key in params must be one we know about
    known = set()
    for k in range(num_layers):
        for d in range(D):
            known.update(_param_names(k, d).values())
    unknown = set(params) - known
    if unknown:
        raise KeyError("unexpected parameter keys: %s" % sorted(unknown))

    layer_params = {}
    for k in range(num_layers):
        in_size = I if k == 0 else D * H
        for d in range(D):
            layer_params[(k, d)] = _get_layer_params(params, k, d, G, H, in_size, dtype)

    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    else:
        lengths = np.asarray(lengths).astype(np.int64).reshape(-1)
        if lengths.shape != (B,):
            raise ValueError("lengths must have shape (B,)")
        if np.any(lengths < 1) or np.any(lengths > T):
            raise ValueError("lengths must lie in [1, T]")

    state_shape = (num_layers * D, B, H)
    if h0 is None:
        h0 = np.zeros(state_shape, dtype=dtype)
    else:
        h0 = np.asarray(h0, dtype=dtype)
        if h0.shape != state_shape:
            raise ValueError("h0 has shape %s, expected %s" % (h0.shape, state_shape))
    if cell == "lstm":
        if c0 is None:
            c0 = np.zeros(state_shape, dtype=dtype)
        else:
            c0 = np.asarray(c0, dtype=dtype)
            if c0.shape != state_shape:
                raise ValueError("c0 has shape %s, expected %s" % (c0.shape, state_shape))
    else:
        c0 = None

    if masks is not None:
        if num_layers > 1 and len(masks) < num_layers - 1:
            raise ValueError("need num_layers - 1 dropout masks")
        masks = [np.asarray(masks[k], dtype=dtype) for k in range(num_layers - 1)]
        for m in masks:
            if m.shape != (B, T, D * H):
                raise ValueError("mask has shape %s, expected %s" % (m.shape, (B, T, D * H)))

    return dict(cell=cell, x=x, dtype=dtype, B=B, T=T, I=I, G=G, D=D, H=H,
                num_layers=num_layers, layer_params=layer_params, lengths=lengths,
                h0=h0, c0=c0, masks=masks, nonlinearity=nonlinearity)


# --------------------------------------------------------------------------- #
# One time step for one row (all vectors are 1-D)
# --------------------------------------------------------------------------- #
def _step_forward(cell, x, h, c, p, nonlinearity):
    """One step. x (In,), h (H,), c (H,) or None. Returns h', c', cache."""
    H = h.shape[0]
    if cell == "lstm":
        a = p["W_ih"] @ x + p["b_ih"] + p["W_hh"] @ h + p["b_hh"]
        i = _sigmoid(a[0 * H:1 * H])
        f = _sigmoid(a[1 * H:2 * H])
        g = np.tanh(a[2 * H:3 * H])
        o = _sigmoid(a[3 * H:4 * H])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        cache = dict(x=x, h=h, c=c, i=i, f=f, g=g, o=o, tc=tc)
        return h_new, c_new, cache
    if cell == "gru":
        gi = p["W_ih"] @ x + p["b_ih"]
        gh = p["W_hh"] @ h + p["b_hh"]
        r = _sigmoid(gi[0 * H:1 * H] + gh[0 * H:1 * H])
        z = _sigmoid(gi[1 * H:2 * H] + gh[1 * H:2 * H])
        ghn = gh[2 * H:3 * H]
        n = np.tanh(gi[2 * H:3 * H] + r * ghn)
        h_new = (1 - z) * n + z * h
        cache = dict(x=x, h=h, r=r, z=z, n=n, ghn=ghn)
        return h_new, None, cache
    if cell == "gru_rb":
        gi = p["W_ih"] @ x + p["b_ih"]
        gh = p["W_hh"][:2 * H] @ h + p["b_hh"][:2 * H]
        r = _sigmoid(gi[0 * H:1 * H] + gh[0 * H:1 * H])
        z = _sigmoid(gi[1 * H:2 * H] + gh[1 * H:2 * H])
        s = r * h
        n = np.tanh(gi[2 * H:3 * H] + p["W_hh"][2 * H:] @ s + p["b_hh"][2 * H:])
        h_new = (1 - z) * n + z * h
        cache = dict(x=x, h=h, r=r, z=z, n=n, s=s)
        return h_new, None, cache
    # plain RNN
    a = p["W_ih"] @ x + p["b_ih"] + p["W_hh"] @ h + p["b_hh"]
    if nonlinearity == "tanh":
        h_new = np.tanh(a)
    else:
        h_new = np.maximum(a, 0).astype(a.dtype)
    cache = dict(x=x, h=h, a=a, h_new=h_new)
    return h_new, None, cache


def _step_backward(cell, dh_new, dc_new, cache, p, g, nonlinearity):
    """Backward of one step. Accumulates parameter grads into g.

    dh_new: total gradient w.r.t. h' (including output gradient);
    dc_new: gradient w.r.t. c' (LSTM only). Returns dx, dh, dc.
    """
    x, h = cache["x"], cache["h"]
    if cell == "lstm":
        i, f, gg, o, tc, c = (cache["i"], cache["f"], cache["g"], cache["o"],
                              cache["tc"], cache["c"])
        do = dh_new * tc
        dC = dc_new + dh_new * o * (1 - tc * tc)
        di = dC * gg
        df = dC * c
        dg = dC * i
        dc = dC * f
        da = np.concatenate([di * i * (1 - i),
                             df * f * (1 - f),
                             dg * (1 - gg * gg),
                             do * o * (1 - o)])
        g["W_ih"] += np.outer(da, x)
        g["W_hh"] += np.outer(da, h)
        g["b_ih"] += da
        g["b_hh"] += da
        dx = p["W_ih"].T @ da
        dh = p["W_hh"].T @ da
        return dx, dh, dc
    if cell == "gru":
        r, z, n, ghn = cache["r"], cache["z"], cache["n"], cache["ghn"]
        dn = dh_new * (1 - z)
        dz = dh_new * (h - n)
        dh = dh_new * z
        dan = dn * (1 - n * n)
        dr = dan * ghn
        dar = dr * r * (1 - r)
        daz = dz * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan])
        dgh = np.concatenate([dar, daz, dan * r])
        g["W_ih"] += np.outer(dgi, x)
        g["b_ih"] += dgi
        g["W_hh"] += np.outer(dgh, h)
        g["b_hh"] += dgh
        dx = p["W_ih"].T @ dgi
        dh = dh + p["W_hh"].T @ dgh
        return dx, dh, None
    if cell == "gru_rb":
        H = h.shape[0]
        r, z, n, s = cache["r"], cache["z"], cache["n"], cache["s"]
        dan = dh_new * (1 - z) * (1 - n * n)
        daz = dh_new * (h - n) * z * (1 - z)
        ds = p["W_hh"][2 * H:].T @ dan
        dar = ds * h * r * (1 - r)
        dgi = np.concatenate([dar, daz, dan])
        g["W_ih"] += np.outer(dgi, x)
        g["b_ih"] += dgi
        g["W_hh"][:2 * H] += np.outer(dgi[:2 * H], h)
        g["W_hh"][2 * H:] += np.outer(dan, s)
        g["b_hh"] += dgi
        dx = p["W_ih"].T @ dgi
        dh = dh_new * z + ds * r + p["W_hh"][:2 * H].T @ dgi[:2 * H]
        return dx, dh, None
    # plain RNN
    if nonlinearity == "tanh":
        da = dh_new * (1 - cache["h_new"] ** 2)
    else:
        da = dh_new * (cache["a"] > 0).astype(dh_new.dtype)
    g["W_ih"] += np.outer(da, x)
    g["W_hh"] += np.outer(da, h)
    g["b_ih"] += da
    g["b_hh"] += da
    dx = p["W_ih"].T @ da
    dh = p["W_hh"].T @ da
    return dx, dh, None


# --------------------------------------------------------------------------- #
# One direction of one layer for one row (sequence of valid steps only)
# --------------------------------------------------------------------------- #
def _run_sequence(cell, seq, h, c, p, reverse, nonlinearity):
    """seq (L, In) -- only the valid steps of a row.

    Returns outputs (L, H) indexed by time, final h, final c, and the list of
    (t, cache) in processing order.
    """
    L = seq.shape[0]
    H = h.shape[0]
    outs = np.zeros((L, H), dtype=seq.dtype)
    order = range(L - 1, -1, -1) if reverse else range(L)
    caches = []
    for t in order:
        h, c, cache = _step_forward(cell, seq[t], h, c, p, nonlinearity)
        outs[t] = h
        caches.append((t, cache))
    return outs, h, c, caches


def _run_sequence_backward(cell, douts, dh, dc, caches, p, g, in_size, nonlinearity):
    """Backprop through a sequence produced by _run_sequence.

    douts (L, H): gradients w.r.t. the outputs; dh, dc: gradients w.r.t. the
    final state. Returns dseq (L, In), dh0, dc0.
    """
    L = douts.shape[0]
    dseq = np.zeros((L, in_size), dtype=douts.dtype)
    for t, cache in reversed(caches):
        dh_total = dh + douts[t]
        dseq[t], dh, dc = _step_backward(cell, dh_total, dc, cache, p, g, nonlinearity)
    return dseq, dh, dc


# --------------------------------------------------------------------------- #
# Full network
# --------------------------------------------------------------------------- #
def _forward_impl(s):
    cell, B, T, D, H = s["cell"], s["B"], s["T"], s["D"], s["H"]
    lengths, masks = s["lengths"], s["masks"]
    h_n = np.zeros_like(s["h0"])
    c_n = np.zeros_like(s["c0"]) if cell == "lstm" else None
    layer_inputs = []
    caches = {}
    out = None
    for k in range(s["num_layers"]):
        if k == 0:
            inp = s["x"]
        elif masks is not None:
            inp = out * masks[k - 1]
        else:
            inp = out
        layer_inputs.append(inp)
        out = np.zeros((B, T, D * H), dtype=s["dtype"])
        for d in range(D):
            idx = k * D + d
            p = s["layer_params"][(k, d)]
            for b in range(B):
                Lb = int(lengths[b])
                c_init = s["c0"][idx, b] if cell == "lstm" else None
                outs, h, c, cch = _run_sequence(cell, inp[b, :Lb], s["h0"][idx, b],
                                                c_init, p, d == 1, s["nonlinearity"])
                out[b, :Lb, d * H:(d + 1) * H] = outs
                h_n[idx, b] = h
                if cell == "lstm":
                    c_n[idx, b] = c
                caches[(k, d, b)] = cch
    return out, h_n, c_n, layer_inputs, caches


def forward(cell, x, params, num_layers=1, bidirectional=False, h0=None, c0=None,
            lengths=None, masks=None, nonlinearity="tanh"):
    """cell in {"lstm", "gru", "rnn"}; x (B, T, I).

    Returns (out (B, T, D*H), h_n, c_n) with c_n None unless lstm.
    """
    s = _prepare(cell, x, params, num_layers, bidirectional, h0, c0, lengths, masks,
                 nonlinearity)
    out, h_n, c_n, _, _ = _forward_impl(s)
    return out, h_n, c_n


def backward(cell, x, params, dout, dh_n=None, dc_n=None, num_layers=1,
             bidirectional=False, h0=None, c0=None, lengths=None, masks=None,
             nonlinearity="tanh"):
    """Exact gradients by backpropagation through time of the scalar
       sum(out*dout) + sum(h_n*dh_n) + sum(c_n*dc_n)   (None d-terms mean zero).

    Returns (dx (B,T,I), dh0 (L*D,B,H), dc0 (or None unless lstm), grads) where
    grads is a dict with the same keys as params.
    """
    s = _prepare(cell, x, params, num_layers, bidirectional, h0, c0, lengths, masks,
                 nonlinearity)
    cell, B, T, D, H, I = s["cell"], s["B"], s["T"], s["D"], s["H"], s["I"]
    dtype, lengths, masks = s["dtype"], s["lengths"], s["masks"]
    _, _, _, layer_inputs, caches = _forward_impl(s)

    state_shape = (num_layers * D, B, H)
    dout = np.asarray(dout, dtype=dtype)
    if dout.shape != (B, T, D * H):
        raise ValueError("dout has shape %s, expected %s" % (dout.shape, (B, T, D * H)))
    dh_n = np.zeros(state_shape, dtype) if dh_n is None else np.asarray(dh_n, dtype=dtype)
    if cell == "lstm":
        dc_n = np.zeros(state_shape, dtype) if dc_n is None else np.asarray(dc_n, dtype=dtype)

    # zero the output gradient at padded positions: those outputs are constant 0
    valid = (np.arange(T)[None, :] < lengths[:, None]).astype(dtype)  # (B, T)
    d_layer_out = dout * valid[:, :, None]

    dh0 = np.zeros(state_shape, dtype=dtype)
    dc0 = np.zeros(state_shape, dtype=dtype) if cell == "lstm" else None
    g = {}
    for k in range(num_layers):
        for d in range(D):
            p = s["layer_params"][(k, d)]
            g[(k, d)] = {name: np.zeros_like(arr) for name, arr in p.items()}

    dx = None
    for k in range(num_layers - 1, -1, -1):
        in_size = I if k == 0 else D * H
        d_inp = np.zeros((B, T, in_size), dtype=dtype)
        for d in range(D):
            idx = k * D + d
            p = s["layer_params"][(k, d)]
            for b in range(B):
                Lb = int(lengths[b])
                dc_last = dc_n[idx, b] if cell == "lstm" else None
                dseq, dh, dc = _run_sequence_backward(
                    cell, d_layer_out[b, :Lb, d * H:(d + 1) * H], dh_n[idx, b], dc_last,
                    caches[(k, d, b)], p, g[(k, d)], in_size, s["nonlinearity"])
                d_inp[b, :Lb] += dseq
                dh0[idx, b] = dh
                if cell == "lstm":
                    dc0[idx, b] = dc
        if k == 0:
            dx = d_inp
        else:
            # input_k = out_{k-1} * masks[k-1]
            d_layer_out = d_inp * masks[k - 1] if masks is not None else d_inp
            d_layer_out = d_layer_out * valid[:, :, None]

    grads = {}
    for k in range(num_layers):
        for d in range(D):
            for short, name in _param_names(k, d).items():
                if name in params:
                    grads[name] = g[(k, d)][short]
    return dx, dh0, dc0, grads
