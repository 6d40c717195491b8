/* Row-wise helpers of the backward pass and of dropout, in C so they vectorise (Cython's loops do not
 * under Python's -fwrapv; see rf_cells_impl.h). float and double from one macro. */
#ifndef RF_ROWS_H
#define RF_ROWS_H

#include <stddef.h>
#include "rf_cells.h" /* RF_CLONES */

#define RF_DEFINE_ROWS(T, SUF)                                                                         \
    /* out1[j] (and out2[j], if given) += sum over the n rows of A[:, j], j < w: bias gradients */   \
    RF_CLONES static void rf_colsum_add_##SUF(const T* A, ptrdiff_t lda, ptrdiff_t n, ptrdiff_t w,      \
                                              T* __restrict__ out1, T* __restrict__ out2) {            \
        for (ptrdiff_t i = 0; i < n; i++) {                                                           \
            const T* __restrict__ a = A + i * lda;                                                    \
            for (ptrdiff_t j = 0; j < w; j++) out1[j] += a[j];                                        \
            if (out2)                                                                                 \
                for (ptrdiff_t j = 0; j < w; j++) out2[j] += a[j];                                    \
        }                                                                                             \
    }                                                                                                 \
    /* out[i] = a[i] * m[i], i < n (out may be a): dropout masks */                                  \
    RF_CLONES static void rf_mul_##SUF(const T* a, const T* m, T* out, ptrdiff_t n) {                 \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] * m[i];                                       \
    }

RF_DEFINE_ROWS(float, f)
RF_DEFINE_ROWS(double, d)

#endif
