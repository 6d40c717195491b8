# Whole-network forward and backward (BPTT) for stacked, optionally bidirectional LSTM / GRU / RNN.
#
# Layout. Sequences are packed time-major, sorted by length (longest first), like PyTorch's
# PackedSequence: step t holds bs[t] rows at offsets off[t] .. off[t] + bs[t]; the rows active at step t
# are a prefix of those of step t-1, so padded steps are never stored nor computed. N = sum(lengths).
# The reverse direction runs on its own packed copy of the input in per-sequence reversed time
# (row (s, b) holds time L_b - 1 - s); ``rev[n]`` maps that row to its forward-order row.
#
# Forward of one layer and direction (G gates of H units, F input features):
#   XW   = X (N, F) . W_ih^T                       one GEMM over every step (BLAS threads)
#   for t: G_t += h_{t-1} . W_hh^T  (rows of G_t)  one GEMM per step, all gates, beta = 1
#          fused pass (_cells.pxd): bias, activations, state update, h_t written where it belongs.
# float32 LSTM / RNN inference on the packed kernel skips XW: each step makes
# G_t = [x_t, h_{t-1}] . [W_ih, W_hh]^T in one product into a (B, GH) scratch, so no (N, GH) array goes
# through memory; with equal lengths it reads the caller's input and writes the caller's output in
# place (Dir.xts / yts). Batch 1 has its own kernel (csrc/rf_latency.h).
# The reset-before GRU (CELL_GRU_RB, Keras reset_after=False) splits each step's recurrent product in two,
# h . W_hrz^T then (r h) . W_hn^T, with a fused pass after each (grb_step_fwd / grb_step_bwd; in the batch-1
# and few-rows kernels a barrier after each); its maths is at the top of csrc/rf_cells_impl.h.
# Backward: for t descending, the fused backward pass makes dG_t in place of the saved gates, then
# dh_{t-1} = dG_t . W_hh. After the loop, over all N rows: dW_ih += dG^T X, dW_hh += dG^T H_prev
# (H_prev holds h0 for t = 0; LSTM / RNN make both in one product with [X, H_prev]), db += sum dG,
# dX = dG . W_ih, all of a layer's products in one parallel region (par_gemms).
#
# Threads: every parallel loop is ours (OpenMP), and BLAS runs single-threaded inside it. The
# recurrence of different batch rows (and of the two directions) is independent, so it runs as
# (direction, block of rows) tasks in one prange per layer, each task doing its own per-step GEMMs with
# no synchronisation between steps; the big GEMMs outside the loop share out their work by rows.
# scipy's OpenBLAS only has a process-wide thread count (its "local" setter is global too), so while any
# rnnfast call runs it is held at 1 (``_blas_hold`` / ``_blas_release``, counted under the GIL) and
# restored after the last one. Nothing here allocates per step nor touches a Python object in the loops.
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcmp, memcpy, memset
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint64_t

cimport numpy as cnp
import numpy as np

from rnnfast._kernels._blas cimport gemm
from rnnfast._kernels._cells cimport (lstm_fwd, lstm_bwd, gru_fwd, gru_bwd, grb_fwd_rz, grb_fwd_n, grb_bwd_nz,
                                      grb_bwd_r, rnn_fwd, rnn_bwd)

cnp.import_array()

cpdef enum Cell:
    # the cell kinds, as the kernels and csrc/ number them
    CELL_RNN = 0
    CELL_LSTM = 1
    CELL_GRU = 2
    CELL_GRU_RB = 3     # GRU, reset before (Keras reset_after=False; maths in csrc/rf_cells_impl.h)


cdef inline int n_gates(int cell) noexcept nogil:
    """G, the gates per unit of a cell."""
    return 4 if cell == CELL_LSTM else (3 if cell == CELL_GRU or cell == CELL_GRU_RB else 1)


cdef inline bint is_gru(int cell) noexcept nogil:
    """Either GRU: gates r, z, n, whose n gate takes its recurrent product apart."""
    return cell == CELL_GRU or cell == CELL_GRU_RB

cdef extern from "rf_math.h" nogil:
    unsigned int rf_ftz_enter()
    void rf_ftz_leave(unsigned int old)

cdef extern from "rf_hash.h" nogil:
    size_t rf_hash_nchunks(size_t n)
    void rf_hash_chunks(const unsigned char* p, size_t n, size_t c0, size_t c1, uint64_t* digests)
    void rf_hash_combine(const uint64_t* digests, size_t nc, uint64_t* out)
    int rf_hash_use(int isa)
    void rf_hash_setup()

cdef extern from "rf_gemm.h" nogil:
    enum: RF_NR
    int rf_gemm_kc
    size_t rf_gemm_pf_bytes
    int rf_few_prefetch
    size_t rf_serp_min_bytes
    int rf_gemv_nb_passes(int nb)
    ctypedef void (*rf_gemm_fn)(int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2,
                                int lda2, const float* packed, float beta, float* C, int ldc)
    ctypedef void (*rf_gemv_rows_fn)(int N, int K1, const float* A1, int lda1, const float* x1, int K2,
                                     const float* A2, int lda2, const float* x2, float beta, float* y)
    ctypedef void (*rf_gemv_nb_fn)(int nb, int N, int K1, const float* A1, int lda1, const float* X1, int ldx1,
                                   int K2, const float* A2, int lda2, const float* X2, int ldx2, float beta,
                                   float* Y, int ldy, int pf)
    int rf_nb_pf(double nbytes)
    rf_gemm_fn rf_gemm_packed_select()
    rf_gemv_rows_fn rf_gemv_rows_select()
    rf_gemv_nb_fn rf_gemv_nb_select()
    void rf_gemm_bt_kept_panels(rf_gemm_fn gemm, int M, int N, int K, const float* A, int lda, const float* Bt,
                                int ldb, int p0, int p1, int pack, float* packed, float* C, int ldc)
    ctypedef void (*rf_gemv_panels_fn)(int n, int K1, const float* x1, int K2, const float* x2, const float* P,
                                       float beta, float* y)
    rf_gemv_panels_fn rf_gemv_panels_select()
    ctypedef void (*rf_pack_panels_fn)(int n, int K1, const float* A1, int lda1, int K2, const float* A2,
                                       int lda2, float* P)
    rf_pack_panels_fn rf_pack_panels_select()
    ctypedef void (*rf_gemv_cols_fn)(int K, int n, const float* W, int ldw, const float* v, float beta, float* y)
    rf_gemv_cols_fn rf_gemv_cols_select()
    void rf_pack_b(int K, int N, const float* B, int ldb, int trans, float* packed)
    void rf_pack_bt2(int K1, const float* Bt1, int ldb1, int K2, const float* Bt2, int ldb2, int N,
                     int p0, int p1, float* packed)
    size_t rf_packed_size(int K, int N)
    void rf_gemm_bt_panels(rf_gemm_fn gemm, int M, int N, int K, const float* A, int lda, const float* Bt,
                           int ldb, int p0, int p1, float* packed, float* C, int ldc)
    size_t rf_gemm_tn_scratch(int P)
    void rf_gemm_tn_cols(rf_gemm_fn gemm, int P, int Q, int K, const float* L, int ldl, const float* R, int ldr,
                         int q0, int q1, float beta, float* C, int ldc, float* scratch, float* sum1, float* sum2)

cdef extern from "rf_units.h" nogil:
    size_t rf_units_fwd_pack_size(int G, int KX, int H, int nth)
    size_t rf_units_bwd_pack_size(int G, int H, int nth)
    int rf_units_forward(int cell, int relu, int T, const int* bs, const int* off, int F, int H, int nth,
                         long spin_ns, rf_gemm_fn gemm, float* pack, int* pack_nk, const float* x, int ldx,
                         Py_ssize_t xts,
                         const float* w_ih, const float* w_hh, const float* b, const float* bhn,
                         const float* h0, const float* c0, float* gates, int gscratch, float* gh, float* y,
                         int ldy, Py_ssize_t yts, float* c, float* tc, float* hn)
    int rf_units_backward(int cell, int relu, int T, const int* bs, const int* off, int H, int nth,
                          long spin_ns, rf_gemm_fn gemm, float* pack, const float* w_hh, const float* h0,
                          const float* c0, float* gates, float* hn, const float* y, int ldy, const float* c,
                          const float* tc, const float* dy, int lddy, float* dh, float* dc, float* ds)

cdef extern from "rf_latency.h" nogil:
    long RF_SPIN_NS
    int rf_cpu_now()
    void rf_leave_cpu(int caller)   # a pool thread on the caller's CPU moves off it
    int rf_latency_forward(int cell, int relu, int T, int F, int H, int nth, long spin_ns, rf_gemv_rows_fn gemv,
                           rf_gemv_panels_fn gemvp, rf_pack_panels_fn packp, float* pack, int* pack_nk,
                           const float* x, int ldx, const float* w_ih, const float* w_hh, const float* b,
                           const float* bhn, const float* h0, const float* c0, float* gates, float* gh_full,
                           float* y, int ldy, float* c, float* tc, float* hn)
    int rf_latency_backward(int cell, int relu, int T, int H, int nth, long spin_ns, rf_gemv_cols_fn gemvc,
                            const float* w_hh, const float* h0, const float* c0, float* gates, float* hn,
                            const float* y, int ldy, const float* c, const float* tc, const float* dy,
                            int lddy, float* dh, float* dc, float* ds)

# C (M, N) := [A1 (M, K1), A2 (M, K2)] . packed B + beta C for the per-step products (csrc/rf_gemm.h),
# chosen for this CPU
cdef rf_gemm_fn gemm_packed2 = rf_gemm_packed_select()
cdef rf_gemv_rows_fn gemv_rows = rf_gemv_rows_select()
cdef rf_gemv_nb_fn gemv_nb = rf_gemv_nb_select()
cdef rf_gemv_panels_fn gemv_panels = rf_gemv_panels_select()
cdef rf_pack_panels_fn pack_panels = rf_pack_panels_select()
cdef rf_gemv_cols_fn gemv_cols = rf_gemv_cols_select()
# how long (ns) a batch-1 kernel thread spins at a step's barrier before it counts the cores as busy
cdef long latency_spin_ns = RF_SPIN_NS
# the most OpenMP threads any call starts, whatever it is asked for (rnnfast._validation.MAX_THREADS, set at
# import): the Python side refuses more, this is the defence in depth (100,000 threads crashed the process)
cdef int max_threads = 256


cdef inline int _cap_threads(int n) noexcept nogil:
    """``n`` within [1, max_threads]."""
    return max(1, min(n, max_threads))


def set_max_threads(int n):
    """Set the most threads a kernel call starts (rnnfast._validation.MAX_THREADS); returns the previous value."""
    global max_threads
    old = max_threads
    max_threads = max(1, n)
    return old


cdef inline Py_ssize_t _latency_pack_size(int cell, int F, int H, int nthreads) noexcept nogil:
    cdef Py_ssize_t G = n_gates(cell)
    return G * (H + 16 * _cap_threads(nthreads)) * <Py_ssize_t>(F + H)


def latency_pack_size(int cell, int F, int H, int nthreads):
    """Floats the batch-1 kernel needs to pack a layer's weights into panels on ``nthreads`` threads
    (each thread's share of the units rounded up to 16)."""
    return _latency_pack_size(cell, F, H, nthreads)


def units_pack_size(int cell, int F, int H, int nthreads, bint step, bint backward):
    """Floats the few-rows kernel (csrc/rf_units.h) needs for its per-thread packed weights: forward
    (``step``: the step makes x_t W_ih^T itself) or backward, enough for any count of threads up to
    ``nthreads`` (OpenMP may start fewer)."""
    cdef int G = n_gates(cell)
    cdef size_t most = 0, size
    cdef int n
    for n in range(1, _cap_threads(nthreads) + 1):
        size = rf_units_bwd_pack_size(G, H, n) if backward else rf_units_fwd_pack_size(G, F if step else 0, H, n)
        most = max(most, size)
    return most


def set_tn_rule(int min_rows, long max_out):
    """Set when LSTM / RNN float32 training makes its weight gradients on rf's kernel: from ``min_rows`` rows
    (TN_MIN_ROWS) up to ``max_out`` elements of the product (TN_MAX_OUT); tests and benchmarks (0, a large
    value: always; a large min_rows: BLAS). Returns the previous pair."""
    global TN_MIN_ROWS, TN_MAX_OUT
    old = (TN_MIN_ROWS, TN_MAX_OUT)
    TN_MIN_ROWS, TN_MAX_OUT = max(0, min_rows), max(0, max_out)
    return old


def gemm_tn_scratch(int P):
    """Floats of one thread's scratch for gemm_tn's product with P rows (rf_gemm_tn_scratch)."""
    return rf_gemm_tn_scratch(P)


def gemm_tn(float[:, ::1] L, float[:, ::1] R, float[:, ::1] C, float beta=0.0, int nthreads=1, colsum=None):
    """C := L^T R + beta C on rf's kernel (rf_gemm_tn_cols, the weight gradients' product; tests), the
    columns of C split among ``nthreads`` threads as whole panels; ``colsum`` (float32 (Q,), or None): R's
    column sums added to it in the same pass. Returns C."""
    cdef int K = L.shape[0], P = L.shape[1], Q = R.shape[1]
    if R.shape[0] != K or C.shape[0] != P or C.shape[1] != Q:
        raise ValueError("gemm_tn: L (K, P), R (K, Q), C (P, Q)")
    nthreads = _cap_threads(nthreads)
    cdef int np_ = (Q + RF_NR - 1) // RF_NR
    cdef cnp.ndarray scratch = np.empty(nthreads * rf_gemm_tn_scratch(P), np.float32)
    cdef float* sp = <float*>cnp.PyArray_DATA(scratch)
    cdef float* ps = NULL
    cdef int k
    if colsum is not None:
        ps = <float*>_ptr(colsum, np.float32, Q, "colsum")
    if P == 0 or Q == 0:
        return C
    with nogil:
        for k in prange(nthreads, num_threads=nthreads, schedule="static", chunksize=1):
            rf_gemm_tn_cols(gemm_packed2, P, Q, K, &L[0, 0] if K > 0 else NULL, P, &R[0, 0] if K > 0 else NULL, Q,
                            np_ * k // nthreads * RF_NR, np_ * (k + 1) // nthreads * RF_NR, beta, &C[0, 0], Q,
                            sp + <size_t>k * rf_gemm_tn_scratch(P), ps, NULL)
    return C


def set_min_rows_per_task(int n):
    """Set the fewest rows of a row task (rnnfast._planner's TABLE["rows_per_task"]); returns the previous
    value."""
    global MIN_ROWS_PER_TASK
    old = MIN_ROWS_PER_TASK
    MIN_ROWS_PER_TASK = max(1, n)
    return old


def ftz_enter():
    """Set flush-to-zero and denormals-are-zero on the calling thread (SSE MXCSR, as the kernels' own
    threads run); returns the previous state for :func:`ftz_leave` (0 where the CPU has none)."""
    return rf_ftz_enter()


