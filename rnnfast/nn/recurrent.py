"""Recurrent layers: LSTM, GRU and RNN with PyTorch's constructor, state-dict keys and numerics.

Each call validates its input once, packs the batch (time-major, longest sequence first, padded steps
dropped), and hands the whole network to one ``nogil`` kernel call (``rnnfast._kernels._recurrent``).
"""
from typing import Optional, Tuple, Union, cast

import numpy as np

from rnnfast import _planner, _tune
from rnnfast._kernels import _recurrent as _k
from rnnfast._planner import TABLE, Call, Cell, Plan, ThreadPolicy
from rnnfast._threads import resolve_threads
from rnnfast._typing import ArrayLike, DTypeLike, Seed
from rnnfast._validation import Boolean, Options, Real, validate_params
from rnnfast.nn.module import (BackwardStateError, Module, aligned_empty, as_float, check_float_dtype, check_int,
                               check_lengths, make_rng)

__all__ = ["LSTM", "GRU", "RNN"]

# a recurrent state: h (num_layers * D, B, H), or for LSTM the pair (h, c)
State = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]

_CELLS = {"lstm": Cell.LSTM, "gru": Cell.GRU, "rnn": Cell.RNN}


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

    __slots__ = ("arrays", "prepared", "stepper")

    def __init__(self):
        self.arrays = {}
        self.prepared = None  # the last eval call's kernel arguments (see _RNNBase._prepare)
        self.stepper = None   # the last step call's (see _RNNBase.step)

    def get(self, name, shape, dtype):
        size = 1
        for n in shape:
            size *= n
        a = self.arrays.get(name)
        if a is None or a.size < size or a.dtype != dtype:
            a = aligned_empty(size, dtype)
            self.arrays[name] = a
        return a[:size].reshape(shape)


_POOL_SIZE = 4      # workspaces a layer keeps between calls
_PLAN_CACHE = 16    # batch layouts a layer remembers

# The kernel decisions (which kernel, which product layout, how many threads) and their thresholds are
# rnnfast._planner's; the layer asks it once per call (plan_for shows the answer).


