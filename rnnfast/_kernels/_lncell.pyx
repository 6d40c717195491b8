# Layer-normalized LSTM and GRU (rf.nn.LSTM / GRU with layer_norm=True): forward and backward (BPTT) of one
# layer and direction over every time step, in one nogil call.
#
# Maths: csrc/rf_lncell.h (its header states the formulas and what is saved for backward):
#   LSTM: pre = gx LN(x W_ih^T) + bx + gh LN(h W_hh^T) + bh + b_ih + b_hh;  i, f, g, o;  c' = f c + i g;
#         h' = o tanh(gc LN(c') + bc)
#   GRU:  ax = gx LN(x W_ih^T) + bx + b_ih,  ah = gh LN(h W_hh^T) + bh + b_hh;
#         r = s(ax_r + ah_r), z = s(ax_z + ah_z), n = tanh(ax_n + r ah_n), h' = (1 - z) n + z h
#
# Layout: rnnfast._kernels._recurrent's packed time-major one (step t holds bs[t] rows at off[t], longest
# sequence first, padded steps absent; the caller gathers the reverse direction's input in reversed time).
# Forward, for each step and block of rows: ax = x_t W_ih^T and ah = h_{t-1} W_hh^T (float32: the packed
# small-M GEMM of csrc/rf_gemm.h, the weights packed once per call; float64: BLAS), then one fused pass per
# row (csrc/rf_lncell.h) - both normalizations, the gates, the state update, the cell's normalization.
# Training makes ax for every step beforehand, one BLAS GEMM over all N rows into the array that keeps
# LN(ax) for backward (as the plain kernels' training forward does).
# Backward, t descending: the fused row pass turns the saved normalized products into d ax, d ah in place and
# accumulates the gains' and biases' gradients per block; dh_{t-1} = d ah W_hh. After the loop, BLAS GEMMs
# over all N rows: dW_ih += d ax^T X, dW_hh += d ah^T H_prev, dX = d ax W_ih.
# Threads: the batch rows are independent, so the recurrence runs as row-block tasks in one prange, each with
# its own per-step products (float32: the packed GEMM; float64: BLAS).
# The GEMMs over all N rows are cut by rows among the same threads, BLAS held to one thread meanwhile (as
# rnnfast._kernels._recurrent does: BLAS's own threads spinning beside ours made LSTM medium training on two
# threads 1.33x the plain cell's time; see bench/layer_norm.py).
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

cimport numpy as cnp
import numpy as np

from rnnfast._kernels._blas cimport gemm
# BLAS held to one thread during a call, in the one count all the kernel modules share
from rnnfast._kernels._recurrent cimport blas_hold, blas_release

cnp.import_array()

cdef extern from "rf_math.h" nogil:
    unsigned int rf_ftz_enter()
    void rf_ftz_leave(unsigned int old)

cdef extern from "rf_gemm.h" nogil:
    ctypedef void (*rf_gemm_fn)(int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2,
                                int lda2, const float* packed, float beta, float* C, int ldc)
    rf_gemm_fn rf_gemm_packed_select()
    size_t rf_gemm_pf_bytes
    void rf_pack_b(int K, int N, const float* B, int ldb, int trans, float* packed)
    size_t rf_packed_size(int K, int N)

