# The kernel modules' one BLAS thread hold (defined in _recurrent.pyx; _lncell and _variant cimport it so
# that all rnnfast calls running at once share one count and one saved BLAS thread count).
cdef void blas_hold() noexcept
cdef void blas_release() noexcept