class _RNNBase(Module):
    """Shared machinery of LSTM, GRU and RNN (see their docstrings)."""

    _mode: Optional[str] = None
    #: The constructor's options (rnnfast._validation: TypeError for a wrong type, ValueError for a bad value).
    _options = {"bias": Boolean(), "batch_first": Boolean(), "bidirectional": Boolean(), "dropout": Real(0.0, 1.0),
                "nonlinearity": Options("tanh", "relu")}

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, nonlinearity="tanh"):
        super().__init__()
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.num_layers = check_int(num_layers, "num_layers", 1)
        opts = validate_params({"bias": bias, "batch_first": batch_first, "bidirectional": bidirectional,
                                "dropout": dropout, "nonlinearity": nonlinearity}, self._options)
        self.bias, self.batch_first, self.bidirectional = opts["bias"], opts["batch_first"], opts["bidirectional"]
        self.dropout, self.nonlinearity = opts["dropout"], opts["nonlinearity"]
        self.dtype = check_float_dtype(dtype)
        self._cell = _CELLS[self._mode]
        self._G = self._cell.gates
        self._D = 2 if self.bidirectional else 1
        self._rng = make_rng(seed)
        self._pool = []
        self._plans = {}
        self.thread_policy = ThreadPolicy()  # batch-1 back-off and streaming-step rules (injectable clock)
        self._forced_plan = None  # a Plan every call runs with (rnnfast.tune times candidates this way)
        self._tuned = None  # the tuning cache's plans, or None (see rnnfast.tune)
        self._step_out, self._step_out_B = None, 0  # the state the last batched step returned
        self._step_caps = {}  # threads the planner gives a batch-1 step, by requested threads
        self._kplans = {}  # the planner's answers, by call (see _kernel_plan)
        k = 1.0 / np.sqrt(self.hidden_size)
        for name, shape in self._param_shapes():
            self._add_param(name, self._rng.uniform(-k, k, size=shape).astype(self.dtype))

    # ------------------------------------------------------------------ parameters
    def _param_shapes(self):
        GH, H, D = self._G * self.hidden_size, self.hidden_size, self._D
        for layer in range(self.num_layers):
            F = self.input_size if layer == 0 else D * H
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                yield "weight_ih" + sfx, (GH, F)
                yield "weight_hh" + sfx, (GH, H)
                if self.bias:
                    yield "bias_ih" + sfx, (GH,)
                    yield "bias_hh" + sfx, (GH,)

    # ------------------------------------------------------------------ validation
    def _check_x(self, x):
        x = as_float(x, self.dtype, "x")
        if x.ndim == 2:
            unbatched = True
            x = x[:, None, :] if not self.batch_first else x[None, :, :]
        elif x.ndim == 3:
            unbatched = False
        else:
            raise ValueError(f"x must be 3-D (batch, time, features) or 2-D unbatched, got shape {x.shape}")
        if not self.batch_first:
            x = x.swapaxes(0, 1)
        B, T, F = x.shape
        if F != self.input_size:
            raise ValueError(f"x has {F} features, expected input_size={self.input_size}")
        if B == 0 or T == 0:
            raise ValueError(f"x must have at least one sequence and one time step, got shape {x.shape}")
        return x, unbatched

    def _check_state(self, s, name, B, unbatched):
        LD, H = self.num_layers * self._D, self.hidden_size
        s = as_float(s, self.dtype, name)
        if unbatched:
            if s.shape != (LD, H):
                raise ValueError(f"{name} must have shape ({LD}, {H}) for unbatched input, got {s.shape}")
            return s[:, None, :]
        if s.shape != (LD, B, H):
            raise ValueError(f"{name} must have shape (num_layers * num_directions, batch, hidden) = "
                             f"({LD}, {B}, {H}), got {s.shape}")
        return s

    def _split_hx(self, hx, B, unbatched, what="hx"):
        """hx -> (h, c) arrays of shape (LD, B, H) or None."""
        if self._mode == "lstm":
            if hx is None:
                return None, None
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{what} for LSTM must be a tuple (h, c)")
            h, c = hx
            h = None if h is None else self._check_state(h, what + "[0] (h)", B, unbatched)
            c = None if c is None else self._check_state(c, what + "[1] (c)", B, unbatched)
            return h, c
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{what} for {self._mode.upper()} must be an array, not a tuple")
        return (None if hx is None else self._check_state(hx, what, B, unbatched)), None

    # ------------------------------------------------------------------ forward / backward
    def _plan(self, lengths, B, T):
        key = (B, T, None if lengths is None else lengths.tobytes())
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(lengths, B, T)
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
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(ws)

    # Pickling keeps parameters and settings, never the buffers kept for reuse (a copy loaded read-only,
    # as joblib's memmap does, would otherwise be written by the next call) nor what the machine did lately.
    _TRANSIENT = ("_pool", "_plans", "_kplans", "_step_caps", "_cache", "_step_out", "thread_policy")

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool, self._plans, self._kplans, self._step_caps = [], {}, {}, {}
        self._cache, self._step_out, self._step_out_B = None, None, 0
        self.thread_policy = ThreadPolicy()

    def release_memory(self) -> None:
        """Drop the buffers kept for reuse between calls (and any backward cache)."""
        self._pool = []
        self._plans = {}
        self._step_caps = {}
        self._kplans = {}
        self._cache = None

    def _bias_src(self, biases):
        """Per layer and direction, PyTorch's (b_ih, b_hh) (None without bias), from which the kernel entry
        makes its own bias vectors at every call (the parameters may change in place between calls):
        b = b_ih + b_hh (GRU: summed for r and z, b_in alone for n, and b_hn apart)."""
        return [(self._params["bias_ih" + sfx], self._params["bias_hh" + sfx]) if self.bias else None
                for sfx, _, _ in biases]

    def _prepare(self, ws, plan, training, n_threads, kp):
        """The kernel's arguments that do not change from call to call at this layout and kernel plan
        ``kp``: parameters and bias vectors, per-direction buffers, layer inputs and outputs, all in
        ``ws``. Kept in ``ws`` for the next eval call of the same layout (what a streaming ``step``
        repeats), rebuilt otherwise."""
        key = (plan.kplan, training, n_threads, kp)
        prep = ws.prepared
        if prep is not None and prep[0] is plan.kplan and prep[1] == key[1:]:
            return prep[2]
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
                buf = {name: ws.get(f"{name}{k}", shape, dt) for name, shape in shapes.items()}
                bufs.append(buf)
        x_buf = ws.get("x", (N, self.input_size), dt)
        outl = [ws.get(f"out{layer}", (N, DH), dt) for layer in range(L)]
        prep = (params, bufs, biases, x_buf, outl)
        ws.prepared = None if training else (plan.kplan, key[1:], prep)
        return prep

    def _call(self, B, T, N, training):
        """The planner's description of a call (rnnfast._planner.Call)."""
        return Call(self._cell, self.dtype == np.float32, B, T, N, self.input_size, self.hidden_size, self._D,
                    self.num_layers, training)

    def _kernel_plan(self, B, T, N, training, n_threads):
        """The planner's choice for a call (a forced plan first: rnnfast.tune times candidates that way);
        batch 1 on one thread while the thread policy backs off."""
        if self._forced_plan is not None:
            return self._forced_plan
        if B == 1 and self._D == 1 and self.dtype == np.float32:
            n_threads = self.thread_policy.threads(n_threads)
        tuned = self._tuned if self._tuned is not None else _tune.tuned_plans()
        key = (B, T, N, training, n_threads, tuned is not None)
        kp = self._kplans.get(key)
        if kp is None:  # (the planner's few microseconds matter to tiny calls: remember its answers)
            if len(self._kplans) >= _PLAN_CACHE:
                self._kplans.clear()
            kp = self._kplans[key] = _planner.plan_call(self._call(B, T, N, training), n_threads, tuned)
        return kp

    def plan_for(self, x: ArrayLike, lengths: Optional[ArrayLike] = None, *, training: Optional[bool] = None,
                 n_threads: Optional[int] = None) -> Plan:
        """The kernel plan a call with this input would run (kernel, product layout, thread split);
        nothing is computed. ``training`` defaults to the layer's mode.

        Examples
        --------
        >>> str(LSTM(8, 512).plan_for(np.zeros((2, 100, 8), np.float32), n_threads=2))
        'units proj=step split=unitsx2'
        """
        xb, _ = self._check_x(x)
        B, T, _ = xb.shape
        lengths = check_lengths(lengths, B, T)
        N = B * T if lengths is None else int(np.sum(lengths))
        train = self.training if training is None else bool(training)
        return self._kernel_plan(B, T, N, train, resolve_threads(n_threads))

    def _stepper(self, ws, B, n_threads):
        """The cached kernel arguments of a one-step call at batch size B (see _k.Stepper)."""
        plan = self._plan(None, B, 1)
        kp = _planner.plan_call(self._call(B, 1, B, False), n_threads)
        params, bufs, biases, _, outl = self._prepare(ws, plan, False, n_threads, kp)
        src = self._bias_src(biases)
        st = _k.Stepper(B, self._cell, int(self.nonlinearity == "relu"), plan.kplan,
                        self.input_size, self.hidden_size, self.num_layers, params, bufs, outl, src,
                        [(b, bhn) for _, b, bhn in biases], n_threads, *kp.kernel_args)
        ws.stepper = st
        return st

    def _run(self, x, h0, c0, lengths, training, n_threads, ws):
        """Pack, run the kernel; returns (out, hT, cT, plan, cache, final): out is packed (N, DH) in ``ws``,
        or with ``final`` the caller's output array itself."""
        B, T, _ = x.shape
        H, D, L = self.hidden_size, self._D, self.num_layers
        dt = self.dtype
        LD = L * D
        plan = self._plan(lengths, B, T)
        N, DH = plan.N, D * H
        kp = self._kernel_plan(B, T, N, training, n_threads)
        n_threads = kp.threads
        params, bufs, biases, x_buf, outl = self._prepare(ws, plan, training, n_threads, kp)
        z = np.zeros((B, H), dt)
        h0s = plan.sort_states(h0, dt) if h0 is not None else [z] * LD
        c0s = plan.sort_states(c0, dt) if c0 is not None else [z] * LD
        hT_all = np.empty((LD, B, H), dt)
        cT_all = np.empty((LD, B, H), dt) if self._mode == "lstm" else None
        states = [(h0s[k], c0s[k], hT_all[k], None if cT_all is None else cT_all[k]) for k in range(LD)]
        # Inference over equal lengths: the kernel writes the caller's output array in place and, where the
        # layout allows, reads the input in place (no packing copies: LSTM small 12%, medium 9% faster).
        # Strides in elements, (step, row); 0: packed. The batch-1 kernel only takes the packed layout,
        # which one direction at B = 1 is, whichever the caller's.
        direct = not training and plan.full
        io = [0, 0, 0, 0]
        xl = None
        if direct:
            out = np.empty((B, T, DH) if self.batch_first else (T, B, DH), dt)
            outl = outl[:-1] + [out]
            packed_like = D == 1 and (B == 1 or not self.batch_first)
            if not packed_like:
                ob = out.swapaxes(0, 1) if not self.batch_first else out  # (B, T, DH) view
                io[2], io[3] = ob.strides[1] // dt.itemsize, ob.strides[0] // dt.itemsize
            # (kernels that make x_t W_ih^T step by step read the input where it is)
            fused = kp.proj == "step" and kp.kernel in ("packed", "units")
            x_tm = x.swapaxes(0, 1)  # (T, B, F)
            if x.dtype == dt and x.strides[2] == dt.itemsize and (x.flags.c_contiguous or x_tm.flags.c_contiguous):
                base = x if x.flags.c_contiguous else x_tm
                if D == 1 and x_tm.flags.c_contiguous:  # the packed layout itself
                    xl = [base]
                elif fused:
                    xl = [base]
                    io[0], io[1] = x.strides[1] // dt.itemsize, x.strides[0] // dt.itemsize
        if xl is None:
            xl = [plan.pack(x, x_buf)]
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
        yields = _k.forward(self._cell, int(self.nonlinearity == "relu"), plan.kplan, self.input_size, H, D,
                            L, params, bufs, states, xl, outl, masks, training, n_threads, *kp.kernel_args, *io,
                            bias_src=self._bias_src(biases))
        if kp.kernel in ("latency", "units"):
            self.thread_policy.note(n_threads, yields)
        cache = None
        if training:
            cache = dict(plan=plan, kp=kp, params=params, bufs=bufs, states=states, xl=xl, outl=outl,
                         masks=masks, ws=ws)
        return outl[-1], hT_all, cT_all, plan, cache, direct

    def forward(self, x: ArrayLike, hx: Optional[State] = None, lengths: Optional[ArrayLike] = None,
                n_threads: Optional[int] = None) -> Tuple[np.ndarray, State]:
        """Run the layer over whole sequences.

        Parameters
        ----------
        x : array-like, shape (B, T, input_size), or (T, B, input_size) if ``batch_first=False``
            Input; 2-D means one unbatched sequence. Converted once to the layer's dtype.
        hx : array (num_layers * D, B, H), or for LSTM a tuple (h0, c0) of such arrays, optional
            Initial states; zeros when omitted.
        lengths : array-like of int, shape (B,), optional
            Valid steps of each (right-padded) sequence, in [1, T], any order. Outputs are zero past
            each length, final states are taken at each sequence's last step and the reverse direction
            starts there; padded steps are not computed.
        n_threads : int, optional
            Threads for this call (default :func:`rnnfast.get_num_threads`).

        Returns
        -------
        out : ndarray, shape (B, T, D * H) (time-major if ``batch_first=False``)
            NaN or inf in the input or the weights propagate to what they touch, as in PyTorch (the
            activations themselves never produce one); the estimators refuse them at ``fit``.
        h_n : ndarray (num_layers * D, B, H) for GRU and RNN; LSTM returns ``(h_n, c_n)``.
        """
        nth = resolve_threads(n_threads)
        xb, unbatched = self._check_x(x)
        B, T, _ = xb.shape
        lengths = check_lengths(lengths, B, T)
        h0, c0 = self._split_hx(hx, B, unbatched)
        training = self.training
        if training and self._cache is not None:
            # a training forward with no backward since the last one: that cache is dropped, and
            # its buffers serve again rather than being left to the garbage collector
            old, self._cache = self._cache, None
            self._release(old["ws"])
        ws = self._acquire()
        try:
            out_p, hT, cT, plan, cache, final = self._run(xb, h0, c0, lengths, training, nth, ws)
            result = self._finish(plan, out_p, hT, cT, unbatched, final)
        except BaseException:
            self._release(ws)
            raise
        if training:
            # the workspace now backs the cache; backward() returns it to the pool
            cache["unbatched"] = unbatched
            self._cache = cache
        else:
            self._release(ws)
        return result

    __call__ = forward

    def _finish(self, plan, out_p, hT, cT, unbatched, final=False):
        """The caller's results from the kernel's: ``out_p`` packed (N, DH), or with ``final`` already the
        caller's output array."""
        if final:
            out = out_p
        else:
            out = plan.unpack(out_p, self._D * self.hidden_size)
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

    def backward(self, dout: ArrayLike, dstate: Optional[State] = None,
                 n_threads: Optional[int] = None) -> Tuple[np.ndarray, State]:
        """Backpropagate through the last training-mode forward call; gradients accumulate in ``grads``.

        Parameters
        ----------
        dout : array-like, the shape of that call's output
            Gradient of the loss wrt the output (values at padded steps are ignored).
        dstate : array (num_layers * D, B, H), or for LSTM a tuple (dh_n, dc_n), optional
            Gradient wrt the final states; either part may be None (zero).
        n_threads : int, optional
            Threads for this call.

        Returns
        -------
        dx : ndarray, the shape of the input
        dh0 : ndarray for GRU and RNN; LSTM returns ``(dh0, dc0)``.
        """
        nth = resolve_threads(n_threads)
        cache = self._cache
        if cache is None:
            if not self.training:
                raise BackwardStateError("backward() needs a forward pass in training mode; this layer is in "
                                         "eval mode, which keeps no backward cache (call .train())")
            raise BackwardStateError("backward() called without a preceding training-mode forward() "
                                     "(or twice for one forward)")
        plan = cache["plan"]
        unbatched = cache["unbatched"]
        B, T, N = plan.B, plan.T, plan.N
        H, D, L, G = self.hidden_size, self._D, self.num_layers, self._G
        DH, LD, dt = D * H, L * D, self.dtype
        dout = as_float(dout, dt, "dout")
        if unbatched:
            exp = (T, DH)
            if dout.shape != exp:
                raise ValueError(f"dout must have the output's shape {exp}, got {dout.shape}")
            dout = dout[None] if self.batch_first else dout[:, None]
        else:
            exp = (B, T, DH) if self.batch_first else (T, B, DH)
            if dout.shape != exp:
                raise ValueError(f"dout must have the output's shape {exp}, got {dout.shape}")
        if not self.batch_first:
            dout = dout.swapaxes(0, 1)
        dh_n, dc_n = self._split_hx(dstate, B, unbatched, what="dstate")
        self._cache = None  # the kernel overwrites the saved gates with their gradients
        ws = cache["ws"]
        dls = [ws.get(f"dout{layer}", (N, DH), dt) for layer in range(L - 1)]
        dls.append(plan.pack(dout, ws.get(f"dout{L - 1}", (N, DH), dt)))
        dx0 = ws.get("dx", (N, self.input_size), dt)
        # dh / dc are the kernels' running gradients (written): always fresh copies
        dhs = [a.copy() for a in plan.sort_states(dh_n, dt)] if dh_n is not None else list(np.zeros((LD, B, H), dt))
        if self._mode == "lstm":
            dcs = ([a.copy() for a in plan.sort_states(dc_n, dt)] if dc_n is not None
                   else list(np.zeros((LD, B, H), dt)))
        else:
            dcs = [None] * LD
        grads, dstates = [], []
        dummy = np.zeros(G * H, dt)
        dh0_all = np.empty((LD, B, H), dt)
        dc0_all = np.empty((LD, B, H), dt) if self._mode == "lstm" else None
        for layer in range(L):
            F = self.input_size if layer == 0 else DH
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                g = self.grads
                grads.append((g["weight_ih" + sfx], g["weight_hh" + sfx],
                              g["bias_ih" + sfx] if self.bias else dummy.copy(),
                              g["bias_hh" + sfx] if self.bias else dummy.copy()))
                dstates.append((dhs[k], dcs[k], dh0_all[k], dc0_all[k] if dc0_all is not None else None))
                buf = cache["bufs"][k]
                # (on the packed kernel dx_t = dG_t W_ih at each step while dG_t is in cache, rather than
                # one GEMM over all steps after the loop: LSTM small training 2.7% faster, medium 4.2%)
                shapes = _k.dir_buffers(self._cell, F, H, B, N, True, d == 1, *cache["kp"].kernel_args, nth, True)
                for name, shape in shapes.items():
                    buf[name] = ws.get(f"{name}{k}", shape, dt)
        # the batch-1 and few-rows kernels (as their forward): threads sharing out the units
        kp = cache["kp"]
        shares_units = kp.kernel in ("latency", "units")
        if shares_units:
            nth = self.thread_policy.threads(min(nth, kp.threads))
        yields = _k.backward(self._cell, int(self.nonlinearity == "relu"), plan.kplan, self.input_size, H, D, L,
                             cache["params"], cache["bufs"], cache["states"], cache["xl"], cache["outl"],
                             cache["masks"], dls, dx0, grads, dstates, nth, *kp.kernel_args)
        if shares_units:
            self.thread_policy.note(nth, yields)
        dx = plan.unpack(dx0, self.input_size)
        self._release(ws)
        if not self.batch_first:
            dx = np.ascontiguousarray(dx.swapaxes(0, 1))
        dh0 = plan.unsort_states(dh0_all)
        dc0 = plan.unsort_states(dc0_all) if self._mode == "lstm" else None
        if unbatched:
            dx = dx[0] if self.batch_first else dx[:, 0]
            dh0 = dh0[:, 0]
            dc0 = dc0[:, 0] if dc0 is not None else None
        if self._mode == "lstm":
            return dx, cast(State, (dh0, dc0))
        return dx, dh0

    def step(self, x_t: ArrayLike, state: Optional[State] = None,
             n_threads: Optional[int] = None) -> Tuple[np.ndarray, State]:
        """Advance one time step (streaming inference); numerics match the whole-sequence call.

        Parameters
        ----------
        x_t : array-like, shape (B, input_size), or (input_size,) for one sequence
        state : as ``hx`` of :meth:`forward`, optional (zeros)
        n_threads : int, optional

        Returns
        -------
        y_t : ndarray (B, H) (or (H,))
        state : the new state, to pass to the next call (h for GRU/RNN, (h, c) for LSTM)
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer: the reverse direction reads the future")
        nth = resolve_threads(n_threads)
        xt = as_float(x_t, self.dtype, "x_t")
        if xt.ndim == 1:
            unbatched = True
            xt = xt[None]
        elif xt.ndim == 2:
            unbatched = False
        else:
            raise ValueError(f"x_t must be 2-D (batch, features) or 1-D, got shape {xt.shape}")
        if xt.shape[1] != self.input_size:
            raise ValueError(f"x_t has {xt.shape[1]} features, expected input_size={self.input_size}")
        if xt.shape[0] == 0:
            raise ValueError("x_t must hold at least one row")
        B = xt.shape[0]
        if state is not None and state is self._step_out and not unbatched and self._step_out_B == B:
            # the state this layer returned from its last step, passed back unchanged (a streaming
            # loop): its arrays are this layer's own, of the right dtype, shape and layout
            h0, c0 = state if self._mode == "lstm" else (state, None)
        else:
            h0, c0 = self._split_hx(state, B, unbatched, what="state")
            h0 = None if h0 is None else np.ascontiguousarray(h0)
            c0 = None if c0 is None else np.ascontiguousarray(c0)
        L, H, dt = self.num_layers, self.hidden_size, self.dtype
        latency = dt == np.float32 and B == 1
        split = warm = False
        pol = self.thread_policy
        if latency:
            # A step's work (microseconds) is far below what waking a second thread can cost after the
            # process sat idle (milliseconds here, on an idle virtual CPU), so the first step after a
            # pause runs on one thread. Steps that follow each other closely run the way that has been
            # faster lately (ThreadPolicy): whether a partner thread pays depends on the machine.
            cap = self._step_caps.get(nth)
            if cap is None:  # the planner's threads for a batch-1 step (one for small weights)
                cap = self._step_caps[nth] = _planner.plan_call(self._call(1, 1, 1, False), nth).threads
            nth, split, warm = pol.step_threads(pol.threads(cap))
        hT = np.empty((L, B, H), dt)
        cT = np.empty((L, B, H), dt) if self._mode == "lstm" else None
        ws = self._acquire()
        try:
            st = ws.stepper
            if st is None or st.key != B:
                st = self._stepper(ws, B, nth)
            t0 = pol.perf()
            yields = st.run(np.ascontiguousarray(xt), h0, c0, hT, cT, nth)
            t1 = pol.perf()
        finally:
            self._release(ws)
        if latency:
            pol.note(nth, yields)
            pol.step_last = t1
            if warm:
                pol.step_time(split, t1 - t0)
        y = hT[L - 1].copy()  # the output of one step is the last layer's new h (a copy: no aliasing)
        if unbatched:
            return (y[0], cast(State, (hT[:, 0], cast(np.ndarray, cT)[:, 0]))) if self._mode == "lstm" \
                else (y[0], hT[:, 0])
        out = cast(State, (hT, cT) if self._mode == "lstm" else hT)
        self._step_out, self._step_out_B = out, B
        return y, out

    def __repr__(self):
        extra = ", nonlinearity='relu'" if self._mode == "rnn" and self.nonlinearity == "relu" else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name}{extra})")


class LSTM(_RNNBase):
    """Long short-term memory layer, PyTorch's ``torch.nn.LSTM`` (gates i, f, g, o).

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int, default 1
    bias : bool, default True
    batch_first : bool, default True
        Input and output are (B, T, F); False means (T, B, F).
    dropout : float in [0, 1], default 0
        Dropout on the outputs of every layer but the last, in training mode.
    bidirectional : bool, default False
    dtype : numpy dtype, float32 (default) or float64
    seed : int or numpy Generator, optional
        Seeds the initial weights (PyTorch's uniform(-1/sqrt(H), 1/sqrt(H))) and the dropout masks.

    Examples
    --------
    >>> lstm = LSTM(8, 16, num_layers=2)
    >>> out, (h_n, c_n) = lstm(np.zeros((4, 10, 8), np.float32))
    >>> out.shape, h_n.shape
    ((4, 10, 16), (2, 4, 16))
    """

    _mode = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed)


class GRU(_RNNBase):
    """Gated recurrent unit layer, PyTorch's ``torch.nn.GRU`` (gates r, z, n; reset after the product).

    Parameters are those of :class:`LSTM`; ``forward`` takes and returns a single state array.
    """

    _mode = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed)


class RNN(_RNNBase):
    """Simple (Elman) recurrent layer, PyTorch's ``torch.nn.RNN``: h' = act(W_ih x + b_ih + W_hh h + b_hh).

    Parameters are those of :class:`LSTM`, plus ``nonlinearity``: "tanh" (default) or "relu".
    """

    _mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, nonlinearity)
