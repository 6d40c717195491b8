/* Training passes of rnnfast/_kernels/_optim.pyx: Adam / AdamW over a range of one parameter's elements, a
 * sum of squares, and a softmax cross-entropy row.
 *
 * Adam: every element goes through the rounded operations of the numpy passes of rnnfast.train.optimizers.Adam._update,
 * in the same order and precision (the hyperparameters already rounded to the element type by the caller),
 * so the two agree bit for bit; this header must be compiled without FMA contraction (-ffp-contract=off).
 * The options are selects on loop-invariant flags, so the loop vectorizes (SSE / AVX2 / AVX-512 clones).
 */
#ifndef RF_OPTIM_H
#define RF_OPTIM_H

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "rf_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(RF_NO_CLONES)
#define RF_OPTIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_OPTIM_CLONES
#endif

/* mode: 0 plain, 1 L2 (g + wd p), 2 decoupled (p *= wd, wd = 1 - lr * decay); low: the lerp weight w < 0.5
 * (m + (g - m) w, else g - (g - m)(1 - w), as torch.lerp); flush: zero |moments| < the smallest normal;
 * vmax: amsgrad's running maximum of v (NaN-propagating, as np.maximum) or NULL. */
#define RF_ADAM_BODY(T, SQRT, FABS, TINY, AMS)                                                                \
    for (ptrdiff_t i = lo; i < hi; i++) {                                                                     \
        T pi = p[i], gi = g[i], mi = m[i], vi = v[i], d, a;                                                   \
        gi = mode == 1 ? gi + wd * pi : gi;                                                                   \
        pi = mode == 2 ? pi * wd : pi;                                                                        \
        d = gi - mi;                                                                                          \
        mi = low ? mi + d * w : gi - d * omw;                                                                 \
        a = gi * omb2;                                                                                        \
        vi = vi * b2 + a * gi;                                                                                \
        mi = (flush && FABS(mi) < TINY) ? (T)0 : mi;                                                          \
        vi = (flush && FABS(vi) < TINY) ? (T)0 : vi;                                                          \
        m[i] = mi;                                                                                            \
        v[i] = vi;                                                                                            \
        if (AMS) {                                                                                            \
            T x = vmax[i];                                                                                    \
            x = (vi > x || vi != vi) ? vi : x;                                                                \
            vmax[i] = x;                                                                                      \
            vi = x;                                                                                           \
        }                                                                                                     \
        d = SQRT(vi) / bc2 + eps;                                                                             \
        p[i] = pi - mi * step / d;                                                                            \
    }

#define RF_ADAM_DEFINE(T, NAME, SQRT, FABS, TINY)                                                             \
    RF_OPTIM_CLONES static void NAME(T *__restrict__ p, const T *__restrict__ g, T *__restrict__ m,           \
                                     T *__restrict__ v, T *__restrict__ vmax, ptrdiff_t lo, ptrdiff_t hi,     \
                                     int mode, T wd, int low, T w, T omw, T b2, T omb2, int flush, T bc2,     \
                                     T eps, T step) {                                                         \
        if (vmax != NULL) {                                                                                   \
            RF_ADAM_BODY(T, SQRT, FABS, TINY, 1)                                                              \
        } else {                                                                                              \
            RF_ADAM_BODY(T, SQRT, FABS, TINY, 0)                                                              \
        }                                                                                                     \
    }

RF_ADAM_DEFINE(float, rf_adam_f, sqrtf, fabsf, FLT_MIN)
RF_ADAM_DEFINE(double, rf_adam_d, sqrt, fabs, DBL_MIN)

/* The sum of squares of a[lo:hi] in double: eight running sums (element i in sum i % 8, so the loop
 * vectorizes without reassociation), added in a fixed order: the value depends on lo and hi only. */
#define RF_SUMSQ_DEFINE(T, NAME)                                                                              \
    RF_OPTIM_CLONES static double NAME(const T *__restrict__ a, ptrdiff_t lo, ptrdiff_t hi) {                 \
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                               \
        ptrdiff_t i = lo;                                                                                     \
        for (; i + 8 <= hi; i += 8)                                                                           \
            for (int k = 0; k < 8; k++) {                                                                     \
                double x = (double)a[i + k];                                                                  \
                s[k] += x * x;                                                                                \
            }                                                                                                 \
        for (int k = 0; i < hi; i++, k++) {                                                                   \
            double x = (double)a[i];                                                                          \
            s[k] += x * x;                                                                                    \
        }                                                                                                     \
        return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                             \
    }

RF_SUMSQ_DEFINE(float, rf_sumsq_f)
RF_SUMSQ_DEFINE(double, rf_sumsq_d)

/* One row of logits (C classes) becomes scale * (softmax - onehot(t)) in place; returns the row's
 * cross-entropy log(sum exp(x - max)) - (x_t - max) in double. float: rf_fast_expf (about one ulp, vectorized),
 * exp(x - max) taken as 0 below -87 (where it would clamp); double: libm exp. The exponentials are summed
 * in double, in eight running sums (so the loop vectorizes) added in a fixed order. */
#define RF_XENT_DEFINE(T, NAME, EXP, LO)                                                                      \
    RF_OPTIM_CLONES static double NAME(T *__restrict__ row, ptrdiff_t C, ptrdiff_t t, T scale) {              \
        T mk[8], mx, k;                                                                                       \
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, picked, sum;                                                  \
        ptrdiff_t j = 0;                                                                                      \
        for (int q = 0; q < 8; q++)                                                                           \
            mk[q] = row[0];                                                                                   \
        for (; j + 8 <= C; j += 8)                                                                            \
            for (int q = 0; q < 8; q++)                                                                       \
                mk[q] = row[j + q] > mk[q] ? row[j + q] : mk[q];                                              \
        mx = mk[0];                                                                                           \
        for (int q = 1; q < 8; q++)                                                                           \
            mx = mk[q] > mx ? mk[q] : mx;                                                                     \
        for (; j < C; j++)                                                                                    \
            mx = row[j] > mx ? row[j] : mx;                                                                   \
        picked = (double)(row[t] - mx);                                                                       \
        for (j = 0; j < C; j++) {                                                                             \
            T x = row[j] - mx;                                                                                \
            row[j] = x < LO ? (T)0 : EXP(x);                                                                  \
        }                                                                                                     \
        for (j = 0; j + 8 <= C; j += 8)                                                                       \
            for (int q = 0; q < 8; q++)                                                                       \
                s[q] += (double)row[j + q];                                                                   \
        for (int q = 0; j < C; j++, q++)                                                                      \
            s[q] += (double)row[j];                                                                           \
        sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                              \
        k = scale / (T)sum;                                                                                   \
        for (j = 0; j < C; j++)                                                                               \
            row[j] *= k;                                                                                      \
        row[t] -= scale;                                                                                      \
        return log(sum) - picked;                                                                             \
    }

RF_XENT_DEFINE(float, rf_xent_f, rf_fast_expf, -87.0f)
RF_XENT_DEFINE(double, rf_xent_d, exp, -HUGE_VAL)

#endif