def ftz_leave(unsigned int old):
    """Restore the calling thread's state that :func:`ftz_enter` returned."""
    rf_ftz_leave(old)


def set_gemm_kc(int kc):
    """Set the K chunk of the packed per-step kernel (csrc/rf_gemm.h; <= 0: none); returns the previous
    value. For tests and measurements."""
    global rf_gemm_kc
    old = rf_gemm_kc
    rf_gemm_kc = kc
    return old


def set_gemm_pf_bytes(size_t nbytes):
    """Set the size of packed weights (bytes) from which the packed per-step kernel prefetches them
    (csrc/rf_gemm.h); returns the previous value. For tests and measurements."""
    global rf_gemm_pf_bytes
    old = rf_gemm_pf_bytes
    rf_gemm_pf_bytes = nbytes
    return old


def set_few_prefetch(int on):
    """Switch the few-rows product's software prefetching (csrc/rf_gemm.h, rf_few_prefetch: on by default
    except on AMD processors); returns the previous setting. Speed only: the results are the same. For
    tests and measurements."""
    global rf_few_prefetch
    old = rf_few_prefetch
    rf_few_prefetch = 1 if on else 0
    return old


def few_prefetch():
    """Whether the few-rows product prefetches its panels in software (see :func:`set_few_prefetch`)."""
    return bool(rf_few_prefetch)


def set_serp_min_bytes(size_t nbytes):
    """Set the weight bytes a thread of the batch-1 and few-rows kernels must read a step before odd steps
    read them in reverse (csrc/rf_gemm.h's serpentine); returns the previous value. For tests."""
    global rf_serp_min_bytes
    old = rf_serp_min_bytes
    rf_serp_min_bytes = nbytes
    return old


def set_latency_spin_ns(long ns):
    """Set how long a batch-1 kernel thread waits at a barrier before it finds the cores busy and the
    call goes on with one thread (csrc/rf_latency.h); returns the previous value. For tests."""
    global latency_spin_ns
    old = latency_spin_ns
    latency_spin_ns = max(0, ns)
    return old


cdef inline void gemm_packed(int M, int N, int K, const float* A, int lda, const float* packed, float beta,
                             float* C, int ldc) noexcept nogil:
    """C (M, N) := A (M, K) . packed B + beta C."""
    gemm_packed2(M, N, K, A, lda, 0, A, 0, packed, beta, C, ldc)


def packed_size(int K, int N):
    """Floats of a (K, N) right operand packed for ``gemm_packed``."""
    return rf_packed_size(K, N)

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn _blas_set = NULL
cdef get_threads_fn _blas_get = NULL
cdef int _blas_holders = 0    # rnnfast calls running now (changed only with the GIL held)
cdef int _blas_saved = 0      # BLAS thread count to restore when the last one ends


# Fewest rows worth a task of their own: below this a thread costs more than it saves. The planner's
# TABLE["rows_per_task"] sets it (set_min_rows_per_task), so the two never disagree.
cdef int MIN_ROWS_PER_TASK = 4
# The input projection over all steps of a float32 call (hoist) reads W_ih's rows in place (rf_gemv_nb,
# as _recurrent.matmul does) rather than packing them (par_proj) for 4 to proj_rows_max rows that
# rf_gemv_nb takes in one pass over W_ih (groups of 4, 3 or 5), on W_ih of proj_min_bytes or more with
# proj_min_k inputs or more: the planner's TABLE sets them (proj_in_place_*, with what they model;
# set_proj_in_place), so the two never disagree. A frozen layer does the same (it keeps its pack for
# other calls): its results stay the original's bit for bit.
cdef int proj_rows_max = 32
cdef size_t proj_min_bytes = 1 << 20
cdef int proj_min_k = 128


def set_proj_in_place(int rows_max, size_t min_bytes, int min_k):
    """Set where the input projection reads W_ih's rows in place (rows_max 0: never)."""
    global proj_rows_max, proj_min_bytes, proj_min_k
    proj_rows_max, proj_min_bytes, proj_min_k = rows_max, min_bytes, min_k


cdef inline bint _proj_in_place(int M, int F, int GH) noexcept nogil:
    return (M <= proj_rows_max and M >= 4 and rf_gemv_nb_passes(M) == 1 and F >= proj_min_k
            and <size_t>F * GH * 4 >= proj_min_bytes)


def proj_in_place(int M, int F, int GH):
    """Whether the projection of M rows, F inputs, GH gate columns reads W_ih in place."""
    return _proj_in_place(M, F, GH)
# Fewest multiply-adds of a GEMM worth splitting across threads.
cdef double MIN_PARALLEL_FLOPS = 2.0e6
# LSTM / RNN float32 training makes [dW_ih, dW_hh] (GH, F + H) on rf's kernel (par_gemm_tn), not BLAS, from
# TN_MIN_ROWS rows (N) up to TN_MAX_OUT elements of it. Two threads, training step BLAS / rf: LSTM B=512
# T=25 I=12 H=200 1.06, B=128 T=128 I=H=128 1.06, B=32 T=200 I=32 H=128 bi 1.12, RNN B=128 T=20 I=32 H=128
# 1.08, B=64 T=100 I=64 H=256 L=2 bi 1.05; a larger product lost (BLAS's own blocking): LSTM I=128 H=256
# (393k) 0.97, I=256 H=256 bi 0.93, I=1 H=512 0.95, I=512 H=1024 0.93; fewer rows: N=320-1024 0.95-0.98
cdef int TN_MIN_ROWS = 2048
cdef long TN_MAX_OUT = 1 << 18


def set_blas_thread_fns(size_t set_address, size_t get_address):
    """Register OpenBLAS's process-wide ``openblas_set_num_threads`` / ``openblas_get_num_threads``
    (addresses from ctypes; 0 clears)."""
    global _blas_set, _blas_get
    _blas_set = <set_threads_fn>set_address
    _blas_get = <get_threads_fn>get_address


def has_blas_thread_control():
    return _blas_set != NULL and _blas_get != NULL


def blas_threads_now():
    """The BLAS library's thread count now (-1 when unknown)."""
    return _blas_get() if _blas_get != NULL else -1


cdef void blas_hold() noexcept:
    """Hold BLAS to one thread while an rnnfast call runs (called with the GIL). Every kernel module's calls
    (_lncell, _variant) hold through this one count (cimported from _recurrent.pxd)."""
    global _blas_holders, _blas_saved
    if _blas_set == NULL or _blas_get == NULL:
        return
    if _blas_holders == 0:
        _blas_saved = _blas_get()
        if _blas_saved != 1:
            _blas_set(1)
    _blas_holders += 1


cdef void blas_release() noexcept:
    global _blas_holders
    if _blas_set == NULL or _blas_get == NULL or _blas_holders == 0:
        return
    _blas_holders -= 1
    if _blas_holders == 0 and _blas_saved > 1:
        _blas_set(_blas_saved)


cdef struct Net:
    int cell        # CELL_*
    int relu        # RNN only
    int T, B, N, nin, H, G, D, L
    int nthreads
    int yields      # out: barrier waits of the batch-1 kernel that had to yield (a busy machine)
    int stale       # out: a kept pack was made for another count of threads than ran; nothing after it ran
    const int* bs   # (T,) active rows per step
    const int* off  # (T + 1,) row offset of each step
    const int* rev  # (N,) reversed-order row -> forward-order row
    const int* lens # (B,) sorted lengths


cdef struct Dir:
    # parameters
    void* w_ih      # (GH, F)
    void* w_hh      # (GH, H)
    void* b         # (GH,) summed bias (GRU: b_ih + b_hh for r, z; b_in for n)
    void* bhn       # (H,) GRU b_hn
    # forward buffers
    void* xin       # (N, F) input as this direction reads it
    void* gates     # (N, GH)
    void* c         # (N, H) LSTM
    void* tc        # (N, H) LSTM tanh(c), training only
    void* hn        # (N, H) GRU W_hn h + b_hn (reset before: s = r h), training only
    void* y         # (N, ldy) hidden states in this direction's order
    int ldy
    Py_ssize_t yts  # != 0: y is strided instead, step t row r at y + t * yts + r * ldy (the caller's
                    # batch-first output, written in place: eval, all lengths equal, one direction)
    Py_ssize_t xts  # != 0: likewise xin, at xin + t * xts + r * ldx (the fused kernel reads the
    int ldx         # caller's batch-first input in place); 0: packed, ldx = F
    void* gh        # (B, GH) GRU per-step recurrent product; reset before: s = r h scratch (inference) and
                    # backward's ds = dG_n W_hn, in its first H columns
    void* wpf       # float32 GRU on the packed kernel: W_hh^T (H, GH) packed for gemm_packed (reset before:
                    # W_hrz^T (H, 2H) then W_hn^T (H, H), packed apart), or NULL
    void* wpx       # float32 packed kernel (the planner's "packed"), LSTM / RNN: [W_ih, W_hh]^T
                    # (F + H, GH) packed, so each step makes its gates from [x_t, h_{t-1}] in one
                    # product (with hoist: W_hh^T (H, GH) alone); GRU: W_ih^T (F, GH), a product of its
                    # own beside W_hh's (wpf; NULL with hoist); or NULL
    int gscratch    # gates is a (B, GH) per-step scratch (inference making x_t W_ih^T step by step),
                    # not (N, GH)
    void* wpp       # float32 with hoist (packed, few-rows and batch-1 kernels): room for W_ih^T (F, GH) packed,
                    # which the input projection over all steps (par_proj) packs a group of panels at a time
                    # into, each thread into its own part; or NULL (BLAS makes the projection)
    void* wpb       # float32: W_hh packed (backward; GRU: rows [0, 2H) then [2H, 3H)), or NULL
    void* wpi       # float32: W_ih packed (backward: dx_t = dG_t W_ih step by step), or NULL
    void* dx        # with wpi: (N, F) where dx_t goes (this direction's order)
    int units       # float32, batch >= 2: the few-rows kernel (rf_units.h) runs this direction (the
                    # directions one after the other), threads sharing out the units, taking x W_ih^T from
                    # the big GEMM (1) or making it step by step (2); 0: not
    void* unp       # with units: room for its per-thread packed weights, forward (units_pack_size)
    void* unb       # with units, backward: likewise for W_hh's columns
    int hoist       # float32 packed kernel: x W_ih^T is one GEMM over all steps first (gates (N, GH) hold
                    # it) and the step's product reads W_hh only (wpx = W_hh^T packed, LSTM / RNN; GRU
                    # uses wpf alone); 0: the step makes x_t W_ih^T itself, as wpx says
    int lat         # float32, batch 1: the latency kernel (rf_latency.h) runs this direction, taking
                    # x W_ih^T from the big GEMM (1) or making it step by step (2); 0: not
    void* latp      # with lat: room for the weights packed into panels for the call (long calls), or NULL
    Py_ssize_t latn # its size (floats)
    int* pack_nk    # wpx / wpf, unp or latp kept from call to call (forward's ``packs``): *pack_nk > 0, they
                    # hold the weights packed for that many threads (read only; any count for wpx / wpf);
                    # 0, this call packs them and sets it. NULL: packed at this call (workspace buffers)
    int* wpp_nk     # a frozen layer's wpp kept whole from call to call (W_ih^T, every panel): *wpp_nk 1, packed
                    # already; 0, this call packs it and sets it. NULL: packed a group at a time (par_proj)
    void* h0        # (B, H)
    void* c0
    void* hT
    void* cT
    int F
    # backward buffers
    void* dy        # (N, lddy) output gradient in this direction's order
    int lddy
    void* dh        # (B, H) workspace
    void* dc        # (B, H) workspace
    void* hprev     # (N, H) workspace; with dwcat (N, F + H): [X, H_prev]
    void* dwcat     # LSTM / RNN: (GH, F + H) workspace, [dW_ih, dW_hh] made in one product, or NULL; with tnp
                    # its transpose (F + H, GH)
    void* tnp       # float32 LSTM / RNN on rf's kernels: each thread's scratch for that product (par_gemm_tn)
    void* dxin      # (N, F)
    void* dh0
    void* dc0
    void* dw_ih
    void* dw_hh
    void* db_ih
    void* db_hh


# ----------------------------------------------------------------------------------------------
# row helpers

cdef void gather_rows(const floating* src, int lds, floating* dst, int ldd, const int* idx, int n,
                      int width) noexcept nogil:
    """dst[i, :width] = src[idx[i], :width]."""
    cdef int i
    for i in range(n):
        memcpy(dst + <Py_ssize_t>i * ldd, src + <Py_ssize_t>idx[i] * lds, width * sizeof(floating))


cdef void scatter_rows(const floating* src, int lds, floating* dst, int ldd, const int* idx, int n,
                       int width, bint add) noexcept nogil:
    """dst[idx[i], :width] (+)= src[i, :width]."""
    cdef int i, j
    cdef floating* d
    cdef const floating* s
    for i in range(n):
        d = dst + <Py_ssize_t>idx[i] * ldd
        s = src + <Py_ssize_t>i * lds
        if add:
            for j in range(width):
                d[j] += s[j]
        else:
            memcpy(d, s, width * sizeof(floating))


cdef extern from "rf_rows.h" nogil:
    void rf_colsum_add_f(const float* A, ptrdiff_t lda, ptrdiff_t n, ptrdiff_t w, float* out1, float* out2)
    void rf_colsum_add_d(const double* A, ptrdiff_t lda, ptrdiff_t n, ptrdiff_t w, double* out1, double* out2)
    void rf_mul_f(const float* a, const float* m, float* out, ptrdiff_t n)
    void rf_mul_d(const double* a, const double* m, double* out, ptrdiff_t n)
    void rf_split_add_f(const float* A, ptrdiff_t m, ptrdiff_t w1, ptrdiff_t w2, float* out1, float* out2)
    void rf_split_add_d(const double* A, ptrdiff_t m, ptrdiff_t w1, ptrdiff_t w2, double* out1, double* out2)
    void rf_split_add_t_f(const float* At, ptrdiff_t m, ptrdiff_t w1, ptrdiff_t w2, float* out1, float* out2)


cdef inline void colsum_add(const floating* A, int lda, int n, int width, floating* out1,
                            floating* out2) noexcept nogil:
    """out1[:width] (and out2, unless NULL) += sum over the n rows of A[:, :width]."""
    if floating is float:
        rf_colsum_add_f(A, lda, n, width, out1, out2)
    else:
        rf_colsum_add_d(A, lda, n, width, out1, out2)


cdef inline void mul_into(const floating* a, const floating* m, floating* out, Py_ssize_t n) noexcept nogil:
    """out[i] = a[i] * m[i] (out may be a)."""
    if floating is float:
        rf_mul_f(a, m, out, n)
    else:
        rf_mul_d(a, m, out, n)


