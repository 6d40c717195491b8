# Training kernels: one pass where numpy makes several (rnnfast.train.optimizers and .clip, rnnfast.nn.Linear).
#
#   adam_step    Adam / AdamW on one parameter, in place: p, its gradient g and the moments m, v (and
#                amsgrad's running maximum) read and written once, element by element, split over threads.
#                Every element goes through the same rounded operations, in the same order and precision, as
#                the numpy path of Adam._update (the hyperparameters rounded to the array's dtype first, as
#                numpy rounds a Python float next to a float32 array), so the two agree bit for bit; the
#                loop is csrc/rf_optim.h, built with -ffp-contract=off so the compiler fuses no multiply-add.
#   sum_squares  sum of squares of an array in float64 (rnnfast.train.clip's global norm): fixed blocks
#                summed in parallel, their sums added in order, so the value does not depend on the threads.
#   softmax_xent_  rows of logits -> scale * (softmax - onehot) in place and the summed cross-entropy
#                (rnnfast.nn.Linear.cross_entropy's middle pass), rows over threads.
#   add_rows_    an embedding's gradient: rows added at their ids, in order (np.add.at's rounding).
#
# The floating-point environment is left alone (no flush-to-zero): subnormal values round as numpy rounds them.
cimport cython
from cython cimport floating
from cython.parallel cimport prange

cimport numpy as cnp
import numpy as np

cnp.import_array()

# Elements below which a call runs in the calling thread (a parallel region costs a few microseconds).
cdef Py_ssize_t PARALLEL_MIN = 1 << 17
# Block of sum_squares: each block's sum is one task; the blocks' sums are added in block order.
cdef Py_ssize_t BLOCK = 1 << 13


cdef extern from "rf_optim.h" nogil:
    void rf_adam_f(float* p, const float* g, float* m, float* v, float* vmax, Py_ssize_t lo, Py_ssize_t hi,
                   int mode, float wd, int low, float w, float omw, float b2, float omb2, int flush, float bc2,
                   float eps, float step)
    void rf_adam_d(double* p, const double* g, double* m, double* v, double* vmax, Py_ssize_t lo,
                   Py_ssize_t hi, int mode, double wd, int low, double w, double omw, double b2, double omb2,
                   int flush, double bc2, double eps, double step)
    double rf_sumsq_f(const float* a, Py_ssize_t lo, Py_ssize_t hi)
    double rf_sumsq_d(const double* a, Py_ssize_t lo, Py_ssize_t hi)
    double rf_xent_f(float* row, Py_ssize_t C, Py_ssize_t t, float scale)
    double rf_xent_d(double* row, Py_ssize_t C, Py_ssize_t t, double scale)


cdef inline void _adam_range(floating* p, floating* g, floating* m, floating* v, floating* vmax, Py_ssize_t lo,
                             Py_ssize_t hi, int mode, double wd, double w, int flush, double beta2, double bc2,
                             double eps, double step) noexcept nogil:
    """Elements lo .. hi - 1; the hyperparameters rounded to the element type here, as numpy rounds a
    Python float beside an array."""
    if floating is float:
        rf_adam_f(p, g, m, v, vmax, lo, hi, mode, <float>wd, w < 0.5, <float>w, <float>(1.0 - w), <float>beta2,
                  <float>(1.0 - beta2), flush, <float>bc2, <float>eps, <float>step)
    else:
        rf_adam_d(p, g, m, v, vmax, lo, hi, mode, wd, w < 0.5, w, 1.0 - w, beta2, 1.0 - beta2, flush, bc2, eps,
                  step)


