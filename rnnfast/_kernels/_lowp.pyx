# Low-precision inference kernels: bfloat16 LSTM / GRU (reset after) / RNN, one layer and direction per
# call (csrc/rf_bf16.h has the maths, the packed layout and the three instruction paths), and the CPU
# feature bits the low-precision backends choose their path from (csrc/rf_cpu.h).
#
# The Python side (rnnfast.quantize) owns the buffers: every array here is given, checked for shape and
# layout, and nothing is allocated per step. The one nogil call runs the whole sequence.
cimport cython
from libc.stdint cimport uint16_t

cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "rf_bf16.h" nogil:
    int rf_cpu_features()
    int rf_amx_enable()
    int RF_CPU_AVX2, RF_CPU_AVX512, RF_CPU_AVX512_VNNI, RF_CPU_AVX512_BF16, RF_CPU_AMX_BF16, RF_CPU_AMX_INT8
    int RF_BF16_PORTABLE, RF_BF16_AVX512, RF_BF16_AMX
    int rf_bf16_path_available(int path)
    size_t rf_bf16_packed_size(int G, int F, int H)
    void rf_bf16_pack(int G, int F, int H, const float* w_ih, const float* w_hh, uint16_t* P)
    int rf_bf16_forward(int path, int cell, int relu, int T, const int* bs, const int* off, int reverse, int B,
                        int F, int H, int nth, int split_units, int proj_all, const uint16_t* P, const float* x,
                        int ldx, ptrdiff_t xts, const float* b, const float* bhn, float* h, float* c, float* y,
                        int ldy, ptrdiff_t yts, uint16_t* xb, uint16_t* hb, float* gs, float* gh)

#: The bfloat16 instruction paths, by name (the kernel's numbers).
BF16_PATHS = {"portable": RF_BF16_PORTABLE, "avx512_bf16": RF_BF16_AVX512, "amx": RF_BF16_AMX}

_FEATURES = {"avx2": RF_CPU_AVX2, "avx512": RF_CPU_AVX512, "avx512_vnni": RF_CPU_AVX512_VNNI,
             "avx512_bf16": RF_CPU_AVX512_BF16, "amx_bf16": RF_CPU_AMX_BF16, "amx_int8": RF_CPU_AMX_INT8}


def cpu_features():
    """The low-precision instruction sets this machine and its OS support: a frozenset of names from
    ``avx2, avx512, avx512_vnni, avx512_bf16, amx_bf16, amx_int8`` (AMX without the process's tile
    permission included; :func:`amx_enable` asks for it)."""
    cdef int f = rf_cpu_features()
    return frozenset(name for name, bit in _FEATURES.items() if f & bit)


def amx_enable():
    """Ask Linux for the AMX tile state (once per process). True when AMX may be used."""
    return bool(rf_amx_enable())


def bf16_path_available(int path):
    """True when the bfloat16 path number ``path`` (a value of :data:`BF16_PATHS`) runs here."""
    return bool(rf_bf16_path_available(path))


def bf16_packed_size(int G, int F, int H):
    """Elements (uint16) of the packed weights of one layer and direction."""
    return rf_bf16_packed_size(G, F, H)


def bf16_pack(int G, const float[:, ::1] w_ih, const float[:, ::1] w_hh):
    """Pack one direction's ``w_ih`` (G H, F) and ``w_hh`` (G H, H) into the kernel's bfloat16 layout
    (csrc/rf_bf16.h); returns a new 1-D uint16 array."""
    cdef int GH = w_hh.shape[0], H = w_hh.shape[1], F = w_ih.shape[1]
    if GH != G * H or w_ih.shape[0] != GH:
        raise ValueError(f"weights of shapes {tuple(w_ih.shape)[:2]}, {tuple(w_hh.shape)[:2]} for {G} gates")
    out = np.empty(rf_bf16_packed_size(G, F, H), np.uint16)
    cdef uint16_t[::1] P = out
    with nogil:
        rf_bf16_pack(G, F, H, &w_ih[0, 0], &w_hh[0, 0], &P[0])
    return out


cdef size_t _extent(int N, int B, int T, int ld, Py_ssize_t ts, int width):
    """Elements an array of rows needs (see bf16_forward's x / y)."""
    if ts:
        return <size_t>((T - 1) * ts + <Py_ssize_t>(B - 1) * ld + width)
    return <size_t>(<Py_ssize_t>(N - 1) * ld + width)


