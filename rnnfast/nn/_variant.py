"""The recurrent layers' calls into the variant kernel (``rnnfast._kernels._variant``): LSTM projections
(``proj_size``) and variational recurrent dropout (``recurrent_dropout``, training only).

A call packs the batch as the main kernel does (``rnnfast.nn._rnn_calls._Plan``), then runs one kernel
call per layer and direction (each one ``nogil`` loop over time); training keeps those calls' buffers for
:meth:`VariantCalls._variant_backward`.

Random draws (from the layer's generator, in this order, at each training call): for each layer, for each
direction, the recurrent dropout mask ``rng.random((B, P)) < 1 - p`` (B in the caller's row order, P the
layer's output size), scaled by ``1 / (1 - p)``; then, between layers, the inter-layer dropout mask as the
main kernel draws it.
"""
from typing import Optional

import numpy as np

from rnnfast import _threads
from rnnfast._kernels import _variant as _v
from rnnfast.nn._rnn_calls import _Plan

__all__ = ["VariantCalls", "variant_combination_error"]

_CELL_NO = {"rnn": 0, "lstm": 1, "gru": 2}


def variant_combination_error(layer) -> Optional[str]:
    """Why ``layer``'s options cannot run together (None when they can): the variant kernel does not run
    layer-normalized cells."""
    wants = [n for n in ("proj_size", "recurrent_dropout") if getattr(layer, n, 0)]
    if not wants:
        return None
    if getattr(layer, "layer_norm", False):
        return f"{' and '.join(wants)} cannot be combined with layer_norm=True"
    return None


def _steps(plan: _Plan):
    """Rows per step and each step's first row (int32), from the packed layout's sorted lengths."""
    bs = (plan.lens[None, :] > np.arange(plan.T)[:, None]).sum(axis=1).astype(np.intc)
    off = np.zeros(plan.T + 1, dtype=np.intc)
    np.cumsum(bs, out=off[1:])
    return bs, off