cdef void _adam(floating* p, floating* g, floating* m, floating* v, floating* vmax, Py_ssize_t n, int nt,
                int mode, double wd, double w, int flush, double beta2, double bc2, double eps,
                double step) noexcept nogil:
    """Chunks of about BLOCK elements over ``nt`` threads (a small array: one call in the calling thread)."""
    cdef Py_ssize_t c, nc = (n + BLOCK - 1) // BLOCK
    if nt < 2 or n < PARALLEL_MIN:
        _adam_range(p, g, m, v, vmax, 0, n, mode, wd, w, flush, beta2, bc2, eps, step)
        return
    for c in prange(nc, num_threads=nt, schedule="static"):
        _adam_range(p, g, m, v, vmax, c * n // nc, (c + 1) * n // nc, mode, wd, w, flush, beta2, bc2, eps, step)


cdef Py_ssize_t _checked(cnp.ndarray a, cnp.ndarray like, str name, bint write=True) except -1:
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.dtype != like.dtype or a.size != like.size:
        raise ValueError(f"{name} must be a C-contiguous {like.dtype} array of {like.size} elements")
    if write and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only")
    return a.size


def adam_step(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray m not None, cnp.ndarray v not None,
              cnp.ndarray vmax, int mode, double wd, double w, bint flush, double beta2, double bc2, double eps,
              double step, int n_threads):
    """One Adam step on one parameter, in place (see the module comment).

    ``p``, ``g``, ``m``, ``v`` (and ``vmax`` unless None): C-contiguous arrays of one float dtype and size.
    ``mode``: 0 no weight decay, 1 L2 (``wd`` the decay), 2 decoupled (``wd`` = 1 - lr * decay).
    ``w`` = 1 - beta1 (the lerp weight); ``flush``: zero the subnormal moments; ``bc2`` = sqrt(1 - beta2^t);
    ``step`` = lr / (1 - beta1^t).
    """
    cdef Py_ssize_t n
    if p.dtype != np.float32 and p.dtype != np.float64:
        raise TypeError(f"parameters must be float32 or float64, got {p.dtype}")
    n = _checked(p, p, "p")
    _checked(g, p, "g", False)
    _checked(m, p, "m")
    _checked(v, p, "v")
    if vmax is not None:
        _checked(vmax, p, "vmax")
    if mode < 0 or mode > 2 or n_threads < 1:
        raise ValueError("bad mode or n_threads")
    cdef void* vm = NULL if vmax is None else cnp.PyArray_DATA(vmax)
    if p.dtype == np.float32:
        with nogil:
            _adam[float](<float*>cnp.PyArray_DATA(p), <float*>cnp.PyArray_DATA(g), <float*>cnp.PyArray_DATA(m),
                         <float*>cnp.PyArray_DATA(v), <float*>vm, n, n_threads, mode, wd, w, flush, beta2, bc2,
                         eps, step)
    else:
        with nogil:
            _adam[double](<double*>cnp.PyArray_DATA(p), <double*>cnp.PyArray_DATA(g),
                          <double*>cnp.PyArray_DATA(m), <double*>cnp.PyArray_DATA(v), <double*>vm, n, n_threads,
                          mode, wd, w, flush, beta2, bc2, eps, step)


cdef inline double _block_sum(floating* a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if floating is float:
        return rf_sumsq_f(a, lo, hi)
    else:
        return rf_sumsq_d(a, lo, hi)


cdef double _sum_squares(floating* a, Py_ssize_t n, double* sums, int nt) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK, b
    cdef double total = 0.0
    if nt > 1 and n >= PARALLEL_MIN:
        for b in prange(nb, num_threads=nt, schedule="static"):
            sums[b] = _block_sum(a, b * BLOCK, min(n, (b + 1) * BLOCK))
    else:
        for b in range(nb):
            sums[b] = _block_sum(a, b * BLOCK, min(n, (b + 1) * BLOCK))
    for b in range(nb):
        total += sums[b]
    return total


def sum_squares(cnp.ndarray a not None, int n_threads):
    """The sum of squares of a C-contiguous float32 / float64 array's elements, accumulated in float64."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or (a.dtype != np.float32 and a.dtype != np.float64):
        raise ValueError("sum_squares needs a C-contiguous float32 or float64 array")
    if n_threads < 1:
        raise ValueError("n_threads must be >= 1")
    cdef Py_ssize_t n = a.size
    cdef double[::1] sums = np.empty((n + BLOCK - 1) // BLOCK + 1)
    cdef double total
    if a.dtype == np.float32:
        with nogil:
            total = _sum_squares[float](<float*>cnp.PyArray_DATA(a), n, &sums[0], n_threads)
    else:
        with nogil:
            total = _sum_squares[double](<double*>cnp.PyArray_DATA(a), n, &sums[0], n_threads)
    return total


cdef void _xent_rows(floating* block, Py_ssize_t n, Py_ssize_t C, const Py_ssize_t* t, double scale,
                     double* losses, int nt) noexcept nogil:
    cdef Py_ssize_t r
    if nt < 2 or n * C < PARALLEL_MIN:
        nt = 1
    for r in prange(n, num_threads=nt, schedule="static"):
        if floating is float:
            losses[r] = rf_xent_f(block + r * C, C, t[r], <float>scale)
        else:
            losses[r] = rf_xent_d(block + r * C, C, t[r], scale)


def softmax_xent_(cnp.ndarray block not None, cnp.ndarray target not None, double scale, int n_threads):
    """Logits ``block`` (n, C), C-contiguous float32 / float64, become ``scale * (softmax - onehot(target))``
    in place; returns the rows' summed cross-entropies (float64, added in row order). ``target``: intp (n,)
    class indices in [0, C) (checked by the caller). float32 takes a vectorized exp of about one ulp."""
    if block.ndim != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(block) or not cnp.PyArray_ISWRITEABLE(block) or (
            block.dtype != np.float32 and block.dtype != np.float64):
        raise ValueError("softmax_xent_ needs a writeable 2-D C-contiguous float32 or float64 array")
    cdef Py_ssize_t n = block.shape[0], C = block.shape[1]
    cdef Py_ssize_t[::1] t = target
    if t.shape[0] != n or n_threads < 1:
        raise ValueError("softmax_xent_: one target per row, n_threads >= 1")
    if n == 0:
        return 0.0
    cdef double[::1] losses = np.empty(n)
    if block.dtype == np.float32:
        with nogil:
            _xent_rows[float](<float*>cnp.PyArray_DATA(block), n, C, &t[0], scale, &losses[0], n_threads)
    else:
        with nogil:
            _xent_rows[double](<double*>cnp.PyArray_DATA(block), n, C, &t[0], scale, &losses[0], n_threads)
    cdef double total = 0.0
    cdef Py_ssize_t r
    for r in range(n):
        total += losses[r]
    return total


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _add_rows(floating[:, ::1] g, const Py_ssize_t[::1] ids, const floating[:, ::1] rows) noexcept nogil:
    cdef Py_ssize_t i, j, E = g.shape[1]
    for i in range(ids.shape[0]):
        for j in range(E):
            g[ids[i], j] += rows[i, j]


def add_rows_(g, ids, rows):
    """``g[ids[i]] += rows[i]`` for i in order (np.add.at's order, so its rounding): an embedding's gradient.
    ``g`` (V, E) and ``rows`` (n, E) C-contiguous of one float dtype; ``ids`` intp (n,) in [0, V)."""
    cdef Py_ssize_t[::1] idx = ids
    if g.ndim != 2 or rows.ndim != 2 or rows.shape[0] != idx.shape[0] or rows.shape[1] != g.shape[1] or (
            g.dtype != rows.dtype):
        raise ValueError("add_rows_: g (V, E), ids (n,) and rows (n, E) of g's dtype")
    if idx.shape[0] and (np.min(ids) < 0 or np.max(ids) >= g.shape[0]):
        raise ValueError("add_rows_: ids out of range")
    if g.dtype == np.float32:
        _add_rows[float](g, idx, rows)
    elif g.dtype == np.float64:
        _add_rows[double](g, idx, rows)
    else:
        raise TypeError(f"add_rows_: float32 or float64, got {g.dtype}")