cdef extern from "rf_lncell.h" nogil:
    void rf_ln_lstm_fwd_f(int H, float eps, float* ax, float* ah, const float* gx, const float* gh,
                          const float* bs, const float* gc, const float* bc, const float* cp, float* gt, float* c,
                          float* y, float* xs, float* hs, float* st, float* cn, float* tc)
    void rf_ln_lstm_fwd_d(int H, double eps, double* ax, double* ah, const double* gx, const double* gh,
                          const double* bs, const double* gc, const double* bc, const double* cp, double* gt,
                          double* c, double* y, double* xs, double* hs, double* st, double* cn, double* tc)
    void rf_ln_gru_fwd_f(int H, float eps, float* ax, float* ah, const float* gx, const float* gh, const float* bs,
                         const float* bsh, const float* hp, float* gt, float* hpre, float* hq, float* y, float* xs,
                         float* hs, float* st)
    void rf_ln_gru_fwd_d(int H, double eps, double* ax, double* ah, const double* gx, const double* gh,
                         const double* bs, const double* bsh, const double* hp, double* gt, double* hpre,
                         double* hq, double* y, double* xs, double* hs, double* st)
    void rf_ln_lstm_bwd_f(int H, const float* gt, const float* cp, const float* cn, const float* tc, const float* gx,
                          const float* gh, const float* gc, const float* st, const float* dy, const float* dh,
                          float* dc, float* xs, float* hs, float* acc, float* tmp)
    void rf_ln_lstm_bwd_d(int H, const double* gt, const double* cp, const double* cn, const double* tc,
                          const double* gx,
                          const double* gh, const double* gc, const double* st, const double* dy, const double* dh,
                          double* dc, double* xs, double* hs, double* acc, double* tmp)
    void rf_ln_gru_bwd_f(int H, const float* gt, const float* hq, const float* hp, const float* gx, const float* gh,
                         const float* st, const float* dy, float* dh, float* xs, float* hs, float* acc, float* tmp)
    void rf_ln_gru_bwd_d(int H, const double* gt, const double* hq, const double* hp, const double* gx,
                         const double* gh, const double* st, const double* dy, double* dh, double* xs, double* hs, double* acc,
                         double* tmp)

cdef rf_gemm_fn gemm_packed2 = rf_gemm_packed_select()
# Prefetch the packed weights at every size (rf_gemm.h's threshold is for one product a step; here two
# products a step, x W_ih^T and h W_hh^T, share L2 with the step's scratch): LSTM medium inference, one
# thread, 53.6-56.3 ms at the 1 MB default, 49.5-51.1 ms always prefetching.
rf_gemm_pf_bytes = 0

# saved statistics per row: rstd_x, rstd_h, rstd_c and one float of padding
cdef enum:
    NSTAT = 4


cdef struct LnDir:
    # one layer and direction; shapes in elements, row-major; N packed rows, GH = G * H
    int lstm                 # 1 LSTM, 0 GRU
    int T, B, N, F, H, GH
    int nblk                 # row-block tasks
    int training
    double eps
    const int* bs            # IN (T,) rows active at each step
    const int* off           # IN (T + 1,) first packed row of each step
    const void* x            # IN (N, F) this direction's input
    const void* w_ih         # IN (GH, F)
    const void* w_hh         # IN (GH, H)
    const void* gx           # IN (GH,) gain of LN(x W_ih^T)
    const void* gh           # IN (GH,) gain of LN(h W_hh^T)
    const void* bs1          # IN (GH,) summed biases (header of rf_lncell.h)
    const void* bs2          # IN (GH,) GRU: the recurrent side's summed biases
    const void* gc           # IN (H,) LSTM: gain of LN(c)
    const void* bc           # IN (H,) LSTM: bias of LN(c)
    const void* h0           # IN (B, H)
    const void* c0           # IN (B, H) LSTM
    void* y                  # OUT (N, H)
    void* c                  # OUT (N, H) LSTM cells
    void* xs                 # training (N, GH): LN(x W_ih^T), backward: d ax; inference: scratch (B, GH)
    void* hs                 # training (N, GH): LN(h W_hh^T), backward: d ah; inference: scratch (B, GH)
    void* gt                 # training (N, GH): gates, backward: scratch; inference: unused (over xs)
    void* st                 # training (N, NSTAT) inverse standard deviations
    void* cn                 # LSTM training (N, H): LN(c)
    void* tc                 # LSTM training (N, H): tanh(gc LN(c) + bc)
    void* hq                 # GRU (N, H) training, (B, H) inference: ah_n
    void* tmp                # scratch (nblk, 2 GH)
    float* pih               # float32: W_ih^T packed (rf_gemm.h), forward
    float* phh               # float32: W_hh^T packed forward, W_hh packed backward
    # backward
    const void* dy           # IN (N, H) the output's gradient
    void* dh                 # IN/OUT (B, H) running gradient wrt h: dh_n in, dh0 out
    void* dc                 # IN/OUT (B, H) LSTM: dc_n in, dc0 out
    void* hprev              # scratch (N, H): the h each row saw before its step
    void* acc                # OUT (nblk, 4 GH + 2 H) per-task gains' and biases' gradients (rf_lncell.h)


