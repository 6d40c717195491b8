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
    }                                                                                                 \
    /* the (m, w1 + w2) block A, split by columns: out1 (m, w1) += A[:, :w1], out2 (m, w2) += the     \
       rest (weight gradients made in one product, see net_backward) */                               \
    RF_CLONES static void rf_split_add_##SUF(const T* __restrict__ A, ptrdiff_t m, ptrdiff_t w1,      \
                                             ptrdiff_t w2, T* __restrict__ out1,                      \
                                             T* __restrict__ out2) {                                  \
        for (ptrdiff_t i = 0; i < m; i++) {                                                           \
            const T* __restrict__ a = A + i * (w1 + w2);                                              \
            T* __restrict__ o1 = out1 + i * w1;                                                       \
            T* __restrict__ o2 = out2 + i * w2;                                                       \
            for (ptrdiff_t j = 0; j < w1; j++) o1[j] += a[j];                                         \
            for (ptrdiff_t j = 0; j < w2; j++) o2[j] += a[w1 + j];                                    \
        }                                                                                             \
    }                                                                                                 \
    /* the same from At (w1 + w2, m), A's transpose (rf_gemm_tn_cols' [dW_ih, dW_hh]^T), 16 rows of    \
       the outputs a pass: their columns then stream in order */                                       \
    RF_CLONES static void rf_split_add_t_##SUF(const T* __restrict__ At, ptrdiff_t m, ptrdiff_t w1,   \
                                               ptrdiff_t w2, T* __restrict__ out1,                    \
                                               T* __restrict__ out2) {                                \
        for (ptrdiff_t i0 = 0; i0 < m; i0 += 16) {                                                    \
            ptrdiff_t iw = m - i0 < 16 ? m - i0 : 16;                                                 \
            for (ptrdiff_t j = 0; j < w1 + w2; j++) {                                                 \
                const T* __restrict__ a = At + j * m + i0;                                            \
                T* __restrict__ o = j < w1 ? out1 + i0 * w1 + j : out2 + i0 * w2 + (j - w1);         \
                ptrdiff_t ld = j < w1 ? w1 : w2;                                                      \
                for (ptrdiff_t i = 0; i < iw; i++) o[i * ld] += a[i];                                 \
            }                                                                                         \
        }                                                                                             \
    }

RF_DEFINE_ROWS(float, f)
RF_DEFINE_ROWS(double, d)

#endif
