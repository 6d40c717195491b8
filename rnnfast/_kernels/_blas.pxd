# The one BLAS wrapper of rnnfast: row-major GEMM and a few helpers over scipy.linalg.cython_blas.
#
# scipy's BLAS is column-major. A row-major matrix is the transpose of a column-major one, so the
# row-major product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
# swap the operands (and their sizes), keep each one's transpose flag.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C := alpha * op(A) op(B) + beta * C, all row-major.

    op(A) is (M, K), op(B) is (K, N), C is (M, N); ``lda``, ``ldb``, ``ldc`` are row strides in
    elements. Empty products (M, N or K == 0) only scale C, as BLAS defines (K == 0) or do nothing.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)
