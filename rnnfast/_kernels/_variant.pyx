# The cell variants of rnnfast.nn.LSTM/GRU/RNN that the main kernel (_recurrent.pyx) does not run:
# LSTM projections (``proj_size``, PyTorch's h_t = W_hr (o * tanh c_t)) and variational recurrent dropout
# (``recurrent_dropout``, one mask per sequence on h_{t-1} before the recurrent product, as Keras applies it).
#
# One call runs one layer and direction over the whole packed batch, the time loop ``nogil``:
#
#   forward:  XG = X W_ih^T (one GEMM over all N rows); for each step t (rows off[t] .. off[t] + bs[t]):
#             hp = h_{t-1} * mask;  XG_t += hp W_hh^T (GRU: GH = hp W_hh^T apart);  the fused cell pass of
#             csrc/rf_cells_impl.h (activations, c_t, o tanh c_t);  LSTM with proj: h_t = m_t W_hr^T.
#   backward: for t in reverse order: the fused backward pass makes dG_t; dh_{t-1} = mask * (dG_t W_hh)
#             (GRU: plus the direct path dh~ z); after the loop the weight gradients as GEMMs over all rows:
#             dW_ih += dG^T X, dW_hh += dGh^T HP, dW_hr += dH^T M, db += sum dG, dX (+)= dG W_ih.
#
# Layout (rnnfast.nn._rnn_calls._Plan): packed time-major, rows sorted by length (longest first), padded
# steps dropped, so step t's rows are the first bs[t] sequences and the running state (B, .) keeps each
# sequence's own last value once it has ended. The reverse direction walks t from T-1 down: a sequence's
# row joins (from its initial state) at its own last step. Cell numbers as csrc/rf_cells.h: 0 RNN, 1 LSTM,
# 2 GRU (reset after the product), 3 GRU reset before (its n gate's product over s = r * (h_{t-1} * mask),
# in two parts with a pass after each, as csrc/rf_cells_impl.h states).
#
# Buffer shapes (row-major, ``R`` = N when training, the saved values backward reads; B when not):
#   XG (N, G H) pre-activations, then gates (then dG in backward); HP (R, P) the masked h_{t-1};
#   LSTM: CP (R, H) c_{t-1} (training), TC (R, H) tanh c_t (training), CN (B, H) scratch (inference),
#         M (R, H) o tanh c_t (proj only), DH (N, P) dh_t (backward, proj only), DM (B, H) scratch;
#   GRU:  GH (B, 3H) scratch, HN (R, H) W_hn h + b_hn (then dan r; reset before: s), HU (R, H) the unmasked
#         h_{t-1}, DS (B, H) scratch (reset before: ds = dG_n W_hn),
#         DGH (N, 3H) the recurrent products' gradient (backward);  every P is H without a projection.
cimport cython
from cython cimport floating
from libc.string cimport memcpy, memset

cimport numpy as cnp
import numpy as np

cnp.import_array()

from rnnfast._kernels._blas cimport gemm
from rnnfast._kernels._cells cimport (lstm_fwd, lstm_bwd, gru_fwd, gru_bwd, grb_fwd_rz, grb_fwd_n, grb_bwd_nz,
                                      grb_bwd_r, rnn_fwd, rnn_bwd)

cdef extern from "rf_math.h" nogil:
    # denormals flushed while a call runs (a vanishing gradient otherwise crawls through them: measured
    # LSTM medium training 5.4 s with them, against the plain kernel's 0.7 s)
    unsigned int rf_ftz_enter()
    void rf_ftz_leave(unsigned int old)

# BLAS runs single-threaded during a call (its per-step products are small: OpenBLAS's threads woken at
# every step made LSTM medium training 7x slower on a busy 2-core machine), held in the one count all the
# kernel modules share (scipy's OpenBLAS has only a process-wide thread count).
from rnnfast._kernels._recurrent cimport blas_hold, blas_release

cdef enum:  # the cells as csrc/rf_cells.h numbers them
    RNN = 0
    LSTM = 1
    GRU = 2
    GRU_RB = 3


