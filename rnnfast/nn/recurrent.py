"""Recurrent layers: LSTM, GRU and RNN with PyTorch's constructor, state-dict keys and numerics.

Each call validates its input once, packs the batch (time-major, longest sequence first, padded steps
dropped), and hands the whole network to one ``nogil`` kernel call (``rnnfast._kernels._recurrent``).
"""
from typing import Optional, Tuple, Union, cast

import numpy as np

from rnnfast import _planner
from rnnfast._kernels import _recurrent as _k
from rnnfast._planner import Call, Cell, Plan, ThreadPolicy
from rnnfast._threads import resolve_threads
from rnnfast._typing import ArrayLike, DTypeLike, Seed
from rnnfast._validation import Boolean, Options, Real, check_bool, validate_params
from rnnfast.nn._layer_norm import LayerNormCalls
from rnnfast.nn._rnn_calls import FastCalls, KernelCalls
from rnnfast.nn._variant import VariantCalls, variant_combination_error
from rnnfast.nn.module import (Module, as_float, check_float_dtype, check_int, check_lengths, check_param_count,
                               make_rng)

__all__ = ["LSTM", "GRU", "RNN"]

# a recurrent state: h (num_layers * D, B, H), or for LSTM the pair (h, c)
State = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]

_CELLS = {"lstm": Cell.LSTM, "gru": Cell.GRU, "rnn": Cell.RNN}


# The kernel decisions (which kernel, which product layout, how many threads) and their thresholds are
# rnnfast._planner's; the layer asks it once per call (plan_for shows the answer).


