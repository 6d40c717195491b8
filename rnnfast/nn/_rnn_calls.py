"""The kernel-call side of the recurrent layers: a batch's packed layout, reusable workspaces, the
planner's choice and the arguments of one kernel call (forward, backward, streaming step).

``rnnfast.nn.recurrent`` holds the layers' parameters, validation and public methods; this module turns
one validated call into the ``nogil`` kernel call (``rnnfast._kernels._recurrent``) and back. The kernels'
buffers are laid out by their one table (``_recurrent.dir_buffers``); the kernel, product layout and
threads come from ``rnnfast._planner``.
"""
from dataclasses import replace

import numpy as np

from rnnfast import _memory, _planner, _tune
from rnnfast._kernels import _recurrent as _k
from rnnfast._planner import Call
from rnnfast.nn import _packs
from rnnfast.nn._packs import NOTHING, Kept
from rnnfast.nn.module import aligned_empty, as_float

__all__ = ["FastCalls", "KernelCalls"]

# the kernel's row tasks are cut as the planner models them, and its input projections read W_ih in place
# where the planner's table says (numbers in that one table)
_k.set_min_rows_per_task(int(_planner.TABLE["rows_per_task"]))


def set_proj_in_place() -> None:
    """Hand the kernels TABLE's proj_in_place_* rule (again, after a change to TABLE)."""
    t = _planner.TABLE
    _k.set_proj_in_place(int(t["proj_in_place_rows"]), int(t["proj_in_place_min_bytes"]),
                         int(t["proj_in_place_min_k"]))


set_proj_in_place()