cdef inline int n_gates(int cell) noexcept nogil:
    return 4 if cell == LSTM else (3 if cell >= GRU else 1)


cdef inline floating* ptr2(floating[:, ::1] a):
    """The first element of a 2-D C-contiguous view, or NULL for None / an empty view."""
    if a is None or a.shape[0] == 0 or a.shape[1] == 0:
        return NULL
    return &a[0, 0]


cdef struct Bufs:
    # the buffers of the module's header (void*: float or double, the call's type); NULL when a call has none
    void* XG
    void* HP
    void* CP
    void* TC
    void* CN
    void* M
    void* GH
    void* HN
    void* HU
    void* DH
    void* DM
    void* ZH
    void* DGH
    void* TMP
    void* DS


cdef void* _data(dict buf, str name, dtype) except? NULL:
    """The data of ``buf[name]`` (kept alive by ``buf``), checked C-contiguous of ``dtype``; NULL if absent."""
    a = buf.get(name)
    if a is None or (isinstance(a, np.ndarray) and a.size == 0):
        return NULL
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"buffer {name} must be a C-contiguous {np.dtype(dtype).name} array")
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef Bufs take_buffers(dict buf, dtype) except *:
    """Every buffer of ``buf`` (see :func:`buffers`), as pointers."""
    cdef Bufs bp
    bp.XG, bp.HP, bp.CP, bp.TC = _data(buf, "XG", dtype), _data(buf, "HP", dtype), _data(buf, "CP", dtype), \
        _data(buf, "TC", dtype)
    bp.CN, bp.M, bp.GH, bp.HN = _data(buf, "CN", dtype), _data(buf, "M", dtype), _data(buf, "GH", dtype), \
        _data(buf, "HN", dtype)
    bp.HU, bp.DH, bp.DM, bp.ZH = _data(buf, "HU", dtype), _data(buf, "DH", dtype), _data(buf, "DM", dtype), \
        _data(buf, "ZH", dtype)
    bp.DGH, bp.TMP, bp.DS = _data(buf, "DGH", dtype), _data(buf, "TMP", dtype), _data(buf, "DS", dtype)
    return bp


cdef inline void take_prev(int n, int P, const floating* h, const floating* mask, floating* hp) noexcept nogil:
    """hp (n, P) = h (n, P) * mask (n, P), or a copy without a mask."""
    cdef Py_ssize_t i, m = <Py_ssize_t>n * P
    if mask == NULL:
        memcpy(hp, h, m * sizeof(floating))
    else:
        for i in range(m):
            hp[i] = h[i] * mask[i]


cdef inline void copy_rows(int n, int w, const floating* src, int lds, floating* dst, int ldd) noexcept nogil:
    """dst (n, w) with row stride ldd = src (n, w) with row stride lds."""
    cdef Py_ssize_t r
    for r in range(n):
        memcpy(dst + r * ldd, src + r * lds, w * sizeof(floating))


cdef inline void add_masked(int n, int P, const floating* v, const floating* mask, floating* dh,
                            bint accumulate) noexcept nogil:
    """dh (n, P) (+)= v * mask (mask NULL: 1)."""
    cdef Py_ssize_t i, m = <Py_ssize_t>n * P
    if accumulate:
        if mask == NULL:
            for i in range(m):
                dh[i] += v[i]
        else:
            for i in range(m):
                dh[i] += v[i] * mask[i]
    elif mask != NULL:
        for i in range(m):
            dh[i] = v[i] * mask[i]
    else:
        memcpy(dh, v, m * sizeof(floating))


cdef inline void col_sums(int N, int W, const floating* a, floating* out) noexcept nogil:
    """out (W,) += the column sums of a (N, W)."""
    cdef Py_ssize_t r, j
    for r in range(N):
        for j in range(W):
            out[j] += a[r * W + j]


