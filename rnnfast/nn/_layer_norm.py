"""The layer-normalized LSTM and GRU (``rf.nn.LSTM(..., layer_norm=True)``, GRU likewise): their extra
parameters and the calls into their kernel (``rnnfast._kernels._lncell``; maths in ``csrc/rf_lncell.h``).

The layers (rnnfast.nn.recurrent) validate a call as for the plain cells and hand it here; this module packs
the batch with the plain cells' layout (``_rnn_calls._Plan``), runs one ``nogil`` kernel call per layer and
direction over every step, and unpacks. Parameters, per layer ``k`` and ``_reverse`` for the second
direction, besides PyTorch's ``weight_ih_l{k}`` / ``weight_hh_l{k}`` / ``bias_ih_l{k}`` / ``bias_hh_l{k}``:

- ``layernorm_x_gamma_l{k}``, ``layernorm_x_beta_l{k}`` (G*H,): gain and bias of LN(x W_ih^T)
- ``layernorm_h_gamma_l{k}``, ``layernorm_h_beta_l{k}`` (G*H,): gain and bias of LN(h W_hh^T)
- LSTM only: ``layernorm_c_gamma_l{k}``, ``layernorm_c_beta_l{k}`` (H,): gain and bias of LN(c)

Gains start at 1, their biases at 0.
"""
from typing import Any, Dict, List, Optional

import numpy as np

from rnnfast import _planner, _threads
from rnnfast._kernels import _lncell

__all__ = ["LayerNormCalls", "LN_EPS", "ln_param_shapes"]

#: The layer norms' epsilon (added to the variance), PyTorch's LayerNorm default.
LN_EPS = 1e-5


def _sfx(layer: int, d: int) -> str:
    return f"_l{layer}" + ("_reverse" if d == 1 else "")


def ln_param_shapes(lstm: bool, H: int, L: int, D: int):
    """(name, size, initial value) of every layer-norm parameter of an LSTM (``lstm``) or GRU layer."""
    GH = (4 if lstm else 3) * H
    for layer in range(L):
        for d in range(D):
            for side, n in (("x", GH), ("h", GH)) + ((("c", H),) if lstm else ()):
                yield f"layernorm_{side}_gamma" + _sfx(layer, d), n, 1.0
                yield f"layernorm_{side}_beta" + _sfx(layer, d), n, 0.0


