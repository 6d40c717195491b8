# int8 inference of stacked, optionally bidirectional LSTM / GRU / RNN layers (csrc/rf_int8.h: the
# quantization scheme, the packed layout and the instruction paths).
#
# Python side: ``pack_direction`` quantizes and packs one layer direction's float weights once (the
# arrays a quantized model stores); ``forward`` runs the whole network over a batch, one nogil kernel
# call per layer and direction. The kernel wants each direction's input time-major with the batch rows
# sorted longest first; ``forward`` sorts once, gives the reverse direction its input in per-sequence
# reversed time, and puts rows and steps back at the end. Products are int8 (u8 x s8 -> int32), the
# cell maths float32; h_n is each row's output at its last step, c_n the kernel's.
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
    int rf_i8_forward(const rf_i8_layer* L, int isa, int forced, int T, int B, const int* len, const float* x,
                      int ldx, const float* h0, const float* c0, float* y, int ldy, float* cn, int nth,
                      long spin_ns)

ISAS = ("scalar", "avx2", "vnni", "amx")   # csrc/rf_int8.h's RF_I8_* in order
CELLS = {"rnn": 0, "lstm": 1, "gru": 2}    # the kernels' cell numbers (CELL_GRU_RB, 3, is not here)
GATES = {0: 1, 1: 4, 2: 3}

cdef int _best = rf_i8_best()
cdef int _isa = _best
cdef bint _forced = False


def best_isa() -> str:
    """The fastest int8 path this CPU (and OS) runs: "amx", "vnni", "avx2" or "scalar"."""
    return ISAS[_best]


def current_isa() -> str:
    """The int8 path the kernels take now (the best, unless one was forced)."""
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


def _round(n, m):
    return (n + m - 1) // m * m


def quantize_rows_ref(w):
    """Per-row symmetric int8 of a float matrix: ``(q int8, scale float32)``, ``w ~ scale[:, None] * q``.

    The weight half of the scheme (csrc/rf_int8.h): scale = max|row| / 127 (rows of zeros get scale 0).
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
    q, scale = quantize_rows_ref(w)
    qp = np.zeros((G, Hp, Kp), np.int8)
    qp[:, :H, :K] = q.reshape(G, H, K)
    sp = np.zeros((G, Hp), np.float32)
    sp[:, :H] = scale.reshape(G, H)
    qp = qp.reshape(G * Hp, Kp)
    packed = np.ascontiguousarray(qp.reshape(G * Hp // 16, 16, Kp // 4, 4).transpose(0, 2, 1, 3))
    return packed, sp.reshape(-1), qp.sum(axis=1, dtype=np.int32)


def pack_direction(str mode, w_ih, w_hh, b_ih=None, b_hh=None):
    """Quantize and pack one layer direction's weights (PyTorch's layout and gate order).

    Parameters
    ----------
    mode : {"lstm", "gru", "rnn"}
    w_ih : ndarray (G*H, F);  w_hh : ndarray (G*H, H)
    b_ih, b_hh : ndarray (G*H,), optional (zeros)

    Returns
    -------
    dict of ndarrays: ``pih``, ``phh`` (packed int8), ``sih``, ``shh`` (float32 scales), ``cih``,
    ``chh`` (int32 row sums), ``b``, ``bhn`` (float32 biases as the cells add them), and the shape
    ``F``, ``H`` as 0-d int arrays. A quantized model stores exactly these.
    """
    if mode not in CELLS:
        raise ValueError(f"int8 kernels run 'lstm', 'gru' and 'rnn', got {mode!r}")
    G = GATES[CELLS[mode]]
    w_hh = np.asarray(w_hh, np.float32)
    w_ih = np.asarray(w_ih, np.float32)
    GH, H = w_hh.shape
    F = w_ih.shape[1]
    if GH != G * H or w_ih.shape[0] != GH:
        raise ValueError(f"{mode} weights must be ({G}*H, F) and ({G}*H, H), got {w_ih.shape} and {w_hh.shape}")
    Hp = _round(H, 16)
    b_ih = np.zeros(GH, np.float32) if b_ih is None else np.asarray(b_ih, np.float32).reshape(G, H)
    b_hh = np.zeros(GH, np.float32) if b_hh is None else np.asarray(b_hh, np.float32).reshape(G, H)
    b_ih, b_hh = b_ih.reshape(G, H), b_hh.reshape(G, H)
    b = np.zeros((G, Hp), np.float32)
    bhn = np.zeros(Hp, np.float32)
    b[:, :H] = b_ih + b_hh
    if mode == "gru":  # n: b_in here, b_hn apart (added to W_hn h before r multiplies it)
        b[2, :H] = b_ih[2]
        bhn[:H] = b_hh[2]
    pih, sih, cih = _pack_matrix(w_ih, G, H, F)
    phh, shh, chh = _pack_matrix(w_hh, G, H, H)
    return {"pih": pih, "phh": phh, "sih": sih, "shh": shh, "cih": cih, "chh": chh, "b": b.reshape(-1),
            "bhn": bhn, "F": np.array(F, np.int64), "H": np.array(H, np.int64)}


cdef int _fill(rf_i8_layer* L, dict pk, int cell, int relu) except -1:
    """Point the kernel's layer struct at a packed direction's arrays (checked: type, size)."""
    cdef int G = GATES[cell]
    cdef int F = int(pk["F"]), H = int(pk["H"])
    cdef int Hp = _round(H, 16)
    cdef int KpX = _round(max(F, 1), 64), KpH = _round(H, 64)
    cdef cnp.ndarray a
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


def run_direction(dict pk, int cell, int relu, float[:, :, ::1] x, int[::1] lengths, float[:, ::1] h0,
                  float[:, ::1] c0, float[:, :, ::1] y, int y_off, float[:, ::1] cn, int n_threads):
    """One layer direction over a time-major batch (rows sorted longest first): the kernel call.

    Parameters
    ----------
    pk : dict                      # IN  from :func:`pack_direction`
    x : float32 (T, B, F)          # IN  time-major; F = the direction's input size
    lengths : int32 (B,)           # IN  non-increasing, in [0, T]
    h0, c0 : float32 (B, H)        # IN  (c0: LSTM only; any (B, H) array otherwise)
    y : float32 (T, B, W)          # OUT h_t at columns [y_off, y_off + H) of every valid step
    cn : float32 (B, H)            # OUT LSTM's final cell state
    n_threads : int

    Returns
    -------
    int : steps at which a thread waited long at the batch-1 barrier (a busy machine).
    """
    cdef rf_i8_layer L
    _fill(&L, pk, cell, relu)
    cdef int T = x.shape[0], B = x.shape[1]
    if x.shape[2] != L.F or h0.shape[0] != B or h0.shape[1] != L.H or lengths.shape[0] != B:
        raise ValueError("int8 direction: x, h0 or lengths do not match the weights")
    if y.shape[0] != T or y.shape[1] != B or y_off < 0 or y_off + L.H > y.shape[2]:
        raise ValueError("int8 direction: y does not match x")
    if cell == 1 and (c0.shape[0] != B or c0.shape[1] != L.H or cn.shape[0] != B or cn.shape[1] != L.H):
        raise ValueError("int8 direction: c0 / cn must be (B, H)")
    if B == 0 or T == 0:
        if cell == 1:
            cn[:, :] = c0
        return 0
    cdef int i
    for i in range(B):
        if lengths[i] < 0 or lengths[i] > T or (i > 0 and lengths[i] > lengths[i - 1]):
            raise ValueError("int8 direction: lengths must be non-increasing, in [0, T]")
    cdef int ret
    cdef int isa = _isa, forced = _forced, nth = max(1, n_threads)
    cdef long spin = RF_SPIN_NS
    with nogil:
        ret = rf_i8_forward(&L, isa, forced, T, B, &lengths[0], &x[0, 0, 0], x.shape[2], &h0[0, 0],
                            &c0[0, 0], &y[0, 0, y_off], y.shape[2], &cn[0, 0], nth, spin)
    if ret < 0:
        raise MemoryError("int8 kernel: out of memory for its workspace")
    return ret


def _reverse_index(lengths, int T):
    """Time index (T, B) of each row's reversed sequence: t -> L_b - 1 - t within the length (else t)."""
    t = np.arange(T)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t)


