# int8 inference of LSTM / GRU / RNN layers (csrc/rf_int8.h: the quantization scheme, the packed layout
# and the instruction paths). rnnfast.quantize's Int8Backend calls these:
#   pack_weights  quantizes and packs one layer direction's float weights once (the arrays a quantized
#                 model holds), unpack_weights gives back the float values they stand for;
#   run           one layer direction over a batch in rnnfast's packed layout (time-major, longest
#                 first, padded steps left out), one nogil kernel call.
# Products are int8 (u8 x s8 -> int32), the cell maths float32.
#
# Path: the best this CPU runs (``best_isa``), or the one the environment variable RNNFAST_INT8_ISA
# or ``set_isa`` names ("amx", "vnni", "avx2", "scalar"); every path gives bit-identical results.
import os

cimport numpy as cnp
import numpy as np
from libc.stdint cimport int8_t, int32_t, uint8_t

cnp.import_array()

cdef extern from "rf_latency.h" nogil:
    long RF_SPIN_NS

cdef extern from "rf_int8.h" nogil:
    int rf_i8_fast_cells
    ctypedef struct rf_i8_layer:
        int cell, relu, F, H, Hp, KpX, KpH
        const int8_t* pih
        const int8_t* phh
        const float* sih
        const float* shh
        const int32_t* cih
        const int32_t* chh
        const float* b
        const float* bhn
    int rf_i8_best()
    int rf_i8_forward(const rf_i8_layer* L, int isa, int forced, int T, const int* bs, const int* off,
                      int reverse, const float* x, const size_t* xs, float* h, float* c, float* y,
                      const size_t* ys, int nth, long spin_ns, void* scratch)
    size_t rf_i8_scratch_bytes(const rf_i8_layer* L, int T, const int* bs, const int* off, int nth)

ISAS = ("scalar", "avx2", "vnni", "amx")   # csrc/rf_int8.h's RF_I8_* in order
GATES = {0: 1, 1: 4, 2: 3}                 # per cell: 0 RNN, 1 LSTM, 2 GRU (reset after)

cdef int _best = rf_i8_best()
cdef bint _fast_cells_ok = rf_i8_fast_cells
cdef int _isa = _best
cdef bint _forced = False


def best_isa() -> str:
    """The fastest int8 path this CPU (and OS) runs: "amx", "vnni", "avx2" or "scalar"."""
    return ISAS[_best]


def current_isa() -> str:
    """The int8 path the kernels take now (the best, unless one was forced)."""
    return ISAS[_isa]


def path_for(int rows) -> str:
    """The path a product of ``rows`` rows takes now ("amx" from 16 rows unless forced; a batch-1 call's
    per-step products have one row, its input product over all steps one row a step)."""
    if _isa == 3 and not _forced and rows < 16:
        return ISAS[2]
    return ISAS[_isa]


def set_isa(name=None):
    """Force the int8 instruction path, or with None go back to the best one.

    Parameters
    ----------
    name : {"amx", "vnni", "avx2", "scalar"} or None
        A forced "amx" runs every product on tiles (the automatic choice keeps them for 16 rows or
        more). A path this CPU cannot run is refused.

    Raises
    ------
    ValueError
        An unknown name, or a path above :func:`best_isa`.
    """
    global _isa, _forced
    if name is None:
        _isa, _forced = _best, False
        return
    if not isinstance(name, str) or name.lower() not in ISAS:
        raise ValueError(f"int8 path must be one of {ISAS} or None, got {name!r}")
    level = ISAS.index(name.lower())
    if level > _best:
        raise ValueError(f"this CPU cannot run the int8 path {name!r} (best: {ISAS[_best]!r})")
    _isa, _forced = level, True


_env = os.environ.get("RNNFAST_INT8_ISA", "").strip()
if _env:
    set_isa(_env)