cdef inline int block_row(const LnDir* p, int blk) noexcept nogil:
    """First row of row block ``blk`` (equal row counts)."""
    return <int>(<long long>p.B * blk // p.nblk)


cdef inline void step_gemm(int nb, int N, int K, const floating* A, int lda, const float* packed,
                           const floating* W, floating beta, floating* C, bint w_trans) noexcept nogil:
    """C (nb, N) := A (nb, K) . op(W) + beta C: the packed float32 GEMM, or BLAS for float64
    (op(W) = W^T, W (N, K) when ``w_trans``, else W (K, N))."""
    if floating is float:
        gemm_packed2(nb, N, K, A, lda, 0, A, 0, packed, beta, C, N)
    else:
        gemm(False, w_trans, nb, N, K, 1.0, A, lda, W, K if w_trans else N, beta, C, N)


cdef void fwd_task(const LnDir* p, int blk, floating* typed) noexcept nogil:
    """Forward of row block ``blk`` over every step."""
    cdef int H = p.H, GH = p.GH, t, nb, b1, i
    cdef int r0 = block_row(p, blk), r1 = block_row(p, blk + 1)
    cdef Py_ssize_t row, k, sr
    cdef const floating* hp
    cdef const floating* cp
    cdef floating* ax
    cdef floating* ah
    cdef floating* gt
    cdef floating* hq
    cdef floating* tmp = <floating*>p.tmp + <Py_ssize_t>blk * 2 * GH
    cdef floating* y = <floating*>p.y
    cdef floating* c = <floating*>p.c
    cdef floating* st
    for t in range(p.T):
        b1 = min(r1, p.bs[t])
        if b1 <= r0:
            break
        nb = b1 - r0
        row = p.off[t] + r0
        sr = row if p.training else r0  # the first row of the saved / scratch arrays
        ax = <floating*>p.xs + sr * GH
        ah = <floating*>p.hs + sr * GH
        gt = <floating*>p.gt + sr * GH if p.training else ax  # (inference: the gates over ax, in L2)
        if t == 0:
            hp = <const floating*>p.h0 + <Py_ssize_t>r0 * H
            cp = <const floating*>p.c0 + <Py_ssize_t>r0 * H if p.lstm else NULL
        else:
            hp = y + (<Py_ssize_t>p.off[t - 1] + r0) * H
            cp = c + (<Py_ssize_t>p.off[t - 1] + r0) * H if p.lstm else NULL
        if not p.training:  # (training: made for every step beforehand, see forward)
            step_gemm(nb, GH, p.F, <const floating*>p.x + row * p.F, p.F, p.pih,
                      <const floating*>p.w_ih, 0.0, ax, True)
        step_gemm(nb, GH, H, hp, H, p.phh, <const floating*>p.w_hh, 0.0, ah, True)
        for i in range(nb):
            k = i
            st = <floating*>p.st + (row + k) * NSTAT if p.training else NULL
            if p.lstm:
                _lstm_fwd_row(p, ax + k * GH, ah + k * GH, cp + k * H, gt + k * GH, c + (row + k) * H,
                              y + (row + k) * H, st, row + k)
            else:
                hq = <floating*>p.hq + (sr + k) * H
                _gru_fwd_row(p, ax + k * GH, ah + k * GH, hp + k * H, gt + k * GH, tmp, hq, y + (row + k) * H, st)


cdef inline void _lstm_fwd_row(const LnDir* p, floating* ax, floating* ah, const floating* cp, floating* gt,
                               floating* c, floating* y, floating* st, Py_ssize_t row) noexcept nogil:
    cdef floating* cn = <floating*>p.cn + row * p.H if p.training else NULL
    cdef floating* tc = <floating*>p.tc + row * p.H if p.training else NULL
    if floating is float:
        rf_ln_lstm_fwd_f(p.H, <float>p.eps, ax, ah, <const float*>p.gx, <const float*>p.gh, <const float*>p.bs1,
                         <const float*>p.gc, <const float*>p.bc, cp, gt, c, y, NULL, NULL, st, cn, tc)
    else:
        rf_ln_lstm_fwd_d(p.H, p.eps, ax, ah, <const double*>p.gx, <const double*>p.gh, <const double*>p.bs1,
                         <const double*>p.gc, <const double*>p.bc, cp, gt, c, y, NULL, NULL, st, cn, tc)


cdef inline void _gru_fwd_row(const LnDir* p, floating* ax, floating* ah, const floating* hp, floating* gt,
                              floating* hpre, floating* hq, floating* y, floating* st) noexcept nogil:
    if floating is float:
        rf_ln_gru_fwd_f(p.H, <float>p.eps, ax, ah, <const float*>p.gx, <const float*>p.gh, <const float*>p.bs1,
                        <const float*>p.bs2, hp, gt, hpre, hq, y, NULL, NULL, st)
    else:
        rf_ln_gru_fwd_d(p.H, p.eps, ax, ah, <const double*>p.gx, <const double*>p.gh, <const double*>p.bs1,
                        <const double*>p.bs2, hp, gt, hpre, hq, y, NULL, NULL, st)


cdef void bwd_task(const LnDir* p, int blk, floating* typed) noexcept nogil:
    """Backward of row block ``blk`` over every step, t descending; fills its rows of hprev."""
    cdef int H = p.H, GH = p.GH, t, nb, b1, i
    cdef int r0 = block_row(p, blk), r1 = block_row(p, blk + 1)
    cdef Py_ssize_t row, k
    cdef floating* tmp = <floating*>p.tmp + <Py_ssize_t>blk * 2 * GH
    cdef floating* acc = <floating*>p.acc + <Py_ssize_t>blk * (4 * GH + 2 * H)
    cdef floating* hprev = <floating*>p.hprev
    cdef floating* dh = <floating*>p.dh
    cdef const floating* cp
    cdef const floating* src
    for t in range(p.T - 1, -1, -1):
        b1 = min(r1, p.bs[t])
        if b1 <= r0:
            continue
        nb = b1 - r0
        row = p.off[t] + r0
        src = <const floating*>p.h0 + <Py_ssize_t>r0 * H if t == 0 else \
            <const floating*>p.y + (<Py_ssize_t>p.off[t - 1] + r0) * H
        memcpy(hprev + row * H, src, <Py_ssize_t>nb * H * sizeof(floating))
        for i in range(nb):
            k = i
            if p.lstm:
                cp = <const floating*>p.c0 + (r0 + k) * H if t == 0 else \
                    <const floating*>p.c + (p.off[t - 1] + r0 + k) * H
                _lstm_bwd_row(p, row + k, r0 + k, cp, acc, tmp)
            else:
                _gru_bwd_row(p, row + k, r0 + k, acc, tmp)
        # dh_{t-1} (+)= d ah W_hh (GRU: on top of the direct part dh z)
        step_gemm(nb, H, GH, <floating*>p.hs + row * GH, GH, p.phh, <const floating*>p.w_hh,
                  0.0 if p.lstm else 1.0, dh + <Py_ssize_t>r0 * H, False)


cdef inline void _lstm_bwd_row(const LnDir* p, Py_ssize_t row, Py_ssize_t b, const floating* cp, floating* acc,
                               floating* tmp) noexcept nogil:
    cdef Py_ssize_t H = p.H, GH = p.GH
    if floating is float:
        rf_ln_lstm_bwd_f(p.H, <float*>p.gt + row * GH, cp, <float*>p.cn + row * H, <const float*>p.tc + row * H,
                         <const float*>p.gx, <const float*>p.gh, <const float*>p.gc, <const float*>p.st + row * NSTAT,
                         <const float*>p.dy + row * H, <const float*>p.dh + b * H, <float*>p.dc + b * H,
                         <float*>p.xs + row * GH, <float*>p.hs + row * GH, acc, tmp)
    else:
        rf_ln_lstm_bwd_d(p.H, <double*>p.gt + row * GH, cp, <double*>p.cn + row * H, <const double*>p.tc + row * H,
                         <const double*>p.gx, <const double*>p.gh, <const double*>p.gc,
                         <const double*>p.st + row * NSTAT, <const double*>p.dy + row * H,
                         <const double*>p.dh + b * H, <double*>p.dc + b * H, <double*>p.xs + row * GH,
                         <double*>p.hs + row * GH, acc, tmp)


cdef inline void _gru_bwd_row(const LnDir* p, Py_ssize_t row, Py_ssize_t b, floating* acc,
                              floating* tmp) noexcept nogil:
    cdef Py_ssize_t H = p.H, GH = p.GH
    if floating is float:
        rf_ln_gru_bwd_f(p.H, <float*>p.gt + row * GH, <float*>p.hq + row * H, <const float*>p.hprev + row * H,
                        <const float*>p.gx, <const float*>p.gh, <const float*>p.st + row * NSTAT,
                        <const float*>p.dy + row * H, <float*>p.dh + b * H, <float*>p.xs + row * GH,
                        <float*>p.hs + row * GH, acc, tmp)
    else:
        rf_ln_gru_bwd_d(p.H, <double*>p.gt + row * GH, <double*>p.hq + row * H, <const double*>p.hprev + row * H,
                        <const double*>p.gx, <const double*>p.gh, <const double*>p.st + row * NSTAT,
                        <const double*>p.dy + row * H, <double*>p.dh + b * H, <double*>p.xs + row * GH,
                        <double*>p.hs + row * GH, acc, tmp)


cdef void run_tasks(const LnDir* p, bint backward, floating* typed) noexcept nogil:
    """Every row block's recurrence: serial with one block, else one prange."""
    cdef int blk
    cdef unsigned int ftz
    if p.nblk <= 1:
        ftz = rf_ftz_enter()
        if backward:
            bwd_task(p, 0, typed)
        else:
            fwd_task(p, 0, typed)
        rf_ftz_leave(ftz)
        return
    for blk in prange(p.nblk, num_threads=p.nblk, schedule="static", chunksize=1):
        ftz = rf_ftz_enter()
        if backward:
            bwd_task(p, blk, typed)
        else:
            fwd_task(p, blk, typed)
        rf_ftz_leave(ftz)


cdef void par_gemm(int nth, bint trans_a, bint trans_b, int M, int N, int K, const floating* A, int lda,
                   const floating* B, int ldb, floating beta, floating* C, int ldc) noexcept nogil:
    """C := op(A) op(B) + beta C with the M rows of C cut in one block per thread (BLAS held to one); row
    block [m0, m1) starts at row m0 of A, or at its column m0 when A is transposed."""
    cdef int nblk = min(nth, M // 16), per, blk, m0, m1
    if nblk <= 1:
        gemm(trans_a, trans_b, M, N, K, <floating>1, A, lda, B, ldb, beta, C, ldc)
        return
    per = ((M + nblk - 1) // nblk + 15) // 16 * 16
    for blk in prange(nblk, num_threads=nblk, schedule="static", chunksize=1):
        m0 = min(M, blk * per)
        m1 = min(M, m0 + per)
        if m1 > m0:
            gemm(trans_a, trans_b, m1 - m0, N, K, <floating>1,
                 A + (<Py_ssize_t>m0 if trans_a else <Py_ssize_t>m0 * lda), lda, B, ldb, beta,
                 C + <Py_ssize_t>m0 * ldc, ldc)


cdef void weight_grads(const LnDir* p, int nth, floating* dw_ih, floating* dw_hh, floating* dx, bint dx_add,
                       floating* typed) noexcept nogil:
    """After the backward recurrence: dW_ih += d ax^T X, dW_hh += d ah^T H_prev, dX (+)= d ax W_ih."""
    cdef int N = p.N, GH = p.GH, F = p.F, H = p.H
    par_gemm(nth, True, False, GH, F, N, <floating*>p.xs, GH, <const floating*>p.x, F, <floating>1, dw_ih, F)
    par_gemm(nth, True, False, GH, H, N, <floating*>p.hs, GH, <floating*>p.hprev, H, <floating>1, dw_hh, H)
    if dx != NULL:
        par_gemm(nth, False, False, N, F, GH, <floating*>p.xs, GH, <const floating*>p.w_ih, F,
                 <floating>(1 if dx_add else 0), dx, F)


# ----------------------------------------------------------------------------------------------
# Python entry points: check the arrays the layer prepared, gather pointers, run without the GIL.

cdef inline void* _ptr(dict a, str name, object dt, Py_ssize_t size) except NULL:
    """The data pointer of ``a[name]``: an array of dtype ``dt``, C-contiguous, at least ``size`` elements."""
    cdef cnp.ndarray arr
    v = a.get(name)
    if v is None:
        raise ValueError(f"internal: array {name} missing")
    arr = <cnp.ndarray?>v
    if arr.dtype != dt or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or arr.size < size:
        raise ValueError(f"internal: array {name} has dtype {arr.dtype}, size {arr.size}, "
                         f"needs {dt} C-contiguous of size >= {size}")
    return cnp.PyArray_DATA(arr) if size > 0 else <void*>1


def buffer_shapes(bint lstm, int F, int H, int B, int N, int nblk, bint training, bint backward):
    """Shapes of the arrays one layer and direction needs besides parameters and states, by name (the one
    table of them; see LnDir)."""
    cdef int GH = (4 if lstm else 3) * H
    R = N if training else B
    shapes = {"y": (N, H), "xs": (R, GH), "hs": (R, GH), "gt": (R if training else 1, GH), "tmp": (nblk, 2 * GH),
              "pih": (rf_packed_size(F, GH),), "phh": (max(rf_packed_size(H, GH), rf_packed_size(GH, H)),)}
    if lstm:
        shapes["c"] = (N, H)
    else:
        shapes["hq"] = (R, H)
    if training:
        shapes["st"] = (N, NSTAT)
        if lstm:
            shapes.update(cn=(N, H), tc=(N, H))
    if backward:
        shapes.update(hprev=(N, H), acc=(nblk, 4 * GH + 2 * H))
    return shapes


cdef int _fill(LnDir* p, bint lstm, bs, off, int T, int B, int N, int F, int H, int nblk, bint training,
               double eps, dict a, object dt) except -1:
    cdef int GH = (4 if lstm else 3) * H
    cdef Py_ssize_t R = N if training else B
    cdef cnp.ndarray bsa = np.ascontiguousarray(bs, dtype=np.intc)
    cdef cnp.ndarray offa = np.ascontiguousarray(off, dtype=np.intc)
    if bsa.shape[0] != T or offa.shape[0] != T + 1 or nblk < 1 or nblk > max(B, 1):
        raise ValueError("internal: inconsistent layer-norm call")
    a["_bs"], a["_off"] = bsa, offa  # kept alive by the caller's dict for the call
    p.lstm, p.T, p.B, p.N, p.F, p.H, p.GH = lstm, T, B, N, F, H, GH
    p.nblk, p.training, p.eps = nblk, training, eps
    p.bs = <const int*>cnp.PyArray_DATA(bsa)
    p.off = <const int*>cnp.PyArray_DATA(offa)
    p.x = _ptr(a, "x", dt, <Py_ssize_t>N * F)
    p.w_ih = _ptr(a, "w_ih", dt, <Py_ssize_t>GH * F)
    p.w_hh = _ptr(a, "w_hh", dt, <Py_ssize_t>GH * H)
    p.gx = _ptr(a, "gx", dt, GH)
    p.gh = _ptr(a, "gh", dt, GH)
    p.bs1 = _ptr(a, "bs1", dt, GH)
    p.h0 = _ptr(a, "h0", dt, <Py_ssize_t>B * H)
    p.y = _ptr(a, "y", dt, <Py_ssize_t>N * H)
    p.xs = _ptr(a, "xs", dt, R * GH)
    p.hs = _ptr(a, "hs", dt, R * GH)
    p.gt = _ptr(a, "gt", dt, R * GH if training else GH)
    p.tmp = _ptr(a, "tmp", dt, <Py_ssize_t>nblk * 2 * GH)
    p.st = _ptr(a, "st", dt, <Py_ssize_t>N * NSTAT) if training else NULL
    p.bs2 = p.gc = p.bc = p.c0 = p.c = p.cn = p.tc = p.hq = NULL
    if lstm:
        p.gc, p.bc = _ptr(a, "gc", dt, H), _ptr(a, "bc", dt, H)
        p.c0 = _ptr(a, "c0", dt, <Py_ssize_t>B * H)
        p.c = _ptr(a, "c", dt, <Py_ssize_t>N * H)
        if training:
            p.cn, p.tc = _ptr(a, "cn", dt, <Py_ssize_t>N * H), _ptr(a, "tc", dt, <Py_ssize_t>N * H)
    else:
        p.bs2 = _ptr(a, "bs2", dt, GH)
        p.hq = _ptr(a, "hq", dt, R * H)
    p.pih = p.phh = NULL
    if dt == np.float32:
        p.pih = <float*>_ptr(a, "pih", dt, rf_packed_size(F, GH))
        p.phh = <float*>_ptr(a, "phh", dt, max(rf_packed_size(H, GH), rf_packed_size(GH, H)))
    p.dy = p.dh = p.dc = p.hprev = p.acc = NULL
    return 0


cdef void net_forward(LnDir* p, int nth, floating* typed) noexcept nogil:
    """Training: ax for every step first (one GEMM over all N rows); then the recurrence."""
    if p.training:
        par_gemm(nth, False, True, p.N, p.GH, p.F, <const floating*>p.x, p.F, <const floating*>p.w_ih, p.F,
                 <floating>0, <floating*>p.xs, p.GH)
    if floating is float:
        if not p.training:
            rf_pack_b(p.F, p.GH, <const float*>p.w_ih, p.F, 1, p.pih)
        rf_pack_b(p.H, p.GH, <const float*>p.w_hh, p.H, 1, p.phh)
    run_tasks(p, False, typed)


def forward(bint lstm, bs, off, int T, int B, int N, int F, int H, int nblk, bint training, double eps,
            dict arrays, int nthreads=1):
    """Forward of one layer and direction over the packed rows (arrays by name: LnDir's fields, shapes from
    ``buffer_shapes`` and the parameters; writes ``y``, ``c`` and, training, what backward reads).
    ``nthreads`` share the GEMMs over all rows; ``nblk`` row blocks the recurrence."""
    cdef LnDir p
    dt = arrays["x"].dtype
    _fill(&p, lstm, bs, off, T, B, N, F, H, nblk, training, eps, arrays, dt)
    cdef int nth = max(1, min(nthreads, 256))
    blas_hold()
    try:
        with nogil:
            if p.pih != NULL:
                net_forward(&p, nth, <float*>NULL)
            else:
                net_forward(&p, nth, <double*>NULL)
    finally:
        blas_release()


def backward(bint lstm, bs, off, int T, int B, int N, int F, int H, int nblk, double eps, dict arrays,
             dw_ih, dw_hh, dx, bint dx_add, int nthreads=1):
    """Backward of one layer and direction after a training ``forward`` with the same ``arrays``, which
    now also hold ``dy`` (N, H), ``dh`` / ``dc`` (B, H: the final states' gradients in, the initial
    states' out), ``hprev`` and ``acc`` (zeroed here; the per-task gains' and biases' gradients out).
    dW_ih, dW_hh accumulate; ``dx`` (N, F) receives (``dx_add``: gets added) the input gradient, or None."""
    cdef LnDir p
    dt = arrays["x"].dtype
    cdef int GH = (4 if lstm else 3) * H
    _fill(&p, lstm, bs, off, T, B, N, F, H, nblk, True, eps, arrays, dt)
    p.dy = _ptr(arrays, "dy", dt, <Py_ssize_t>N * H)
    p.dh = _ptr(arrays, "dh", dt, <Py_ssize_t>B * H)
    p.dc = _ptr(arrays, "dc", dt, <Py_ssize_t>B * H) if lstm else NULL
    p.hprev = _ptr(arrays, "hprev", dt, <Py_ssize_t>N * H)
    p.acc = _ptr(arrays, "acc", dt, <Py_ssize_t>nblk * (4 * GH + 2 * H))
    cdef void* dwi = _ptr({"dw_ih": dw_ih}, "dw_ih", dt, <Py_ssize_t>GH * F)
    cdef void* dwh = _ptr({"dw_hh": dw_hh}, "dw_hh", dt, <Py_ssize_t>GH * H)
    cdef void* dxp = NULL if dx is None else _ptr({"dx": dx}, "dx", dt, <Py_ssize_t>N * F)
    cdef int nth = max(1, min(nthreads, 256))
    blas_hold()
    try:
        with nogil:
            memset(p.acc, 0, <Py_ssize_t>nblk * (4 * GH + 2 * H) * (4 if p.pih != NULL else 8))
            if p.pih != NULL:
                rf_pack_b(GH, H, <const float*>p.w_hh, H, 0, p.phh)
                run_tasks(&p, True, <float*>NULL)
                weight_grads(&p, nth, <float*>dwi, <float*>dwh, <float*>dxp, dx_add, <float*>NULL)
            else:
                run_tasks(&p, True, <double*>NULL)
                weight_grads(&p, nth, <double*>dwi, <double*>dwh, <double*>dxp, dx_add, <double*>NULL)
    finally:
        blas_release()