def forward(list layers, str mode, int relu, x, h0, c0, lengths, int n_threads):
    """The whole int8 network over a batch.

    Parameters
    ----------
    layers : list of lists of dicts   # IN  per layer, per direction (1 or 2), :func:`pack_direction`'s
    mode : {"lstm", "gru", "rnn"}
    x : float32 (B, T, F)              # IN  batch first
    h0, c0 : float32 (L*D, B, H)       # IN  (c0: LSTM, else None)
    lengths : int (B,) or None         # IN  valid steps, any order, in [0, T]
    n_threads : int

    Returns
    -------
    out : float32 (B, T, D*H), zero past each length;  h_n, c_n : (L*D, B, H) (c_n None but for LSTM);
    yields : int, the long barrier waits of the batch-1 kernel (a busy machine).
    """
    cell = CELLS[mode]
    x = np.asarray(x, np.float32)
    B, T = x.shape[0], x.shape[1]
    D, H = len(layers[0]), int(layers[0][0]["H"])
    lens = np.full(B, T, np.int32) if lengths is None else np.asarray(lengths, np.int32)
    order = np.argsort(-lens, kind="stable")
    sl = np.ascontiguousarray(lens[order])
    inp = np.ascontiguousarray(x[order].transpose(1, 0, 2))
    rev = _reverse_index(sl, T) if D == 2 else None
    cols = np.arange(B)[None, :]
    hn = np.empty((len(layers) * D, B, H), np.float32)
    cn = np.zeros((len(layers) * D, B, H), np.float32)
    h0s = np.ascontiguousarray(h0[:, order]) if h0 is not None else np.zeros((len(layers) * D, B, H), np.float32)
    c0s = np.ascontiguousarray(c0[:, order]) if c0 is not None else np.zeros_like(h0s)
    yields = 0
    for l, dirs in enumerate(layers):
        y = np.zeros((T, B, D * H), np.float32)
        for d, pk in enumerate(dirs):
            k = l * D + d
            if d == 0:
                yields += run_direction(pk, cell, relu, inp, sl, h0s[k], c0s[k], y, 0, cn[k], n_threads)
                last = y[np.maximum(sl - 1, 0), np.arange(B), :H]
            else:
                yr = np.zeros((T, B, H), np.float32)
                xr = np.ascontiguousarray(inp[rev, cols])
                yields += run_direction(pk, cell, relu, xr, sl, h0s[k], c0s[k], yr, 0, cn[k], n_threads)
                last = yr[np.maximum(sl - 1, 0), np.arange(B)]
                y[..., H:] = yr[rev, cols]  # (past a length, rev is t: yr's untouched zeros)
            hn[k] = np.where((sl > 0)[:, None], last, h0s[k])
        inp = y
    inv = np.empty_like(order)
    inv[order] = np.arange(B)
    out = np.ascontiguousarray(inp.transpose(1, 0, 2)[inv])
    return out, np.ascontiguousarray(hn[:, inv]), (np.ascontiguousarray(cn[:, inv]) if cell == 1 else None), yields