@cython.boundscheck(True)
def bf16_forward(int path, int cell, int relu, const int[::1] bs, const int[::1] off, bint reverse, int F, int H,
                 int nth, bint split_units, bint proj_all, const uint16_t[::1] P, const float[::1] x, int ldx,
                 Py_ssize_t xts, const float[::1] b, const float[::1] bhn, float[:, ::1] h, float[:, ::1] c,
                 float[::1] y, int ldy, Py_ssize_t yts, uint16_t[::1] xb, uint16_t[::1] hb, float[::1] gs,
                 float[::1] gh):
    """Run one layer and direction over a batch (csrc/rf_bf16.h, rf_bf16_forward).

    Parameters
    ----------
    path, cell, relu : int
        :data:`BF16_PATHS` value; the cell's number (0 RNN, 1 LSTM, 2 GRU); RNN's relu flag.
    bs, off : int32 (T,)
        Rows of each step and its first row in the packed layout.
    reverse, split_units, proj_all : bool
        Steps from the last; threads share out the units (else the rows); make x W_ih^T for all steps
        first (else step by step, with h).
    F, H, nth : int
    P : uint16, the packed weights (:func:`bf16_pack`)
    x : float32, flat                          # IN: row r of step t at (off[t] + r) ldx, or t xts + r ldx
    ldx, xts : row and step strides (xts = 0: packed rows; else every step has all B rows)
    b, bhn : float32 (G Hc,), (Hc,)            # IN: summed biases, GRU's b_hn, zero-padded
    h, c : float32 (B, Hc)                     # IN / OUT: initial states, then final ones
    y : float32, flat                          # OUT: H values per row, laid out as x with ldy, yts
    xb, hb, gs, gh : scratch of at least N Kx, 2 Bp Kh, (proj_all ? N : Bp) G Hc, (GRU) Bp 3 Hc elements
        (Kx = round32(F), Kh = round32(H), Hc = round16(H), Bp = round16(B)).

    Returns
    -------
    int : the long barrier waits (a busy machine).
    """
    cdef int T = bs.shape[0], B = h.shape[0], Hc = (H + 15) // 16 * 16, Kx = (F + 31) // 32 * 32
    cdef int Kh = (H + 31) // 32 * 32, Bp = (B + 15) // 16 * 16, G = 4 if cell == 1 else (3 if cell == 2 else 1)
    cdef int N, yields
    if cell not in (0, 1, 2) or not rf_bf16_path_available(path):
        raise ValueError(f"cell {cell} on path {path} is not available")
    if T < 1 or off.shape[0] < T or bs[0] > B or bs[0] < 1 or F < 1 or H < 1 or ldx < F or ldy < H:
        raise ValueError("bad sizes or layout")
    N = off[T - 1] + bs[T - 1]
    if ((xts or yts) and N != B * T) or xts < 0 or yts < 0:
        raise ValueError("step strides need every step to have all rows")
    if <size_t>x.shape[0] < _extent(N, B, T, ldx, xts, F) or <size_t>y.shape[0] < _extent(N, B, T, ldy, yts, H):
        raise ValueError("x or y too small for its layout")
    if (P.shape[0] < rf_bf16_packed_size(G, F, H) or b.shape[0] < G * Hc or bhn.shape[0] < Hc or h.shape[1] != Hc
            or c.shape[0] != B or c.shape[1] != Hc):
        raise ValueError("weights, biases or states of the wrong size")
    if (xb.shape[0] < <size_t>N * Kx or hb.shape[0] < <size_t>2 * Bp * Kh
            or gs.shape[0] < <size_t>(N if proj_all else Bp) * G * Hc
            or (cell == 2 and gh.shape[0] < <size_t>Bp * 3 * Hc) or gh.shape[0] < 1):
        raise ValueError("scratch buffers too small")
    with nogil:
        yields = rf_bf16_forward(path, cell, relu, T, &bs[0], &off[0], reverse, B, F, H, nth, split_units, proj_all,
                                 &P[0], &x[0], ldx, xts, &b[0], &bhn[0], &h[0, 0], &c[0, 0], &y[0], ldy, yts,
                                 &xb[0], &hb[0], &gs[0], &gh[0])
    return yields