cdef int block_start(const Net* net, int nblk, int blk) noexcept nogil:
    """First row of block ``blk`` when the B rows are cut in ``nblk`` blocks of near-equal work. Rows are
    sorted by length, longest first, so with variable lengths equal row counts are not equal work: the
    first of two blocks held 65% of the steps of lengths uniform in [T/4, T], and such a batch took
    1.18x the time of the same tokens packed densely on two threads (1.04x on one)."""
    cdef int B = net.B, b
    cdef long long total, acc, goal
    if blk <= 0:
        return 0
    if blk >= nblk:
        return B
    if net.N == <long long>B * net.T:  # all lengths equal
        return min(B, blk * ((B + nblk - 1) // nblk))
    total = net.N
    goal = (total * blk + nblk - 1) // nblk
    acc = 0
    for b in range(B):
        if acc >= goal:
            return b
        acc += net.lens[b]
    return B


cdef int n_blocks(const Net* net) noexcept nogil:
    """Row blocks per direction: enough to occupy the threads, none smaller than MIN_ROWS_PER_TASK."""
    cdef int want = (net.nthreads + net.D - 1) // net.D
    cdef int most = max(1, net.B // MIN_ROWS_PER_TASK)
    return max(1, min(want, most))


# ----------------------------------------------------------------------------------------------
# recurrence of one direction over a block of rows

cdef void recur_fwd(const Net* net, Dir* p, int r0, int r1, floating* typed) noexcept nogil:
    # ``typed`` only selects the specialisation (float or double)
    cdef int H = net.H, GH = net.G * net.H
    cdef int t, nb, b1, ldh
    cdef floating* gates
    cdef floating* y = <floating*>p.y
    cdef floating* yt
    cdef floating* c = <floating*>p.c
    cdef floating* tc = <floating*>p.tc
    cdef floating* hn = <floating*>p.hn
    cdef floating* gh = <floating*>p.gh
    cdef const floating* hp
    cdef const floating* cp
    cdef Py_ssize_t row
    cdef int sGH
    for t in range(net.T):
        b1 = min(r1, net.bs[t])
        if b1 <= r0:
            break
        nb = b1 - r0
        row = net.off[t] + r0
        gates = <floating*>p.gates + (<Py_ssize_t>r0 if p.gscratch else row) * GH
        yt = y + (t * p.yts + <Py_ssize_t>r0 * p.ldy if p.yts != 0 else row * p.ldy)
        if t == 0:
            hp = <floating*>p.h0 + <Py_ssize_t>r0 * H
            ldh = H
            cp = <floating*>p.c0 + <Py_ssize_t>r0 * H
        else:
            hp = y + ((t - 1) * p.yts + <Py_ssize_t>r0 * p.ldy if p.yts != 0
                      else (<Py_ssize_t>net.off[t - 1] + r0) * p.ldy)
            ldh = p.ldy
            cp = c + (<Py_ssize_t>net.off[t - 1] + r0) * H
        if net.cell == CELL_GRU_RB:
            grb_step_fwd(net, p, r0, nb, row, t, hp, ldh, gates, yt)
            continue
        # (odd steps read the packed weights last panel first, N < 0: the serpentine, csrc/rf_gemm.h)
        sGH = -GH if t & 1 else GH
        if floating is float and p.wpx != NULL and net.cell == CELL_GRU:
            # GRU: the input part into gates, the recurrent part apart (reset after the product)
            gemm_packed(nb, sGH, p.F, <float*>p.xin + (t * p.xts + <Py_ssize_t>r0 * p.ldx if p.xts != 0
                                                       else row * p.ldx), p.ldx, <float*>p.wpx, 0, gates, GH)
            gemm_packed(nb, sGH, H, hp, ldh, <float*>p.wpf, 0, gh + <Py_ssize_t>r0 * GH, GH)
        elif floating is float and p.wpf != NULL and net.cell == CELL_GRU:
            # GRU, x W_ih^T made beforehand (hoist): the recurrent part alone
            gemm_packed(nb, sGH, H, hp, ldh, <float*>p.wpf, 0, gh + <Py_ssize_t>r0 * GH, GH)
        elif floating is float and p.wpx != NULL and p.hoist:
            gemm_packed(nb, sGH, H, hp, ldh, <float*>p.wpx, 1, gates, GH)
        elif floating is float and p.wpx != NULL:
            gemm_packed2(nb, sGH, p.F, <float*>p.xin + (t * p.xts + <Py_ssize_t>r0 * p.ldx if p.xts != 0
                                                        else row * p.ldx), p.ldx,
                         H, hp, ldh, <float*>p.wpx, 0, gates, GH)
        elif net.cell == CELL_GRU:
            gemm(False, True, nb, GH, H, <floating>1, hp, ldh, <floating*>p.w_hh, H,
                 <floating>0, gh + <Py_ssize_t>r0 * GH, GH)
        else:
            gemm(False, True, nb, GH, H, <floating>1, hp, ldh, <floating*>p.w_hh, H,
                 <floating>1, gates, GH)
        if net.cell == CELL_LSTM:
            lstm_fwd(nb, H, gates, <floating*>p.b, cp, c + row * H,
                     tc + row * H if tc != NULL else NULL, yt, p.ldy)
        elif net.cell == CELL_GRU:
            gru_fwd(nb, H, gates, gh + <Py_ssize_t>r0 * GH, <floating*>p.b, <floating*>p.bhn, hp, ldh,
                    hn + row * H if hn != NULL else NULL, yt, p.ldy)
        else:
            rnn_fwd(nb, H, net.relu, gates, <floating*>p.b, yt, p.ldy)


cdef void grb_step_fwd(const Net* net, Dir* p, int r0, int nb, Py_ssize_t row, int t, const floating* hp, int ldh,
                       floating* gates, floating* yt) noexcept nogil:
    """One step of the reset-before GRU on rows [r0, r0 + nb) (csrc/rf_cells_impl.h): x_t W_ih^T (unless made
    beforehand), h W_hrz^T onto the r, z gates, their pass (s = r h), s W_hn^T onto the n gate, its pass."""
    cdef int H = net.H, GH = net.G * net.H
    cdef floating* s
    cdef int lds = H if p.hn != NULL else GH
    s = <floating*>p.hn + row * H if p.hn != NULL else <floating*>p.gh + <Py_ssize_t>r0 * GH
    if floating is float and p.wpf != NULL:
        if p.wpx != NULL:
            gemm_packed(nb, GH, p.F, <float*>p.xin + (t * p.xts + <Py_ssize_t>r0 * p.ldx if p.xts != 0
                                                      else row * p.ldx), p.ldx, <float*>p.wpx, 0, gates, GH)
        gemm_packed(nb, 2 * H, H, hp, ldh, <float*>p.wpf, 1, gates, GH)
    else:
        gemm(False, True, nb, 2 * H, H, <floating>1, hp, ldh, <floating*>p.w_hh, H, <floating>1, gates, GH)
    grb_fwd_rz(nb, H, gates, <floating*>p.b, hp, ldh, s, lds)
    if floating is float and p.wpf != NULL:
        gemm_packed(nb, H, H, s, lds, <float*>p.wpf + rf_packed_size(H, 2 * H), 1, gates + 2 * H, GH)
    else:
        gemm(False, True, nb, H, H, <floating>1, s, lds, <floating*>p.w_hh + <Py_ssize_t>2 * H * H, H,
             <floating>1, gates + 2 * H, GH)
    grb_fwd_n(nb, H, gates, <floating*>p.b, hp, ldh, yt, p.ldy)


cdef void grb_step_bwd(const Net* net, Dir* p, int r0, int nb, floating* gates, const floating* hp, int ldh,
                       const floating* dy, floating* dh) noexcept nogil:
    """Backward of one reset-before step on rows [r0, r0 + nb): dG_n, dG_z; ds = dG_n W_hn (in gh); dG_r;
    dh_{t-1} += (dG_r, dG_z) W_hrz."""
    cdef int H = net.H, GH = net.G * net.H
    cdef floating* ds = <floating*>p.gh + <Py_ssize_t>r0 * GH
    cdef floating* w_hh = <floating*>p.w_hh
    grb_bwd_nz(nb, H, gates, hp, ldh, dy, p.lddy, dh)
    if floating is float and p.wpb != NULL:
        gemm_packed(nb, H, H, gates + 2 * H, GH, <float*>p.wpb + rf_packed_size(2 * H, H), 0, ds, GH)
    else:
        gemm(False, False, nb, H, H, <floating>1, gates + 2 * H, GH, w_hh + <Py_ssize_t>2 * H * H, H,
             <floating>0, ds, GH)
    grb_bwd_r(nb, H, gates, hp, ldh, ds, GH, dh)
    if floating is float and p.wpb != NULL:
        gemm_packed(nb, H, 2 * H, gates, GH, <float*>p.wpb, 1, dh, H)
    else:
        gemm(False, False, nb, H, 2 * H, <floating>1, gates, GH, w_hh, H, <floating>1, dh, H)


cdef void recur_bwd(const Net* net, Dir* p, int r0, int r1, floating* typed) noexcept nogil:
    cdef int H = net.H, GH = net.G * net.H
    cdef int t, nb, b1, ldh
    cdef floating* gates
    cdef floating* y = <floating*>p.y
    cdef floating* c = <floating*>p.c
    cdef floating* hn = <floating*>p.hn
    cdef floating* dh = <floating*>p.dh + <Py_ssize_t>r0 * H
    cdef floating* dc = <floating*>p.dc + <Py_ssize_t>r0 * H
    cdef floating* w_hh = <floating*>p.w_hh
    cdef const floating* hp
    cdef const floating* cp
    cdef const floating* dy
    cdef Py_ssize_t row
    cdef int sH
    for t in range(net.T - 1, -1, -1):
        b1 = min(r1, net.bs[t])
        if b1 <= r0:
            continue
        nb = b1 - r0
        row = net.off[t] + r0
        gates = <floating*>p.gates + row * GH
        dy = <floating*>p.dy + row * p.lddy
        if t == 0:
            hp = <floating*>p.h0 + <Py_ssize_t>r0 * H
            ldh = H
            cp = <floating*>p.c0 + <Py_ssize_t>r0 * H
        else:
            hp = y + (<Py_ssize_t>net.off[t - 1] + r0) * p.ldy
            ldh = p.ldy
            cp = c + (<Py_ssize_t>net.off[t - 1] + r0) * H
        if net.cell == CELL_GRU_RB:
            grb_step_bwd(net, p, r0, nb, gates, hp, ldh, dy, dh)
        elif net.cell == CELL_LSTM:
            lstm_bwd(nb, H, gates, cp, <floating*>p.tc + row * H, dy, p.lddy, dh, dc)
        elif net.cell == CELL_GRU:
            gru_bwd(nb, H, gates, hn + row * H, hp, ldh, dy, p.lddy, dh)
        else:
            rnn_bwd(nb, H, net.relu, gates, dy, p.lddy, dh)
        # dh_{t-1} = dG_t . W_hh (GRU: + dh z, already in dh, with the n part's own gradient)
        if net.cell == CELL_GRU_RB:
            pass  # (made by grb_step_bwd)
        elif floating is float and p.wpb != NULL:
            sH = -H if t & 1 else H  # (the serpentine, as the forward)
            if net.cell == CELL_GRU:
                gemm_packed(nb, sH, 2 * H, gates, GH, <float*>p.wpb, 1, dh, H)
                gemm_packed(nb, sH, H, hn + row * H, H, <float*>p.wpb + rf_packed_size(2 * H, H), 1, dh, H)
            else:
                gemm_packed(nb, sH, GH, gates, GH, <float*>p.wpb, 0, dh, H)
        elif net.cell == CELL_GRU:
            gemm(False, False, nb, H, 2 * H, <floating>1, gates, GH, w_hh, H, <floating>1, dh, H)
            gemm(False, False, nb, H, H, <floating>1, hn + row * H, H, w_hh + <Py_ssize_t>2 * H * H, H,
                 <floating>1, dh, H)
        else:
            gemm(False, False, nb, H, GH, <floating>1, gates, GH, w_hh, H, <floating>0, dh, H)
        # dx_t = dG_t . W_ih while dG_t is in cache (else one GEMM over all steps after the loop)
        if floating is float and p.wpi != NULL:
            gemm_packed(nb, p.F, GH, gates, GH, <float*>p.wpi, 0, <float*>p.dx + row * p.F, p.F)


cdef inline int _blocks16(int n, int nthreads, double flops, int* per) noexcept nogil:
    """Blocks to cut n rows into, one per thread, each a multiple of 16 rows long (``per``): 1 when there
    are too few rows or multiply-adds to pay for waking another thread."""
    cdef int nblk = min(nthreads, n // 16)
    if nblk <= 1 or flops < MIN_PARALLEL_FLOPS:
        return 1
    per[0] = ((n + nblk - 1) // nblk + 15) // 16 * 16
    return nblk


cdef void par_gemm(int nthreads, bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                   const floating* A, int lda, const floating* B, int ldb, floating beta, floating* C,
                   int ldc) noexcept nogil:
    """``gemm`` with the M rows of C cut in one block per thread (BLAS itself single-threaded).

    Row block [m0, m1) of op(A) starts at row m0 of A, or at column m0 when A is transposed."""
    cdef int per = 0, blk, m0, m1, caller
    cdef int nblk = _blocks16(M, nthreads, 2.0 * M * N * K, &per)
    if nblk <= 1:
        gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        return
    caller = rf_cpu_now()
    for blk in prange(nblk, num_threads=nblk, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        m0 = min(M, blk * per)
        m1 = min(M, m0 + per)
        if m1 > m0:
            gemm(trans_a, trans_b, m1 - m0, N, K, alpha,
                 A + (<Py_ssize_t>m0 if trans_a else <Py_ssize_t>m0 * lda), lda, B, ldb, beta,
                 C + <Py_ssize_t>m0 * ldc, ldc)


cdef struct GemmSpec:
    # C (M, N) := op(A) op(B) + beta C, as for ``gemm`` (alpha = 1)
    bint ta, tb
    int M, N, K
    const void* A
    int lda
    const void* B
    int ldb
    double beta
    void* C
    int ldc


cdef inline void _spec(GemmSpec* g, bint ta, bint tb, int M, int N, int K, const void* A, int lda,
                       const void* B, int ldb, double beta, void* C, int ldc) noexcept nogil:
    g.ta, g.tb, g.M, g.N, g.K = ta, tb, M, N, K
    g.A, g.lda, g.B, g.ldb, g.beta, g.C, g.ldc = A, lda, B, ldb, beta, C, ldc


cdef inline int _row_at(const GemmSpec* g, double start, double x) noexcept nogil:
    """The row of g's C where work offset x falls (g's work starts at ``start``), rounded down to 16."""
    cdef double per = 2.0 * g.N * g.K
    cdef int r
    if x <= start:
        return 0
    if x >= start + per * g.M:
        return g.M
    r = <int>((x - start) / per)
    return min(g.M, r // 16 * 16)


cdef void _run_rows(const GemmSpec* g, int r0, int r1, floating* typed) noexcept nogil:
    if r1 <= r0:
        return
    gemm(g.ta, g.tb, r1 - r0, g.N, g.K, <floating>1,
         <const floating*>g.A + (<Py_ssize_t>r0 if g.ta else <Py_ssize_t>r0 * g.lda), g.lda,
         <const floating*>g.B, g.ldb, <floating>g.beta, <floating*>g.C + <Py_ssize_t>r0 * g.ldc, g.ldc)


cdef void _run_cols(const GemmSpec* g, int c0, int c1, floating* typed) noexcept nogil:
    """Columns [c0, c1) of g's C (the rows of B, or its columns, that make them)."""
    if c1 <= c0:
        return
    gemm(g.ta, g.tb, g.M, c1 - c0, g.K, <floating>1, <const floating*>g.A, g.lda,
         <const floating*>g.B + (<Py_ssize_t>c0 * g.ldb if g.tb else <Py_ssize_t>c0), g.ldb, <floating>g.beta,
         <floating*>g.C + c0, g.ldc)


cdef void par_gemms(int nthreads, GemmSpec* g, int n, floating* typed) noexcept nogil:
    """Run n independent GEMMs on ``nthreads`` threads in one parallel region: their work (2 M N K
    each) laid end to end and cut into equal shares, a GEMM that straddles a cut split by rows of C.
    Unlike one ``par_gemm`` per product, each product is cut at most where a share ends, so its shared
    operand is packed by as few threads as can be (OpenBLAS's packing was 15% of LSTM small training),
    and the threads start once rather than once per product.
    One product with fewer rows than columns (a few rows' input projection, X (B T, F) W_ih^T) is cut
    by columns instead, in blocks of 64: cut by rows, each thread packed all of W_ih (rows at 16: with
    20 rows one thread took them all)."""
    cdef double total = 0.0, lo, hi, start
    cdef int i, k, nth, caller
    for i in range(n):
        total += 2.0 * g[i].M * g[i].N * g[i].K
    nth = max(1, min(nthreads, <int>(total / MIN_PARALLEL_FLOPS)))
    if nth <= 1:
        for i in range(n):
            _run_rows(&g[i], 0, g[i].M, typed)
        return
    if n == 1 and g[0].M < g[0].N and g[0].N >= 64 * nth:
        caller = rf_cpu_now()
        for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
            rf_leave_cpu(caller)
            _run_cols(&g[0], <int>(<long>g[0].N * k // nth) // 64 * 64,
                      g[0].N if k + 1 == nth else <int>(<long>g[0].N * (k + 1) // nth) // 64 * 64, typed)
        return
    caller = rf_cpu_now()
    for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        lo = total * k / nth
        hi = total * (k + 1) / nth if k + 1 < nth else total + 1.0
        start = 0.0
        for i in range(n):
            _run_rows(&g[i], _row_at(&g[i], start, lo), _row_at(&g[i], start, hi), typed)
            start = start + 2.0 * g[i].M * g[i].N * g[i].K


cdef void par_gemm_tn(int nthreads, Dir* dirs, int n, int N, int P, int GH) noexcept nogil:
    """LSTM / RNN, float32: each of ``n`` directions' [dW_ih, dW_hh]^T (P, GH) := [X, H_prev]^T dG over its N
    rows into its dwcat (P = F + H), on rf's packed kernel (rf_gemm_tn_cols: dG's rows packed as they are,
    where BLAS copied dG transposed). The column panels of all directions end to end, one contiguous range
    per thread, each with its part of the directions' tnp as scratch."""
    cdef int np_ = (GH + RF_NR - 1) // RF_NR
    cdef int total = n * np_
    cdef int nth = max(1, min(min(nthreads, total), <int>(2.0 * N * P * GH * n / MIN_PARALLEL_FLOPS)))
    cdef int k, caller
    if nth <= 1:
        _tn_panels(dirs, n, N, P, GH, 0, total, 0)
        return
    caller = rf_cpu_now()
    for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        _tn_panels(dirs, n, N, P, GH, total * k // nth, total * (k + 1) // nth, k)


cdef inline void _tn_panels(Dir* dirs, int n, int N, int P, int GH, int lo, int hi, int k) noexcept nogil:
    """Panels [lo, hi) of par_gemm_tn's directions laid end to end, on thread k's scratch."""
    cdef int np_ = (GH + RF_NR - 1) // RF_NR
    cdef int i, p0, p1
    cdef float* scratch
    for i in range(n):
        p0 = max(0, lo - i * np_)
        p1 = min(np_, hi - i * np_)
        if p1 > p0:
            scratch = <float*>dirs[i].tnp + <size_t>k * rf_gemm_tn_scratch(P)
            rf_gemm_tn_cols(gemm_packed2, P, GH, N, <float*>dirs[i].hprev, P, <float*>dirs[i].gates, GH,
                            p0 * RF_NR, p1 * RF_NR, 0.0, <float*>dirs[i].dwcat, GH, scratch,
                            <float*>dirs[i].db_ih, <float*>dirs[i].db_hh)


cdef void par_proj(int nthreads, Dir* dirs, int n, int M, int F, int GH) noexcept nogil:
    """The input projection X W_ih^T over all M rows of ``n`` directions (dirs[i].xin (M, F) into
    dirs[i].gates (M, GH)), float32, on rf's packed kernel rather than BLAS's GEMM: the column panels of
    all directions laid end to end and cut in one contiguous range per thread, each thread packing its
    own panels of W_ih^T a group at a time (into its part of wpp, kept in L2) and making their columns for
    every row (rf_gemm_bt_panels), with no barrier. (BLAS packs W_ih^T again in every thread's block of
    rows.)"""
    cdef int np_ = (GH + RF_NR - 1) // RF_NR
    cdef int total = n * np_
    cdef int caller
    cdef int nth = max(1, min(min(nthreads, total), <int>(2.0 * M * F * GH * n / MIN_PARALLEL_FLOPS)))
    cdef int k, i, lo, hi
    if nth <= 1:
        for i in range(n):
            _proj_panels(&dirs[i], M, F, GH, 0, np_)
    else:
        caller = rf_cpu_now()
        for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
            rf_leave_cpu(caller)
            lo = total * k // nth
            hi = total * (k + 1) // nth
            for i in range(n):
                _proj_panels(&dirs[i], M, F, GH, max(0, lo - i * np_), min(np_, hi - i * np_))
    for i in range(n):
        if dirs[i].wpp_nk != NULL:
            dirs[i].wpp_nk[0] = 1


cdef inline void _proj_panels(Dir* p, int M, int F, int GH, int p0, int p1) noexcept nogil:
    """Columns of panels [p0, p1) of one direction's projection (par_proj), from W_ih^T kept packed whole
    (a frozen layer's, wpp_nk) or packed a group at a time."""
    if p.wpp_nk != NULL:
        rf_gemm_bt_kept_panels(gemm_packed2, M, GH, F, <float*>p.xin, F, <float*>p.w_ih, F, p0, p1,
                               p.wpp_nk[0] == 0, <float*>p.wpp, <float*>p.gates, GH)
    else:
        rf_gemm_bt_panels(gemm_packed2, M, GH, F, <float*>p.xin, F, <float*>p.w_ih, F, p0, p1, <float*>p.wpp,
                          <float*>p.gates, GH)


cdef void run_tasks(const Net* net, Dir* dirs, bint backward, floating* typed) noexcept nogil:
    """Run the recurrence of every direction of one layer, split in (direction, row block) tasks."""
    cdef int nblk = n_blocks(net)
    cdef int ntask = net.D * nblk
    cdef int task, d, r0, r1, caller
    cdef unsigned int ftz
    cdef int nth = min(net.nthreads, ntask)
    if nth <= 1:
        ftz = rf_ftz_enter()
        for task in range(ntask):
            d = task % net.D
            r0 = block_start(net, nblk, task // net.D)
            r1 = block_start(net, nblk, task // net.D + 1)
            if backward:
                recur_bwd(net, &dirs[d], r0, r1, typed)
            else:
                recur_fwd(net, &dirs[d], r0, r1, typed)
        rf_ftz_leave(ftz)
        return
    caller = rf_cpu_now()
    for task in prange(ntask, num_threads=nth, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        d = task % net.D
        # assigned here, so private to each OpenMP thread (never pass their address out)
        r0 = block_start(net, nblk, task // net.D)
        r1 = block_start(net, nblk, task // net.D + 1)
        ftz = rf_ftz_enter()
        if backward:
            recur_bwd(net, &dirs[d], r0, r1, typed)
        else:
            recur_fwd(net, &dirs[d], r0, r1, typed)
        rf_ftz_leave(ftz)


cdef void pack_fused(int nthreads, Dir* p, int F, int H, int GH, int K2) noexcept nogil:
    """Pack [W_ih, W_hh]^T ((F + H), GH) for the fused per-step product (K2 = H), W_ih^T alone (K2 = 0,
    GRU), or with hoist W_hh^T alone (LSTM / RNN), panels shared out among threads."""
    cdef int np_ = (GH + RF_NR - 1) // RF_NR
    cdef int nth = min(nthreads, max(1, np_ // 8))
    cdef int caller
    cdef int k, q0, q1
    cdef int per = (np_ + nth - 1) // nth
    cdef const float* w1 = <float*>p.w_hh if p.hoist else <float*>p.w_ih
    cdef int K1 = H if p.hoist else F
    if p.hoist:
        K2 = 0
    if nth <= 1:
        rf_pack_bt2(K1, w1, K1, K2, <float*>p.w_hh, H, GH, 0, np_, <float*>p.wpx)
        return
    caller = rf_cpu_now()
    for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        q0 = min(np_, k * per)
        q1 = min(np_, q0 + per)
        rf_pack_bt2(K1, w1, K1, K2, <float*>p.w_hh, H, GH, q0, q1, <float*>p.wpx)


# ----------------------------------------------------------------------------------------------
# whole network

cdef void fwd_pack(const Net* net, Dir* p, int F, int nth) noexcept nogil:
    """The packed kernel's weight packs of one direction (wpx: pack_fused; wpf: W_hh^T, reset before its r, z
    and n rows apart), unless kept from an earlier call (pack_nk)."""
    cdef int H = net.H, GH = net.G * net.H
    if (p.wpx == NULL and p.wpf == NULL) or (p.pack_nk != NULL and p.pack_nk[0] > 0):
        return
    if p.wpx != NULL:
        pack_fused(nth, p, F, H, GH, 0 if is_gru(net.cell) else H)
    if p.wpf != NULL and net.cell == CELL_GRU_RB:  # W_hrz^T, W_hn^T apart
        rf_pack_b(H, 2 * H, <float*>p.w_hh, H, 1, <float*>p.wpf)
        rf_pack_b(H, H, <float*>p.w_hh + <Py_ssize_t>2 * H * H, H, 1, <float*>p.wpf + rf_packed_size(H, 2 * H))
    elif p.wpf != NULL:
        rf_pack_b(H, GH, <float*>p.w_hh, H, 1, <float*>p.wpf)
    if p.pack_nk != NULL:
        p.pack_nk[0] = 1


cdef void fwd_inputs(const Net* net, Dir* ld, int F, floating* x) noexcept nogil:
    """Before one layer's recurrence (``ld``: its directions): the reverse direction's input in its own order,
    the packed kernel's weight packs, and X W_ih^T over every step, both directions in one parallel region
    (unless the steps make it: wpx without hoist, the batch-1 kernel with lat == 2, the few-rows kernel with
    units == 2): float32 on rf's packed kernel (par_proj) or, a few rows on big W_ih (_proj_in_place), on
    W_ih's rows in place."""
    cdef int d, ng = 0, GH = net.G * net.H
    cdef Dir* p
    cdef GemmSpec specs[2]
    for d in range(net.D):
        p = &ld[d]
        if d == 1 and p.xts == 0:
            gather_rows(x, F, <floating*>p.xin, F, net.rev, net.N, F)
        if floating is float:
            fwd_pack(net, p, F, net.nthreads)
        if (p.wpx == NULL or p.hoist) and p.lat != 2 and p.units != 2:
            _spec(&specs[ng], False, True, net.N, GH, F, p.xin, F, p.w_ih, F, 0.0, p.gates, GH)
            ng += 1
    if floating is float and ng > 0 and ld[0].wpp != NULL:
        if _proj_in_place(net.N, F, GH):  # (a frozen layer's too: its answers are the original's, bit for bit)
            for d in range(net.D):
                par_gemv_nb(net.nthreads, net.N, GH, F, <float*>ld[d].xin, F, <float*>ld[d].w_ih, F, 0.0,
                            <float*>ld[d].gates, GH)
        else:
            par_proj(net.nthreads, ld, net.D, net.N, F, GH)
    elif ng > 0:
        par_gemms(net.nthreads, specs, ng, x)


cdef int fwd_recur(Net* net, Dir* ld, floating* typed) noexcept nogil:
    """One layer's recurrence on the kernel its plan chose: batch 1 (csrc/rf_latency.h) or a few rows
    (csrc/rf_units.h), the threads sharing out the hidden units, the directions one after the other (each
    thread's share of a direction's weights then stays in its L2 from step to step); else row tasks
    (run_tasks). Returns -1 when a kept pack was made for another count of threads (nothing ran)."""
    cdef int d, r
    cdef Dir* p = &ld[0]
    if floating is float and net.D == 1 and p.lat != 0:
        # (the one sequence's own length: its steps past it are padding, absent from the packed rows)
        r = rf_latency_forward(net.cell, net.relu, net.lens[0], p.F, net.H, net.nthreads, latency_spin_ns,
                               gemv_rows, gemv_panels, pack_panels,
                               <float*>p.latp if p.latn >= _latency_pack_size(net.cell, p.F, net.H, net.nthreads)
                               else NULL, p.pack_nk,
                               <float*>p.xin if p.lat == 2 else NULL, p.F, <float*>p.w_ih, <float*>p.w_hh,
                               <float*>p.b, <float*>p.bhn, <float*>p.h0, <float*>p.c0,
                               <float*>p.gates, <float*>p.gh, <float*>p.y, p.ldy, <float*>p.c,
                               <float*>p.tc, <float*>p.hn)
        if r < 0:
            return -1
        net.yields += r
    elif floating is float and p.units != 0:
        for d in range(net.D):
            p = &ld[d]
            r = rf_units_forward(net.cell, net.relu, net.T, net.bs, net.off, p.F, net.H, net.nthreads,
                                 latency_spin_ns, gemm_packed2, <float*>p.unp, p.pack_nk,
                                 <float*>p.xin if p.units == 2 else NULL, p.ldx, p.xts,
                                 <float*>p.w_ih, <float*>p.w_hh, <float*>p.b, <float*>p.bhn,
                                 <float*>p.h0, <float*>p.c0, <float*>p.gates, p.gscratch,
                                 <float*>p.gh, <float*>p.y, p.ldy, p.yts, <float*>p.c,
                                 <float*>p.tc, <float*>p.hn)
            if r < 0:
                return -1
            net.yields += r
    else:
        run_tasks(net, ld, False, typed)
    return 0


cdef void fwd_outputs(const Net* net, Dir* ld, floating* out) noexcept nogil:
    """After one layer's recurrence: the reverse direction's output into its half of ``out`` (N, D*H) in
    forward order, and every direction's final states hT (cT) at each row's last step."""
    cdef int d, b, pos, H = net.H
    cdef Dir* p
    for d in range(net.D):
        p = &ld[d]
        if d == 1 and p.yts == 0:
            scatter_rows(<floating*>p.y, p.ldy, out + H, net.D * H, net.rev, net.N, H, False)
        for b in range(net.B):
            pos = net.off[net.lens[b] - 1] + b
            memcpy(<floating*>p.hT + <Py_ssize_t>b * H,
                   <floating*>p.y + ((net.lens[b] - 1) * p.yts + <Py_ssize_t>b * p.ldy if p.yts != 0
                                     else <Py_ssize_t>pos * p.ldy),
                   H * sizeof(floating))
            if net.cell == CELL_LSTM:
                memcpy(<floating*>p.cT + <Py_ssize_t>b * H, <floating*>p.c + <Py_ssize_t>pos * H,
                       H * sizeof(floating))


cdef void net_forward(Net* net, Dir* dirs, floating** xl, floating** outl,
                      floating** masks) noexcept nogil:
    """Forward through all layers. xl[l] (N, F_l) is layer l's input (xl[l+1] may alias outl[l] when
    there is no dropout); outl[l] (N, D*H); masks[l] (N, D*H) or NULL, applied between layers. A kept pack
    made for another count of threads stops it (net.stale)."""
    cdef int l, DH = net.D * net.H
    cdef Dir* ld
    for l in range(net.L):
        ld = &dirs[l * net.D]
        fwd_inputs(net, ld, net.nin if l == 0 else DH, xl[l])
        if fwd_recur(net, ld, xl[0]) < 0:
            net.stale = 1
            return
        fwd_outputs(net, ld, outl[l])
        if l + 1 < net.L and masks[l] != NULL:
            mul_into(outl[l], masks[l], xl[l + 1], <Py_ssize_t>net.N * DH)


cdef void bwd_prep(const Net* net, Dir* p, int F, int k, int nk, floating* typed) noexcept nogil:
    """Thread k of nk, after the backward recurrence of one layer and direction: its rows of H_prev, the
    state each row saw before its step (h0 at t = 0), with X beside it for LSTM / RNN ([X, H_prev]
    (N, F + H): dG^T [X, H_prev] = [dW_ih, dW_hh] is then one product, for which OpenBLAS packs dG once,
    where two products packed it twice: 8% of LSTM medium training), and for LSTM / RNN its columns
    of the bias gradients (b_ih and b_hh get the same, summed in one pass; with tnp, par_gemm_tn's)."""
    cdef int H = net.H, GH = net.G * net.H, t, a, b, c0, c1
    cdef Py_ssize_t i, ldhp = F + H if p.dwcat != NULL else H
    cdef floating* hprev = <floating*>p.hprev + (F if p.dwcat != NULL else 0)
    cdef const floating* src
    cdef int n0 = <int>(<long long>net.N * k // nk), n1 = <int>(<long long>net.N * (k + 1) // nk)
    if p.dwcat != NULL:
        for i in range(n0, n1):
            memcpy(<floating*>p.hprev + i * ldhp, <floating*>p.xin + i * F, F * sizeof(floating))
    for t in range(net.T):
        if net.bs[t] == 0:
            break
        a = max(n0, net.off[t])
        b = min(n1, net.off[t] + net.bs[t])
        for i in range(a, b):
            if t == 0:
                src = <floating*>p.h0 + (i - net.off[0]) * H
            else:
                src = <floating*>p.y + (<Py_ssize_t>net.off[t - 1] + i - net.off[t]) * p.ldy
            memcpy(hprev + i * ldhp, src, H * sizeof(floating))
    if not is_gru(net.cell) and p.tnp == NULL:  # (with tnp, par_gemm_tn sums them as it packs dG)
        c0 = <int>(<long long>GH * k // nk)
        c1 = <int>(<long long>GH * (k + 1) // nk)
        if c1 > c0:
            colsum_add(<floating*>p.gates + c0, GH, net.N, c1 - c0, <floating*>p.db_ih + c0,
                       <floating*>p.db_hh + c0)


cdef int grad_specs(const Net* net, Dir* p, int F, floating* dxd, GemmSpec* specs) noexcept nogil:
    """One direction's products after its backward recurrence, written to ``specs`` (returns how many), and the
    GRUs' bias gradients: dW_ih += dG^T X, dW_hh += dG^T H_prev (GRU: its n rows dG_n r from hn; reset
    before: dG_n^T s, s = r h in hn), dX = dG W_ih into dxd (unless made step by step: wpi)."""
    cdef int H = net.H, GH = net.G * net.H, N = net.N, ng
    cdef floating* hprev = <floating*>p.hprev + (F if p.dwcat != NULL else 0)
    cdef floating* gates = <floating*>p.gates
    cdef floating* dw_hn = <floating*>p.dw_hh + <Py_ssize_t>2 * H * H
    ng = 0
    if p.dwcat == NULL:
        _spec(&specs[0], True, False, GH, F, N, p.gates, GH, p.xin, F, 1.0, p.dw_ih, F)
        ng = 1
    elif p.tnp == NULL:  # (with tnp, par_gemm_tn makes it)
        _spec(&specs[0], True, False, GH, F + H, N, p.gates, GH, p.hprev, F + H, 0.0, p.dwcat, F + H)
        ng = 1
    if is_gru(net.cell):
        _spec(&specs[1], True, False, 2 * H, H, N, p.gates, GH, hprev, H, 1.0, p.dw_hh, H)
        if net.cell == CELL_GRU:
            _spec(&specs[2], True, False, H, H, N, p.hn, H, hprev, H, 1.0, dw_hn, H)
            colsum_add(gates, GH, N, GH, <floating*>p.db_ih, <floating*>NULL)
            colsum_add(gates, GH, N, 2 * H, <floating*>p.db_hh, <floating*>NULL)
            colsum_add(<floating*>p.hn, H, N, H, <floating*>p.db_hh + 2 * H, <floating*>NULL)
        else:  # reset before: both biases get sum dG
            _spec(&specs[2], True, False, H, H, N, gates + 2 * H, GH, p.hn, H, 1.0, dw_hn, H)
            colsum_add(gates, GH, N, GH, <floating*>p.db_ih, <floating*>p.db_hh)
        ng = 3
    elif p.dwcat == NULL:  # LSTM and RNN (their bias sums are bwd_prep's)
        _spec(&specs[1], True, False, GH, H, N, p.gates, GH, hprev, H, 1.0, p.dw_hh, H)
        ng = 2
    if p.wpi == NULL:
        _spec(&specs[ng], False, False, N, F, GH, p.gates, GH, p.w_ih, F, 0.0, dxd, F)
        ng += 1
    return ng


cdef void bwd_inputs(const Net* net, Dir* ld, int F, floating* dout, floating* dxl) noexcept nogil:
    """Before one layer's backward recurrence (``ld``: its directions): the reverse direction's output gradient
    (from its half of ``dout`` (N, D*H)) in its own order, and the packed kernel's W_hh and W_ih packs (GRU:
    W_hh's r, z rows then its n rows apart), dx_t then going to ``dxl`` (the reverse direction's to its dxin)."""
    cdef int d, H = net.H, GH = net.G * net.H
    cdef Dir* p
    for d in range(net.D):
        p = &ld[d]
        if d == 1:
            gather_rows(dout + H, net.D * H, <floating*>p.dy, H, net.rev, net.N, H)
        if p.wpb != NULL:
            if is_gru(net.cell):
                rf_pack_b(2 * H, H, <float*>p.w_hh, H, 0, <float*>p.wpb)
                rf_pack_b(H, H, <float*>p.w_hh + <Py_ssize_t>2 * H * H, H, 0,
                          <float*>p.wpb + rf_packed_size(2 * H, H))
            else:
                rf_pack_b(GH, H, <float*>p.w_hh, H, 0, <float*>p.wpb)
    for d in range(net.D):
        p = &ld[d]
        if p.wpi != NULL:
            rf_pack_b(GH, F, <float*>p.w_ih, F, 0, <float*>p.wpi)
            p.dx = dxl if d == 0 else p.dxin


cdef void bwd_recur(Net* net, Dir* ld, floating* typed) noexcept nogil:
    """One layer's backward recurrence on the kernel its forward ran: batch 1 (csrc/rf_latency.h) or a few rows
    (csrc/rf_units.h, the directions one after the other), the threads sharing out the units; else row tasks."""
    cdef int d
    cdef Dir* p = &ld[0]
    if floating is float and net.D == 1 and net.B == 1 and p.lat != 0:
        net.yields += rf_latency_backward(net.cell, net.relu, net.lens[0], net.H, net.nthreads, latency_spin_ns,
                                          gemv_cols, <float*>p.w_hh, <float*>p.h0, <float*>p.c0, <float*>p.gates,
                                          <float*>p.hn, <float*>p.y, p.ldy, <float*>p.c, <float*>p.tc,
                                          <float*>p.dy, p.lddy, <float*>p.dh, <float*>p.dc, <float*>p.gh)
    elif floating is float and p.units != 0:
        for d in range(net.D):
            p = &ld[d]
            net.yields += rf_units_backward(net.cell, net.relu, net.T, net.bs, net.off, net.H, net.nthreads,
                                            latency_spin_ns, gemm_packed2, <float*>p.unb, <float*>p.w_hh,
                                            <float*>p.h0, <float*>p.c0, <float*>p.gates, <float*>p.hn, <float*>p.y,
                                            p.ldy, <float*>p.c, <float*>p.tc, <float*>p.dy, p.lddy, <float*>p.dh,
                                            <float*>p.dc, <float*>p.gh)
    else:
        run_tasks(net, ld, True, typed)


cdef void bwd_grads(const Net* net, Dir* ld, int F, floating* dxl) noexcept nogil:
    """After one layer's backward recurrence: [X, H_prev] and (LSTM / RNN) the bias gradients shared out among
    the threads (bwd_prep), dh0 / dc0, then every direction's weight and input-gradient products in one parallel
    region (grad_specs, par_gemms; dX into ``dxl``, the reverse direction's into its dxin), and LSTM / RNN's
    [dW_ih, dW_hh] split into their gradients."""
    cdef int d, task, H = net.H, GH = net.G * net.H, ng = 0
    cdef int nth = net.nthreads
    cdef int nk = max(1, min(nth, net.N // 64))
    cdef GemmSpec specs[8]   # up to 4 products per direction
    cdef Dir* p
    if nk * net.D <= 1:
        for d in range(net.D):
            bwd_prep(net, &ld[d], F, 0, 1, dxl)
    else:
        for task in prange(nk * net.D, num_threads=min(nth, nk * net.D), schedule="static", chunksize=1):
            bwd_prep(net, &ld[task % net.D], F, task // net.D, nk, dxl)
    if floating is float and ld[0].tnp != NULL:
        par_gemm_tn(nth, ld, net.D, net.N, F + H, GH)
    for d in range(net.D):
        p = &ld[d]
        memcpy(p.dh0, p.dh, <Py_ssize_t>net.B * H * sizeof(floating))
        if net.cell == CELL_LSTM:
            memcpy(p.dc0, p.dc, <Py_ssize_t>net.B * H * sizeof(floating))
        ng += grad_specs(net, p, F, dxl if d == 0 else <floating*>p.dxin, &specs[ng])
    par_gemms(nth, specs, ng, dxl)
    for d in range(net.D):
        p = &ld[d]
        if p.dwcat != NULL:
            if floating is float and p.tnp != NULL:
                rf_split_add_t_f(<float*>p.dwcat, GH, F, H, <float*>p.dw_ih, <float*>p.dw_hh)
            elif floating is float:
                rf_split_add_f(<float*>p.dwcat, GH, F, H, <float*>p.dw_ih, <float*>p.dw_hh)
            else:
                rf_split_add_d(<double*>p.dwcat, GH, F, H, <double*>p.dw_ih, <double*>p.dw_hh)


cdef void net_backward(Net* net, Dir* dirs, floating** xl, floating** outl, floating** masks,
                       floating** dout, floating* dx0) noexcept nogil:
    """Backward through all layers. dout[l] (N, D*H) is the gradient wrt outl[l]; dout[L-1] is given,
    the others are computed here (dropout applied); dx0 (N, I) receives the input gradient."""
    cdef int l, F, DH = net.D * net.H
    cdef Dir* ld
    cdef floating* dxl
    for l in range(net.L - 1, -1, -1):
        F = net.nin if l == 0 else DH
        ld = &dirs[l * net.D]
        dxl = dx0 if l == 0 else dout[l - 1]
        bwd_inputs(net, ld, F, dout[l], dxl)
        bwd_recur(net, ld, dx0)
        bwd_grads(net, ld, F, dxl)
        if net.D == 2:
            scatter_rows(<floating*>ld[1].dxin, F, dxl, F, net.rev, net.N, F, True)
        if l > 0 and masks[l - 1] != NULL:
            mul_into(dxl, masks[l - 1], dxl, <Py_ssize_t>net.N * DH)


# ----------------------------------------------------------------------------------------------
# Python entry points: check the buffers the layer prepared, gather pointers, run without the GIL.

cdef inline void* _ptr(object a, object dtype, Py_ssize_t size, str what) except NULL:
    cdef cnp.ndarray arr
    if a is None:
        raise ValueError(f"internal: buffer {what} missing")
    arr = <cnp.ndarray?>a
    if arr.dtype != dtype or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or arr.size < size:
        raise ValueError(f"internal: buffer {what} has dtype {arr.dtype}, size {arr.size}, "
                         f"needs {dtype} C-contiguous of size >= {size}")
    if size == 0:
        return <void*>1  # never dereferenced
    return cnp.PyArray_DATA(arr)


cdef inline void* _optr(object a, object dtype, Py_ssize_t size, str what) except? NULL:
    if a is None:
        return NULL
    return _ptr(a, dtype, size, what)


cdef inline void* _ptr_f(object a, bint f32, Py_ssize_t size, str what) except NULL:
    """``_ptr`` for float32 (f32) or float64 arrays, the dtype checked by number (the per-call pointers of a
    kept Forward: a dtype comparison costs about 0.1 us)."""
    cdef cnp.ndarray arr
    if a is None:
        raise ValueError(f"internal: buffer {what} missing")
    arr = <cnp.ndarray?>a
    if (cnp.PyArray_TYPE(arr) != (cnp.NPY_FLOAT32 if f32 else cnp.NPY_FLOAT64)
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_SIZE(arr) < size):
        return _ptr(a, np.float32 if f32 else np.float64, size, what)  # (its message)
    if size == 0:
        return <void*>1  # never dereferenced
    return cnp.PyArray_DATA(arr)


cdef class Plan:
    """Index arrays describing one batch's packed layout (see the module docstring)."""
    cdef public object bs, off, rev, lens
    cdef public int T, B, N

    def __init__(self, bs, off, rev, lens, int T, int B, int N):
        self.bs = np.ascontiguousarray(bs, dtype=np.intc)
        self.off = np.ascontiguousarray(off, dtype=np.intc)
        self.rev = np.ascontiguousarray(rev, dtype=np.intc)
        self.lens = np.ascontiguousarray(lens, dtype=np.intc)
        self.T, self.B, self.N = T, B, N
        if (self.bs.shape[0] != T or self.off.shape[0] != T + 1 or self.lens.shape[0] != B
                or self.rev.shape[0] != N):
            raise ValueError("internal: inconsistent plan")


cdef int _fill(Net* net, Plan plan, int cell, int relu, int I, int H, int D, int L,
               int nthreads) except -1:
    net.cell = cell
    net.relu = relu
    net.T, net.B, net.N = plan.T, plan.B, plan.N
    net.nin, net.H, net.D, net.L = I, H, D, L
    if cell < CELL_RNN or cell > CELL_GRU_RB:
        raise ValueError(f"internal: cell {cell}")
    net.G = n_gates(cell)
    net.nthreads = _cap_threads(nthreads)
    net.yields = 0
    net.stale = 0
    net.bs = <const int*>cnp.PyArray_DATA(plan.bs)
    net.off = <const int*>cnp.PyArray_DATA(plan.off)
    net.rev = <const int*>cnp.PyArray_DATA(plan.rev)
    net.lens = <const int*>cnp.PyArray_DATA(plan.lens)
    return 0


cpdef enum Kernel:
    # the planner's kernels (rnnfast._planner.KERNELS)
    KERNEL_BLAS = 0      # row tasks, BLAS's GEMM per step
    KERNEL_PACKED = 1    # row tasks, the packed per-step product (csrc/rf_gemm.h)
    KERNEL_UNITS = 2     # a few rows, threads sharing out the units (csrc/rf_units.h)
    KERNEL_LATENCY = 3   # batch 1, threads sharing out the units (csrc/rf_latency.h)


cdef inline bint _scratch_gates(bint training, bint hoist, int kernel) noexcept:
    """Whether gates is one step's (B, GH) scratch: inference whose steps make x_t W_ih^T themselves."""
    return not training and not hoist and (kernel == KERNEL_PACKED or kernel == KERNEL_UNITS)


# Buffers whose size depends on the thread count, made only for the pass that runs them.
_FORWARD_PACKS = ("latp", "unp")
# The inference packs an inference call may keep from call to call (forward's ``packs``): made from W_hh, and
# from W_ih unless hoist; then W_ih^T packed whole for the projection over all steps (wpp).
KEPT_PACKS = ("wpx", "wpf", "unp", "latp", "wpp")


def dir_buffers(int cell, int F, int H, int B, int N, bint training, bint reverse, int kernel, bint hoist,
                bint panels, int nthreads, bint backward=False):
    """The one table of one layer-direction's buffers: ``{name: shape}`` (elements of the layer's dtype),
    from which ``rnnfast.nn`` allocates and ``_fill_dirs`` checks before any unchecked code runs.

    Forward (``backward`` False; G gates, GH = G H, F inputs, N packed rows, B rows of a step):
    gates (N, GH) pre- then post-activation gates, or (B, GH) one step's scratch in inference when the
    step makes x_t W_ih^T itself; c, tc (N, H) LSTM cell state and tanh(c) (training); gh (B, GH) GRU
    recurrent product of a step; hn (N, H) GRU W_hn h + b_hn (training); xin (N, F), y (N, H) the
    reverse direction's input and output in its own time order; packed weights: wpx / wpf (packed
    kernel, see Dir), wpp (W_ih^T for the projection over all steps, float32 kernels with hoist), latp
    (batch-1 panels), unp (few-rows kernel's per-thread packs; with ``panels`` only, else the rows in place).
    Backward (``backward`` True, the extra buffers): hprev (N, H), or (N, F + H) holding [X, H_prev] with
    dwcat (GH, F + H) for LSTM / RNN, and tnp (that product's scratch on rf's kernel, float32 kernels: see
    TN_MIN_ROWS; dwcat then holds its transpose); wpb, wpi (packed kernel: W_hh and W_ih packed); unb
    (few-rows kernel); dy (N, H), dxin (N, F) (reverse direction).
    """
    cdef int G = n_gates(cell)
    cdef int GH = G * H
    cdef bint gru = is_gru(cell)
    out = {}
    if backward:
        out["hprev"] = (N, H) if gru else (N, F + H)
        if not gru:
            out["dwcat"] = (GH, F + H)
            if kernel != KERNEL_BLAS and N >= TN_MIN_ROWS and (F + H) * GH <= TN_MAX_OUT:  # (float32 kernels)
                out["tnp"] = (nthreads * rf_gemm_tn_scratch(F + H),)
        if kernel == KERNEL_UNITS:
            out["unb"] = (units_pack_size(cell, F, H, nthreads, False, True),)
        if kernel == KERNEL_PACKED:
            out["wpb"] = (rf_packed_size(2 * H, H) + rf_packed_size(H, H) if gru
                          else rf_packed_size(GH, H),)
            out["wpi"] = (rf_packed_size(GH, F),)
        if reverse:
            out["dy"] = (N, H)
            out["dxin"] = (N, F)
        return out
    out["gates"] = (B if _scratch_gates(training, hoist, kernel) else N, GH)
    if cell == CELL_LSTM:
        out["c"] = (N, H)
        if training:
            out["tc"] = (N, H)
    if gru:
        out["gh"] = (B, GH)
        if training:
            out["hn"] = (N, H)
    if reverse:
        out["xin"] = (N, F)
        out["y"] = (N, H)
    if hoist and kernel != KERNEL_BLAS:  # float32: the projection over all steps on rf's kernel (par_proj)
        out["wpp"] = (rf_packed_size(F, GH),)
    if kernel == KERNEL_PACKED:
        if gru:  # W_ih^T (none with hoist) and W_hh^T apart (reset before: its r, z and n rows apart)
            if not hoist:
                out["wpx"] = (rf_packed_size(F, GH),)
            out["wpf"] = (rf_packed_size(H, GH) if cell == CELL_GRU
                          else rf_packed_size(H, 2 * H) + rf_packed_size(H, H),)
        else:  # [W_ih, W_hh]^T, or W_hh^T alone with hoist
            out["wpx"] = (rf_packed_size(H if hoist else F + H, GH),)
    elif kernel == KERNEL_LATENCY and panels:
        out["latp"] = (_latency_pack_size(cell, F, H, nthreads),)
    elif kernel == KERNEL_UNITS and panels:  # (without: the weight rows read in place)
        out["unp"] = (units_pack_size(cell, F, H, nthreads, not hoist, False),)
    return out


cdef void* _buf(dict buf, dict shapes, str name, object dt) except? NULL:
    """The named buffer checked against its table shape (dir_buffers), or NULL when the table has none."""
    cdef Py_ssize_t size = 1
    shape = shapes.get(name)
    if shape is None:
        return NULL
    for n in shape:
        size *= n
    return _ptr(buf.get(name), dt, size, name)


cdef int _fill_dirs(Net* net, Dir* dirs, list params, list bufs, list states, object dt, bint training,
                    int kernel, bint hoist, bint panels, bint backward=False, list packs=None) except -1:
    """params[k] = (w_ih, w_hh, b, bhn); bufs[k] = {name: array} as dir_buffers lays out; states[k] =
    (h0, c0, hT, cT). ``kernel``, ``hoist``, ``panels``: the planner's plan. In backward the forward's
    buffers are checked too, but for its thread-count-sized packs, which backward does not use. ``packs``:
    see ``forward`` (the KEPT_PACKS buffers are then theirs)."""
    cdef int k, l, d, F
    cdef int H = net.H, GH = net.G * net.H, N = net.N, B = net.B
    cdef bint f32 = dt == np.float32
    cdef Dir* p
    if not f32 and kernel != KERNEL_BLAS:
        raise ValueError("internal: only float32 runs the packed, few-rows and batch-1 kernels")
    if kernel == KERNEL_LATENCY and (net.B != 1 or net.D != 1):
        raise ValueError("internal: the batch-1 kernel runs one direction of one row")
    for k in range(net.L * net.D):
        l = k // net.D
        d = k % net.D
        F = net.nin if l == 0 else net.D * H
        p = &dirs[k]
        memset(p, 0, sizeof(Dir))
        p.F = F
        p.ldx = F
        w_ih, w_hh, b, bhn = params[k]
        buf = bufs[k]
        shapes = dir_buffers(net.cell, F, H, B, N, training, d == 1, kernel, hoist, panels, net.nthreads)
        if backward:
            for name in _FORWARD_PACKS:
                shapes.pop(name, None)
            shapes.update(dir_buffers(net.cell, F, H, B, N, training, d == 1, kernel, hoist, panels,
                                      net.nthreads, True))
        h0, c0, hT, cT = states[k]
        p.w_ih = _ptr(w_ih, dt, GH * F, "w_ih")
        p.w_hh = _ptr(w_hh, dt, GH * H, "w_hh")
        p.b = _ptr(b, dt, GH, "b")
        p.h0 = _ptr(h0, dt, B * H, "h0")
        p.hT = _ptr(hT, dt, B * H, "hT")
        if net.cell == CELL_LSTM:
            p.c0 = _ptr(c0, dt, B * H, "c0")
            p.cT = _ptr(cT, dt, B * H, "cT")
        if is_gru(net.cell):
            p.bhn = _ptr(bhn, dt, H, "bhn")
        p.hoist = hoist and kernel == KERNEL_PACKED
        if kernel == KERNEL_LATENCY:
            p.lat = 1 if hoist else 2
        if kernel == KERNEL_UNITS:
            p.units = 1 if hoist else 2
        p.gates = _buf(buf, shapes, "gates", dt)
        p.gscratch = _scratch_gates(training, hoist, kernel)
        p.c = _buf(buf, shapes, "c", dt)
        p.tc = _buf(buf, shapes, "tc", dt)
        p.gh = _buf(buf, shapes, "gh", dt)
        p.hn = _buf(buf, shapes, "hn", dt)
        if packs is not None:
            buf = _kept_pack(p, packs[k], dt, GH, F, H)
        p.wpp = _buf(buf, shapes, "wpp", dt)
        p.wpx = _buf(buf, shapes, "wpx", dt)
        p.wpf = _buf(buf, shapes, "wpf", dt)
        p.latp = _buf(buf, shapes, "latp", dt)
        p.latn = buf["latp"].size if p.latp != NULL else 0
        p.unp = _buf(buf, shapes, "unp", dt)
        buf = bufs[k]
        p.unb = _buf(buf, shapes, "unb", dt)
        p.wpb = _buf(buf, shapes, "wpb", dt)
        p.wpi = _buf(buf, shapes, "wpi", dt)
        p.hprev = _buf(buf, shapes, "hprev", dt)  # (these four: backward only)
        p.dwcat = _buf(buf, shapes, "dwcat", dt)
        p.tnp = _buf(buf, shapes, "tnp", dt)
        if d == 1:
            p.xin = _buf(buf, shapes, "xin", dt)
            p.y = _buf(buf, shapes, "y", dt)
            p.ldy = H
            p.dxin = _buf(buf, shapes, "dxin", dt)
            p.dy = _buf(buf, shapes, "dy", dt)
            p.lddy = H
    return 0


cdef dict _kept_pack(Dir* p, tuple kept, object dt, int GH, int F, int H):
    """Point direction p at a kept pack (see ``forward``): pack_nk at its count, a kept whole W_ih^T (``wpp``)
    at nk[1]; a frozen layer's pack also points the weights at the read-only arrays it is made from. Returns
    its buffers."""
    bufs, w_ih, w_hh, nk, digest = kept
    if w_ih is not None:
        p.w_ih = _ptr(w_ih, dt, GH * F, "kept w_ih")
    if w_hh is not None:
        p.w_hh = _ptr(w_hh, dt, GH * H, "kept w_hh")
    p.pack_nk = <int*>_ptr(nk, np.intc, 1, "kept pack_nk")
    if digest is not None:
        _ptr(digest, np.uint64, 4, "kept digest")
    elif w_hh is None:
        raise ValueError("internal: a kept pack is either trusted (its weights given) or checked (a digest)")
    if "wpp" in bufs:
        if w_ih is None and digest is None:
            raise ValueError("internal: a kept wpp needs the W_ih it is made from")
        p.wpp_nk = <int*>_ptr(nk, np.intc, 2, "kept wpp_nk") + 1
    return bufs


cdef void _digest(const char* a, size_t n, int nth, uint64_t* dg, uint64_t* out) noexcept nogil:
    """out[0:2] := the 128-bit digest of the n bytes at a (csrc/rf_hash.h), over nth threads from 512 KB (the
    same digest whatever the threads: they take whole chunks); dg: 2 rf_hash_nchunks(n) words of scratch."""
    cdef size_t nc = rf_hash_nchunks(n)
    cdef int k
    nth = max(1, min(nth, <int>min(nc, n >> 19)))
    if nth == 1:
        rf_hash_chunks(<const unsigned char*>a, n, 0, nc, dg)
    else:
        for k in prange(nth, num_threads=nth, schedule="static", chunksize=1):
            rf_hash_chunks(<const unsigned char*>a, n, nc * k // nth, nc * (k + 1) // nth, dg)
    rf_hash_combine(dg, nc, out)


cdef bint _kept_valid(Net* net, Dir* dirs, list params, list packs) except -1:
    """Whether the kept packs this call reads were made from the weights ``params`` now hold (the weights
    are public arrays: written in place, loaded or stepped by an optimizer between calls): the digests
    (csrc/rf_hash.h) of W_ih and of W_hh, each where a pack this call reads holds it, equal the ones taken
    when that pack was made; a pack this call makes takes its digest now. A frozen layer's packs (no digest:
    rnnfast.nn.freeze) are trusted."""
    cdef int k, which
    cdef Dir* p
    cdef uint64_t h[2]
    cdef uint64_t* dg
    cdef const char* a
    cdef size_t n
    cdef bint uses, made, hh_packed, ih_in_hh, wpp_used
    cdef uint64_t small[64]  # (chunk digests of up to 8 MB: no allocation for most layers)
    cdef uint64_t* scratch
    cdef cnp.ndarray sc = None
    for k in range(net.L * net.D):
        p = &dirs[k]
        if packs[k] is None or p.pack_nk == NULL or packs[k][4] is None:
            continue
        dg = <uint64_t*>cnp.PyArray_DATA(<cnp.ndarray>packs[k][4])
        hh_packed = p.wpx != NULL or p.wpf != NULL or p.unp != NULL or p.latp != NULL
        # (the step makes x_t W_ih^T from packs of [W_ih, W_hh]: packed without hoist, few rows or batch 1
        # stepping; or the projection over all steps reads W_ih^T packed whole unless it reads W_ih in place)
        ih_in_hh = hh_packed and ((p.wpx != NULL and not p.hoist) or p.units == 2 or p.lat == 2)
        wpp_used = p.wpp_nk != NULL and not _proj_in_place(net.N, p.F, net.G * net.H)
        for which in range(2):
            uses = (ih_in_hh or wpp_used) if which == 0 else hh_packed
            if not uses:
                continue
            made = ((ih_in_hh and p.pack_nk[0] > 0) or (wpp_used and p.wpp_nk[0] > 0)) if which == 0 \
                else p.pack_nk[0] > 0
            a = <const char*>cnp.PyArray_DATA(<cnp.ndarray>params[k][which])
            n = <size_t>net.G * net.H * (p.F if which == 0 else net.H) * sizeof(float)
            if 2 * rf_hash_nchunks(n) <= 64:
                scratch = small
            else:
                if sc is None or <size_t>sc.size < 2 * rf_hash_nchunks(n):
                    sc = np.empty(2 * rf_hash_nchunks(n), np.uint64)
                scratch = <uint64_t*>cnp.PyArray_DATA(sc)
            with nogil:
                _digest(a, n, net.nthreads, scratch, h)
            if not made:
                memcpy(dg + 2 * which, h, sizeof(h))
            elif memcmp(dg + 2 * which, h, sizeof(h)) != 0:
                return False
    return True


def weights_digest(a, int nthreads=1, int isa=-1):
    """The 128-bit digest (16 bytes) of a C-contiguous array's bytes by which kept weight packs are checked
    (csrc/rf_hash.h), over ``nthreads`` threads; ``isa`` (tests): hashed with that copy (0 lane by lane, 1
    SSE2, 2 AVX2, 3 AVX-512), None where the processor lacks it. Threads and copies give one digest."""
    cdef cnp.ndarray arr = np.ascontiguousarray(a)
    cdef size_t n = <size_t>arr.nbytes
    cdef cnp.ndarray sc = np.empty(2 * rf_hash_nchunks(n), np.uint64)
    cdef uint64_t out[2]
    cdef const char* p = <const char*>cnp.PyArray_DATA(arr)
    cdef uint64_t* scratch = <uint64_t*>cnp.PyArray_DATA(sc)
    if isa >= 0 and not rf_hash_use(isa):
        return None
    try:
        with nogil:
            _digest(p, n, max(1, nthreads), scratch, out)
    finally:
        if isa >= 0:
            rf_hash_setup()
    return np.array([out[0], out[1]], np.uint64).tobytes()


cdef int _inplace(Net* net, Dir* dirs, int l, Py_ssize_t ts, Py_ssize_t rs, int width, int dir_off,
                  bint is_input, bint f32) except -1:
    """Point layer l's input (is_input) or output at the caller's array (already set as its base, as in
    packed mode): step t of row r at t * ts + r * rs (+ dir_off for the reverse direction's output half),
    the reverse direction walking the steps backwards from T - 1 (all lengths are T)."""
    cdef int d
    cdef Dir* p
    cdef char* base
    cdef Py_ssize_t isz = 4 if f32 else 8
    cdef Py_ssize_t need = (net.T - 1) * abs(ts) + (net.B - 1) * abs(rs) + width
    if ts == 0 or rs == 0 or need > <Py_ssize_t>net.N * width:
        raise ValueError("internal: bad in-place strides")
    for d in range(net.D):
        p = &dirs[l * net.D + d]
        if is_input:
            if (p.wpx == NULL or p.hoist) and p.units != 2:
                raise ValueError("internal: input in place needs a kernel making x_t W_ih^T step by step")
            base = <char*>dirs[l * net.D].xin
            p.xin = base + ((net.T - 1) * ts * isz if d == 1 else 0)
            p.xts = -ts if d == 1 else ts
            p.ldx = <int>rs
        else:
            if p.lat != 0:
                raise ValueError("internal: the batch-1 kernel writes packed output")
            base = <char*>dirs[l * net.D].y
            p.y = base + (((net.T - 1) * ts + dir_off) * isz if d == 1 else 0)
            p.yts = -ts if d == 1 else ts
            p.ldy = <int>rs
    return 0


def forward(int cell, int relu, Plan plan, int I, int H, int D, int L, list params, list bufs,
            list states, list xl, list outl, list masks, bint training, int nthreads, int kernel, bint hoist,
            bint panels, Py_ssize_t x_ts=0, Py_ssize_t x_rs=0, Py_ssize_t out_ts=0, Py_ssize_t out_rs=0,
            list bias_src=None, list packs=None):
    """Run the forward pass of the whole network (see the module docstring) without the GIL.

    All arrays are prepared by ``rnnfast.nn`` (packed, sorted, C-contiguous, one dtype); this entry
    checks their sizes and dtype before any unchecked code runs. With all lengths T, in inference, the
    caller's arrays can be used in place: ``x_ts`` != 0: ``xl[0]`` is the caller's input, step t of row
    r at element t * x_ts + r * x_rs (the fused LSTM / RNN kernel; the reverse direction reads it
    backwards); ``out_ts`` != 0: ``outl[-1]`` is the caller's output, likewise. Returns the number of
    steps at which the batch-1 kernel's threads found the machine busy (0 elsewhere). ``bias_src[k]``:
    PyTorch's (b_ih, b_hh) of layer-direction k, or None; the kernel's bias vectors (params[k][2:]) are
    made from them first.

    ``packs`` (float32 inference): per layer-direction, weights packed for the kernel kept from call to call,
    ``(bufs, w_ih, w_hh, nk, digest)``: ``bufs`` the KEPT_PACKS buffers of dir_buffers' table, ``nk`` an
    intc array (2,): nk[0] 0, the call makes the packs and sets it (the threads their layout is for); > 0,
    made already (nk[1]: the whole W_ih^T, wpp). ``digest`` a uint64 array (4,): the digests of params[k]'s
    W_ih and W_hh (csrc/rf_hash.h), taken when the packs are made, and which later calls' weights must
    have for the packs to serve them; or None, a frozen layer's trusted packs, ``w_ih`` (None with hoist
    and no wpp) and ``w_hh`` then the read-only arrays they are made from (else None: params[k]'s). Returns
    without running anything -2 when the digests differ, -1 when the packs were made for another count of
    threads: the caller makes new ones.
    """
    return Forward(cell, relu, plan, I, H, D, L, params, bufs, states, xl, outl, masks, training, nthreads,
                   kernel, hoist, panels, x_ts, x_rs, out_ts, out_rs, bias_src, packs).run()


cdef class Forward:
    """``forward``'s arguments, checked and filled once (the Net and its Dirs), then run by :meth:`run`,
    at once or again for later inference calls of the same layout on new arrays: a call then only points
    the kernel at its input, output and final states (checked), sums the biases (the parameters may change
    in place between calls) and runs ``net_forward``. Takes a small call's kernel entry from about 2 us to
    a fraction (rnnfast.nn keeps one per workspace and input layout, see _RNNBase._eval_fast). Holds every
    array it points into but the last call's own (the input, the output, the final states): :meth:`run`
    forgets those once done, so a later run must be given new ones."""
    cdef Net net
    cdef Dir* dirs
    cdef void** xp
    cdef void** op
    cdef void** mp
    cdef object dt
    cdef bint f32
    cdef int nin, DH
    cdef Py_ssize_t x_ts, x_rs, out_ts, out_rs
    cdef list params, bias_src, packs
    cdef list init        # per layer-direction, the initial states (h0, c0) given at construction
    cdef bint moved       # a run pointed the initial states elsewhere (run's h0, c0)
    cdef object keep      # the arrays the pointers point into, but the call's own
    cdef object call      # the call's own (xl[0], outl[-1], states): None once run

    def __cinit__(self):
        self.dirs = NULL
        self.xp = self.op = self.mp = NULL

    def __dealloc__(self):
        free(self.dirs); free(self.xp); free(self.op); free(self.mp)

    def __init__(self, int cell, int relu, Plan plan, int I, int H, int D, int L, list params, list bufs,
                 list states, list xl, list outl, list masks, bint training, int nthreads, int kernel,
                 bint hoist, bint panels, Py_ssize_t x_ts=0, Py_ssize_t x_rs=0, Py_ssize_t out_ts=0,
                 Py_ssize_t out_rs=0, list bias_src=None, list packs=None):
        cdef int l
        _fill(&self.net, plan, cell, relu, I, H, D, L, nthreads)
        dt = self.dt = xl[0].dtype
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"internal: dtype {dt}")
        self.f32 = dt == np.float32
        self.nin, self.DH = I, D * H
        self.dirs = <Dir*>malloc(sizeof(Dir) * L * D)
        self.xp = <void**>malloc(sizeof(void*) * L)
        self.op = <void**>malloc(sizeof(void*) * L)
        self.mp = <void**>malloc(sizeof(void*) * L)
        if self.dirs == NULL or self.xp == NULL or self.op == NULL or self.mp == NULL:
            raise MemoryError()
        _fill_dirs(&self.net, self.dirs, params, bufs, states, dt, training, kernel, hoist, panels, False, packs)
        if packs is not None and (dt != np.float32 or training or len(packs) != L * D):
            raise ValueError("internal: kept packs serve float32 inference, one per layer and direction")
        if bias_src is not None and len(bias_src) != L * D:
            raise ValueError("internal: one bias pair per layer and direction")
        if (x_ts != 0 or out_ts != 0) and (training or self.net.N != self.net.B * self.net.T):
            raise ValueError("internal: input / output in place needs eval and equal lengths")
        self.x_ts, self.x_rs, self.out_ts, self.out_rs = x_ts, x_rs, out_ts, out_rs
        for l in range(L):
            self.mp[l] = _optr(masks[l], dt, <Py_ssize_t>self.net.N * self.DH, "mask")
            self._point_in(l, xl[l])
            self._point_out(l, outl[l])
        self.params, self.bias_src, self.packs = params, bias_src, packs
        self.init, self.moved = [(h0, c0) for h0, c0, _, _ in states], False
        self.keep = (plan, bufs, xl[1:], outl[:L - 1], masks)
        self.call = (xl[0], outl[L - 1], states)

    cdef int _point_in(self, int l, x) except -1:
        """Layer l's input at ``x`` (in place, as the strides given say, for the first layer's)."""
        self.xp[l] = _ptr_f(x, self.f32, <Py_ssize_t>self.net.N * (self.nin if l == 0 else self.DH), "x")
        self.dirs[l * self.net.D].xin = self.xp[l]
        if l == 0 and self.x_ts != 0:
            _inplace(&self.net, self.dirs, 0, self.x_ts, self.x_rs, self.nin, 0, True, self.f32)
        return 0

    cdef int _point_out(self, int l, out) except -1:
        """Layer l's output at ``out`` (in place, as the strides given say, for the last layer's)."""
        self.op[l] = _ptr_f(out, self.f32, <Py_ssize_t>self.net.N * self.DH, "out")
        self.dirs[l * self.net.D].y = self.op[l]
        self.dirs[l * self.net.D].ldy = self.DH
        if l == self.net.L - 1 and self.out_ts != 0:
            _inplace(&self.net, self.dirs, l, self.out_ts, self.out_rs, self.DH, self.net.H, False, self.f32)
        return 0

    cdef int _point_final(self, hT, cT) except -1:
        """Every layer-direction's final states at its (B, H) block of ``hT`` and ``cT`` (LSTM), (L D, B, H)."""
        cdef int k
        cdef Py_ssize_t BH = <Py_ssize_t>self.net.B * self.net.H
        cdef char* h = <char*>_ptr_f(hT, self.f32, self.net.L * self.net.D * BH, "hT")
        cdef char* c = NULL
        cdef size_t isz = 4 if self.f32 else 8
        if self.net.cell == CELL_LSTM:
            c = <char*>_ptr_f(cT, self.f32, self.net.L * self.net.D * BH, "cT")
        for k in range(self.net.L * self.net.D):
            self.dirs[k].hT = h + k * BH * isz
            if c != NULL:
                self.dirs[k].cT = c + k * BH * isz
        return 0

    cdef int _point_initial(self, h0, c0) except -1:
        """Every layer-direction's initial states at its (B, H) block of ``h0`` and ``c0`` (LSTM), (L D, B, H)
        each, or those given at construction where None."""
        cdef int k
        cdef Py_ssize_t BH = <Py_ssize_t>self.net.B * self.net.H
        cdef int LD = self.net.L * self.net.D
        cdef size_t isz = 4 if self.f32 else 8
        cdef char* h = <char*>_ptr_f(h0, self.f32, LD * BH, "h0") if h0 is not None else NULL
        cdef char* c = NULL
        cdef bint lstm = self.net.cell == CELL_LSTM
        if lstm and c0 is not None:
            c = <char*>_ptr_f(c0, self.f32, LD * BH, "c0")
        for k in range(LD):
            self.dirs[k].h0 = h + k * BH * isz if h != NULL else _ptr_f(self.init[k][0], self.f32, BH, "h0")
            if lstm:
                self.dirs[k].c0 = c + k * BH * isz if c != NULL else _ptr_f(self.init[k][1], self.f32, BH, "c0")
        self.moved = h != NULL or c != NULL
        return 0

    def run(self, x=None, out=None, hT=None, cT=None, h0=None, c0=None, int nthreads=0):
        """Run the forward pass (see ``forward``, whose return value this is). The first run may take the
        arrays given at construction; every later one gives new ones: ``x`` the first layer's input (as
        ``xl[0]``), ``out`` the last layer's output (as ``outl[-1]``), ``hT`` and ``cT`` (LSTM) every
        layer-direction's final states, one (L D, B, H) array each; ``h0`` and ``c0`` likewise the initial
        states, or None: those given at construction. ``nthreads`` > 0: that many threads from now on."""
        cdef Net* net = &self.net
        if x is not None:
            self._point_in(0, x)
            self._point_out(net.L - 1, out)
            self._point_final(hT, cT)
        elif self.call is None:
            raise ValueError("internal: a Forward runs again on new arrays only")
        if h0 is not None or c0 is not None or self.moved:
            self._point_initial(h0, c0)
        if nthreads > 0:
            net.nthreads = _cap_threads(nthreads)
        self.call = None
        net.yields = 0
        net.stale = 0
        if self.packs is not None and not _kept_valid(net, self.dirs, self.params, self.packs):
            return -2
        if self.bias_src is not None:
            _sum_biases(net, self.dirs, self.bias_src, self.f32)
        blas_hold()
        try:
            if self.f32:
                with nogil:
                    net_forward[float](net, self.dirs, <float**>self.xp, <float**>self.op, <float**>self.mp)
            else:
                with nogil:
                    net_forward[double](net, self.dirs, <double**>self.xp, <double**>self.op, <double**>self.mp)
        finally:
            blas_release()
        return -1 if net.stale else net.yields


cdef void bias_sums(floating* b, floating* bhn, const floating* b_ih, const floating* b_hh, int H, int GH,
                    bint gru) noexcept nogil:
    """The kernel's bias vectors from PyTorch's (as rnnfast.nn's _biases_into): b = b_ih + b_hh (GH); GRU:
    that for r and z, b_in alone for n, and b_hn apart in bhn."""
    cdef int j
    for j in range(2 * H if gru else GH):
        b[j] = b_ih[j] + b_hh[j]
    if gru:
        memcpy(b + 2 * H, b_ih + 2 * H, H * sizeof(floating))
        memcpy(bhn, b_hh + 2 * H, H * sizeof(floating))


cdef int _sum_biases(Net* net, Dir* dirs, list src, bint f32) except -1:
    """The kernel's bias vectors of every layer-direction from PyTorch's (see bias_sums); src[k] None: none."""
    cdef int k, GH = net.G * net.H
    cdef void* bi
    cdef void* bh
    if len(src) != net.L * net.D:
        raise ValueError("internal: one bias pair per layer and direction")
    for k in range(net.L * net.D):
        if src[k] is None:
            continue
        bi = _ptr_f(src[k][0], f32, GH, "b_ih")
        bh = _ptr_f(src[k][1], f32, GH, "b_hh")
        if f32:
            bias_sums(<float*>dirs[k].b, <float*>dirs[k].bhn, <float*>bi, <float*>bh, net.H, GH,
                      net.cell == CELL_GRU)
        else:
            bias_sums(<double*>dirs[k].b, <double*>dirs[k].bhn, <double*>bi, <double*>bh, net.H, GH,
                      net.cell == CELL_GRU)
    return 0


cdef class Stepper(Forward):
    """The kernel arguments of one unidirectional layer's streaming ``step`` at one batch size: a Forward of
    one step whose layer l > 0 reads layer l - 1's output, run with each call's input, states and thread
    count (the parameters may change in place between calls: the biases are summed at every run). This
    takes the per-call work of a small ``step`` from about 11 us to a few (rnnfast.nn's step)."""
    cdef public object key
    cdef object out

    def __init__(self, key, int cell, int relu, Plan plan, int I, int H, int L, list params, list bufs,
                 list outl, list bias_src, int nthreads, int kernel, bint hoist, bint panels):
        if plan.T != 1:
            raise ValueError("internal: a Stepper runs one step")
        dt = outl[0].dtype
        zeros = np.zeros((plan.B, H), dt)
        Forward.__init__(self, cell, relu, plan, I, H, 1, L, params, bufs, [(zeros, zeros, zeros, zeros)] * L,
                         [np.zeros((plan.B, I), dt)] + outl[:L - 1], outl, [None] * L, False, nthreads, kernel,
                         hoist, panels, 0, 0, 0, 0, bias_src, None)
        self.key, self.out = key, outl[L - 1]

    def run(self, x, h0, c0, hT, cT, int nthreads=0):
        """One step: x (B, I); h0, c0 (L, B, H) or None (zeros); hT, cT (L, B, H) receive the new states
        (cT None for GRU / RNN); ``nthreads`` > 0 overrides the threads it was made with. Returns the
        batch-1 kernel's yield count (see ``forward``)."""
        return Forward.run(self, x, self.out, hT, cT, h0, c0, nthreads)


def backward(int cell, int relu, Plan plan, int I, int H, int D, int L, list params, list bufs,
             list states, list xl, list outl, list masks, list dout, object dx0, list grads,
             list dstates, int nthreads, int kernel, bint hoist, bint panels):
    """Backward of the whole network without the GIL; gradients accumulate into ``grads``.

    ``dout[l]`` (N, D*H) are the output-gradient buffers (the last one filled by the caller),
    ``dstates[k] = (dh, dc, dh0, dc0)`` hold on entry dh_n / dc_n (in dh, dc) and receive dh0 / dc0;
    ``grads[k] = (dw_ih, dw_hh, db_ih, db_hh)``. Returns the batch-1 kernel's count of long waits
    (as ``forward``).
    """
    cdef Net net
    _fill(&net, plan, cell, relu, I, H, D, L, nthreads)
    dt = xl[0].dtype
    cdef int k, l, d, DH = D * H, GH = net.G * H, B = net.B, N = net.N
    cdef Dir* dirs = <Dir*>malloc(sizeof(Dir) * L * D)
    cdef void** xp = <void**>malloc(sizeof(void*) * L)
    cdef void** op = <void**>malloc(sizeof(void*) * L)
    cdef void** mp = <void**>malloc(sizeof(void*) * L)
    cdef void** dp = <void**>malloc(sizeof(void*) * L)
    cdef void* dxp
    cdef Dir* p
    if dirs == NULL or xp == NULL or op == NULL or mp == NULL or dp == NULL:
        free(dirs); free(xp); free(op); free(mp); free(dp)
        raise MemoryError()
    try:
        _fill_dirs(&net, dirs, params, bufs, states, dt, True, kernel, hoist, panels, True)
        for l in range(L):
            xp[l] = _ptr(xl[l], dt, <Py_ssize_t>N * (I if l == 0 else DH), "x")
            op[l] = _ptr(outl[l], dt, <Py_ssize_t>N * DH, "out")
            mp[l] = _optr(masks[l], dt, <Py_ssize_t>N * DH, "mask")
            dp[l] = _ptr(dout[l], dt, <Py_ssize_t>N * DH, "dout")
            dirs[l * D].xin = xp[l]
            dirs[l * D].y = op[l]
            dirs[l * D].ldy = DH
            dirs[l * D].dy = dp[l]
            dirs[l * D].lddy = DH
        dxp = _ptr(dx0, dt, <Py_ssize_t>N * I, "dx")
        for k in range(L * D):
            p = &dirs[k]
            dw_ih, dw_hh, db_ih, db_hh = grads[k]
            dh, dc, dh0, dc0 = dstates[k]
            p.dw_ih = _ptr(dw_ih, dt, GH * p.F, "dw_ih")
            p.dw_hh = _ptr(dw_hh, dt, GH * H, "dw_hh")
            p.db_ih = _ptr(db_ih, dt, GH, "db_ih")
            p.db_hh = _ptr(db_hh, dt, GH, "db_hh")
            p.dh = _ptr(dh, dt, B * H, "dh")
            p.dh0 = _ptr(dh0, dt, B * H, "dh0")
            if cell == CELL_LSTM:
                p.dc = _ptr(dc, dt, B * H, "dc")
                p.dc0 = _ptr(dc0, dt, B * H, "dc0")
        blas_hold()
        try:
            if dt == np.float32:
                with nogil:
                    net_backward[float](&net, dirs, <float**>xp, <float**>op, <float**>mp,
                                        <float**>dp, <float*>dxp)
            else:
                with nogil:
                    net_backward[double](&net, dirs, <double**>xp, <double**>op, <double**>mp,
                                         <double**>dp, <double*>dxp)
        finally:
            blas_release()
    finally:
        free(dirs); free(xp); free(op); free(mp); free(dp)
    return net.yields


# ----------------------------------------------------------------------------------------------
# activations, exposed for tests that measure their error

cdef extern from "rf_math.h" nogil:
    float rf_fast_sigmoidf(float x)
    float rf_fast_tanhf(float x)
    float rf_fast_expf(float x)


def fast_activation(str kind, float[::1] x):
    """Apply the float32 kernels' fast ``kind`` ("exp", "sigmoid" or "tanh") to ``x``; returns a copy."""
    cdef Py_ssize_t i, n = x.shape[0]
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] o = out
    cdef int k = {"exp": 0, "sigmoid": 1, "tanh": 2}[kind]
    with nogil:
        for i in range(n):
            if k == 0:
                o[i] = rf_fast_expf(x[i])
            elif k == 1:
                o[i] = rf_fast_sigmoidf(x[i])
            else:
                o[i] = rf_fast_tanhf(x[i])
    return out


# ----------------------------------------------------------------------------------------------
# a plain product for the other layers (Linear), on rnnfast's threads rather than numpy's BLAS pool

# A float32 product X W^T of this few rows on weights this big reads W's rows in place (rf_gemv_nb: each
# block of 16 / 4 weight rows passes every group of 4 rows of X while in L1) rather than BLAS, whose GEMM
# packs W at every call, in every thread's block of rows: a Linear layer on a decoder step or a small batch.
# Zen 4, Linear(K, N) on M rows, BLAS / in place, two threads: (1024, 4096) M=1 3.4 ms / 0.12, M=32 4.6 / 1.6;
# (1024, 1024) M=5 924 / 82 us; (768, 384) M=5 135 / 26. One or two rows take OpenBLAS's small-matrix path,
# which does not pack: in place only from TWO_ROWS_MIN_BYTES ((768, 384) M=2 20.5 / 22.6 us; (1024, 1024)
# 840 / 40). FEW_ROWS_MAX = 0 turns the path off (bench/short_calls.py).
FEW_ROWS_MAX = 32
FEW_ROWS_MIN_BYTES = 256 * 1024
TWO_ROWS_MIN_BYTES = 2 * 1024 * 1024
# More rows on weights of MANY_ROWS_MIN_BYTES or more: up to MANY_ROWS_PER_THREAD rows a thread, twice as
# many when K >= WIDE_K (longer rows: fewer sums across lanes a product), FEW_ROWS_MAX a thread when
# K < NARROW_K, for one or two threads (measured no wider). BLAS / in place, 13 weight shapes of 0.5-20 MB
# (`python bench/short_calls.py --linear-rows`, bench/results/linear-rows-2026-12-07-s21.txt): every row
# count inside the rule 1.08x or more; at its limits, two threads: 96 rows 1.08-1.20x, K >= 1024 192 rows
# 1.16-1.31x, K = 256 64 rows 1.17x; one thread: 48 rows 1.10-1.21x, K >= 1024 96 rows 1.16-1.32x; past
# them BLAS catches up (256 rows 0.85-1.17x; K = 256, 96 rows 0.93-0.98x).
MANY_ROWS_MIN_BYTES = 512 * 1024
MANY_ROWS_PER_THREAD = 48
NARROW_K = 512
WIDE_K = 1024


def in_place_rows_max(int K, size_t nbytes, int nthreads):
    """The most rows of X for which _recurrent.matmul makes X W^T (float32, W (N, K) of ``nbytes``) on W's
    rows in place on ``nthreads`` threads (0: never)."""
    if FEW_ROWS_MAX <= 0:
        return 0
    most = FEW_ROWS_MAX if nbytes >= FEW_ROWS_MIN_BYTES else 0
    if nbytes >= MANY_ROWS_MIN_BYTES:
        per = FEW_ROWS_MAX if K < NARROW_K else MANY_ROWS_PER_THREAD * (2 if K >= WIDE_K else 1)
        most = max(most, per * max(1, min(nthreads, 2)))
    return most


cdef void par_gemv_nb(int nthreads, int M, int N, int K, const float* X, int ldx, const float* W, int ldw,
                      float beta, float* C, int ldc) noexcept nogil:
    """C (M, N) := X (M, K) . W^T + beta C, W (N, K) row-major read in place (rf_gemv_nb), its rows cut in
    one block (a multiple of 16 rows) per thread."""
    cdef int per = 0, blk, n0, n1, caller
    cdef int nblk = _blocks16(N, nthreads, 2.0 * M * N * K, &per)
    if nblk <= 1:
        gemv_nb(M, N, K, W, ldw, X, ldx, 0, NULL, 0, NULL, 0, beta, C, ldc, rf_nb_pf(4.0 * N * K))
        return
    caller = rf_cpu_now()
    for blk in prange(nblk, num_threads=nblk, schedule="static", chunksize=1):
        rf_leave_cpu(caller)
        n0 = min(N, blk * per)
        n1 = min(N, n0 + per)
        if n1 > n0:
            gemv_nb(M, n1 - n0, K, W + <Py_ssize_t>n0 * ldw, ldw, X, ldx, 0, NULL, 0, NULL, 0, beta, C + n0, ldc,
                    rf_nb_pf(4.0 * (n1 - n0) * K))


def matmul(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bint trans_a=False, bint trans_b=False,
           double beta=0.0, int nthreads=1):
    """out := op(a) op(b) + beta * out for 2-D C-contiguous arrays of one float dtype, run like the
    recurrent kernels' big GEMMs: row blocks on OpenMP threads, BLAS held to one thread. numpy's own
    BLAS has a spinning thread pool of its own, which stalls (2 ms became 500 ms here) when another
    process competes for the cores."""
    dt = a.dtype
    if dt != np.float32 and dt != np.float64:
        raise TypeError(f"internal: matmul dtype {dt}")
    for arr, what in ((a, "a"), (b, "b"), (out, "out")):
        if arr.ndim != 2 or arr.dtype != dt or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
            raise ValueError(f"internal: matmul operand {what} must be 2-D C-contiguous {dt}")
    cdef int M = a.shape[1] if trans_a else a.shape[0]
    cdef int K = a.shape[0] if trans_a else a.shape[1]
    cdef int Kb = b.shape[1] if trans_b else b.shape[0]
    cdef int N = b.shape[0] if trans_b else b.shape[1]
    if Kb != K or out.shape[0] != M or out.shape[1] != N:
        raise ValueError("internal: matmul shapes do not match")
    cdef int lda = a.shape[1], ldb = b.shape[1], ldc = out.shape[1]
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(b)
    cdef void* pc = cnp.PyArray_DATA(out)
    if M == 0 or N == 0:
        return out
    if K == 0:
        out *= beta
        return out
    cdef size_t nbytes = <size_t>N * K * 4
    if (dt == np.float32 and trans_b and not trans_a and M <= in_place_rows_max(K, nbytes, nthreads)
            and (M > 2 or nbytes >= <size_t>TWO_ROWS_MIN_BYTES)):
        with nogil:
            par_gemv_nb(_cap_threads(nthreads), M, N, K, <float*>pa, lda, <float*>pb, ldb, <float>beta,
                        <float*>pc, ldc)
        return out
    blas_hold()
    try:
        if dt == np.float32:
            with nogil:
                par_gemm[float](_cap_threads(nthreads), trans_a, trans_b, M, N, K, <float>1, <float*>pa, lda,
                                <float*>pb, ldb, <float>beta, <float*>pc, ldc)
        else:
            with nogil:
                par_gemm[double](_cap_threads(nthreads), trans_a, trans_b, M, N, K, 1.0, <double*>pa, lda,
                                 <double*>pb, ldb, beta, <double*>pc, ldc)
    finally:
        blas_release()
    return out