class LayerNormCalls:
    """Mixin of LSTM and GRU: the layer-normalized variant's parameters, forward, backward and step. The
    layer provides what ``KernelCalls`` reads (recurrent.py refuses the combinations it does not run)."""

    _layer_norm = False  # (layers pickled before this option existed: plain)

    @property
    def layer_norm(self) -> bool:
        """Whether the cell is layer-normalized (fixed at construction)."""
        return self._layer_norm

    def _ln_add_params(self) -> None:
        self._layer_norm = True
        for name, n, value in ln_param_shapes(self._mode == "lstm", self.hidden_size, self.num_layers, self._D):
            self._add_param(name, np.full(n, value, dtype=self.dtype))

    # ------------------------------------------------------------------ kernel arguments
    @staticmethod
    def _ln_blocks(B: int, n_threads: int) -> int:
        """Row-block tasks of the recurrence (the planner's fewest rows worth a task)."""
        _threads.blas_control()  # (hands the kernels BLAS's thread control, once)
        return max(1, min(n_threads, B // int(_planner.TABLE["rows_per_task"])))

    def _ln_arrays(self, ws, layer: int, d: int, F: int, plan, nblk: int, training: bool,
                   backward: bool = False) -> Dict[str, Any]:
        """One layer and direction's kernel arrays: parameters, summed biases and ``ws`` buffers."""
        p, sfx, dt = self._params, _sfx(layer, d), self.dtype
        lstm = self._mode == "lstm"
        k = layer * self._D + d
        shapes = _lncell.buffer_shapes(lstm, F, self.hidden_size, plan.B, plan.N, nblk, training, backward)
        a = {name: ws.get(f"ln_{name}{k}", shape, dt) for name, shape in shapes.items()}
        a.update(w_ih=p["weight_ih" + sfx], w_hh=p["weight_hh" + sfx], gx=p["layernorm_x_gamma" + sfx],
                 gh=p["layernorm_h_gamma" + sfx])
        bx, bh = p["layernorm_x_beta" + sfx], p["layernorm_h_beta" + sfx]
        if self.bias:
            bx, bh = bx + p["bias_ih" + sfx], bh + p["bias_hh" + sfx]
        if lstm:
            a.update(bs1=bx + bh, gc=p["layernorm_c_gamma" + sfx], bc=p["layernorm_c_beta" + sfx])
        else:
            a.update(bs1=np.ascontiguousarray(bx), bs2=np.ascontiguousarray(bh))
        return a

    # ------------------------------------------------------------------ forward
    def _ln_forward(self, x, h0, c0, lengths, unbatched: bool, training: bool, n_threads: int):
        """``forward`` of a layer-normalized layer, after the plain layer's checks."""
        B, T, _ = x.shape
        plan = self._plan(lengths, B, T)
        ws = self._acquire()
        try:
            out, hT, cT, cache = self._ln_run(x, h0, c0, plan, training, n_threads, ws)
            result = self._finish(plan, out, hT, cT, unbatched)
        except BaseException:
            self._release(ws)
            raise
        if training:
            cache.update(unbatched=unbatched, ws=ws)
            self._cache = cache
        else:
            self._release(ws)
        return result

    def _ln_run(self, x, h0, c0, plan, training: bool, n_threads: int, ws):
        """All layers and directions over the packed batch: (out (N, D H) packed, h_n, c_n, cache)."""
        H, D, L, dt = self.hidden_size, self._D, self.num_layers, self.dtype
        B, N, LD, lstm = plan.B, plan.N, self.num_layers * self._D, self._mode == "lstm"
        kp = plan.kplan
        nblk = self._ln_blocks(B, n_threads)
        z = np.zeros((B, H), dt)
        h0s = plan.sort_states(h0, dt) if h0 is not None else [z] * LD
        c0s = plan.sort_states(c0, dt) if c0 is not None else [z] * LD
        hT, cT = np.empty((LD, B, H), dt), (np.empty((LD, B, H), dt) if lstm else None)
        last = kp.off[kp.lens - 1] + np.arange(B)  # each sequence's last packed row (either direction)
        xl: List[np.ndarray] = [plan.pack(x, ws.get("ln_x", (N, self.input_size), dt))]
        arrays, masks = [], []
        for layer in range(L):
            F = xl[layer].shape[1]
            out = ws.get(f"ln_out{layer}", (N, D * H), dt)
            for d in range(D):
                k = layer * D + d
                a = self._ln_arrays(ws, layer, d, F, plan, nblk, training)
                a.update(x=xl[layer] if d == 0 else np.take(xl[layer], kp.rev, axis=0,
                                                             out=ws.get(f"ln_xr{k}", (N, F), dt)),
                         h0=h0s[k], c0=c0s[k])
                if D == 1:
                    a["y"] = out  # (one direction: the layer's output is its y)
                _lncell.forward(lstm, kp.bs, kp.off, plan.T, B, N, F, H, nblk, training, LN_EPS, a, n_threads)
                if d == 0 and D == 2:
                    out[:, :H] = a["y"]
                elif d == 1:
                    out[kp.rev, H:] = a["y"]
                hT[k] = a["y"][last]
                if lstm:
                    cT[k] = a["c"][last]
                arrays.append(a)
            masks.append(self._ln_mask(N, layer, training))
            if layer + 1 < L:
                xl.append(out if masks[-1] is None else out * masks[-1])
        cache = dict(plan=plan, arrays=arrays, masks=masks, nblk=nblk, nth=n_threads) if training else None
        return out, hT, cT, cache

    def _ln_mask(self, N: int, layer: int, training: bool) -> Optional[np.ndarray]:
        """The dropout mask on layer ``layer``'s output (None: none), as the plain layers draw it."""
        if not training or self.dropout <= 0.0 or layer + 1 >= self.num_layers:
            return None
        keep = 1.0 - self.dropout
        m = (self._rng.random((N, self._D * self.hidden_size)) < keep).astype(self.dtype)
        if keep > 0:
            m *= self.dtype.type(1.0 / keep)
        return m

    # ------------------------------------------------------------------ backward
    def _ln_backward(self, cache, dout, dh_n, dc_n, n_threads: int):
        """``backward`` of a layer-normalized layer, after the plain layer's checks."""
        plan, ws = cache["plan"], cache["ws"]
        try:
            dx, dh0, dc0 = self._ln_bptt(cache, plan.pack(dout, ws.get("ln_dout", (plan.N, self._D * self.hidden_size),
                                                                       self.dtype)), dh_n, dc_n)
            return self._finish(plan, dx, dh0, dc0, cache["unbatched"], width=self.input_size)
        finally:
            self._release(ws)

    def _ln_bptt(self, cache, dl, dh_n, dc_n):
        """Through all layers, last first: (dx packed (N, I), dh0, dc0) in sorted row order."""
        plan, ws = cache["plan"], cache["ws"]
        H, D, L, dt, B, N = self.hidden_size, self._D, self.num_layers, self.dtype, plan.B, plan.N
        lstm, rev = self._mode == "lstm", plan.kplan.rev
        LD = L * D
        dhs = plan.sort_states(dh_n, dt) if dh_n is not None else None
        dcs = plan.sort_states(dc_n, dt) if dc_n is not None else None
        dh0, dc0 = np.empty((LD, B, H), dt), (np.empty((LD, B, H), dt) if lstm else None)
        for layer in range(L - 1, -1, -1):
            a0 = cache["arrays"][layer * D]
            dxl = ws.get(f"ln_dx{layer}", (N, a0["x"].shape[1]), dt)
            for d in range(D):
                k = layer * D + d
                a = cache["arrays"][k]
                if D == 1:
                    a["dy"] = dl
                elif d == 0:
                    a["dy"] = ws.get(f"ln_dy{k}", (N, H), dt)
                    a["dy"][...] = dl[:, :H]
                else:
                    a["dy"] = np.take(dl[:, H:], rev, axis=0, out=ws.get(f"ln_dy{k}", (N, H), dt))
                a["dh"] = dhs[k].copy() if dhs is not None else np.zeros((B, H), dt)
                if lstm:
                    a["dc"] = dcs[k].copy() if dcs is not None else np.zeros((B, H), dt)
                self._ln_backward_dir(a, layer, d, plan, cache, dxl)
                dh0[k] = a["dh"]
                if lstm:
                    dc0[k] = a["dc"]
            mask = cache["masks"][layer - 1] if layer > 0 else None
            dl = dxl if mask is None else dxl * mask
        return dl, dh0, dc0

    def _ln_backward_dir(self, a, layer: int, d: int, plan, cache, dxl) -> None:
        """One layer and direction: the kernel, then the gains' and biases' gradients from its per-task sums;
        the input gradient written to ``dxl`` (the reverse direction's added, in forward row order)."""
        g, sfx, lstm = self.grads, _sfx(layer, d), self._mode == "lstm"
        H, GH, F, kp = self.hidden_size, self._G * self.hidden_size, dxl.shape[1], plan.kplan
        nblk, ws, k = cache["nblk"], cache["ws"], layer * self._D + d
        shapes = _lncell.buffer_shapes(lstm, F, H, plan.B, plan.N, nblk, True, True)
        a.update({name: ws.get(f"ln_{name}{k}", shapes[name], self.dtype) for name in ("hprev", "acc")})
        dx = dxl if d == 0 else ws.get("ln_dxr", dxl.shape, self.dtype)
        _lncell.backward(lstm, kp.bs, kp.off, plan.T, plan.B, plan.N, F, H, nblk, LN_EPS, a,
                         g["weight_ih" + sfx], g["weight_hh" + sfx], dx, False, cache["nth"])
        if d == 1:
            dxl[kp.rev] += dx
        acc = a["acc"].sum(axis=0)
        dbx, dbh = acc[GH:2 * GH], (acc[GH:2 * GH] if lstm else acc[3 * GH:4 * GH])
        g["layernorm_x_gamma" + sfx] += acc[:GH]
        g["layernorm_x_beta" + sfx] += dbx
        g["layernorm_h_gamma" + sfx] += acc[2 * GH:3 * GH]
        g["layernorm_h_beta" + sfx] += dbh
        if self.bias:
            g["bias_ih" + sfx] += dbx
            g["bias_hh" + sfx] += dbh
        if lstm:
            g["layernorm_c_gamma" + sfx] += acc[4 * GH:4 * GH + H]
            g["layernorm_c_beta" + sfx] += acc[4 * GH + H:]

    # ------------------------------------------------------------------ streaming
    def _ln_step(self, xt, h0, c0, unbatched: bool, n_threads: int):
        """``step`` of a layer-normalized layer: one step of every layer (the whole-sequence kernel at T = 1)."""
        B = xt.shape[0]
        plan = self._plan(None, B, 1)
        ws = self._acquire()
        try:
            _, hT, cT, _ = self._ln_run(xt[:, None, :], h0, c0, plan, False, n_threads, ws)
        finally:
            self._release(ws)
        y = hT[-1].copy()
        state: Any = (hT, cT) if self._mode == "lstm" else hT
        if unbatched:
            return y[0], ((hT[:, 0], cT[:, 0]) if self._mode == "lstm" else hT[:, 0])
        return y, state