def set_fast_cells(bint on):
    """Use the division-free AVX-512 LSTM / GRU passes (True, the default where AVX-512 is there) or
    rf_cells_impl.h's (False); returns the previous setting. For tests and measurements."""
    global rf_i8_fast_cells
    cdef bint old = rf_i8_fast_cells
    if on and not _fast_cells_ok:
        raise ValueError("the fast cell passes need AVX-512")
    rf_i8_fast_cells = on
    return old


def _round(n, m):
    return (n + m - 1) // m * m


def quantize_weight_rows(w):
    """Per-row symmetric int8 of a float matrix: ``(q int8, scale float32)``, ``w ~ scale[:, None] * q``.

    The weight half of the scheme (csrc/rf_int8.h): scale = max|row| / 127 (rows of zeros: 0). In float32
    (127 * scale) / 127 == scale, so quantizing ``scale * q`` again gives ``q`` and ``scale`` back exactly
    (a saved model loads to the same bits; tests/test_int8.py checks it).
    """
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    div = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w / div[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _pack_matrix(w, int G, int H, int K):
    """W (G*H, K) -> packed int8 blocks, scales and row sums with every gate padded to Hp rows."""
    Hp, Kp = _round(H, 16), _round(max(K, 1), 64)
    q, scale = quantize_weight_rows(w)
    qp = np.zeros((G, Hp, Kp), np.int8)
    qp[:, :H, :K] = q.reshape(G, H, K)
    sp = np.zeros((G, Hp), np.float32)
    sp[:, :H] = scale.reshape(G, H)
    qp = qp.reshape(G * Hp, Kp)
    packed = np.ascontiguousarray(qp.reshape(G * Hp // 16, 16, Kp // 4, 4).transpose(0, 2, 1, 3))
    return packed, sp.reshape(-1), qp.sum(axis=1, dtype=np.int32)


def pack_weights(int cell, w_ih, w_hh, b, bhn):
    """Quantize and pack one layer direction's weights.

    Parameters
    ----------
    cell : int                        0 RNN, 1 LSTM, 2 GRU (reset after)
    w_ih : float32 (G*H, F)           # IN  PyTorch's layout and gate order
    w_hh : float32 (G*H, H)           # IN
    b : float32 (G*H,)                # IN  b_ih + b_hh (GRU's n gate: b_in alone)
    bhn : float32 (H,)                # IN  GRU's b_hn (zeros for the other cells)

    Returns
    -------
    dict of ndarrays: ``pih``, ``phh`` (packed int8), ``sih``, ``shh`` (float32 scales), ``cih``,
    ``chh`` (int32 row sums), ``b``, ``bhn`` (float32, padded per gate) and the shape ``F``, ``H``
    (0-d int64): everything the kernel reads, held once.
    """
    if cell not in GATES:
        raise ValueError(f"int8 kernels run cells 0 (RNN), 1 (LSTM) and 2 (GRU), got {cell!r}")
    G = GATES[cell]
    w_hh = np.asarray(w_hh, np.float32)
    w_ih = np.asarray(w_ih, np.float32)
    if w_hh.ndim != 2 or w_ih.ndim != 2 or w_hh.shape[0] != G * w_hh.shape[1] or w_ih.shape[0] != w_hh.shape[0]:
        raise ValueError(f"weights must be ({G}*H, F) and ({G}*H, H), got {w_ih.shape} and {w_hh.shape}")
    GH, H = w_hh.shape
    F, Hp = w_ih.shape[1], _round(H, 16)
    bp = np.zeros((G, Hp), np.float32)
    bp[:, :H] = np.asarray(b, np.float32).reshape(G, H)
    bhp = np.zeros(Hp, np.float32)
    bhp[:H] = np.asarray(bhn, np.float32).reshape(H)
    pih, sih, cih = _pack_matrix(w_ih, G, H, F)
    phh, shh, chh = _pack_matrix(w_hh, G, H, H)
    return {"pih": pih, "phh": phh, "sih": sih, "shh": shh, "cih": cih, "chh": chh, "b": bp.reshape(-1),
            "bhn": bhp, "F": np.array(F, np.int64), "H": np.array(H, np.int64), "G": np.array(G, np.int64)}


def unpack_weights(dict pk):
    """``(w_ih, w_hh)``: the float32 values the packed int8 weights stand for (scale times int8)."""
    G, F, H = int(pk["G"]), int(pk["F"]), int(pk["H"])
    Hp = _round(H, 16)
    out = []
    for p, sc, K in ((pk["pih"], pk["sih"], F), (pk["phh"], pk["shh"], H)):
        Kp = p.shape[1] * 4
        q = p.transpose(0, 2, 1, 3).reshape(G, Hp, Kp)[:, :H, :K].astype(np.float32)
        out.append(np.ascontiguousarray((q * sc.reshape(G, Hp)[:, :H, None]).reshape(G * H, K)))
    return out[0], out[1]


cdef int _fill(rf_i8_layer* L, dict pk, int cell, int relu) except -1:
    """Point the kernel's layer struct at a packed direction's arrays (checked: type, size)."""
    cdef int G = GATES[cell]
    cdef int F = int(pk["F"]), H = int(pk["H"])
    cdef int Hp = _round(H, 16)
    cdef int KpX = _round(max(F, 1), 64), KpH = _round(H, 64)
    cdef cnp.ndarray a
    if int(pk["G"]) != G:
        raise ValueError(f"packed int8 weights are of another cell ({int(pk['G'])} gates, not {G})")
    spec = {"pih": (np.int8, G * Hp * KpX), "phh": (np.int8, G * Hp * KpH), "sih": (np.float32, G * Hp),
            "shh": (np.float32, G * Hp), "cih": (np.int32, G * Hp), "chh": (np.int32, G * Hp),
            "b": (np.float32, G * Hp), "bhn": (np.float32, Hp)}
    ptr = {}
    for name, (dt, n) in spec.items():
        a = pk[name]
        if a.dtype != dt or a.size != n or not a.flags.c_contiguous:
            raise ValueError(f"packed int8 weights: {name} must be {np.dtype(dt).name} of {n} values, C order")
        ptr[name] = <size_t>cnp.PyArray_DATA(a)
    L.cell, L.relu, L.F, L.H, L.Hp, L.KpX, L.KpH = cell, relu, F, H, Hp, KpX, KpH
    L.pih = <const int8_t*><size_t>ptr["pih"]
    L.phh = <const int8_t*><size_t>ptr["phh"]
    L.sih = <const float*><size_t>ptr["sih"]
    L.shh = <const float*><size_t>ptr["shh"]
    L.cih = <const int32_t*><size_t>ptr["cih"]
    L.chh = <const int32_t*><size_t>ptr["chh"]
    L.b = <const float*><size_t>ptr["b"]
    L.bhn = <const float*><size_t>ptr["bhn"]
    return 0


cdef int _fits(cnp.ndarray a, Py_ssize_t rs, Py_ssize_t ss, int T, int B, Py_ssize_t N, Py_ssize_t width,
               str what) except -1:
    """Check that every row of a strided (rs, ss) or packed (ss = 0: N rows) layout lies inside ``a``."""
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise ValueError(f"int8 run: {what} must be a C-contiguous float32 array")
    if rs < width or ss < 0 or (ss and ss < width):
        raise ValueError(f"int8 run: bad strides for {what}: ({rs}, {ss})")
    cdef Py_ssize_t end = (T - 1) * ss + (B - 1) * rs + width if ss else (N - 1) * rs + width
    if end > a.size:
        raise ValueError(f"int8 run: {what} holds {a.size} values, its rows reach {end}")
    return 0


def run(dict pk, int cell, bint relu, int[::1] bs, int[::1] off, bint reverse, cnp.ndarray x, x_strides,
        float[:, ::1] h, c, cnp.ndarray y, int ycol, y_strides, int n_threads, scratch=None):
    """One layer direction over a batch: the kernel call (rnnfast.quantize's Direction, spelled out).

    Parameters
    ----------
    pk : dict                      # IN  from :func:`pack_weights`
    cell, relu : the cell (0 RNN, 1 LSTM, 2 GRU) and RNN's relu
    bs, off : int32 (T,)           # IN  rows of each step and the first of them (longest first)
    reverse : run each row from its own last step
    x : float32, C order           # IN  F values a row; row b at time t at element
    x_strides : (rs, ss)                 t * ss + b * rs, or with ss = 0 (off[t] + b) * rs (packed rows)
    h : float32 (B, H)             # IN / OUT  initial, then final hidden state
    c : float32 (B, H) or None     # IN / OUT  LSTM's cell state (None for the other cells)
    y : float32, C order           # OUT h_t: H values from element ycol of each row, rows as x's by
    y_strides : (rs, ss)                 y_strides
    n_threads : int
    scratch : callable, optional   ``scratch(nbytes)`` -> a uint8 array of at least nbytes, reused from
                                   call to call (rnnfast.quantize passes its workspace's); default: new

    Returns
    -------
    int : steps at which a thread waited long at the batch-1 barrier (a busy machine).
    """
    cdef rf_i8_layer L
    _fill(&L, pk, cell, relu)
    cdef int T = bs.shape[0], B = h.shape[0], t
    cdef float[:, ::1] cv
    cdef float* cp = NULL
    cdef size_t xs[2]
    cdef size_t ys[2]
    if h.shape[1] != L.H or off.shape[0] != T:
        raise ValueError("int8 run: h or off do not match the weights")
    if (c is None) != (cell != 1):
        raise ValueError("int8 run: c is LSTM's cell state (None for the other cells)")
    if c is not None:
        cv = c
        if cv.shape[0] != B or cv.shape[1] != L.H:
            raise ValueError("int8 run: c must be (B, H)")
        cp = &cv[0, 0]
    for t in range(T):  # (steps past the longest row have bs[t] = 0)
        if bs[t] < 0 or bs[t] > B or (t and (bs[t] > bs[t - 1] or off[t] != off[t - 1] + bs[t - 1])) \
                or (t == 0 and (off[0] != 0 or bs[0] != B)):
            raise ValueError("int8 run: bs / off are not a packed layout of B rows")
    cdef int Tfull = T
    while T > 0 and bs[T - 1] == 0:
        T -= 1
    if T == 0 or B == 0:
        return 0
    cdef Py_ssize_t N = off[T - 1] + bs[T - 1]
    xs[0], xs[1] = x_strides
    ys[0], ys[1] = y_strides
    if ycol < 0:
        raise ValueError("int8 run: ycol must be >= 0")
    _fits(x, xs[0], xs[1], Tfull, B, N, L.F, "x")
    _fits(y, ys[0], ys[1], Tfull, B, N, ycol + L.H, "y")
    cdef int ret
    cdef int isa = _isa, forced = _forced, nth = max(1, n_threads), rev = reverse
    cdef long spin = RF_SPIN_NS
    cdef size_t nbytes = rf_i8_scratch_bytes(&L, T, &bs[0], &off[0], nth)
    cdef cnp.ndarray mem = scratch(nbytes) if scratch is not None else np.empty(nbytes, np.uint8)
    if mem.dtype != np.uint8 or mem.size < <Py_ssize_t>nbytes or not mem.flags.c_contiguous:
        raise ValueError(f"int8 run: scratch must give a contiguous uint8 array of {nbytes} bytes or more")
    cdef void* sp = cnp.PyArray_DATA(mem)
    cdef const float* xp = <const float*>cnp.PyArray_DATA(x)
    cdef float* yp = <float*>cnp.PyArray_DATA(y) + ycol
    with nogil:
        ret = rf_i8_forward(&L, isa, forced, T, &bs[0], &off[0], rev, xp, xs, &h[0, 0], cp, yp, ys, nth, spin, sp)
    return ret