cdef inline void gru_rb_step(int n, int H, floating* g, const floating* hm, const floating* h,
                             const floating* whh, const floating* b, floating* s, floating* y, int ldy) noexcept nogil:
    """One reset-before GRU step over n rows: g (n, 3H) holds x W_ih^T; ``hm`` the masked h_{t-1} of the
    recurrent products, ``h`` the unmasked one of h' = (1 - z) n + z h; s (n, H) = r hm kept."""
    gemm(False, True, n, 2 * H, H, <floating>1, hm, H, whh, H, <floating>1, g, 3 * H)
    grb_fwd_rz(n, H, g, b, hm, H, s, H)
    gemm(False, True, n, H, H, <floating>1, s, H, whh + 2 * H * H, H, <floating>1, g + 2 * H, 3 * H)
    grb_fwd_n(n, H, g, b, h, H, y, ldy)


cdef inline void gru_rb_back(int n, int H, floating* g, const floating* hm, const floating* h,
                             const floating* whh, const floating* dy, int lddy, floating* ds, floating* dhm,
                             floating* dh) noexcept nogil:
    """Backward of :func:`gru_rb_step`: g becomes dG; dh := dh~ z (the direct path); dhm (n, H) = the gradient
    wrt the masked h_{t-1} (through s and the r, z products)."""
    grb_bwd_nz(n, H, g, h, H, dy, lddy, dh)
    gemm(False, False, n, H, H, <floating>1, g + 2 * H, 3 * H, whh + 2 * H * H, H, <floating>0, ds, H)
    memset(dhm, 0, <Py_ssize_t>n * H * sizeof(floating))
    grb_bwd_r(n, H, g, hm, H, ds, H, dhm)
    gemm(False, False, n, H, 2 * H, <floating>1, g, 3 * H, whh, H, <floating>1, dhm, H)


cdef void forward_steps(int cell, int relu, int T, int H, int P, const int* bs, const int* off, bint reverse,
                        bint training, const floating* whh, const floating* whr, const floating* b,
                        const floating* bhn, const floating* mask, floating* h, floating* c, const Bufs* bp,
                        floating* out, int ldo) noexcept nogil:
    """The time loop of :func:`forward` (buffers as the module's header; row pointers offset here)."""
    cdef int G = n_gates(cell)
    cdef floating* XG = <floating*>bp.XG
    cdef floating* HP = <floating*>bp.HP
    cdef floating* CP = <floating*>bp.CP
    cdef floating* TC = <floating*>bp.TC
    cdef floating* CN = <floating*>bp.CN
    cdef floating* M = <floating*>bp.M
    cdef floating* GH = <floating*>bp.GH
    cdef floating* HN = <floating*>bp.HN
    cdef floating* HU = <floating*>bp.HU
    cdef int s, t, n
    cdef Py_ssize_t r0, rs
    cdef floating* y
    for s in range(T):
        t = T - 1 - s if reverse else s
        n = bs[t]
        if n == 0:
            continue
        r0 = off[t]
        rs = r0 if training else 0  # the rows of the saved buffers (scratch when not training)
        take_prev(n, P, h, mask, HP + rs * P)
        if training and cell >= GRU:
            memcpy(HU + rs * H, h, <Py_ssize_t>n * H * sizeof(floating))
        if cell == GRU_RB:
            gru_rb_step(n, H, XG + r0 * G * H, HP + rs * P, h, whh, b, HN + rs * H, out + r0 * ldo, ldo)
        elif cell == GRU:
            gemm(False, True, n, G * H, P, <floating>1, HP + rs * P, P, whh, P, <floating>0, GH, G * H)
            gru_fwd(n, H, XG + r0 * G * H, GH, b, bhn, h, H, NULL if HN == NULL else HN + rs * H,
                    out + r0 * ldo, ldo)
        else:
            gemm(False, True, n, G * H, P, <floating>1, HP + rs * P, P, whh, P, <floating>1, XG + r0 * G * H, G * H)
            if cell == RNN:
                rnn_fwd(n, H, relu, XG + r0 * G * H, b, out + r0 * ldo, ldo)
            else:
                y = out + r0 * ldo if whr == NULL else M + rs * H
                if training:
                    memcpy(CP + rs * H, c, <Py_ssize_t>n * H * sizeof(floating))
                    lstm_fwd(n, H, XG + r0 * G * H, b, CP + rs * H, c, TC + rs * H, y,
                             ldo if whr == NULL else H)
                else:
                    lstm_fwd(n, H, XG + r0 * G * H, b, c, CN, NULL, y, ldo if whr == NULL else H)
                    memcpy(c, CN, <Py_ssize_t>n * H * sizeof(floating))
                if whr != NULL:
                    gemm(False, True, n, P, H, <floating>1, y, H, whr, H, <floating>0, out + r0 * ldo, ldo)
        copy_rows(n, P, out + r0 * ldo, ldo, h, P)


