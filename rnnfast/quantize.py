"""Low-precision inference models: ``rf.quantize(model, "bf16" | "int8")``.

:func:`quantize` turns a recurrent layer (:class:`rnnfast.nn.LSTM`, ``GRU``, ``RNN``), a
:class:`~rnnfast.nn.Sequential`, a :class:`~rnnfast.nn.seq2seq.Seq2SeqModel` or a fitted estimator
(:class:`rnnfast.Seq2Seq` included: its encoder runs the quantized layer, its decoder the quantized layer's
``step`` at every decoding step) into a new model for inference only, whose recurrent weights are held
once, in the packed low-precision layout of a backend's kernel. The other layers (Embedding, Linear,
attention...) stay as they are. A GRU with ``reset_after=False`` has no low-precision kernel: its weights
are stored in the precision and run on the float32 kernel. ``forward`` / ``predict`` / ``predict_proba`` / ``step`` /
``predict_step`` work as on the float model; ``backward``, ``train()`` and ``fit`` raise
:class:`InferenceOnlyError`. ``save`` and :func:`rnnfast.load` keep the format (the file names it; see
:mod:`rnnfast.io`).

Backends
--------
A precision is a :class:`Backend`, registered by name (:func:`register_backend`); ``"bf16"`` is
:class:`BF16Backend`. A backend packs one layer and direction (:meth:`Backend.pack`), runs it over a packed
batch (:meth:`Backend.run`, given a :class:`Direction`), gives back the values it multiplies by
(:meth:`Backend.unpack`) and stores weights in files (:meth:`Backend.encode` / :meth:`Backend.decode`).
Everything else -- validation, lengths, stacking, both directions, states, streaming, estimators, files --
is shared here.

Accuracy contract (bf16)
------------------------
Weights and each step's product inputs (x_t, h_{t-1}) are rounded to bfloat16 (8 significant bits, round
to nearest even); products accumulate in float32; biases, activations and the LSTM cell state are
float32. Against the float32 layer, on random layers with PyTorch's initialisation and inputs of unit
scale, at T <= 100: RMS error of the outputs below 4e-3 and largest error below 3e-2 (tested on every
path, tests/test_quantize.py). Measured (B = 16, T = 100): LSTM and GRU RMS 1.1e-4 to 5.4e-4, largest
6e-4 to 3.7e-3; RNN (tanh) RMS about 1.2e-3, largest 7e-3; relative L2 error 2e-3 to 4e-3 for all three
(ONNX Runtime's int8 LSTM: about 1e-2). The three instruction paths round the same products and agree to
the float32 rounding of the sums, up to a rare flip of one bfloat16 rounding of h (2e-3 at most, tested).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rnnfast._planner import ThreadPolicy
from rnnfast._threads import resolve_threads
from rnnfast.nn import _serial
from rnnfast.nn._rnn_calls import _Plan, _Workspace
from rnnfast.nn.module import as_float, check_lengths
from rnnfast.nn.recurrent import GRU, LSTM, RNN, _RNNBase
from rnnfast.nn.seq2seq import Seq2SeqModel
from rnnfast.nn.sequential import Sequential
from rnnfast.nn.stateful import Stateful

__all__ = ["quantize", "InferenceOnlyError", "Backend", "BF16Backend", "Int8Backend", "Direction", "QuantizedRNN",
           "QuantizedSequential", "QuantizedSeq2SeqModel", "register_backend", "get_backend", "precisions", "set_bf16_path",
           "get_bf16_path", "refuse_training"]

_CELLS = {"rnn": 0, "lstm": 1, "gru": 2}
_PLANS_KEPT = 16  # batch layouts a quantized layer remembers
_GATES = {0: 1, 1: 4, 2: 3}


class InferenceOnlyError(TypeError):
    """Training (``fit``, ``backward``, ``train()``) asked of a quantized, inference-only model."""


def _refusal(what: str, precision: str) -> InferenceOnlyError:
    return InferenceOnlyError(f"{what}: this model is quantized to {precision} for inference only; train the "
                              "float model and quantize it again (rnnfast.quantize)")


# ---------------------------------------------------------------------------------------- backends
@dataclasses.dataclass
class Direction:
    """One layer and direction of a call, as :meth:`Backend.run` receives it (float32, C-contiguous).

    Attributes
    ----------
    cell : int
        0 RNN, 1 LSTM, 2 GRU (reset after the product).
    relu : bool
        RNN only: relu instead of tanh.
    bs, off : ndarray of int32, (T,)
        Rows of each time step and the first of them in ``x`` / ``y`` (sequences time-major, longest
        first, padded steps left out: rnnfast's packed layout).
    reverse : bool
        Run the steps from the last one (a row starts at its own last step).
    x : ndarray                           IN: row r of step t at element (off[t] + r) * row stride, or with a
                                          step stride, t * step stride + r * row stride (then every step has
                                          all B rows: the caller's own array, no copy)
    x_strides : (int, int)                (row stride, step stride) in elements; step stride 0: packed rows
    h, c : ndarray (B, H)                 IN / OUT: initial states, then final states (``c``: LSTM, else None)
    y : ndarray                           OUT: h_t of each row, H values from element ``ycol`` of the row, rows
                                          laid out as x's by ``y_strides``
    ycol : int
    y_strides : (int, int)
    n_threads : int

    A backend whose ``strided_io`` is False is only given packed rows: (N, F) x and (N, >= ycol + H) y.
    """

    cell: int
    relu: bool
    bs: np.ndarray
    off: np.ndarray
    reverse: bool
    x: np.ndarray
    x_strides: Tuple[int, int]
    h: np.ndarray
    c: Optional[np.ndarray]
    y: np.ndarray
    ycol: int
    y_strides: Tuple[int, int]
    n_threads: int


class Backend:
    """A low-precision format and its kernel. Subclass it and :func:`register_backend` an instance.

    ``pack`` keeps what the kernel needs, once, in its own layout; ``run`` is the kernel call;
    ``unpack`` returns the float32 values the kernel really multiplies by (what a file stores, and what
    the accuracy tests compare); ``encode`` / ``decode`` are the file storage of one weight matrix (see
    :mod:`rnnfast.io`: arrays named ``<name>`` and ``<name>@<part>``).
    """

    #: The precision's name, as :func:`quantize` and files give it.
    name = ""
    #: Whether :meth:`run` takes step strides (the caller's batch-first arrays in place; see Direction).
    strided_io = False

    def pack(self, cell: int, w_ih: np.ndarray, w_hh: np.ndarray, b: np.ndarray, bhn: np.ndarray) -> Any:
        """The kernel's weights of one layer and direction from float32 ``w_ih`` (G H, F), ``w_hh`` (G H, H),
        the summed bias ``b`` (G H,) and GRU's ``b_hn`` (H,) (zeros for the other cells)."""
        raise NotImplementedError

    def unpack(self, packed: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``(w_ih, w_hh)``: float32 arrays of the values ``packed`` multiplies by."""
        raise NotImplementedError

    def run(self, packed: Any, d: Direction, ws: _Workspace) -> int:
        """Run one layer and direction (see :class:`Direction`); ``ws`` holds reusable scratch
        (``ws.get(name, shape, dtype)``). Returns a count of long thread waits (0 if none)."""
        raise NotImplementedError

    def path(self, batch: int) -> str:
        """The instruction path a call of ``batch`` rows runs (shown by :meth:`QuantizedRNN.plan_for`)."""
        return "default"

    def encode(self, w: np.ndarray) -> Dict[str, np.ndarray]:
        """File arrays of one float32 weight matrix, by part (``""`` the main one; others ``"@<part>"``)."""
        raise NotImplementedError

    def decode(self, parts: Dict[str, np.ndarray]) -> np.ndarray:
        """The float32 matrix :meth:`encode` stored (ValueError if the parts do not fit together)."""
        raise NotImplementedError

    def decoded(self, parts: Dict[str, Tuple[np.dtype, tuple]]) -> Optional[Tuple[np.dtype, tuple]]:
        """Dtype and shape :meth:`decode` would return from parts of these dtypes and shapes; None when
        the main part is not one of this format's (a float array stored as it is); ValueError when the
        parts do not fit together."""
        raise NotImplementedError


_BACKENDS: Dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` available to :func:`quantize` and to files under ``backend.name``. Returns it."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a rnnfast.quantize.Backend, got {type(backend).__name__}")
    if not isinstance(backend.name, str) or not backend.name.isidentifier():
        raise ValueError(f"a backend's name must be an identifier, got {backend.name!r}")
    _BACKENDS[backend.name] = backend
    return backend


def precisions() -> Tuple[str, ...]:
    """The names :func:`quantize` accepts."""
    return tuple(_BACKENDS)


def get_backend(precision: Any) -> Backend:
    """The registered backend named ``precision`` (TypeError for a non-string, ValueError if unknown)."""
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a string, one of {precisions()}, got {type(precision).__name__}")
    if precision not in _BACKENDS:
        raise ValueError(f"unknown precision {precision!r}; rnnfast has {', '.join(map(repr, precisions()))}")
    return _BACKENDS[precision]


# ---------------------------------------------------------------------------------------- bfloat16
def _lowp():
    from rnnfast._kernels import _lowp as k
    return k


def _to_bf16(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even, NaN kept quiet (as the kernels round)."""
    u = np.ascontiguousarray(w, np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return r


def _from_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32 (exact)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


_PATH_ENV = "RNNFAST_BF16_PATH"
_AUTO = "auto"
_forced_path: Optional[str] = None
#: Rows from which two threads split the batch (each its own rows, no barrier); below, they split the units.
ROWS_SPLIT_MIN = 32
#: Rows below which x W_ih^T is made for every step first (one product over all rows, then only W_hh is
#: read per step); from there each step makes [x_t, h_{t-1}] . [W_ih, W_hh]^T in one product.
PROJ_ALL_MAX_ROWS = 16
#: Multiply-adds per step of a layer and direction below which a call stays on one thread.
PARALLEL_MIN_WORK = 1 << 17


def set_bf16_path(path: Optional[str]) -> None:
    """Force the bfloat16 instruction path: ``"amx"``, ``"avx512_bf16"``, ``"portable"``, or ``"auto"`` /
    None (the default: the fastest this machine has). The environment variable ``RNNFAST_BF16_PATH`` sets
    the same at import. ValueError for a path this machine cannot run."""
    global _forced_path
    if path is None or path == _AUTO:
        _forced_path = None
        return
    paths = _lowp().BF16_PATHS
    if path not in paths:
        raise ValueError(f"path must be one of {sorted(paths) + [_AUTO]}, got {path!r}")
    if not _lowp().bf16_path_available(paths[path]):
        raise ValueError(f"the {path} path needs instructions this machine (or OS) does not offer")
    _forced_path = path


def get_bf16_path(batch: int = 64) -> str:
    """The bfloat16 path a call of ``batch`` rows runs (the forced one if any): AMX where the machine has it
    (its tiles take 16 rows at a time; the rows past a multiple of 16, a batch of one for instance, go to
    the AVX512-BF16 kernel, while the input projection of all steps still runs on tiles), else AVX512-BF16,
    else portable C."""
    return _forced_path if _forced_path is not None else _best_path()


@functools.lru_cache(maxsize=None)
def _best_path() -> str:
    k = _lowp()
    return next(p for p in ("amx", "avx512_bf16", "portable") if k.bf16_path_available(k.BF16_PATHS[p]))


@dataclasses.dataclass
class _BF16Weights:
    G: int
    F: int
    H: int
    P: np.ndarray     # uint16, the packed panels (csrc/rf_bf16.h)
    b: np.ndarray     # float32 (G Hc,), summed biases, zero-padded
    bhn: np.ndarray   # float32 (Hc,)


def _round(n: int, m: int) -> int:
    return (n + m - 1) // m * m


class BF16Backend(Backend):
    """bfloat16 weights and product inputs, float32 accumulation and cell state (csrc/rf_bf16.h); AMX,
    AVX512-BF16 or portable C, chosen per call (:func:`get_bf16_path`)."""

    name = "bf16"
    strided_io = True

    def pack(self, cell, w_ih, w_hh, b, bhn):
        G = _GATES[cell]
        GH, H = w_hh.shape
        F = w_ih.shape[1]
        Hc = _round(H, 16)
        bp = np.zeros((G, Hc), np.float32)
        bp[:, :H] = b.reshape(G, H)
        bhp = np.zeros(Hc, np.float32)
        bhp[:H] = bhn
        P = _lowp().bf16_pack(G, np.ascontiguousarray(w_ih, np.float32), np.ascontiguousarray(w_hh, np.float32))
        return _BF16Weights(G, F, H, P, bp.reshape(-1), bhp)

    def path(self, batch):
        return get_bf16_path(batch)

    def unpack(self, packed):
        G, F, H = packed.G, packed.F, packed.H
        Kx, Kh, Hc = _round(F, 32), _round(H, 32), _round(H, 16)
        # P[g][j][p][u][e] = W[g H + 16 j + u][2 p + e]
        w = _from_bf16(packed.P).reshape(G, Hc // 16, (Kx + Kh) // 2, 16, 2)
        w = w.transpose(0, 1, 3, 2, 4).reshape(G, Hc, Kx + Kh)[:, :H]
        return (np.ascontiguousarray(w[:, :, :F].reshape(G * H, F)),
                np.ascontiguousarray(w[:, :, Kx:Kx + H].reshape(G * H, H)))

    def run(self, packed, d, ws):
        k = _lowp()
        B, H, F = d.h.shape[0], packed.H, packed.F
        G, N = packed.G, int(d.off[-1] + d.bs[-1])
        Hc, Bp, Kx, Kh = _round(H, 16), _round(B, 16), _round(F, 32), _round(H, 32)
        nth = d.n_threads if G * H * (F + H) * B >= PARALLEL_MIN_WORK else 1
        proj_all = B < PROJ_ALL_MAX_ROWS and N > B  # (one step: one product over [x_t, h] is the same work)
        # the states in place when their rows need no padding (H a multiple of 16), else padded copies
        h = d.h if H == Hc else ws.get("h", (B, Hc), np.float32)
        c = d.c if H == Hc and d.c is not None else ws.get("c", (B, Hc), np.float32)
        if h is not d.h:
            h[:, :H], h[:, H:] = d.h, 0
        if c is not d.c:
            c[...] = 0
            if d.c is not None:
                c[:, :H] = d.c
        yields = k.bf16_forward(k.BF16_PATHS[get_bf16_path(B)], d.cell, int(d.relu), d.bs, d.off, d.reverse, F, H,
                                nth, B < ROWS_SPLIT_MIN, proj_all, packed.P, d.x.reshape(-1), *d.x_strides,
                                packed.b, packed.bhn, h, c, d.y.reshape(-1)[d.ycol:], *d.y_strides,
                                ws.get("xb", (N * Kx,), np.uint16), ws.get("hb", (2 * Bp * Kh,), np.uint16),
                                ws.get("gs", ((N if proj_all else Bp) * G * Hc,), np.float32),
                                ws.get("gh", (Bp * 3 * Hc if d.cell == 2 else 1,), np.float32))
        if h is not d.h:
            d.h[...] = h[:, :H]
        if d.c is not None and c is not d.c:
            d.c[...] = c[:, :H]
        return yields

    def encode(self, w):
        return {"": _to_bf16(w)}

    def decode(self, parts):
        if set(parts) != {""}:
            raise ValueError(f"bf16 weights are one array, got parts {sorted(parts)}")
        return _from_bf16(parts[""])

    def decoded(self, parts):
        dtype, shape = parts[""]
        if dtype != np.dtype(np.uint16):
            if len(parts) > 1:
                raise ValueError("an array stored as it is has no parts")
            return None
        if len(parts) > 1:
            raise ValueError(f"bf16 weights are one array, got parts {sorted(parts)}")
        return np.dtype(np.float32), shape


register_backend(BF16Backend())
if os.environ.get(_PATH_ENV):
    set_bf16_path(os.environ[_PATH_ENV])


# ---------------------------------------------------------------------------------------- int8
def _int8():
    from rnnfast._kernels import _int8 as k
    return k


#: Batch-1 int8 calls of fewer steps run on one thread: a step's product takes 2-4 us (LSTM H=256), less
#: than starting a parallel region and a barrier a step (a streaming step on two threads: 42-470 us here
#: against 39-67 on one, on a loaded machine).
INT8_THREADS_MIN_STEPS = 8


class Int8Backend(Backend):
    """int8 weights (per output channel, symmetric), each step's product inputs quantized per row to u8
    with a zero point, int32 sums, float32 cell maths (rnnfast/_kernels/_int8.pyx, csrc/rf_int8.h: the
    scheme, the AMX / AVX512-VNNI / AVX2 / scalar paths; ``_int8.set_isa`` or ``RNNFAST_INT8_ISA`` forces
    one). Files keep the int8 weights and their scales (``name``: int8, ``name@scale``: float32)."""

    name = "int8"

    strided_io = True

    def pack(self, cell, w_ih, w_hh, b, bhn):
        return _int8().pack_weights(cell, w_ih, w_hh, b, bhn)

    def unpack(self, packed):
        return _int8().unpack_weights(packed)

    def path(self, batch):
        return _int8().path_for(batch)

    def run(self, packed, d, ws):
        nth = 1 if d.h.shape[0] == 1 and len(d.bs) < INT8_THREADS_MIN_STEPS else d.n_threads
        return _int8().run(packed, d.cell, d.relu, d.bs, d.off, d.reverse, d.x, d.x_strides, d.h, d.c, d.y,
                           d.ycol, d.y_strides, nth, lambda n: ws.get("int8", (n,), np.uint8))

    def encode(self, w):
        q, scale = _int8().quantize_weight_rows(w)
        return {"": q, "@scale": scale}

    def decode(self, parts):
        self.decoded({p: (a.dtype, a.shape) for p, a in parts.items()})
        return (parts[""].astype(np.float32) * parts["@scale"][:, None]).astype(np.float32)

    def decoded(self, parts):
        dtype, shape = parts[""]
        if dtype != np.dtype(np.int8):
            if len(parts) > 1:
                raise ValueError("an array stored as it is has no parts")
            return None
        if set(parts) != {"", "@scale"} or len(shape) != 2 or parts["@scale"] != (np.dtype(np.float32), shape[:1]):
            raise ValueError(f"int8 weights are an int8 matrix and its float32 row scales, got {parts}")
        return np.dtype(np.float32), shape


register_backend(Int8Backend())


# ---------------------------------------------------------------------------------------- layers
def _sfx(layer: int, d: int) -> str:
    return f"_l{layer}" + ("_reverse" if d else "")


def _summed_biases(cell: int, G: int, H: int, b_ih: Optional[np.ndarray],
                   b_hh: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The kernel's biases: b = b_ih + b_hh (GRU's n gate: b_in alone) and GRU's b_hn (zeros otherwise)."""
    if b_ih is None or b_hh is None:
        return np.zeros(G * H, np.float32), np.zeros(H, np.float32)
    b = (b_ih.astype(np.float32) + b_hh.astype(np.float32))
    bhn = np.zeros(H, np.float32)
    if cell == 2:
        b[2 * H:] = b_ih[2 * H:]
        bhn[:] = b_hh[2 * H:]
    return b, bhn


def _initial(plan: _Plan, s: Optional[np.ndarray], LD: int, H: int) -> np.ndarray:
    """A fresh (LD, B, H) float32 copy of an initial state in the layout's row order (zeros for None): the
    kernels update it into the final state."""
    if s is None:
        return np.zeros((LD, plan.B, H), np.float32)
    return np.array(s if plan.full else s[:, plan.order], dtype=np.float32, order="C")


class QuantizedRNN:
    """An LSTM, GRU or RNN layer quantized by a :class:`Backend`, for inference (made by :func:`quantize`).

    ``forward`` (``__call__``) and ``step`` take and return what the float layer's do (float32 results);
    ``state_dict`` returns the weights as stored in files (the backend's encoding) and the biases;
    ``backward``, ``train()`` and ``load_state_dict`` raise :class:`InferenceOnlyError`.
    """

    keyword_protocol = True
    training = False
    # the float layers' input checks and result unpacking, shared as they are (they read only the settings
    # that __init__ copies)
    _check_x: Any = _RNNBase._check_x
    _check_state: Any = _RNNBase._check_state
    _split_hx: Any = _RNNBase._split_hx
    _finish: Any = _RNNBase._finish

    def __init__(self, layer: _RNNBase, backend: Backend) -> None:
        for option in ("proj_size", "layer_norm"):
            if getattr(layer, option, False):
                raise ValueError(f"quantize: a layer with {option} has no low-precision kernel yet")
        self.description = _serial.describe(layer)
        self.description["config"]["dtype"] = "float32"
        self.input_size, self.hidden_size, self.num_layers = layer.input_size, layer.hidden_size, layer.num_layers
        self.bias, self.batch_first, self.bidirectional = layer.bias, layer.batch_first, layer.bidirectional
        self.nonlinearity: str = layer.nonlinearity
        self.dtype = np.dtype(np.float32)
        self.precision = backend.name
        self._backend, self._mode = backend, str(layer._mode)
        self._cell = _CELLS[self._mode]
        self._D = 2 if self.bidirectional else 1
        self._out_size = self.hidden_size  # (the state width _check_state reads; no projection here)
        self._pool: List[_Workspace] = []
        self._plans: Dict[tuple, Tuple[_Plan, np.ndarray, np.ndarray]] = {}
        self.thread_policy = ThreadPolicy()  # batch-1 back-off to one thread after busy barriers (rnnfast._planner)
        sd = layer.state_dict()
        self._biases = {k: v.astype(np.float32) for k, v in sd.items() if k.startswith("bias")}
        self._packed = []
        G, H = _GATES[self._cell], self.hidden_size
        for layer_i in range(self.num_layers):
            for d in range(self._D):
                s = _sfx(layer_i, d)
                b, bhn = _summed_biases(self._cell, G, H, sd.get("bias_ih" + s), sd.get("bias_hh" + s))
                w_ih = np.ascontiguousarray(sd["weight_ih" + s], np.float32)
                w_hh = np.ascontiguousarray(sd["weight_hh" + s], np.float32)
                self._packed.append(backend.pack(self._cell, w_ih, w_hh, b, bhn))
        self._fallback = self._float_twin(layer)

    def _float_twin(self, layer: _RNNBase) -> Optional[_RNNBase]:
        """For a GRU with ``reset_after=False`` (no low-precision kernel has its cell): a float32 copy holding
        the weights as this precision stores them, which every call runs (file sizes as the precision's, no
        speed-up, errors of the weights' rounding alone). None for the others."""
        if not isinstance(layer, GRU) or layer.reset_after:
            return None
        twin = copy.deepcopy(layer).train(False)
        twin.load_state_dict(self.dequantized())
        return twin

    def __repr__(self) -> str:
        return (f"Quantized{self._mode.upper()}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, precision={self.precision!r})")

    # ------------------------------------------------------------------ inference only
    def train(self, mode: bool = True) -> "QuantizedRNN":
        """Eval mode only: ``train(False)`` returns self; ``train(True)`` raises InferenceOnlyError."""
        if mode:
            raise _refusal("train()", self.precision)
        return self

    def eval(self) -> "QuantizedRNN":
        """Returns self (always in eval mode)."""
        return self

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: InferenceOnlyError."""
        raise _refusal("backward()", self.precision)

    def load_state_dict(self, state_dict: Any) -> None:
        """Refused: InferenceOnlyError (load the float model's weights, then quantize it)."""
        raise _refusal("load_state_dict()", self.precision)

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """No gradients: an empty dict."""
        return {}

    def named_parameters(self) -> list:
        """No trainable parameters: an empty list."""
        return []

    def zero_grad(self) -> None:
        """Nothing to zero."""

    def release_memory(self) -> None:
        """Drop the scratch kept between calls."""
        self._pool, self._plans = [], {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": [], "_plans": {}, "thread_policy": ThreadPolicy()}

    # ------------------------------------------------------------------ weights
    def dequantized(self) -> Dict[str, np.ndarray]:
        """The float32 state dict of the values the kernel computes with (PyTorch's keys)."""
        out = {}
        for i, packed in enumerate(self._packed):
            s = _sfx(i // self._D, i % self._D)
            out["weight_ih" + s], out["weight_hh" + s] = self._backend.unpack(packed)
        out.update({k: v.copy() for k, v in self._biases.items()})
        return out

    def state_dict(self) -> Dict[str, np.ndarray]:
        """The weights as files store them (:meth:`Backend.encode`: ``name`` and ``name@part`` arrays) and
        the float32 biases."""
        out = {}
        for name, w in self.dequantized().items():
            if name.startswith("weight"):
                out.update({name + part: a for part, a in self._backend.encode(w).items()})
            else:
                out[name] = w
        return out

    # ------------------------------------------------------------------ running
    def plan_for(self, x: Any, lengths: Any = None, *, training: Optional[bool] = None,
                 n_threads: Optional[int] = None) -> str:
        """The precision and instruction path a call with this input would run, e.g. ``"bf16 amx"``."""
        xb, _ = self._check_x(x)
        if self._fallback is not None:
            return f"{self.precision} weights, float32 kernel (GRU reset_after=False)"
        return f"{self.precision} {self._backend.path(xb.shape[0])}"

    def forward(self, x: Any, hx: Any = None, lengths: Any = None, n_threads: Optional[int] = None):
        """As :meth:`rnnfast.nn.LSTM.forward` (inference): ``(out, h_n)``, LSTM ``(out, (h_n, c_n))``."""
        if self._fallback is not None:
            return self._fallback.forward(x, hx, lengths=lengths, n_threads=n_threads)
        nth = resolve_threads(n_threads)
        xb, unbatched = self._check_x(x)
        B, T, _ = xb.shape
        lengths = check_lengths(lengths, B, T)
        h0, c0 = self._split_hx(hx, B, unbatched)
        plan, bs, off = self._layout(lengths, B, T)
        # full lengths, batch first: the kernel reads the input and writes the output in place, if it can
        direct = plan.full and self.batch_first and self._backend.strided_io
        if direct:
            inp = np.ascontiguousarray(xb, np.float32)
        else:
            inp = plan.pack(xb, np.empty((plan.N, self.input_size), np.float32))
        hT, cT, out = self._run(plan, bs, off, inp, h0, c0, nth, direct)
        return self._finish(plan, out, hT, cT, unbatched, final=direct)

    __call__ = forward

    def _layout(self, lengths: Optional[np.ndarray], B: int, T: int) -> Tuple[_Plan, np.ndarray, np.ndarray]:
        """The packed layout of a batch (rnnfast.nn's), the rows of each step and the first of them (int32
        (T,) each); the last few are kept, as the float layers keep theirs."""
        key = (B, T, None if lengths is None else lengths.tobytes())
        found = self._plans.get(key)
        if found is None:
            plan = _Plan(lengths, B, T)
            bs = (plan.lens[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.intc)
            off = np.zeros(T, np.intc)
            np.cumsum(bs[:-1], out=off[1:])
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            found = self._plans[key] = (plan, bs, off)
        return found

    def _run(self, plan: _Plan, bs: np.ndarray, off: np.ndarray, inp: np.ndarray, h0, c0, nth: int, direct: bool = False):
        """Every layer and direction over the packed input (``direct``: the batch-first input, and the output
        made batch-first in place); returns (h_n, c_n, output)."""
        H, D, L, T = self.hidden_size, self._D, self.num_layers, plan.T
        lstm = self._mode == "lstm"
        hT, cT = _initial(plan, h0, L * D, H), (_initial(plan, c0, L * D, H) if lstm else None)
        # the back-off serves batch-1 calls, as in float32: there a busy partner costs more than the second
        # thread gains; a call of many rows loses half its speed on one thread for one late barrier
        policy = self.thread_policy if plan.B == 1 else None
        nth = policy.threads(nth) if policy else nth
        yields = 0
        ws = self._pool.pop() if self._pool else _Workspace()
        try:
            for layer in range(L):
                F = inp.shape[-1]
                xs = (T * F, F) if direct and layer == 0 else (F, 0)
                last = direct and layer == L - 1
                out = np.empty((plan.B, T, D * H) if last else (plan.N, D * H), np.float32)
                ys = (T * D * H, D * H) if last else (D * H, 0)
                for d in range(D):
                    k = layer * D + d
                    dirn = Direction(self._cell, self.nonlinearity == "relu", bs, off, d == 1, inp, xs, hT[k],
                                     None if cT is None else cT[k], out, d * H, ys, nth)
                    yields += self._backend.run(self._packed[k], dirn, ws)
                inp = out
        finally:
            self._pool.append(ws)
        if policy:
            policy.note(nth, yields)
        return hT, cT, inp

    def step(self, x_t: Any, state: Any = None, n_threads: Optional[int] = None):
        """One time step, as :meth:`rnnfast.nn.LSTM.step`: ``x_t`` (B, I) or (I,) -> ``(y_t, state)``."""
        if self._fallback is not None:
            return self._fallback.step(x_t, state, n_threads=n_threads)
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer: the reverse direction reads the future")
        nth = resolve_threads(n_threads)
        xt = as_float(x_t, np.float32, "x_t")
        if xt.ndim not in (1, 2):
            raise ValueError(f"x_t must be 2-D (batch, features) or 1-D, got shape {xt.shape}")
        unbatched = xt.ndim == 1
        xt = np.ascontiguousarray(xt[None] if unbatched else xt)
        if xt.shape[1] != self.input_size:
            raise ValueError(f"x_t has {xt.shape[1]} features, expected input_size={self.input_size}")
        if xt.shape[0] == 0:
            raise ValueError("x_t must hold at least one row")
        h0, c0 = self._split_hx(state, xt.shape[0], unbatched, what="state")
        # one row: a step's product takes microseconds, less than waking a second thread
        hT, cT, y = self._run(*self._layout(None, xt.shape[0], 1), xt, h0, c0, 1 if xt.shape[0] == 1 else nth)
        if unbatched:
            y, hT, cT = y[0], hT[:, 0], None if cT is None else cT[:, 0]
        return y, ((hT, cT) if self._mode == "lstm" else hT)


# ---------------------------------------------------------------------------------------- models
class QuantizedSequential(Sequential):
    """A :class:`~rnnfast.nn.Sequential` whose recurrent layers are quantized (made by :func:`quantize`):
    inference only, saved with its precision (:meth:`save`)."""

    def __init__(self, *layers: Any, precision: str) -> None:
        super().__init__(*layers)
        self.precision = precision
        self.training = False

    def train(self, mode: bool = True) -> "QuantizedSequential":
        """Eval mode only (InferenceOnlyError for ``train(True)``)."""
        if mode:
            raise _refusal("train()", self.precision)
        return super().train(False)

    def backward(self, dout: Any, n_threads: Optional[int] = None) -> Any:
        """Refused: InferenceOnlyError."""
        raise _refusal("backward()", self.precision)

    def save(self, path: Any) -> None:
        """Write the model as :meth:`rnnfast.nn.Sequential.save` does, its recurrent weights in the
        precision's file encoding; :func:`rnnfast.load` returns an equal quantized model."""
        from rnnfast.io import save_archive
        save_archive(path, _serial.KIND, {"layers": [_describe(layer) for layer in self.layers]},
                     self.state_dict(), precision=self.precision)


def _describe(layer: Any) -> dict:
    if isinstance(layer, Stateful):
        return {"class": "Stateful", "layer": _describe(layer.layer)}
    if isinstance(layer, QuantizedRNN):
        return copy.deepcopy(layer.description)
    return _serial.describe(layer)


def _quantize_layer(layer: Any, backend: Backend) -> Any:
    if isinstance(layer, Stateful):
        return Stateful(_quantize_layer(layer.layer, backend))
    if isinstance(layer, (LSTM, GRU, RNN)):
        return QuantizedRNN(layer, backend)
    if isinstance(layer, QuantizedRNN):
        raise ValueError(f"the model is already quantized ({layer.precision})")
    return copy.deepcopy(layer)


def _quantize_sequential(model: Sequential, backend: Backend) -> QuantizedSequential:
    layers = [_quantize_layer(layer, backend) for layer in model.layers]
    return QuantizedSequential(*layers, precision=backend.name).train(False)


class QuantizedSeq2SeqModel(Seq2SeqModel):
    """A :class:`~rnnfast.nn.seq2seq.Seq2SeqModel` whose encoder and decoder recurrent layers are quantized
    (made by :func:`quantize`): the encoder runs the quantized layer over the sources, the decoder its
    :meth:`QuantizedRNN.step` at every decoding step; embeddings, bridge, attention and output layers stay
    float32. Inference only (``train()``, ``backward`` and ``load_state_dict`` raise InferenceOnlyError);
    :meth:`state_dict` gives the recurrent weights in the precision's file encoding."""

    def __init__(self, model: Seq2SeqModel, backend: Backend) -> None:
        if np.dtype(model.dtype) != np.float32:
            raise ValueError(f"quantize: the model is {np.dtype(model.dtype)}; quantize a float32 one")
        # not Seq2SeqModel.__init__ (it would draw new weights): a copy of the float model's layers
        self.__dict__.update(copy.deepcopy(model).__dict__)
        for part in (self.encoder, self.decoder):
            part._children["rnn"] = QuantizedRNN(part.rnn, backend)
        self.precision = backend.name
        super().train(False)

    def train(self, mode: bool = True) -> "QuantizedSeq2SeqModel":
        """Eval mode only (InferenceOnlyError for ``train(True)``)."""
        if mode:
            raise _refusal("train()", self.precision)
        return super().train(False)  # type: ignore[return-value]

    def backward(self, *args: Any, **kwargs: Any) -> None:
        """Refused: InferenceOnlyError."""
        raise _refusal("backward()", self.precision)

    def load_state_dict(self, state_dict: Any) -> None:
        """Refused: InferenceOnlyError (load the float model's weights, then quantize it)."""
        raise _refusal("load_state_dict()", self.precision)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Every layer's arrays keyed ``"<child>.<name>"``: the float32 parameters, and the recurrent
        layers' as :meth:`QuantizedRNN.state_dict` gives them (``name`` and ``name@part`` arrays)."""
        return _nested_state(self)


def _nested_state(module: Any) -> Dict[str, np.ndarray]:
    children = getattr(module, "_children", None)
    if children is None:
        return module.state_dict()
    return {f"{n}.{k}": v for n, child in children.items() for k, v in _nested_state(child).items()}


def _quantize_estimator(est: Any, backend: Backend) -> Any:
    """A copy of the fitted estimator ``est`` whose ``model_`` is quantized (``precision_`` set)."""
    est._check_fitted()
    seq2seq = isinstance(est.model_, Seq2SeqModel)
    dtype = np.dtype(est.model_.dtype if seq2seq else est._fitted_dtype())
    if dtype != np.float32:
        raise ValueError(f"quantize: the estimator was fitted in {dtype}; fit it with dtype='float32' to "
                         "quantize it")
    q = copy.copy(est)
    q.precision_ = backend.name
    requantize_estimator(q)
    return q


def float_state(state: Dict[str, np.ndarray], precision: str) -> Dict[str, np.ndarray]:
    """A quantized model's ``state_dict()`` (each quantized weight as its ``name`` and ``name@part`` arrays)
    as the float32 state dict whose quantization gives it back, as :func:`rnnfast.load` reads a quantized
    file: each weight decoded by the precision's backend, the rest as it is."""
    backend, groups = get_backend(precision), {}
    for name, a in state.items():
        base, sep, part = name.partition("@")
        groups.setdefault(base, {})[sep + part] = a
    return {base: parts[""] if backend.decoded({k: (a.dtype, a.shape) for k, a in parts.items()}) is None
            else backend.decode(parts) for base, parts in groups.items()}


def requantize_estimator(est: Any) -> None:
    """Replace the fitted estimator ``est``'s float network ``model_`` by its quantized copy in ``est.precision_``
    (when quantizing it, and after unpickling: the pickle keeps :func:`float_state`)."""
    backend = get_backend(est.precision_)
    est.model_ = (QuantizedSeq2SeqModel(est.model_, backend) if isinstance(est.model_, Seq2SeqModel)
                  else _quantize_sequential(est.model_, backend))


def refuse_training(est: Any) -> None:
    """Raise InferenceOnlyError when the estimator ``est`` was quantized (its ``fit`` / ``partial_fit``)."""
    precision = getattr(est, "precision_", None)
    if precision is not None:
        raise _refusal(f"{type(est).__name__}.fit", precision)


def quantize(model: Any, precision: str) -> Any:
    """A new inference-only model whose recurrent weights are in a low precision.

    Parameters
    ----------
    model : rnnfast.nn.LSTM, GRU or RNN; rnnfast.nn.Sequential; rnnfast.nn.seq2seq.Seq2SeqModel; or a fitted
        estimator (rnnfast.LSTM..., rnnfast.Seq2Seq)
        Left unchanged. A GRU with ``reset_after=False`` has no low-precision kernel: its weights are stored
        in the precision (files) and run on the float32 kernel (no speed-up; ``plan_for`` says so).
    precision : {"bf16", "int8"}
        A registered backend's name (:func:`precisions`): ``"bf16"`` rounds weights and each step's
        product inputs to bfloat16 and keeps float32 sums, activations and cell state (the accuracy
        contract is in this module's docstring); ``"int8"`` keeps int8 weights with a scale per output row,
        quantizes each step's product inputs per row to u8 with a zero point and sums in int32 (outputs
        within 2e-2 relative L2 of float32: tests/test_int8.py; :class:`Int8Backend`).

    Returns
    -------
    QuantizedRNN, QuantizedSequential, QuantizedSeq2SeqModel, or a copy of the estimator (``precision_`` set)
        ``forward`` / ``step`` (layers and Sequential), ``predict`` / ``predict_proba`` / ``score`` /
        ``predict_step`` (estimators; Seq2Seq: greedy and beam decoding through the quantized decoder's
        ``step``) and ``save`` work; training raises :class:`InferenceOnlyError`.

    Raises
    ------
    TypeError
        ``model`` is not one of the above, or ``precision`` not a string.
    ValueError
        Unknown precision, an already quantized model, or an unsupported layer.

    Examples
    --------
    >>> import rnnfast as rf
    >>> q = rf.quantize(rf.nn.LSTM(8, 16, seed=0), "bf16")
    >>> q(np.zeros((2, 5, 8), np.float32))[0].shape
    (2, 5, 16)
    """
    backend = get_backend(precision)
    if isinstance(model, (QuantizedRNN, QuantizedSequential, QuantizedSeq2SeqModel)) or \
            getattr(model, "precision_", None):
        raise ValueError(f"the model is already quantized ({getattr(model, 'precision', None) or model.precision_})")
    if isinstance(model, (LSTM, GRU, RNN)):
        return QuantizedRNN(model, backend)
    if isinstance(model, Sequential):
        return _quantize_sequential(model, backend)
    if isinstance(model, Seq2SeqModel):
        return QuantizedSeq2SeqModel(model, backend)
    from rnnfast.estimators.recurrent import _RecurrentEstimator
    from rnnfast.estimators.seq2seq import Seq2Seq
    if isinstance(model, (_RecurrentEstimator, Seq2Seq)):
        return _quantize_estimator(model, backend)
    raise TypeError(f"quantize takes an rnnfast LSTM / GRU / RNN layer, a Sequential, a Seq2SeqModel or a fitted "
                    f"estimator, got {type(model).__name__}")