class VariantCalls:
    """Mixin of the recurrent layers: the calls that need the variant kernel (see the module's docstring)."""

    @property
    def _out_size(self) -> int:
        """Width of h (and of each direction's output): ``proj_size`` when set, else ``hidden_size``."""
        return getattr(self, "proj_size", 0) or self.hidden_size

    @property
    def _cell_no(self) -> int:
        """The kernel's cell number (rnnfast._kernels._variant): 0 RNN, 1 LSTM, 2 GRU, 3 reset-before GRU."""
        return 3 if self._mode == "gru" and not self.reset_after else _CELL_NO[self._mode]

    def _variant_wanted(self) -> bool:
        """Whether a call now runs on the variant kernel: a projection, or recurrent dropout in training."""
        return bool(getattr(self, "proj_size", 0)) or (self.training and getattr(self, "recurrent_dropout", 0) > 0)

    def _variant_bias(self, sfx: str):
        """(b, bhn) as the cell passes take them (see rnnfast._kernels._variant.forward)."""
        GH, H = self._G * self.hidden_size, self.hidden_size
        b, bhn = np.zeros(GH, self.dtype), np.zeros(H, self.dtype)
        if self.bias:
            b_ih, b_hh = self._params["bias_ih" + sfx], self._params["bias_hh" + sfx]
            b[...] = b_ih + b_hh
            if self._cell_no == 2:  # (the reset-before GRU sums all three: its b_hn is outside the reset gate)
                b[2 * H:] = b_ih[2 * H:]
                bhn[...] = b_hh[2 * H:]
        return b, bhn

    def _rd_mask(self, B: int, plan: _Plan):
        """A recurrent dropout mask (B, P) in the caller's row order (scaled), and the kernel's (sorted)."""
        keep = 1.0 - self.recurrent_dropout
        m = (self._rng.random((B, self._out_size)) < keep).astype(self.dtype)
        m *= self.dtype.type(1.0 / keep)
        return m, np.ascontiguousarray(m[plan.order])

    def _variant_run(self, xb, h0, c0, lengths, training, ws):
        """Run every layer and direction, the buffers in the workspace ``ws`` (names "v:..."); returns (plan,
        out (N, D P) packed, hT, cT (in the packed layout's row order), cache or None)."""
        _threads.blas_control()  # (hands the kernels BLAS's thread control, once)
        B, T, _ = xb.shape
        H, P, D, L, dt = self.hidden_size, self._out_size, self._D, self.num_layers, self.dtype
        LD, lstm, proj = L * D, self._mode == "lstm", bool(getattr(self, "proj_size", 0))
        plan = self._plan(lengths, B, T)
        bs, off = _steps(plan)
        inp = plan.pack(xb, ws.get("v:x", (plan.N, self.input_size), dt))
        hT, cT = np.zeros((LD, B, P), dt), (np.zeros((LD, B, H), dt) if lstm else None)
        if h0 is not None:
            hT[...] = h0[:, plan.order]
        if c0 is not None:
            cT[...] = c0[:, plan.order]
        use_rd = training and self.recurrent_dropout > 0
        layers, masks = [], []
        for layer in range(L):
            out = ws.get(f"v:out{layer}", (plan.N, D * P), dt)
            dirs = []
            for d in range(D):
                k, sfx = layer * D + d, f"_l{layer}" + ("_reverse" if d else "")
                mask, kmask = self._rd_mask(B, plan) if use_rd else (None, None)
                masks.append(mask)
                buf = {n: ws.get(f"v:{n}{k}", s, dt) for n, s in
                       _v.buffers(self._cell_no, H, P, proj, B, plan.N, training).items()}
                w = self._variant_weights(sfx)
                _v.forward(self._cell_no, int(self.nonlinearity == "relu"), bs, off, d == 1, training,
                           inp, *w, *self._variant_bias(sfx), kmask, hT[k], cT[k] if lstm else None,
                           out, d * P, buf)
                dirs.append((buf, kmask, w))
            drop = None
            if training and self.dropout > 0 and layer < L - 1:
                keep = 1.0 - self.dropout
                drop = (self._rng.random((plan.N, D * P)) < keep).astype(dt)
                if keep > 0:  # p = 1 drops everything, as PyTorch does
                    drop *= dt.type(1.0 / keep)
            layers.append((inp, dirs, drop))
            inp = out if drop is None else np.multiply(out, drop, out=ws.get(f"v:in{layer + 1}", out.shape, dt))
        self.recurrent_masks = masks if use_rd else None
        cache = dict(variant=True, plan=plan, steps=(bs, off), layers=layers) if training else None
        return plan, out, hT, cT, cache

    def _variant_weights(self, sfx: str):
        """(w_ih, w_hh, w_hr or None) of one layer and direction."""
        p = self._params
        return p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("weight_hr" + sfx)

    def _variant_forward(self, xb, unbatched, h0, c0, lengths):
        """:meth:`forward` on the variant kernel (``xb`` and the states checked, batch-first)."""
        training = self.training
        if training and self._cache is not None:  # a training forward with no backward since: its buffers serve
            old, self._cache = self._cache, None
            self._release(old["ws"])
        ws = self._acquire()
        try:
            plan, out, hT, cT, cache = self._variant_run(xb, h0, c0, lengths, training, ws)
            result = self._finish(plan, out, hT, cT, unbatched, width=self._D * self._out_size)
        except BaseException:
            self._release(ws)
            raise
        if training:  # the workspace now backs the cache; backward returns it to the pool
            cache.update(unbatched=unbatched, ws=ws)
            self._cache = cache
        else:
            self._release(ws)
        return result

    def _variant_backward(self, cache, dout, dstate):
        """:meth:`backward` through a variant forward (``cache``: what it kept)."""
        plan, (bs, off), unbatched = cache["plan"], cache["steps"], cache["unbatched"]
        B, N = plan.B, plan.N
        H, P, D, L, dt = self.hidden_size, self._out_size, self._D, self.num_layers, self.dtype
        lstm, proj = self._mode == "lstm", bool(getattr(self, "proj_size", 0))
        dout = self._check_dout(dout, plan, unbatched, width=D * P)
        dh_n, dc_n = self._split_hx(dstate, B, unbatched, what="dstate")
        self._cache = None
        ws = cache["ws"]
        dh = np.zeros((L * D, B, P), dt) if dh_n is None else np.ascontiguousarray(dh_n[:, plan.order], dt)
        dc = None
        if lstm:
            dc = np.zeros((L * D, B, H), dt) if dc_n is None else np.ascontiguousarray(dc_n[:, plan.order], dt)
        dl = plan.pack(dout, ws.get("v:dout", (N, D * P), dt))
        cell, relu = self._cell_no, int(self.nonlinearity == "relu")
        for layer in reversed(range(L)):
            inp, dirs, _ = cache["layers"][layer]
            dx = ws.get(f"v:dx{layer}", inp.shape, dt)
            for d, (buf, kmask, w) in enumerate(dirs):
                k, sfx = layer * D + d, f"_l{layer}" + ("_reverse" if d else "")
                buf.update({n: ws.get(f"v:{n}{k}", s, dt) for n, s in
                            _v.buffers(cell, H, P, proj, B, N, True, True).items() if n not in buf})
                grads = {n: self.grads.get(n + sfx) for n in ("weight_ih", "weight_hh", "weight_hr", "bias_ih",
                                                               "bias_hh")}
                _v.backward(cell, relu, bs, off, d == 1, inp, *w, kmask, dh[k], dc[k] if lstm else None, dl,
                            d * P, buf, grads, dx, d == 1)
            drop = cache["layers"][layer - 1][2] if layer else None
            dl = dx if drop is None else np.multiply(dx, drop, out=dx)
        result = self._finish(plan, dl, dh, dc, unbatched, width=self.input_size)
        self._release(ws)  # after the unpack: dl lives in the workspace
        return result

    def _variant_step(self, xt, h0, c0, unbatched):
        """:meth:`step` on the variant kernel: one inference step of a projected LSTM (``xt`` (B, I))."""
        ws = self._acquire()
        try:
            plan, out, hT, cT, _ = self._variant_run(xt[:, None, :], h0, c0, None, False, ws)
            y = out.copy()  # (B, P): packed rows of the one step are the batch rows
        finally:
            self._release(ws)
        if unbatched:
            return y[0], (hT[:, 0], cT[:, 0])
        return y, (hT, cT)