def forward(int cell, int relu, int[::1] bs, int[::1] off, bint reverse, bint training,
            floating[:, ::1] x, floating[:, ::1] w_ih, floating[:, ::1] w_hh, floating[:, ::1] w_hr,
            floating[::1] b, floating[::1] bhn, floating[:, ::1] mask, floating[:, ::1] h, floating[:, ::1] c,
            floating[:, ::1] out, int col, dict buf):
    """Run one layer and direction over a packed batch (see the module's header).

    Parameters
    ----------
    cell, relu : int
        0 RNN (``relu`` 1: ReLU), 1 LSTM, 2 GRU (reset after), 3 GRU (reset before).
    bs, off : int32 (T,), (T + 1,)   IN
        Rows per step and each step's first row (packed layout).
    reverse, training : bool
        The direction; whether to keep what :func:`backward` reads in ``buf``.
    x : (N, F)   IN
    w_ih (G H, F), w_hh (G H, P), w_hr (P, H) or None : IN
        PyTorch's parameters (P = H without a projection).
    b (G H,), bhn (H,) : IN
        Bias as the cell passes take it (LSTM / RNN / reset-before GRU: b_ih + b_hh; GRU: r, z summed, b_in, and
        b_hn apart).
    mask : (B, P) or None   IN
        The recurrent dropout mask (already scaled by 1 / (1 - p)), sorted like the rows.
    h (B, P), c (B, H) or None : INOUT
        Initial states in, final states out (each row at its sequence's last step).
    out : (N, ldo)   OUT
        h_t written to columns [col, col + P).
    buf : dict of arrays   INOUT
        The buffers of :func:`buffers` for this call.
    """
    cdef int T = bs.shape[0], N = x.shape[0], F = x.shape[1], P = w_hh.shape[1]
    cdef int G = n_gates(cell)
    cdef int H = w_hh.shape[0] // G
    cdef Bufs bp = take_buffers(buf, np.float32 if floating is float else np.float64)
    cdef floating* whr = ptr2(w_hr)
    cdef floating* mk = ptr2(mask)
    cdef floating* cc = ptr2(c)
    cdef int ldo = out.shape[1]
    cdef floating* po = &out[0, col]
    cdef unsigned int ftz
    blas_hold()
    with nogil:
        ftz = rf_ftz_enter()
        gemm(False, True, N, G * H, F, <floating>1, &x[0, 0], F, &w_ih[0, 0], F, <floating>0, <floating*>bp.XG,
             G * H)
        forward_steps(cell, relu, T, H, P, &bs[0], &off[0], reverse, training, &w_hh[0, 0], whr, &b[0], &bhn[0],
                      mk, &h[0, 0], cc, &bp, po, ldo)
        rf_ftz_leave(ftz)
    blas_release()


