/* Plain-C helpers for rnnfast's kernels: clamped activations and denormal control.
 *
 * Activations are "exact" (libm expf/exp, tanhf/tanh) and safe for every input: sigmoid(x) = 1/(1+exp(-x))
 * with x clamped so exp never overflows, tanh from libm (bounded by construction). NaN stays NaN.
 * No Python here.
 */
#ifndef RF_MATH_H
#define RF_MATH_H

#include <math.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define RF_HAVE_MXCSR 1
#endif

static inline float rf_sigmoidf(float x) {
    /* exp(88) < FLT_MAX: clamping keeps 1 + exp(-x) finite. */
    x = x < -88.0f ? -88.0f : (x > 88.0f ? 88.0f : x);
    return 1.0f / (1.0f + expf(-x));
}

static inline double rf_sigmoid(double x) {
    x = x < -708.0 ? -708.0 : (x > 708.0 ? 708.0 : x);
    return 1.0 / (1.0 + exp(-x));
}

static inline float rf_tanhf(float x) { return tanhf(x); }
static inline double rf_tanh(double x) { return tanh(x); }

/* Flush denormals to zero (FTZ|DAZ) in the calling thread; returns the previous state to restore. */
static inline unsigned int rf_ftz_enter(void) {
#ifdef RF_HAVE_MXCSR
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
#else
    return 0u;
#endif
}

static inline void rf_ftz_leave(unsigned int old) {
#ifdef RF_HAVE_MXCSR
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

#endif
