/* Plain-C helpers for rnnfast's kernels: clamped activations and denormal control. No Python here.
 *
 * Exact activations (float64 kernels): libm exp / tanh, sigmoid(x) = 1 / (1 + exp(-x)) with x clamped
 * so exp never overflows. Fast activations (float32 kernels): branch-free, so the fused loops vectorise:
 *   exp(x):  x clamped to [-87, 88]; x = n ln2 + r with n = round(x / ln2) (magic-number rounding),
 *            |r| <= ln2 / 2, e^r by the Cephes degree-6 polynomial, 2^n built in the exponent bits.
 *   sigmoid(x) = 1 / (1 + exp(-x)).
 *   tanh(x) = e / (e + 2) with e = expm1(2x), made by the same reduction and polynomial (see below).
 * Measured against double-precision libm on 2M points of [-30, 30] (tests/test_activations.py checks
 * it): largest absolute error 8.9e-8 (sigmoid) and 1.5e-7 (tanh), relative 1.5e-7 and 1.6e-7, i.e.
 * one or two float32 ulp; exp 8e-8 relative on [-87, 88]. Every input gives a finite result; NaN stays
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

/* e^x = 2^n e^r, x = n ln2 + r (|r| <= ln2 / 2, x clamped to [-87, 88]): returns e^r - 1 = r + r^2 P(r)
 * (the Cephes polynomial) and sets *scale = 2^n, built in the exponent bits. */
static inline float rf_fast_exp_parts(float x, float* scale) {
    float z, t, r, r2, p;
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
    p = p * r2 + r;
    ti = (ti + 127) << 23;
    memcpy(scale, &ti, sizeof *scale);
    return p;
}

static inline float rf_fast_expf(float x) {
    float scale;
    float p = rf_fast_exp_parts(x, &scale);
    return (p + 1.0f) * scale;
}

static inline float rf_fast_sigmoidf(float x) {
    return 1.0f / (1.0f + rf_fast_expf(-x));
}

/* tanh(x) = e / (e + 2), e = expm1(2x) = 2^n (e^r - 1) + (2^n - 1) from rf_fast_exp_parts, so small |x|
 * (n = 0) lose nothing to cancellation. One exponential and one division, no second polynomial nor
 * select: 30% faster than the two-branch form (Cephes polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1)
 * above), whose error was 7.2e-8 absolute (now 1.5e-7, 1.3 ulp of 1). */
static inline float rf_fast_tanhf(float x) {
    float scale;
    float e = rf_fast_exp_parts(2.0f * x, &scale);
    e = scale * e + (scale - 1.0f);
    return e / (e + 2.0f);
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