cdef void backward_steps(int cell, int relu, int T, int H, int P, const int* bs, const int* off, bint reverse,
                         const floating* whh, const floating* whr, const floating* mask, floating* dh,
                         floating* dc, const Bufs* bp, const floating* dout, int ldo) noexcept nogil:
    """The time loop of :func:`backward`: the steps in the forward's reverse order."""
    cdef int G = n_gates(cell)
    cdef floating* XG = <floating*>bp.XG
    cdef floating* CP = <floating*>bp.CP
    cdef floating* TC = <floating*>bp.TC
    cdef floating* DH = <floating*>bp.DH
    cdef floating* DM = <floating*>bp.DM
    cdef floating* ZH = <floating*>bp.ZH
    cdef floating* HN = <floating*>bp.HN
    cdef floating* HU = <floating*>bp.HU
    cdef floating* DGH = <floating*>bp.DGH
    cdef floating* TMP = <floating*>bp.TMP
    cdef floating* HP = <floating*>bp.HP
    cdef floating* DS = <floating*>bp.DS
    cdef int s, t, n
    cdef Py_ssize_t r0
    cdef floating* g
    for s in range(T):
        t = s if reverse else T - 1 - s
        n = bs[t]
        if n == 0:
            continue
        r0 = off[t]
        g = XG + r0 * G * H
        if cell == LSTM:
            if whr != NULL:
                # dh_t = dy_t + dh (P wide), kept for dW_hr; dm_t = dh_t W_hr
                copy_rows(n, P, dout + r0 * ldo, ldo, DH + r0 * P, P)
                add_masked(n, P, dh, NULL, DH + r0 * P, True)
                gemm(False, False, n, H, P, <floating>1, DH + r0 * P, P, whr, H, <floating>0, DM, H)
                lstm_bwd(n, H, g, CP + r0 * H, TC + r0 * H, DM, H, ZH, dc)
            else:
                lstm_bwd(n, H, g, CP + r0 * H, TC + r0 * H, dout + r0 * ldo, ldo, dh, dc)
            gemm(False, False, n, P, G * H, <floating>1, g, G * H, whh, P, <floating>0, TMP, P)
            add_masked(n, P, TMP, mask, dh, False)
        elif cell == GRU:
            gru_bwd(n, H, g, HN + r0 * H, HU + r0 * H, H, dout + r0 * ldo, ldo, dh)
            copy_rows(n, 2 * H, g, G * H, DGH + r0 * G * H, G * H)
            copy_rows(n, H, HN + r0 * H, H, DGH + r0 * G * H + 2 * H, G * H)
            gemm(False, False, n, P, G * H, <floating>1, DGH + r0 * G * H, G * H, whh, P, <floating>0, TMP, P)
            add_masked(n, P, TMP, mask, dh, True)
        elif cell == GRU_RB:
            gru_rb_back(n, H, g, HP + r0 * P, HU + r0 * H, whh, dout + r0 * ldo, ldo, DS, TMP, dh)
            add_masked(n, P, TMP, mask, dh, True)
        else:
            rnn_bwd(n, H, relu, g, dout + r0 * ldo, ldo, dh)
            gemm(False, False, n, P, G * H, <floating>1, g, G * H, whh, P, <floating>0, TMP, P)
            add_masked(n, P, TMP, mask, dh, False)


