/* Plain-C helpers for rnnfast's kernels: clamped activations and denormal control. No Python here.
 *
 * Exact activations (float64 kernels): libm exp / tanh, sigmoid(x) = 1 / (1 + exp(-x)) with x clamped
 * so exp never overflows. Fast activations (float32 kernels): branch-free, so the fused loops vectorise:
 *   exp(x):  x clamped to [-87, 88]; x = n ln2 + r with n = round(x / ln2) (magic-number rounding),
 *            |r| <= ln2 / 2, e^r by the Cephes degree-6 polynomial, 2^n built in the exponent bits.
 *   sigmoid(x) = 1 / (1 + exp(-x)).
 *   tanh(x): |x| < 0.625: x + x^3 P(x^2) (Cephes tanhf polynomial); else sign(x) (1 - 2 / (exp(2|x|) + 1)).
 * Measured against double-precision libm on 2M points of [-30, 30] (tests/test_activations.py checks
 * it): largest absolute error 8.9e-8 (sigmoid) and 7.5e-8 (tanh), relative 1.5e-7 and 1.3e-7, i.e.
 * about one float32 ulp; exp 8e-8 relative on [-87, 88]. Every input gives a finite result; NaN stays
 * NaN.
 */
#ifndef RF_MATH_H
#define RF_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>
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

static inline float rf_fast_expf(float x) {
    float z, t, r, r2, p, scale;
    int32_t ti;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    z = x * 1.44269504088896341f;
    t = z + 12582912.0f;                 /* 1.5 * 2^23: rounds z to the nearest integer */
    memcpy(&ti, &t, sizeof ti);
    ti -= 0x4B400000;                    /* the integer n itself */
    t -= 12582912.0f;                    /* n as a float */
    r = x - t * 0.693359375f;            /* ln2 in two parts (Cody-Waite) */
    r = r - t * -2.12194440e-4f;
    r2 = r * r;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    ti = (ti + 127) << 23;
    memcpy(&scale, &ti, sizeof scale);
    return p * scale;
}

static inline float rf_fast_sigmoidf(float x) {
    return 1.0f / (1.0f + rf_fast_expf(-x));
}

static inline float rf_fast_tanhf(float x) {
    float a = x < 0.0f ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (rf_fast_expf(2.0f * a) + 1.0f);
    big = x < 0.0f ? -big : big;
    return a < 0.625f ? small : big;
}

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