class _RNNBase(LayerNormCalls, VariantCalls, FastCalls, KernelCalls, Module):
    """Shared machinery of LSTM, GRU and RNN (see their docstrings)."""

    _mode: Optional[str] = None
    _read_only = ("input_size", "hidden_size", "num_layers", "bias", "bidirectional", "nonlinearity", "dtype",
                  "proj_size", "recurrent_dropout")
    #: The constructor's options (rnnfast._validation: TypeError for a wrong type, ValueError for a bad value).
    _options = {"bias": Boolean(), "batch_first": Boolean(), "bidirectional": Boolean(), "dropout": Real(0.0, 1.0),
                "nonlinearity": Options("tanh", "relu"), "recurrent_dropout": Real(0.0, 1.0, closed="left")}

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, nonlinearity="tanh",
                 proj_size=0, recurrent_dropout=0.0, layer_norm=False):
        super().__init__()
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.num_layers = check_int(num_layers, "num_layers", 1)
        opts = validate_params({"bias": bias, "batch_first": batch_first, "bidirectional": bidirectional,
                                "dropout": dropout, "nonlinearity": nonlinearity,
                                "recurrent_dropout": recurrent_dropout}, self._options)
        self.bias, self.batch_first, self.bidirectional = opts["bias"], opts["batch_first"], opts["bidirectional"]
        self.dropout, self.nonlinearity = opts["dropout"], opts["nonlinearity"]
        self.recurrent_dropout = opts["recurrent_dropout"]
        self.proj_size = check_int(proj_size, "proj_size", 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), got {self.proj_size}")
        self.recurrent_masks = None  # the last training call's recurrent dropout masks (rnnfast.nn._variant)
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
        self._packs = {}  # weight packs kept between inference calls (rnnfast.nn._packs)
        self._pack_skip = 0  # calls that pack as before (rnnfast.nn._packs.keeps)
        H, D, G = self.hidden_size, self._D, self._G
        check_param_count(self.num_layers * D * G * H * (max(self.input_size, D * H) + H + 2), self.dtype, repr(self))
        k = 1.0 / np.sqrt(self.hidden_size)
        for name, shape in self._param_shapes():
            self._add_param(name, self._rng.uniform(-k, k, size=shape).astype(self.dtype))
        if check_bool(layer_norm, "layer_norm"):  # (rnnfast.nn._layer_norm)
            self._ln_add_params()

    # ------------------------------------------------------------------ parameters
    def _param_shapes(self):
        GH, H, D, P = self._G * self.hidden_size, self.hidden_size, self._D, self._out_size
        for layer in range(self.num_layers):
            F = self.input_size if layer == 0 else D * P
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                yield "weight_ih" + sfx, (GH, F)
                yield "weight_hh" + sfx, (GH, P)
                if self.bias:
                    yield "bias_ih" + sfx, (GH,)
                    yield "bias_hh" + sfx, (GH,)
                if P != H:  # PyTorch's projection (proj_size)
                    yield "weight_hr" + sfx, (P, H)

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

    def _check_state(self, s, name, B, unbatched, width=None):
        LD, H = self.num_layers * self._D, self.hidden_size if width is None else width
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
            h = None if h is None else self._check_state(h, what + "[0] (h)", B, unbatched, self._out_size)
            c = None if c is None else self._check_state(c, what + "[1] (c)", B, unbatched)
            return h, c
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{what} for {self._mode.upper()} must be an array, not a tuple")
        return (None if hx is None else self._check_state(hx, what, B, unbatched)), None


    # Pickling keeps parameters, gradients and settings, never the buffers kept for reuse (a copy loaded
    # read-only, as joblib's memmap does, would otherwise be written by the next call) nor what the machine
    # did lately; release_memory() drops the same (rnnfast.nn.Module).
    _TRANSIENT = {**Module._TRANSIENT, "_pool": list, "_plans": dict, "_kplans": dict, "_packs": dict,
                  "_pack_skip": int, "_step_caps": dict,
                  "_step_out": lambda: None, "_step_out_B": int, "thread_policy": ThreadPolicy,
                  "recurrent_masks": lambda: None}
    _KEPT_ON_RELEASE = ("thread_policy",)  # what the machine did lately: not memory

    def plan_for(self, x: ArrayLike, lengths: Optional[ArrayLike] = None, *, training: Optional[bool] = None,
                 n_threads: Optional[int] = None) -> Plan:
        """The kernel plan a call with this input would run (kernel, product layout, thread split);
        nothing is computed. ``training`` defaults to the layer's mode.

        Examples
        --------
        >>> str(LSTM(8, 512).plan_for(np.zeros((2, 100, 8), np.float32), n_threads=2))
        'units+panels proj=gemm split=unitsx2'
        """
        c = self._describe(x, lengths, self.training if training is None else bool(training))
        return self._kernel_plan(c.B, c.T, c.N, c.training, resolve_threads(n_threads))

    def _describe(self, x, lengths, training: bool) -> Call:
        """The planner's description of a call with this input (checked as a call checks it)."""
        if self._layer_norm:
            raise ValueError("a layer_norm=True layer runs its own kernel (rnnfast._kernels._lncell): it has no "
                             "plan to show or tune")
        xb, _ = self._check_x(x)
        B, T, _ = xb.shape
        lengths = check_lengths(lengths, B, T)
        return self._call(B, T, B * T if lengths is None else int(np.sum(lengths)), training)

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
        return self._forward(x, hx, lengths, n_threads, False)

    __call__ = forward

    def _forward_last(self, x: ArrayLike, hx: Optional[State] = None, lengths: Optional[ArrayLike] = None,
                      n_threads: Optional[int] = None) -> Optional[Tuple[np.ndarray, State]]:
        """``(LastStep(bidirectional=self.bidirectional)(out, lengths), state)`` of an eval-mode ``forward``
        without the whole output: each sequence's output at its last valid step is its forward direction's
        final state, and the reverse direction's output at step 0 its final state (bit for bit: the kernels
        store the same values), so the (B, D H) result is taken from ``h_n`` and the (B, T, D H) output is
        never unpacked. None (nothing run) where that does not hold: training mode, an unbatched or
        time-major input, a projection or a layer-normalized cell."""
        if (self.training or not self.batch_first or self._layer_norm or self._variant_wanted()
                or np.ndim(x) != 3):
            return None
        return self._forward(x, hx, lengths, n_threads, True)

    def _forward_fast_check(self, x, hx, lengths):
        """``x`` itself when an eval call needs no conversion or checks beyond its shape (the repeated
        inference call: a (B, T, input_size) batch-first array of the layer's dtype, no state, no lengths),
        else None."""
        if (type(x) is np.ndarray and hx is None and lengths is None and not self.training and self.batch_first
                and x.ndim == 3 and x.dtype == self.dtype and x.shape[2] == self.input_size and x.shape[0]
                and x.shape[1]):
            return x
        return None

    def _forward(self, x, hx, lengths, n_threads, last):
        """forward (``last``: _forward_last)."""
        nth = resolve_threads(n_threads)
        xb = self._forward_fast_check(x, hx, lengths)
        if xb is not None and not (self._layer_norm or self._variant_wanted()):
            ws = self._acquire()
            try:
                result = self._eval_fast(xb, nth, ws, last)
            finally:
                self._release(ws)
            return result
        if xb is not None:
            unbatched, h0, c0 = False, None, None
        else:
            xb, unbatched = self._check_x(x)
            B, T, _ = xb.shape
            lengths = check_lengths(lengths, B, T)
            h0, c0 = self._split_hx(hx, B, unbatched)
        if self._variant_wanted():  # proj_size, or recurrent dropout in training (rnnfast.nn._variant)
            return self._variant_forward(xb, unbatched, h0, c0, lengths)
        training = self.training
        if training and self._cache is not None:
            # a training forward with no backward since the last one: that cache is dropped, and
            # its buffers serve again rather than being left to the garbage collector
            old, self._cache = self._cache, None
            self._release(old["ws"])
        if self._layer_norm:
            return self._ln_forward(xb, h0, c0, lengths, unbatched, training, nth)
        ws = self._acquire()
        try:
            out_p, hT, cT, plan, cache, final = self._run(xb, h0, c0, lengths, training, nth, ws, last)
            result = self._finish(plan, out_p, hT, cT, unbatched, final, last=last)
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
        cache = self._peek_cache()  # this thread's (BackwardStateError when there is none)
        if cache.get("variant"):
            return self._variant_backward(cache, dout, dstate)
        plan = cache["plan"]
        unbatched = cache["unbatched"]
        dout = self._check_dout(dout, plan, unbatched)
        dh_n, dc_n = self._split_hx(dstate, plan.B, unbatched, what="dstate")
        self._cache = None  # the kernel overwrites the saved gates with their gradients
        if self._layer_norm:
            return self._ln_backward(cache, dout, dh_n, dc_n, nth)
        ws = cache["ws"]
        dls, dx0, grads, dstates, dh0_all, dc0_all = self._backward_args(cache, dout, dh_n, dc_n, nth)
        H, D, L = self.hidden_size, self._D, self.num_layers
        # the batch-1 and few-rows kernels (as their forward): threads sharing out the units
        kp = cache["kp"]
        shares_units = kp.kernel in ("latency", "units")
        if shares_units:  # the back-off serves batch-1 calls only, as in the forward call
            nth = min(nth, kp.threads)
            nth = self.thread_policy.threads(nth) if plan.B == 1 and D == 1 else nth
        yields = _k.backward(self._cell, int(self.nonlinearity == "relu"), plan.kplan, self.input_size, H, D, L,
                             cache["params"], cache["bufs"], cache["states"], cache["xl"], cache["outl"],
                             cache["masks"], dls, dx0, grads, dstates, nth, *kp.kernel_args)
        if shares_units:
            self.thread_policy.note(nth, yields)
        result = self._finish(plan, dx0, dh0_all, dc0_all, unbatched, width=self.input_size)
        self._release(ws)  # after the unpack: dx0 may live in the workspace
        return result

    def _check_step_input(self, x_t: ArrayLike) -> Tuple[np.ndarray, bool]:
        """``x_t`` as a (B, input_size) array of the layer's dtype, and whether it came as one row (1-D)."""
        xt = as_float(x_t, self.dtype, "x_t")
        if xt.ndim not in (1, 2):
            raise ValueError(f"x_t must be 2-D (batch, features) or 1-D, got shape {xt.shape}")
        unbatched = xt.ndim == 1
        xt = xt[None] if unbatched else xt
        if xt.shape[1] != self.input_size:
            raise ValueError(f"x_t has {xt.shape[1]} features, expected input_size={self.input_size}")
        if xt.shape[0] == 0:
            raise ValueError("x_t must hold at least one row")
        return xt, unbatched

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
        xt, unbatched = self._check_step_input(x_t)
        B = xt.shape[0]
        if getattr(self, "proj_size", 0):
            h0, c0 = self._split_hx(state, B, unbatched, what="state")
            return self._variant_step(xt, h0, c0, unbatched)
        if state is not None and state is self._step_out and not unbatched and self._step_out_B == B:
            # the state this layer returned from its last step, passed back unchanged (a streaming
            # loop): its arrays are this layer's own, of the right dtype, shape and layout
            h0, c0 = state if self._mode == "lstm" else (state, None)
        else:
            h0, c0 = self._split_hx(state, B, unbatched, what="state")
            h0 = None if h0 is None else np.ascontiguousarray(h0)
            c0 = None if c0 is None else np.ascontiguousarray(c0)
        if self._layer_norm:
            return self._ln_step(xt, h0, c0, unbatched, nth)
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
        if self._mode == "gru":
            extra = f", reset_after={self.reset_after}"
        if self._layer_norm:
            extra += ", layer_norm=True"
        extra += f", proj_size={self.proj_size}" if getattr(self, "proj_size", 0) else ""
        extra += f", recurrent_dropout={self.recurrent_dropout}" if getattr(self, "recurrent_dropout", 0) else ""
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
    proj_size : int, default 0
        PyTorch's projection: when > 0 (and < hidden_size), h_t = W_hr (o_t * tanh(c_t)) with ``weight_hr_l{k}``
        (proj_size, hidden_size); h, each direction's output and the next layer's input are proj_size wide,
        ``weight_hh_l{k}`` is (4 H, proj_size); h_n is (L D, B, proj_size), c_n (L D, B, H).
    recurrent_dropout : float in [0, 1), default 0
        Variational dropout on the recurrent connection in training mode (Keras's ``recurrent_dropout``):
        one mask per sequence, layer and direction, drawn at each call and kept over its time steps, multiplies
        h_{t-1} (scaled by 1 / (1 - p)) before the recurrent product, t = 0 included; the cell state and the
        outputs are not masked. ``recurrent_masks`` holds the last training call's masks. Eval mode runs the
        plain layer. Calls with a projection, or with recurrent dropout in training, run on their own kernel
        (``rnnfast._kernels._variant``) on one thread, ``n_threads`` aside.
    layer_norm : bool, default False
        Layer-normalized cell (Ba et al. 2016; haste's LayerNormLSTM). With LN(a) = (a - mean) / sqrt(var + 1e-5)
        over one row (all 4H gate pre-activations, or the H cells), each with its own gain and bias::

            pre = gx * LN(W_ih x) + bx + gh * LN(W_hh h) + bh + b_ih + b_hh     (gates i, f, g, o)
            c' = f * c + i * g,    h' = o * tanh(gc * LN(c') + bc)

        The extra state-dict keys (``layernorm_{x,h,c}_{gamma,beta}_l{k}[_reverse]``, shapes (4H,), (4H,),
        (H,); gains start at 1, biases at 0) are listed in ``rnnfast.nn._layer_norm``. ONNX, Keras and
        PyTorch have no such layer: their converters refuse it.

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
                 dtype: DTypeLike = np.float32, seed: Seed = None, proj_size: int = 0,
                 recurrent_dropout: float = 0.0, layer_norm: bool = False) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, proj_size=proj_size, recurrent_dropout=recurrent_dropout, layer_norm=layer_norm)
        _check_combination(self)


class GRU(_RNNBase):
    """Gated recurrent unit layer, PyTorch's ``torch.nn.GRU`` (gates r, z, n), in either form.

    Parameters are those of :class:`LSTM` but ``proj_size``, plus ``reset_after``; ``forward`` takes and returns a
    single state array. Parameters and state-dict keys are PyTorch's in both forms (``weight_ih_l{k}`` (3H, I),
    ``weight_hh_l{k}`` (3H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``, gate order r, z, n); only the n gate
    differs::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        reset_after=True  (PyTorch, cuDNN):      n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        reset_after=False (Keras reset_after=False, ONNX linear_before_reset=0):
                                                 n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
        h' = (1 - z) * n + z * h

    Parameters
    ----------
    reset_after : bool, default True
        Apply the reset gate after the recurrent product (PyTorch's GRU) or before it.
    layer_norm : bool, default False
        Layer-normalized cell (needs ``reset_after=True``): the input and recurrent products normalized
        apart, the reset gate on the normalized recurrent n part (LN as in :class:`LSTM`)::

            ax = gx * LN(W_ih x) + bx + b_ih,   ah = gh * LN(W_hh h) + bh + b_hh     (3H each)
            r = sigmoid(ax_r + ah_r),  z = sigmoid(ax_z + ah_z),  n = tanh(ax_n + r * ah_n)
            h' = (1 - z) * n + z * h

        Extra state-dict keys ``layernorm_{x,h}_{gamma,beta}_l{k}[_reverse]`` (3H,).

    Examples
    --------
    >>> gru = GRU(8, 16, reset_after=False)
    >>> out, h_n = gru(np.zeros((4, 10, 8), np.float32))
    >>> out.shape, h_n.shape
    ((4, 10, 16), (1, 4, 16))
    """

    _mode = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None, reset_after: bool = True,
                 recurrent_dropout: float = 0.0, layer_norm: bool = False) -> None:
        reset_after = check_bool(reset_after, "reset_after")
        if check_bool(layer_norm, "layer_norm") and not reset_after:
            raise ValueError("layer_norm=True needs reset_after=True (the reset gate acts on the normalized "
                             "recurrent product)")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, recurrent_dropout=recurrent_dropout, layer_norm=layer_norm)
        self._cell = Cell.GRU if reset_after else Cell.GRU_RB
        _check_combination(self)

    @property
    def reset_after(self) -> bool:
        """Whether the reset gate applies after the recurrent product (PyTorch's form); fixed at construction
        (a layer pickled before this option existed has Cell.GRU: True)."""
        return self._cell is Cell.GRU


class RNN(_RNNBase):
    """Simple (Elman) recurrent layer, PyTorch's ``torch.nn.RNN``: h' = act(W_ih x + b_ih + W_hh h + b_hh).

    Parameters are those of :class:`LSTM` but ``proj_size``, plus ``nonlinearity``: "tanh" (default) or "relu".
    """

    _mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Seed = None, recurrent_dropout: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, seed, nonlinearity, recurrent_dropout=recurrent_dropout)
        _check_combination(self)


def _check_combination(layer: _RNNBase) -> None:
    """ValueError for options the layer cannot run together (rnnfast.nn._variant)."""
    why = variant_combination_error(layer)
    if why is not None:
        raise ValueError(why)