def backward(int cell, int relu, int[::1] bs, int[::1] off, bint reverse,
             floating[:, ::1] x, floating[:, ::1] w_ih, floating[:, ::1] w_hh, floating[:, ::1] w_hr,
             floating[:, ::1] mask, floating[:, ::1] dh, floating[:, ::1] dc, floating[:, ::1] dout, int col,
             dict buf, dict grads, floating[:, ::1] dx, bint dx_accumulate):
    """Backpropagate one layer and direction through the :func:`forward` call that filled ``buf``.

    Parameters
    ----------
    cell, relu, bs, off, reverse, x, w_ih, w_hh, w_hr, mask : IN
        As the forward call.
    dh (B, P), dc (B, H) or None : INOUT
        The final states' gradients in, the initial states' out.
    dout : (N, ldo)   IN
        The output's gradient, columns [col, col + P).
    buf : dict   INOUT
        The forward's saved buffers plus the backward's (see :func:`buffers`); the gates become dG.
    grads : dict of arrays   INOUT
        ``weight_ih``, ``weight_hh``, ``weight_hr`` (proj only), ``bias_ih``, ``bias_hh`` (None without bias):
        accumulated.
    dx : (N, F)   OUT
        dG W_ih, added to what it holds when ``dx_accumulate``.
    """
    cdef int T = bs.shape[0], N = x.shape[0], F = x.shape[1], P = w_hh.shape[1]
    cdef int G = n_gates(cell)
    cdef int H = w_hh.shape[0] // G
    cdef Bufs bp = take_buffers(buf, np.float32 if floating is float else np.float64)
    cdef floating* XG = <floating*>bp.XG
    cdef floating* whr = ptr2(w_hr)
    cdef floating* pgb_ih = NULL
    cdef floating* pgb_hh = NULL
    cdef floating* pgw_hr = NULL
    cdef floating[:, ::1] gw_ih = grads["weight_ih"]
    cdef floating[:, ::1] gw_hh = grads["weight_hh"]
    cdef floating[:, ::1] gw_hr = grads.get("weight_hr")
    cdef floating[::1] gb_ih = grads.get("bias_ih")
    cdef floating[::1] gb_hh = grads.get("bias_hh")
    cdef floating* mk = ptr2(mask)
    cdef floating* pdc = ptr2(dc)
    cdef int ldo = dout.shape[1]
    cdef const floating* pdo = &dout[0, col]
    if bp.DGH == NULL:  # LSTM and RNN: the recurrent product's gradient is dG itself
        bp.DGH = bp.XG
    if gb_ih is not None:
        pgb_ih, pgb_hh = &gb_ih[0], &gb_hh[0]
    if whr != NULL:
        pgw_hr = &gw_hr[0, 0]
    if bp.ZH != NULL:
        memset(bp.ZH, 0, <Py_ssize_t>buf["ZH"].size * sizeof(floating))
    cdef unsigned int ftz
    blas_hold()
    with nogil:
        ftz = rf_ftz_enter()
        backward_steps(cell, relu, T, H, P, &bs[0], &off[0], reverse, &w_hh[0, 0], whr, mk, &dh[0, 0], pdc,
                       &bp, pdo, ldo)
        gemm(True, False, G * H, F, N, <floating>1, XG, G * H, &x[0, 0], F, <floating>1, &gw_ih[0, 0], F)
        if cell == GRU_RB:  # the r, z rows from the masked h, the n rows from s
            gemm(True, False, 2 * H, P, N, <floating>1, XG, G * H, <floating*>bp.HP, P, <floating>1, &gw_hh[0, 0], P)
            gemm(True, False, H, H, N, <floating>1, XG + 2 * H, G * H, <floating*>bp.HN, H, <floating>1,
                 &gw_hh[2 * H, 0], P)
        else:
            gemm(True, False, G * H, P, N, <floating>1, <floating*>bp.DGH, G * H, <floating*>bp.HP, P, <floating>1,
                 &gw_hh[0, 0], P)
        if whr != NULL:
            gemm(True, False, P, H, N, <floating>1, <floating*>bp.DH, P, <floating*>bp.M, H, <floating>1, pgw_hr, H)
        if pgb_ih != NULL:
            col_sums(N, G * H, XG, pgb_ih)
            col_sums(N, G * H, <floating*>bp.DGH, pgb_hh)
        gemm(False, False, N, F, G * H, <floating>1, XG, G * H, &w_ih[0, 0], F,
             <floating>1 if dx_accumulate else <floating>0, &dx[0, 0], F)
        rf_ftz_leave(ftz)
    blas_release()


def buffers(int cell, int H, int P, bint proj, int B, int N, bint training, bint with_backward=False):
    """The buffers :func:`forward` (and, with ``with_backward``, :func:`backward`) take, by name: shapes
    (rows, width) as the module's header lists them; ``P`` is the projection size (H without one)."""
    cdef int G = n_gates(cell)
    R = N if training else B
    shapes = {"XG": (N, G * H), "HP": (R, P)}
    if cell == LSTM:
        shapes.update({"CP": (N, H), "TC": (N, H)} if training else {"CN": (B, H)})
        if proj:
            shapes["M"] = (R, H)
    elif cell >= GRU:
        shapes["HN"] = (R, H)
        if cell == GRU:
            shapes["GH"] = (B, G * H)
        if training:
            shapes["HU"] = (N, H)
    if with_backward:
        shapes["TMP"] = (B, P)
        if cell == LSTM and proj:
            shapes.update(DH=(N, P), DM=(B, H), ZH=(B, H))
        elif cell == GRU:
            shapes["DGH"] = (N, G * H)
        elif cell == GRU_RB:
            shapes["DS"] = (B, H)
    return shapes