class _Plan:
    """Packed layout of one batch: sort by length (stable), steps time-major, padded steps dropped."""

    def __init__(self, lengths, B, T):
        if lengths is None:
            self.full = True
            self.order = np.arange(B)
            self.lens = np.full(B, T, dtype=np.intc)
            bs = np.full(T, B, dtype=np.intc)
        else:
            self.full = bool(np.all(lengths == T))
            self.order = np.argsort(-lengths, kind="stable")
            self.lens = lengths[self.order].astype(np.intc)
            bs = (self.lens[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.intc)
        off = np.zeros(T + 1, dtype=np.intc)
        np.cumsum(bs, out=off[1:])
        N = int(off[-1])
        self.B, self.T, self.N = B, T, N
        if self.full:
            self.t_idx = None
            self.b_idx = None
            rev_t = (T - 1 - np.arange(T))[:, None] * B + np.arange(B)[None, :]
            rev = rev_t.reshape(-1)
        else:
            t_idx = np.repeat(np.arange(T), bs)
            b_sorted = np.arange(N) - np.repeat(off[:-1], bs)
            self.t_idx = t_idx
            self.b_idx = self.order[b_sorted]
            self.flat_idx = self.b_idx * T + t_idx
            rev = off[self.lens[b_sorted] - 1 - t_idx] + b_sorted
        self.kplan = _k.Plan(bs, off, rev, self.lens, T, B, N)
        self.inv = np.empty(B, dtype=np.intp)
        self.inv[self.order] = np.arange(B)
        # what keeping this layout costs (the kernel's Plan holds copies of the same index arrays)
        self.nbytes = 2 * sum(a.nbytes for a in (rev, self.t_idx, self.b_idx, getattr(self, "flat_idx", None))
                              if a is not None)

    def pack(self, x_bt, out):
        """(B, T, F) batch-first -> ``out`` (N, F) packed (one copy, converting the dtype)."""
        if self.full:
            out.reshape(self.T, self.B, -1)[...] = x_bt.swapaxes(0, 1)
        elif x_bt.flags.c_contiguous and x_bt.dtype == out.dtype:
            np.take(x_bt.reshape(self.B * self.T, -1), self.flat_idx, axis=0, out=out, mode="clip")
        else:
            out[...] = x_bt[self.b_idx, self.t_idx]
        return out

    def unpack(self, packed, F):
        """(N, F) packed -> a new (B, T, F) batch-first array, zeros at padded steps."""
        if self.full:
            # always a copy: ``packed`` lives in a reused workspace
            return packed.reshape(self.T, self.B, F).swapaxes(0, 1).copy()
        out = np.zeros((self.B, self.T, F), dtype=packed.dtype)
        out[self.b_idx, self.t_idx] = packed
        return out

    def sort_states(self, s, dtype):
        """(LD, B, H) in the caller's batch order -> list of (B, H) contiguous, sorted order (views of
        ``s`` when it already is; the kernels only read them)."""
        if self.full:
            return list(np.ascontiguousarray(s, dtype=dtype))
        return list(np.ascontiguousarray(s[:, self.order], dtype=dtype))

    def unsort_states(self, states):
        """(LD, B, H) in sorted order (a fresh array) -> the caller's order."""
        return states if self.full else states[:, self.inv]


class _Workspace:
    """Reusable buffers for one call: flat arrays by name, grown when too small and reused otherwise, so
    steady-state calls neither allocate nor page-fault fresh memory. A layer keeps a few in a pool
    (``list.pop``/``append`` are atomic, so concurrent eval calls each get their own)."""

    __slots__ = ("arrays", "prepared", "stepper", "fast")

    def __init__(self):
        self.arrays = {}
        self.prepared = None  # the last eval call's kernel arguments (see _RNNBase._prepare)
        self.stepper = None   # the last step call's (see _RNNBase.step)
        self.fast = None      # the last plain inference call's, filled (see FastCalls._eval_fast)

    def get(self, name, shape, dtype):
        size = 1
        for n in shape:
            size *= n
        a = self.arrays.get(name)
        if a is None or a.size < size or a.dtype != dtype:
            a = aligned_empty(size, dtype)
            self.arrays[name] = a
        return a[:size].reshape(shape)

    @property
    def nbytes(self):
        """Bytes held by the buffers."""
        return sum(a.nbytes for a in self.arrays.values())


_POOL_SIZE = 4      # workspaces a layer keeps between calls (and at most rf.set_workspace_limit's bytes)


_PLAN_CACHE = 16    # batch layouts a layer remembers


class KernelCalls:
    """Mixin of the recurrent layers: everything between a validated call and the kernel. The layer
    provides the parameters (``_params``), sizes (``input_size``, ``hidden_size``, ``num_layers``, ``_D``,
    ``_G``, ``_cell``, ``dtype``), ``_pool`` / ``_plans`` / ``_kplans`` caches, ``thread_policy``,
    ``_forced_plan``, ``_tuned`` and the dropout generator ``_rng``."""

    # ------------------------------------------------------------------ forward / backward
    def _plan(self, lengths, B, T):
        key = (B, T, None if lengths is None else lengths.tobytes())
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(lengths, B, T)
            limit = _memory.get_workspace_limit()
            if limit is not None and plan.nbytes > limit:
                return plan  # used for this call only
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _acquire(self):
        try:
            return self._pool.pop()
        except IndexError:
            return _Workspace()

    def _release(self, ws):
        """Return ``ws`` to the pool, or free it when the pool is full or would exceed the workspace
        limit (rnnfast.set_workspace_limit)."""
        if len(self._pool) >= _POOL_SIZE:
            return
        limit = _memory.get_workspace_limit()
        if limit is not None and ws.nbytes + self._pooled_bytes() + _packs.kept_bytes(self) > limit:
            if ws.nbytes + self._pooled_bytes() > limit:
                return
            self._packs = {}  # workspaces first: kept weight packs only save packing (rnnfast.nn._packs)
        self._pool.append(ws)

    def _pooled_bytes(self):
        return sum(w.nbytes for w in list(self._pool))

    def _bias_src(self, biases):
        """Per layer and direction, PyTorch's (b_ih, b_hh) (None without bias), from which the kernel entry
        makes its own bias vectors at every call (the parameters may change in place between calls):
        b = b_ih + b_hh (GRU: summed for r and z, b_in alone for n, and b_hn apart; the reset-before GRU sums
        all three, its b_hn being outside the reset gate)."""
        return [(self._params["bias_ih" + sfx], self._params["bias_hh" + sfx]) if self.bias else None
                for sfx, _, _ in biases]

    def _prepare(self, ws, plan, training, n_threads, kp, keep=False):
        """The kernel's arguments that do not change from call to call at this layout and kernel plan
        ``kp``: parameters and bias vectors, per-direction buffers, layer inputs and outputs, all in
        ``ws`` (with ``keep``, but the weight packs the layer keeps: rnnfast.nn._packs). Kept in ``ws`` for
        the next eval call of the same batch size and packed rows (what a streaming ``step`` repeats),
        rebuilt otherwise."""
        # (what is prepared depends on the batch's size and packed rows, not on its lengths: ragged batches
        # of new lengths, a server's, reuse it)
        # (a frozen layer no longer frozen has other weight arrays: prepared anew)
        key = (plan.B, plan.N, training, n_threads, kp, keep, bool(self._frozen))
        prep = ws.prepared
        if prep is not None and prep[0] == key:
            return prep[1]
        ws.fast = None  # (it points into the arguments replaced here)
        B, N = plan.B, plan.N
        H, D, L, G, dt = self.hidden_size, self._D, self.num_layers, self._G, self.dtype
        DH = D * H
        params, bufs, biases = [], [], []
        for layer in range(L):
            F = self.input_size if layer == 0 else DH
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                b = ws.get(f"b{k}", (G * H,), dt)
                bhn = ws.get(f"bhn{k}", (H,), dt)
                if not self.bias:
                    b[...] = 0
                    bhn[...] = 0
                biases.append((sfx, b, bhn))
                params.append((self._params["weight_ih" + sfx], self._params["weight_hh" + sfx], b, bhn))
                # (the buffers' one table is the kernels' dir_buffers; what the packed kernel's layouts
                # gained is in rnnfast/_planner.py and bench/README.md)
                shapes = _k.dir_buffers(self._cell, F, H, B, N, training, d == 1, *kp.kernel_args, n_threads)
                buf = {name: ws.get(f"{name}{k}", shape, dt) for name, shape in shapes.items()
                       if not (keep and name in _k.KEPT_PACKS)}
                bufs.append(buf)
        x_buf = ws.get("x", (N, self.input_size), dt)
        outl = [ws.get(f"out{layer}", (N, DH), dt) for layer in range(L)]
        # and for _run: the bias sources, zero states (the kernels only read initial states) and the in-place
        # decisions by input layout (see _io_layout)
        prep = (params, bufs, biases, x_buf, outl, self._bias_src(biases), np.zeros((B, H), dt), {})
        ws.prepared = None if training else (key, prep)
        return prep

    def _call(self, B, T, N, training):
        """The planner's description of a call (rnnfast._planner.Call)."""
        f32 = self.dtype == np.float32
        return Call(self._cell, f32, B, T, N, self.input_size, self.hidden_size, self._D, self.num_layers, training,
                    f32 and not training and self._keeps_packs())

    def _keeps_packs(self):
        """Whether inference calls keep their weight packs (rnnfast.nn._packs: a frozen layer, or KEEP_PACKS
        over weights worth it)."""
        return bool(self._frozen) or (_packs.KEEP_PACKS and _packs.worth(self))

    def _kernel_plan(self, B, T, N, training, n_threads, awake=False):
        """The planner's choice for a call (a forced plan first: rnnfast.tune times candidates that way);
        batch 1 on one thread while the thread policy backs off; ``awake``: a small call that the thread
        policy sends to several threads (_eval_fast)."""
        if self._forced_plan is not None:
            return self._forced_plan
        if B == 1 and self._D == 1 and self.dtype == np.float32:
            n_threads = self.thread_policy.threads(n_threads)
        tuned = self._tuned if self._tuned is not None else _tune.tuned_plans()
        # (whether packs are kept: worth() is fixed for a layer, the switch and freezing are not)
        key = (B, T, N, training, n_threads, tuned is not None, _packs.KEEP_PACKS, not self._frozen, awake)
        kp = self._kplans.get(key)
        if kp is None:  # (the planner's few microseconds matter to tiny calls: remember its answers)
            if len(self._kplans) >= _PLAN_CACHE:
                self._kplans.clear()
            kp = self._kplans[key] = _planner.plan_call(self._call(B, T, N, training), n_threads, tuned,
                                                        awake=awake)
        return kp

    def _stepper(self, ws, B, n_threads):
        """The cached kernel arguments of a one-step call at batch size B (see _k.Stepper)."""
        plan = self._plan(None, B, 1)
        # (a step packs nothing to keep: its plans are those of packing at every call)
        kp = _planner.plan_call(replace(self._call(B, 1, B, False), kept=False), n_threads, streaming=True)
        params, bufs, biases, _, outl = self._prepare(ws, plan, False, n_threads, kp)[:5]
        src = self._bias_src(biases)
        st = _k.Stepper(B, self._cell, int(self.nonlinearity == "relu"), plan.kplan,
                        self.input_size, self.hidden_size, self.num_layers, params, bufs, outl, src,
                        n_threads, *kp.kernel_args)
        ws.stepper = st
        return st

    def _run(self, x, h0, c0, lengths, training, n_threads, ws, last=False, kp=None):
        """Pack, run the kernel; returns (out, hT, cT, plan, cache, final): out is packed (N, DH) in ``ws``,
        or with ``final`` the caller's output array itself (with ``last``, an array of ``ws``: the caller
        reads only the final states). ``kp``: the kernel plan, when the caller has it (_eval_fast)."""
        B, T, _ = x.shape
        plan = self._plan(lengths, B, T)
        if kp is None:
            kp = self._kernel_plan(B, T, plan.N, training, n_threads)
        n_threads = kp.threads
        keep_packs = _packs.keeps(self, kp.kernel_args, training)
        prep = self._prepare(ws, plan, training, n_threads, kp, keep_packs)
        LD, H, dt = self.num_layers * self._D, self.hidden_size, self.dtype
        # the final states, fresh (LSTM: h_n and c_n the two halves of one block, one allocation)
        if self._mode == "lstm":
            hT_all, cT_all = np.empty((2, LD, B, H), dt)
        else:
            hT_all, cT_all = np.empty((LD, B, H), dt), None
        if h0 is None and c0 is None:
            z = prep[6]
            states = [(z, z, hT_all[k], None if cT_all is None else cT_all[k]) for k in range(LD)]
        else:
            h0s = plan.sort_states(h0, dt) if h0 is not None else [prep[6]] * LD
            c0s = plan.sort_states(c0, dt) if c0 is not None else [prep[6]] * LD
            states = [(h0s[k], c0s[k], hT_all[k], None if cT_all is None else cT_all[k]) for k in range(LD)]
        # Inference over equal lengths: the kernel writes the caller's output array in place and, where the
        # layout allows, reads the input in place (no packing copies: LSTM small 12%, medium 9% faster).
        direct = not training and plan.full
        if direct:
            head, tail, where, out_shape = self._eval_template(prep, plan, kp, x, n_threads)
            out = ws.get("final", out_shape, dt) if last else np.empty(out_shape, dt)
            xl = [x if where == "x" else x.swapaxes(0, 1)] if where is not None else [plan.pack(x, prep[3])]
            outl = prep[4][:-1] + [out]
            args = head + (states, xl + prep[4][:-1], outl) + tail
        else:
            args, xl, outl, masks = self._packed_args(prep, plan, kp, x, states, training, n_threads, ws)
        plain = direct and h0 is None and c0 is None and lengths is None
        if plain:
            # the plain inference call: its filled arguments serve the next ones of this layout (_eval_fast),
            # with the layer's kept packs
            kept = _packs.kept_packs(self, kp.kernel_args, n_threads) if keep_packs else None
            fw = _k.Forward(*args, bias_src=prep[5], packs=_packs.pack_args(kept))
            yields = fw.run()
            if yields < 0:  # (kept packs made from other weights, or for another count of threads: nothing ran)
                _packs.drop(self, kept, yields)
                kept = _packs.kept_packs(self, kp.kernel_args, n_threads)
                fw = _k.Forward(*args, bias_src=prep[5], packs=_packs.pack_args(kept))
                yields = fw.run()
            _packs.ran(self, kept, self._pooled_bytes() + ws.nbytes)
            if kept is None or self._packs.get(kept.key) is kept:  # (kept within the workspace limit)
                ws.fast = (kp, x.shape, x.strides, last, fw, out_shape, plan, where, prep[3],
                           kept if kept is not None else _packs.NOTHING if keep_packs or not _packs.worth(self)
                           else None)
        else:
            yields = self._forward_kernel(args, prep[5], kp.kernel_args, n_threads, keep_packs, ws)
        if kp.kernel in ("latency", "units"):
            self.thread_policy.note(n_threads, yields)
        cache = None
        if training:
            cache = dict(plan=plan, kp=kp, params=prep[0], bufs=prep[1], states=states, xl=xl, outl=outl,
                         masks=masks, ws=ws)
        return outl[-1], hT_all, cT_all, plan, cache, direct

    def _head_args(self, prep, plan):
        """The kernel's leading arguments up to its parameters and buffers (what a layout's calls share)."""
        return (self._cell, int(self.nonlinearity == "relu"), plan.kplan, self.input_size, self.hidden_size,
                self._D, self.num_layers, prep[0], prep[1])

    def _eval_template(self, prep, plan, kp, x, n_threads):
        """For an inference call over equal lengths, what its calls at this input layout share, kept in
        ``prep`` (the workspace's prepared arguments: one thread's at a time) by input layout: the kernel's
        arguments before the states and after the outputs, where the input is read (see _io_layout) and
        the output's shape."""
        layouts = prep[7]
        # (batch_first may change between calls; the prepared arguments serve other layouts of B and N too)
        lkey = (x.dtype, x.strides, x.shape, self.batch_first, plan.kplan)
        tpl = layouts.get(lkey)
        if tpl is None:  # (a few microseconds a call: the decision is kept per input layout)
            B, T, _ = x.shape
            DH = self._D * self.hidden_size
            out_shape = (B, T, DH) if self.batch_first else (T, B, DH)
            where, io = self._io_layout(x, np.empty(out_shape, self.dtype), kp)
            tail = ([None] * self.num_layers, False, n_threads, *kp.kernel_args, *io)
            tpl = layouts[lkey] = (self._head_args(prep, plan), tail, where, out_shape)
        return tpl

    def _packed_args(self, prep, plan, kp, x, states, training, n_threads, ws):
        """The kernel's arguments for a call on the packed layout (the input packed into the workspace;
        training: dropout masks between layers); returns (args, xl, outl, masks)."""
        N, DH, L, dt = plan.N, self._D * self.hidden_size, self.num_layers, self.dtype
        outl = prep[4]
        xl = [plan.pack(x, prep[3])]
        masks = [None] * L
        use_dropout = training and self.dropout > 0.0
        for layer in range(L - 1):
            if use_dropout:
                keep = 1.0 - self.dropout
                m = (self._rng.random((N, DH)) < keep).astype(dt)
                if keep > 0:  # p = 1 drops everything, as PyTorch does
                    m *= dt.type(1.0 / keep)
                masks[layer] = m
                xl.append(ws.get(f"xl{layer + 1}", (N, DH), dt))
            else:
                xl.append(outl[layer])
        args = self._head_args(prep, plan) + (states, xl, outl, masks, training, n_threads, *kp.kernel_args,
                                              0, 0, 0, 0)
        return args, xl, outl, masks

    def _forward_kernel(self, args, bias_src, kernel_args, n_threads, keep, ws):
        """The forward kernel's call; with ``keep``, on the layer's kept weight packs (rnnfast.nn._packs), made
        anew when the kernel finds them made from other weights (or for other threads). New packs are kept
        only where the workspace limit leaves room beside the pooled workspaces and this call's ``ws``."""
        if not keep:
            return _k.forward(*args, bias_src=bias_src, packs=None)
        kept = _packs.kept_packs(self, kernel_args, n_threads)
        yields = _k.forward(*args, bias_src=bias_src, packs=_packs.pack_args(kept))
        if yields < 0:
            _packs.drop(self, kept, yields)
            kept = _packs.kept_packs(self, kernel_args, n_threads)
            yields = _k.forward(*args, bias_src=bias_src, packs=_packs.pack_args(kept))
        if kept is not None:
            _packs.ran(self, kept, self._pooled_bytes() + ws.nbytes)
        return yields

    def _io_layout(self, x, out, kp):
        """For an inference call over equal lengths: (where, io), ``where`` "x" or "xt" when the kernel reads
        the input ``x`` (B, T, F) itself or its (T, B, F) view in place, None when it is packed first; ``io``
        the kernel's strides in elements, (step, row) of the input then of the output ``out``, 0: packed.
        The batch-1 kernel only takes the packed layout, which one direction at B = 1 is, whichever the
        caller's."""
        B, T, _ = x.shape
        D, dt = self._D, self.dtype
        io = [0, 0, 0, 0]
        if not (D == 1 and (B == 1 or not self.batch_first)):
            ob = out.swapaxes(0, 1) if not self.batch_first else out  # (B, T, DH) view
            io[2], io[3] = ob.strides[1] // dt.itemsize, ob.strides[0] // dt.itemsize
        # (kernels that make x_t W_ih^T step by step read the input where it is)
        fused = kp.proj == "step" and kp.kernel in ("packed", "units")
        x_tm = x.swapaxes(0, 1)  # (T, B, F)
        where = None
        if x.dtype == dt and x.strides[2] == dt.itemsize and (x.flags.c_contiguous or x_tm.flags.c_contiguous):
            base = "x" if x.flags.c_contiguous else "xt"
            if D == 1 and x_tm.flags.c_contiguous:  # the packed layout itself
                where = base
            elif fused:
                # a length-1 axis may have any stride, 0 included (x[None] has one): the kernel never
                # steps along it, but refuses a stride of 0
                ts = x.strides[1] // dt.itemsize if T > 1 else 1
                rs = x.strides[0] // dt.itemsize if B > 1 else 1
                if ts and rs:
                    where = base
                    io[0], io[1] = ts, rs
        return where, tuple(io)

    def _finish(self, plan, out_p, hT, cT, unbatched, final=False, width=None, last=False):
        """The caller's results from the kernel's: ``out_p`` packed (N, ``width``: D*H, the default, for a
        forward's output, I for a backward's dx), or with ``final`` already the caller's output array; the
        states (final ones, or the initial states' gradients) in the caller's row order. With ``last``
        (batched input only) the output is the last layer's final states side by side, (B, D H)."""
        if last:
            h_n = plan.unsort_states(hT)
            out = np.concatenate(h_n[-self._D:], axis=1) if self._D == 2 else h_n[-1].copy()
            return out, ((h_n, plan.unsort_states(cT)) if self._mode == "lstm" else h_n)
        if final:
            out = out_p
        else:
            out = plan.unpack(out_p, self._D * self.hidden_size if width is None else width)
            if not self.batch_first:
                out = np.ascontiguousarray(out.swapaxes(0, 1))
        h_n = plan.unsort_states(hT)
        c_n = plan.unsort_states(cT) if self._mode == "lstm" else None
        if unbatched:
            out = out[0] if self.batch_first else out[:, 0]
            h_n = h_n[:, 0]
            c_n = c_n[:, 0] if c_n is not None else None
        if self._mode == "lstm":
            return out, (h_n, c_n)
        return out, h_n

    def _check_dout(self, dout, plan, unbatched, width=None):
        """``dout`` as the kernel takes it: (B, T, D H) batch-first (``width`` instead of D H when given), of
        the layer's dtype, checked against the forward's output shape."""
        B, T, DH = plan.B, plan.T, self._D * self.hidden_size if width is None else width
        dout = as_float(dout, self.dtype, "dout")
        exp = (T, DH) if unbatched else ((B, T, DH) if self.batch_first else (T, B, DH))
        if dout.shape != exp:
            raise ValueError(f"dout must have the output's shape {exp}, got {dout.shape}")
        if unbatched:
            dout = dout[None] if self.batch_first else dout[:, None]
        return dout if self.batch_first else dout.swapaxes(0, 1)

    def _backward_args(self, cache, dout, dh_n, dc_n, nth):
        """The backward kernel's arguments: per-layer output gradients (the last one ``dout`` packed), the
        input gradient's buffer, per layer-direction gradient arrays and running state gradients, the
        backward buffers (the kernels' dir_buffers table), and the arrays receiving dh0 / dc0."""
        plan, ws = cache["plan"], cache["ws"]
        B, N = plan.B, plan.N
        H, D, L, G, dt = self.hidden_size, self._D, self.num_layers, self._G, self.dtype
        DH, LD = D * H, L * D
        dls = [ws.get(f"dout{layer}", (N, DH), dt) for layer in range(L - 1)]
        dls.append(plan.pack(dout, ws.get(f"dout{L - 1}", (N, DH), dt)))
        dx0 = ws.get("dx", (N, self.input_size), dt)

        def running(s):  # dh / dc are the kernels' running gradients (written): always fresh copies
            return [a.copy() for a in plan.sort_states(s, dt)] if s is not None else list(np.zeros((LD, B, H), dt))

        dhs = running(dh_n)
        dcs = running(dc_n) if self._mode == "lstm" else [None] * LD
        dh0_all = np.empty((LD, B, H), dt)
        dc0_all = np.empty((LD, B, H), dt) if self._mode == "lstm" else None
        grads, dstates, g = [], [], self.grads
        for layer in range(L):
            F = self.input_size if layer == 0 else DH
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                grads.append((g["weight_ih" + sfx], g["weight_hh" + sfx],
                              g["bias_ih" + sfx] if self.bias else np.zeros(G * H, dt),
                              g["bias_hh" + sfx] if self.bias else np.zeros(G * H, dt)))
                dstates.append((dhs[k], dcs[k], dh0_all[k], dc0_all[k] if dc0_all is not None else None))
                # (on the packed kernel dx_t = dG_t W_ih at each step while dG_t is in cache, rather than
                # one GEMM over all steps after the loop: LSTM small training 2.7% faster, medium 4.2%)
                shapes = _k.dir_buffers(self._cell, F, H, B, N, True, d == 1, *cache["kp"].kernel_args, nth, True)
                for name, shape in shapes.items():
                    cache["bufs"][k][name] = ws.get(f"{name}{k}", shape, dt)
        return dls, dx0, grads, dstates, dh0_all, dc0_all


class FastCalls:
    """The plain inference call a service repeats (``_forward_fast_check``'s: a batch-first array, no state,
    no lengths): on the kernel arguments kept from the last call of its layout, and, for a small one, on
    the threads the thread policy finds awake and faster. A mixin of the recurrent layers beside
    KernelCalls, whose ``_run``, ``_kernel_plan`` and ``_finish`` it calls."""

    def _small_key(self, B, T, n_threads):
        """A key for a plain float32 inference call of this shape when it is a small one that several threads
        may run (_planner.small_call) with no tuned or forced plan, else None."""
        if n_threads <= 1 or self.dtype != np.float32 or self._forced_plan is not None:
            return None
        key = ("small", B, T, n_threads)
        hit = self._kplans.get(key)
        if hit is None:
            if len(self._kplans) >= _PLAN_CACHE:
                self._kplans.clear()
            c = self._call(B, T, B * T, False)
            tuned = self._tuned if self._tuned is not None else _tune.tuned_plans()
            # (and whose plan, the threads awake, gives them tasks of their own, long enough: _planner.small_call)
            hit = (_planner.small_call(c, n_threads) and not (tuned and c.key(n_threads) in tuned)
                   and _planner.small_call(c, n_threads, _planner.plan_call(c, n_threads, awake=True)))
            self._kplans[key] = hit
        return key if hit else None

    def _eval_full(self, x, n_threads, ws, last, kp):
        out_p, hT, cT, plan, _, final = self._run(x, None, None, None, False, n_threads, ws, last, kp=kp)
        return self._finish(plan, out_p, hT, cT, False, final, last=last)

    def _eval_fast(self, x, n_threads, ws, last=False):
        """An inference call over ``x``, a plain batch-first array of the layer's dtype with no state nor
        lengths (``_forward_fast_check``'s: what a service repeats), on the filled kernel arguments the
        workspace ``ws`` kept from its last such call (a _k.Forward; kept by ``_run``) when that had the same
        layout, plan and ``last``: the call then only allocates its results, points the kernel at them and
        runs it (a small call's Python and kernel entry took about 8 us, 6 of them here and in _run). Else
        the full path (``_run``). A small call (below the planner's ``min_parallel_flops``) runs on one
        thread or several as the thread policy finds faster while its threads are awake
        (ThreadPolicy.small_threads). Returns forward's (out, h_n or (h_n, c_n)), or with ``last``
        _forward_last's."""
        B, T, _ = x.shape
        small = self._small_key(B, T, n_threads)
        if small is None:
            return self._eval_fast_run(x, n_threads, ws, last, self._kernel_plan(B, T, B * T, False, n_threads))
        # a small call: on several threads only while they are awake and faster for it (ThreadPolicy)
        pol = self.thread_policy
        if pol.perf() - pol.small_last > _planner.TABLE["small_warm_s"]:
            # cold, as most calls of a service: one thread, as planned, at the least cost in this path (a
            # call may last 10 us)
            try:
                return self._eval_fast_run(x, n_threads, ws, last, self._kernel_plan(B, T, B * T, False, n_threads))
            finally:
                pol.small_last = pol.perf()
        _, split, warm = pol.small_threads(small, n_threads)
        # (one thread: the very plan of a cold call, whose kept kernel arguments then serve both)
        kp = self._kernel_plan(B, T, B * T, False, n_threads, awake=split)
        t0 = pol.perf()
        try:
            return self._eval_fast_run(x, n_threads, ws, last, kp)
        finally:
            pol.small_done(small, split, warm, pol.perf() - t0)

    def _eval_fast_run(self, x, n_threads, ws, last, kp):
        """_eval_fast's call under the kernel plan ``kp``."""
        B, T, _ = x.shape
        fast = ws.fast
        if (fast is None or fast[0] is not kp or fast[1] != x.shape or fast[2] != x.strides or fast[3] != last
                or (fast[9] is not NOTHING and not _packs.fast_ok(self, fast[9], kp.kernel_args))):
            return self._eval_full(x, n_threads, ws, last, kp)
        fw, out_shape, plan, where, x_buf = fast[4:9]
        LD, H, dt = self.num_layers * self._D, self.hidden_size, self.dtype
        out = ws.get("final", out_shape, dt) if last else np.empty(out_shape, dt)
        if self._mode == "lstm":
            hT, cT = np.empty((2, LD, B, H), dt)
        else:
            hT, cT = np.empty((LD, B, H), dt), None
        xin = x if where == "x" else x.swapaxes(0, 1) if where == "xt" else plan.pack(x, x_buf)
        yields = fw.run(xin, out, hT, cT)
        if yields < 0:  # (kept packs made from other weights, or for another count of threads: nothing ran)
            ws.fast = None
            _packs.drop(self, fast[9], yields)
            return self._eval_full(x, n_threads, ws, last, kp)
        if type(fast[9]) is Kept:
            fast[9].used = True
        if kp.kernel in ("latency", "units"):
            self.thread_policy.note(kp.threads, yields)
        if last:
            return self._finish(plan, out, hT, cT, False, True, last=True)
        return (out, (hT, cT)) if cT is not None else (out, hT)
