/* int8 inference of LSTM / GRU / RNN layers: quantized products, float32 cell maths.
 *
 * Scheme (the numpy twin is tests/test_int8.py's reference):
 *   weights  per output row n (a gate's unit), symmetric: w = sw[n] * qw, qw in [-127, 127] (int8),
 *            sw[n] = max|W[n, :]| / 127; packed once (below) with csum[n] = sum_k qw[n, k].
 *   inputs   x_t and h_{t-1}, per row and step, asymmetric u8 (ONNX Runtime's DynamicQuantizeLSTM
 *            scheme, but per row where it takes one scale per tensor): lo = min(0, min x), hi =
 *            max(0, max x), s = (hi - lo) / 255 (1 where hi = lo), z = rint(-lo / s) in [0, 255],
 *            q = clamp(rint(x * (1 / s)) + z, 0, 255). The range holds 0 so zero is exact (zero
 *            padding and h0 = 0 cost nothing). u8 because vpdpbusd / tdpbusd multiply u8 by s8;
 *            per row because a row's scale then follows its own range (0.6-0.8e-2 relative L2 against
 *            float32 where ONNX Runtime's per-tensor scale gives 1.0-1.2e-2, bench/int8.py) and no
 *            row's result depends on the others in the batch: a sequence gives the same bits alone,
 *            in any batch, or step by step.
 *   product  acc[m, n] = sum_k q[m, k] qw[n, k] in int32 (exact: |acc| < 2^31 for K < 66000), then
 *            out[m, n] = float(acc - z[m] csum[n]) * (s[m] * sw[n])  (+ out[m, n] when accumulating),
 *            two roundings, no FMA (the extension builds with -ffp-contract=off), so every
 *            instruction path below gives bit-identical results and the tests compare them exactly.
 *   cells    float32: rf_cells_impl.h's fused passes, biases added there; on AVX-512 machines LSTM and
 *            GRU take the same passes written without divisions (rf_i8_lstm_avx512, rf_i8_gru_avx512).
 *
 * Packed weights: rows padded to a multiple of 16 (per gate: each gate of H units takes Hp = round16(H)
 * rows, so a thread's share of units is whole 16-row blocks of every gate), K padded to Kp = round64(K)
 * with zeros; layout [block of 16 rows][k group q < Kp / 4][row r < 16][4 bytes of k], so one 64-byte
 * line is the 16 rows' int8 weights of 4 consecutive k: a `vpdpbusd` operand (16 int32 lanes, each
 * the sum of 4 u8 x s8 products) and, 16 lines together, an AMX B tile (16 k groups x 16 columns).
 *
 * Instruction paths, chosen at run time (rf_i8_best; _int8.set_isa or RNNFAST_INT8_ISA forces one):
 *   RF_I8_AMX     AMX-INT8 tiles (`tdpbusd`): 2 x 2 blocks of 16 x 16 int32, K in steps of 64; for
 *                 products of 16 rows or more (a smaller one pays for 16: the batch-1 step on tiles
 *                 took 1.3x the VNNI GEMV's time); Linux grants the tile
 *                 state after ARCH_REQ_XCOMP_PERM, asked once per process.
 *   RF_I8_VNNI    AVX512-VNNI (`vpdpbusd`): up to 4 rows x 4 blocks (1 x 8 for a GEMV) of zmm sums.
 *   RF_I8_AVX2    u8 and s8 widened to int16 and multiplied with `vpmaddwd` (exact: no saturation,
 *                 unlike `vpmaddubsw`, whose int16 pair sums overflow at 255 * 127 * 2).
 *   RF_I8_SCALAR  plain C.
 * Each is compiled with a function-level target attribute, so the module loads on any x86-64.
 */
#ifndef RF_INT8_H
#define RF_INT8_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "rf_cpu.h"
#include "rf_latency.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RF_I8_X86 1
#endif

enum { RF_I8_SCALAR = 0, RF_I8_AVX2 = 1, RF_I8_VNNI = 2, RF_I8_AMX = 3 };

#define RF_I8_AMX_MIN_ROWS 16  /* auto: AMX for products of this many rows or more, VNNI below */

static inline int rf_i8_round(int n, int m) { return (n + m - 1) / m * m; }

/* 1: the LSTM and GRU passes of rf_i8_lstm_avx512 / rf_i8_gru_avx512 (AVX-512 machines; set by
 * rf_i8_best), else rf_cells_impl.h's. It depends on the CPU, not on the forced product path, so every
 * path still gives the same bits. */
static int rf_i8_fast_cells = 0;

/* The best path this CPU and OS run (csrc/rf_cpu.h; AMX after the permission request). */
static int rf_i8_best(void) {
    int f = rf_cpu_features();
    rf_i8_fast_cells = (f & RF_CPU_AVX512) != 0 && (f & RF_CPU_AVX2) != 0;
    if ((f & RF_CPU_AMX_INT8) && (f & RF_CPU_AVX512_VNNI) && rf_amx_enable()) return RF_I8_AMX;
    if (f & RF_CPU_AVX512_VNNI) return RF_I8_VNNI;
    if (f & RF_CPU_AVX2) return RF_I8_AVX2;
    return RF_I8_SCALAR;
}

/* ------------------------------------------------------------------------------ quantizing the rows */

/* A row's scale from its range [lo, hi] (lo <= 0 <= hi), with 1 / scale in *inv and the zero point in
 * *zp (a whole float in [0, 255]). */
static inline float rf_i8_scale(float lo, float hi, float* inv, float* zp) {
    float sc = (hi - lo) / 255.0f;
    sc = sc > 0.0f ? sc : 1.0f;
    *inv = 1.0f / sc;
    float z = nearbyintf(-lo * *inv);
    z = z > 0.0f ? z : 0.0f;  /* (NaN -> 0, as vmaxps) */
    *zp = z < 255.0f ? z : 255.0f;
    return sc;
}

/* Rows [0, M) of X (M, K; ldx) to u8 Q (M, ldq) with their scales s and zero points z (the scheme at
 * the top); columns K and on of Q are left as they are (the weights there are zero). */
static void rf_i8_quant_rows_scalar(int M, int K, const float* X, int ldx, uint8_t* Q, int ldq, float* s,
                                    int32_t* z) {
    for (int m = 0; m < M; m++) {
        const float* x = X + (size_t)m * ldx;
        uint8_t* q = Q + (size_t)m * ldq;
        float lo = 0.0f, hi = 0.0f;
        for (int k = 0; k < K; k++) {
            lo = x[k] < lo ? x[k] : lo;
            hi = x[k] > hi ? x[k] : hi;
        }
        float inv, zp, sc = rf_i8_scale(lo, hi, &inv, &zp);
        for (int k = 0; k < K; k++) {
            float v = nearbyintf(x[k] * inv) + zp;
            v = v > 0.0f ? v : 0.0f;  /* NaN -> 0, as vmaxps */
            v = v < 255.0f ? v : 255.0f;
            q[k] = (uint8_t)v;
        }
        s[m] = sc;
        z[m] = (int32_t)zp;
    }
}

#ifdef RF_I8_X86
#define RF_I8_T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

RF_I8_T512 static void rf_i8_quant_rows_avx512(int M, int K, const float* X, int ldx, uint8_t* Q, int ldq,
                                               float* s, int32_t* z) {
    for (int m = 0; m < M; m++) {
        const float* x = X + (size_t)m * ldx;
        uint8_t* q = Q + (size_t)m * ldq;
        __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
        int k = 0;
        for (; k + 16 <= K; k += 16) {
            __m512 v = _mm512_loadu_ps(x + k);
            vlo = _mm512_min_ps(v, vlo);  /* (NaN: the second operand, as the scalar loop) */
            vhi = _mm512_max_ps(v, vhi);
        }
        if (k < K) {
            __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(mk, x + k);
            vlo = _mm512_min_ps(v, vlo);  /* (NaN: the second operand, as the scalar loop) */
            vhi = _mm512_max_ps(v, vhi);
        }
        float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
        float inv, zp, sc = rf_i8_scale(lo, hi, &inv, &zp);
        __m512 vinv = _mm512_set1_ps(inv), vz = _mm512_set1_ps(zp), v0 = _mm512_setzero_ps(),
               v255 = _mm512_set1_ps(255.0f);
        for (k = 0; k < K; k += 16) {
            __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(mk, x + k);
            v = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, vz), v0), v255);
            _mm_mask_storeu_epi8(q + k, mk, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        s[m] = sc;
        z[m] = (int32_t)zp;
    }
}
#endif

static void rf_i8_quant_rows(int isa, int M, int K, const float* X, int ldx, uint8_t* Q, int ldq, float* s,
                             int32_t* z) {
#ifdef RF_I8_X86
    if (isa >= RF_I8_VNNI) {
        rf_i8_quant_rows_avx512(M, K, X, ldx, Q, ldq, s, z);
        return;
    }
#endif
    rf_i8_quant_rows_scalar(M, K, X, ldx, Q, ldq, s, z);
}

/* ----------------------------------------------------------------------------------- the products */

/* C[m, n] (=, or += when acc) the dequantized product of A's row m and packed row n, for rows [0, M)
 * of A (u8, (M, Kp), lda; scales sa, zero points za) and the packed blocks [nb0, nb1) (columns
 * 16 nb0 .. 16 nb1 of C, ldc). AMX reads A's rows up to round16(M). */
typedef void (*rf_i8_gemm_fn)(int M, int Kp, const uint8_t* A, int lda, const float* sa, const int32_t* za,
                              const int8_t* P, const float* sw, const int32_t* cs, int nb0, int nb1, int acc,
                              float* C, int ldc);

static void rf_i8_gemm_scalar(int M, int Kp, const uint8_t* A, int lda, const float* sa, const int32_t* za,
                              const int8_t* P, const float* sw, const int32_t* cs, int nb0, int nb1, int acc,
                              float* C, int ldc) {
    size_t bs = (size_t)Kp * 16;
    for (int m = 0; m < M; m++) {
        const uint8_t* a = A + (size_t)m * lda;
        for (int nb = nb0; nb < nb1; nb++) {
            int32_t sum[16] = {0};
            const int8_t* p = P + nb * bs;
            for (int q = 0; q < Kp / 4; q++)
                for (int r = 0; r < 16; r++)
                    for (int i = 0; i < 4; i++) sum[r] += (int32_t)a[4 * q + i] * p[(size_t)q * 64 + 4 * r + i];
            for (int r = 0; r < 16; r++) {
                int n = nb * 16 + r;
                float v = (float)(sum[r] - za[m] * cs[n]) * (sa[m] * sw[n]);
                float* c = C + (size_t)m * ldc + n;
                *c = acc ? *c + v : v;
            }
        }
    }
}

#ifdef RF_I8_X86
#define RF_I8_TAVX2 __attribute__((target("avx2,fma")))

/* 16 columns of row m from their int32 sums (n0 = 16 * block). */
RF_I8_T512 static inline void rf_i8_deq16(__m512i sum, int32_t zm, float sm, const float* sw, const int32_t* cs,
                                          int acc, float* c) {
    __m512i adj = _mm512_sub_epi32(sum, _mm512_mullo_epi32(_mm512_set1_epi32(zm), _mm512_loadu_si512(cs)));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(adj), _mm512_mul_ps(_mm512_set1_ps(sm), _mm512_loadu_ps(sw)));
    _mm512_storeu_ps(c, acc ? _mm512_add_ps(_mm512_loadu_ps(c), v) : v);
}

/* The micro-kernels: sums of rows of A (u8, lda) times packed blocks (bs bytes apart) over Q k groups,
 * into out[i * NB + j] (row i, block j). Accumulators are named, not an array: GCC kept an unrolled
 * array in registers but copied each of them at every dpbusd (3x slower). */
#define RF_I8_A4(row, q) (*(const int32_t*)(const void*)((row) + 4 * (q)))
#define RF_I8_W(j, q) _mm512_loadu_si512(p + (j) * bs + (size_t)(q) * 64)
#define RF_I8_DP(s, a, j) s = _mm512_dpbusd_epi32(s, a, w##j)

/* 1 row x 8 blocks: the GEMV of the batch-1 step; 8 independent chains hide dpbusd's latency. */
RF_I8_T512 static inline void rf_i8_vnni_1x8(int Q, const uint8_t* a, const int8_t* p, size_t bs, __m512i* out) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int q = 0; q < Q; q++) {
        __m512i av = _mm512_set1_epi32(RF_I8_A4(a, q));
        __m512i w0 = RF_I8_W(0, q), w1 = RF_I8_W(1, q), w2 = RF_I8_W(2, q), w3 = RF_I8_W(3, q);
        __m512i w4 = RF_I8_W(4, q), w5 = RF_I8_W(5, q), w6 = RF_I8_W(6, q), w7 = RF_I8_W(7, q);
        RF_I8_DP(s0, av, 0); RF_I8_DP(s1, av, 1); RF_I8_DP(s2, av, 2); RF_I8_DP(s3, av, 3);
        RF_I8_DP(s4, av, 4); RF_I8_DP(s5, av, 5); RF_I8_DP(s6, av, 6); RF_I8_DP(s7, av, 7);
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3; out[4] = s4; out[5] = s5; out[6] = s6; out[7] = s7;
}

/* 1 row x 4 blocks (a GEMV's remainder; small layers' whole product). */
RF_I8_T512 static inline void rf_i8_vnni_1x4(int Q, const uint8_t* a, const int8_t* p, size_t bs, __m512i* out) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int q = 0; q < Q; q++) {
        __m512i av = _mm512_set1_epi32(RF_I8_A4(a, q));
        __m512i w0 = RF_I8_W(0, q), w1 = RF_I8_W(1, q), w2 = RF_I8_W(2, q), w3 = RF_I8_W(3, q);
        RF_I8_DP(s0, av, 0); RF_I8_DP(s1, av, 1); RF_I8_DP(s2, av, 2); RF_I8_DP(s3, av, 3);
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

/* 4 rows x 4 blocks: 16 accumulators, 4 weight lines and 4 broadcasts a k group. */
RF_I8_T512 static inline void rf_i8_vnni_4x4(int Q, const uint8_t* a, int lda, const int8_t* p, size_t bs,
                                             __m512i* out) {
    __m512i z = _mm512_setzero_si512();
    __m512i s00 = z, s01 = z, s02 = z, s03 = z, s10 = z, s11 = z, s12 = z, s13 = z;
    __m512i s20 = z, s21 = z, s22 = z, s23 = z, s30 = z, s31 = z, s32 = z, s33 = z;
    const uint8_t *a1 = a + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    for (int q = 0; q < Q; q++) {
        __m512i w0 = RF_I8_W(0, q), w1 = RF_I8_W(1, q), w2 = RF_I8_W(2, q), w3 = RF_I8_W(3, q);
        __m512i av = _mm512_set1_epi32(RF_I8_A4(a, q));
        RF_I8_DP(s00, av, 0); RF_I8_DP(s01, av, 1); RF_I8_DP(s02, av, 2); RF_I8_DP(s03, av, 3);
        av = _mm512_set1_epi32(RF_I8_A4(a1, q));
        RF_I8_DP(s10, av, 0); RF_I8_DP(s11, av, 1); RF_I8_DP(s12, av, 2); RF_I8_DP(s13, av, 3);
        av = _mm512_set1_epi32(RF_I8_A4(a2, q));
        RF_I8_DP(s20, av, 0); RF_I8_DP(s21, av, 1); RF_I8_DP(s22, av, 2); RF_I8_DP(s23, av, 3);
        av = _mm512_set1_epi32(RF_I8_A4(a3, q));
        RF_I8_DP(s30, av, 0); RF_I8_DP(s31, av, 1); RF_I8_DP(s32, av, 2); RF_I8_DP(s33, av, 3);
    }
    out[0] = s00; out[1] = s01; out[2] = s02; out[3] = s03; out[4] = s10; out[5] = s11; out[6] = s12;
    out[7] = s13; out[8] = s20; out[9] = s21; out[10] = s22; out[11] = s23; out[12] = s30; out[13] = s31;
    out[14] = s32; out[15] = s33;
}

/* 1 row x 1 block (the edges), two chains over even and odd k groups. */
RF_I8_T512 static inline void rf_i8_vnni_1x1(int Q, const uint8_t* a, const int8_t* p, __m512i* out) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0;
    size_t bs = 0;
    int q = 0;
    for (; q + 2 <= Q; q += 2) {
        __m512i w0 = RF_I8_W(0, q), w1 = RF_I8_W(0, q + 1);
        s0 = _mm512_dpbusd_epi32(s0, _mm512_set1_epi32(RF_I8_A4(a, q)), w0);
        s1 = _mm512_dpbusd_epi32(s1, _mm512_set1_epi32(RF_I8_A4(a, q + 1)), w1);
    }
    if (q < Q) {
        __m512i w0 = RF_I8_W(0, q);
        s0 = _mm512_dpbusd_epi32(s0, _mm512_set1_epi32(RF_I8_A4(a, q)), w0);
    }
    out[0] = _mm512_add_epi32(s0, s1);
}

RF_I8_T512 static void rf_i8_gemm_vnni(int M, int Kp, const uint8_t* A, int lda, const float* sa, const int32_t* za,
                                       const int8_t* P, const float* sw, const int32_t* cs, int nb0, int nb1, int acc,
                                       float* C, int ldc) {
    int Q = Kp / 4;
    size_t bs = (size_t)Kp * 16;
    __m512i s[16];
    int nb = nb0;
#define RF_I8_DEQ(i, m_, nb_) \
    rf_i8_deq16(s[i], za[m_], sa[m_], sw + (nb_) * 16, cs + (nb_) * 16, acc, C + (size_t)(m_) * ldc + (nb_) * 16)
    if (M == 1) {  /* GEMV */
        for (; nb + 8 <= nb1; nb += 8) {
            rf_i8_vnni_1x8(Q, A, P + nb * bs, bs, s);
            for (int j = 0; j < 8; j++) RF_I8_DEQ(j, 0, nb + j);
        }
        for (; nb + 4 <= nb1; nb += 4) {
            rf_i8_vnni_1x4(Q, A, P + nb * bs, bs, s);
            for (int j = 0; j < 4; j++) RF_I8_DEQ(j, 0, nb + j);
        }
    } else {
        for (; nb + 4 <= nb1; nb += 4) {
            int m = 0;
            for (; m + 4 <= M; m += 4) {
                rf_i8_vnni_4x4(Q, A + (size_t)m * lda, lda, P + nb * bs, bs, s);
                for (int i = 0; i < 16; i++) RF_I8_DEQ(i, m + i / 4, nb + i % 4);
            }
            for (; m < M; m++)
                for (int j = 0; j < 4; j++) {
                    rf_i8_vnni_1x1(Q, A + (size_t)m * lda, P + (nb + j) * bs, s);
                    RF_I8_DEQ(0, m, nb + j);
                }
        }
    }
    for (; nb < nb1; nb++)
        for (int m = 0; m < M; m++) {
            rf_i8_vnni_1x1(Q, A + (size_t)m * lda, P + nb * bs, s);
            RF_I8_DEQ(0, m, nb);
        }
#undef RF_I8_DEQ
}

/* AVX2: 16 rows x 4 k (one 64-byte line) as four 4-row int16 vectors times the 4 u8 of A widened and
 * repeated; vpmaddwd sums k pairs, so a row's two pair sums sit side by side until the end. */
RF_I8_TAVX2 static void rf_i8_gemm_avx2(int M, int Kp, const uint8_t* A, int lda, const float* sa, const int32_t* za,
                                        const int8_t* P, const float* sw, const int32_t* cs, int nb0, int nb1, int acc,
                                        float* C, int ldc) {
    int Q = Kp / 4;
    size_t bs = (size_t)Kp * 16;
    for (int m = 0; m < M; m++) {
        const uint8_t* a = A + (size_t)m * lda;
        for (int nb = nb0; nb < nb1; nb++) {
            const int8_t* p = P + nb * bs;
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
            for (int q = 0; q < Q; q++) {
                int32_t a4;
                memcpy(&a4, a + 4 * q, 4);
                __m256i av = _mm256_cvtepu8_epi16(_mm_set1_epi32(a4));  /* a0..a3 repeated, int16 */
                const int8_t* l = p + (size_t)q * 64;
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)l)), av));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(l + 16))), av));
                s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(l + 32))), av));
                s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(l + 48))), av));
            }
            /* s0: rows 0-3 as [r0 r0 r1 r1 | r2 r2 r3 r3] pair sums; hadd + qword permute orders them */
            __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s0, s1), 0xD8);
            __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s2, s3), 0xD8);
            __m256i vz = _mm256_set1_epi32(za[m]);
            __m256 vs = _mm256_set1_ps(sa[m]);
            for (int h = 0; h < 2; h++) {
                int n = nb * 16 + 8 * h;
                __m256i sum = h ? hi : lo;
                __m256i adj = _mm256_sub_epi32(sum, _mm256_mullo_epi32(vz, _mm256_loadu_si256((const __m256i*)(cs + n))));
                __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(adj), _mm256_mul_ps(vs, _mm256_loadu_ps(sw + n)));
                float* c = C + (size_t)m * ldc + n;
                _mm256_storeu_ps(c, acc ? _mm256_add_ps(_mm256_loadu_ps(c), v) : v);
            }
        }
    }
}

/* AMX: tiles 0-3 hold C (2 x 2 blocks of 16 x 16 int32), 4-5 A (16 rows x 64 k), 6-7 B (16 k groups x
 * 64 bytes: exactly 16 lines of a packed block), in rf_cpu.h's tile configuration. */
#define RF_I8_TAMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))

RF_I8_TAMX static void rf_i8_amx_store(int mr, int m, int nb, const float* sa, const int32_t* za, const float* sw,
                                       const int32_t* cs, int acc, float* C, int ldc, const int32_t* buf) {
    for (int i = 0; i < mr; i++)
        rf_i8_deq16(_mm512_loadu_si512(buf + 16 * i), za[m + i], sa[m + i], sw + nb * 16, cs + nb * 16, acc,
                    C + (size_t)(m + i) * ldc + nb * 16);
}

RF_I8_TAMX static void rf_i8_gemm_amx(int M, int Kp, const uint8_t* A, int lda, const float* sa, const int32_t* za,
                                      const int8_t* P, const float* sw, const int32_t* cs, int nb0, int nb1, int acc,
                                      float* C, int ldc) {
    rf_amx_config_16x64(); /* (rf_cpu.h) */
    size_t bs = (size_t)Kp * 16;
    int32_t buf[4][256] __attribute__((aligned(64)));
    for (int m = 0; m < M; m += 32) {
        int two_m = m + 16 < M;
        const uint8_t* a0 = A + (size_t)m * lda;
        const uint8_t* a1 = a0 + (size_t)16 * lda;
        for (int nb = nb0; nb < nb1; nb += 2) {
            int two_n = nb + 1 < nb1;
            const int8_t* p0 = P + nb * bs;
            const int8_t* p1 = p0 + bs;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int k = 0; k < Kp; k += 64) {
                _tile_loadd(4, a0 + k, lda);
                _tile_loadd(6, p0 + (size_t)k * 16, 64);
                _tile_dpbusd(0, 4, 6);
                if (two_n) {
                    _tile_loadd(7, p1 + (size_t)k * 16, 64);
                    _tile_dpbusd(1, 4, 7);
                }
                if (two_m) {
                    _tile_loadd(5, a1 + k, lda);
                    _tile_dpbusd(2, 5, 6);
                    if (two_n) _tile_dpbusd(3, 5, 7);
                }
            }
            _tile_stored(0, buf[0], 64);
            _tile_stored(1, buf[1], 64);
            _tile_stored(2, buf[2], 64);
            _tile_stored(3, buf[3], 64);
            int mr0 = M - m < 16 ? M - m : 16, mr1 = M - m - 16 < 16 ? M - m - 16 : 16;
            rf_i8_amx_store(mr0, m, nb, sa, za, sw, cs, acc, C, ldc, buf[0]);
            if (two_n) rf_i8_amx_store(mr0, m, nb + 1, sa, za, sw, cs, acc, C, ldc, buf[1]);
            if (two_m) {
                rf_i8_amx_store(mr1, m + 16, nb, sa, za, sw, cs, acc, C, ldc, buf[2]);
                if (two_n) rf_i8_amx_store(mr1, m + 16, nb + 1, sa, za, sw, cs, acc, C, ldc, buf[3]);
            }
        }
    }
    _tile_release();
}
#endif

/* The product routine of path isa for M rows (auto, isa = RF_I8_AMX: AMX from RF_I8_AMX_MIN_ROWS rows
 * on, unless forced = the path was forced, then AMX for any M). */
static rf_i8_gemm_fn rf_i8_gemm_for(int isa, int forced, int M) {
#ifdef RF_I8_X86
    if (isa == RF_I8_AMX && (forced || M >= RF_I8_AMX_MIN_ROWS)) return rf_i8_gemm_amx;
    if (isa >= RF_I8_VNNI) return rf_i8_gemm_vnni;
    if (isa == RF_I8_AVX2) return rf_i8_gemm_avx2;
#endif
    (void)forced;
    (void)M;
    return rf_i8_gemm_scalar;
}

/* ------------------------------------------------------------------------------ one layer direction */

/* A layer direction's packed weights (arrays of the Python side; see the top of this file). G gates of
 * H units, each gate Hp = round16(H) packed rows; F inputs. b (G * Hp): LSTM / RNN b_ih + b_hh; GRU
 * b_ih + b_hh for r and z, b_in for n; bhn (Hp): GRU's b_hn. */
typedef struct {
    int cell, relu, F, H, Hp, KpX, KpH;
    const int8_t *pih, *phh;     /* (G Hp / 16, KpX / 4, 16, 4) and (G Hp / 16, KpH / 4, 16, 4) */
    const float *sih, *shh;      /* (G Hp) weight scales */
    const int32_t *cih, *chh;    /* (G Hp) row sums of the int8 weights */
    const float *b, *bhn;
} rf_i8_layer;

/* Workspace of one thread over up to `rows` batch rows. */
typedef struct {
    uint8_t* qh;     /* (round16(rows) + 16, KpH) u8 h_{t-1} */
    float* sh;       /* (rows) */
    int32_t* zh;
    float* gates;    /* (rows, G Hp) */
    float* gh;       /* GRU: (rows, 3 Hp) h W_hh^T */
    float* hb[2];    /* (rows, Hp) h_{t-1} and h_t, by turns */
    float* cb[2];    /* LSTM: (rows, Hp) c_{t-1} and c_t, by turns */
} rf_i8_ws;

/* Bytes of one thread's workspace over `rows` rows (a multiple of 64). */
static size_t rf_i8_ws_bytes(const rf_i8_layer* L, int rows) {
    int G = RF_GATES(L->cell);
    size_t nq = (size_t)(rf_i8_round(rows, 16) + 16) * L->KpH;
    size_t nf = (size_t)rows * (2 + G * L->Hp + 3 * L->Hp + 4 * L->Hp);
    return (nq + 63) / 64 * 64 + (nf * 4 + 63) / 64 * 64;
}

/* Lay out a thread's workspace over `rows` rows in mem (rf_i8_ws_bytes of it, 64-byte aligned). */
static void rf_i8_ws_carve(rf_i8_ws* w, const rf_i8_layer* L, int rows, char* mem) {
    int G = RF_GATES(L->cell);
    size_t nq = (size_t)(rf_i8_round(rows, 16) + 16) * L->KpH;
    w->qh = (uint8_t*)mem;
    float* f = (float*)(mem + (nq + 63) / 64 * 64);
    w->sh = f;
    w->zh = (int32_t*)(f + rows);
    w->gates = f + 2 * rows;
    w->gh = w->gates + (size_t)rows * G * L->Hp;
    w->hb[0] = w->gh + (size_t)rows * 3 * L->Hp;
    w->hb[1] = w->hb[0] + (size_t)rows * L->Hp;
    w->cb[0] = w->hb[1] + (size_t)rows * L->Hp;
    w->cb[1] = w->cb[0] + (size_t)rows * L->Hp;
}

#ifdef RF_I8_X86
#define RF_I8_TCELL __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

/* exp(x) on 16 lanes: rf_math.h's rf_fast_expf (x clamped to [-87, 88], Cody-Waite reduction, the Cephes
 * degree-6 polynomial), with 2^n applied by vscalefps. */
RF_I8_TCELL static inline __m512 rf_i8_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(t, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(t, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, t);
}

/* 1 / d for d >= 1: vrcp14ps and one Newton step (relative error about 2^-28, below float32's). */
RF_I8_TCELL static inline __m512 rf_i8_recip16(__m512 d) {
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

RF_I8_TCELL static inline __m512 rf_i8_sigm16(__m512 x) {
    return rf_i8_recip16(_mm512_add_ps(_mm512_set1_ps(1.0f), rf_i8_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

/* tanh as rf_fast_tanhf: |x| < 0.625: x + x^3 P(x^2) (Cephes); else 2 sigmoid(2x) - 1. */
RF_I8_TCELL static inline __m512 rf_i8_tanh16(__m512 x) {
    __m512 s = rf_i8_sigm16(_mm512_add_ps(x, x));
    __m512 big = _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.0f));
    __m512 z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-5.70498872745e-3f), z, _mm512_set1_ps(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
    __mmask16 lo = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(lo, big, small);
}

/* The LSTM pass of rf_cells_impl.h (same inputs and outputs, no tc), with the divisions of its
 * activations replaced by vrcp14ps + a Newton step: at 32 rows x 256 units a step, rf_lstm_fwd_f's
 * five vdivps per 16 units were the largest cost of the whole int8 call (more than the products).
 * Agrees with it to about 2 float32 ulp (tests/test_int8.py). */
RF_I8_TCELL static void rf_i8_lstm_avx512(int nb, int n, int H, float* G, const float* b, const float* cp, float* c,
                                         float* y, int ldy) {
    for (int r = 0; r < nb; r++) {
        float* g = G + (size_t)r * 4 * H;
        const float* cpr = cp + (size_t)r * H;
        float* cr = c + (size_t)r * H;
        float* yr = y + (size_t)r * ldy;
        for (int j = 0; j < n; j += 16) {
            __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
#define RF_I8_PRE(k) _mm512_add_ps(_mm512_maskz_loadu_ps(m, g + (k) * H + j), _mm512_maskz_loadu_ps(m, b + (k) * H + j))
            __m512 gi = rf_i8_sigm16(RF_I8_PRE(0)), gf = rf_i8_sigm16(RF_I8_PRE(1));
            __m512 gg = rf_i8_tanh16(RF_I8_PRE(2)), go = rf_i8_sigm16(RF_I8_PRE(3));
#undef RF_I8_PRE
            __m512 cc = _mm512_fmadd_ps(gf, _mm512_maskz_loadu_ps(m, cpr + j), _mm512_mul_ps(gi, gg));
            _mm512_mask_storeu_ps(cr + j, m, cc);
            _mm512_mask_storeu_ps(yr + j, m, _mm512_mul_ps(go, rf_i8_tanh16(cc)));
        }
    }
}

/* The GRU (reset after) pass of rf_cells_impl.h likewise (no hn kept). */
RF_I8_TCELL static void rf_i8_gru_avx512(int nb, int n, int H, float* G, const float* gh, const float* b,
                                        const float* bhn, const float* hp, int ldh, float* y, int ldy) {
    for (int r = 0; r < nb; r++) {
        const float* g = G + (size_t)r * 3 * H;
        const float* q = gh + (size_t)r * 3 * H;
        const float* hpr = hp + (size_t)r * ldh;
        float* yr = y + (size_t)r * ldy;
        for (int j = 0; j < n; j += 16) {
            __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
#define RF_I8_LD(p) _mm512_maskz_loadu_ps(m, (p) + j)
            __m512 gr = rf_i8_sigm16(_mm512_add_ps(_mm512_add_ps(RF_I8_LD(g), RF_I8_LD(b)), RF_I8_LD(q)));
            __m512 gz = rf_i8_sigm16(_mm512_add_ps(_mm512_add_ps(RF_I8_LD(g + H), RF_I8_LD(b + H)), RF_I8_LD(q + H)));
            __m512 hh = _mm512_add_ps(RF_I8_LD(q + 2 * H), RF_I8_LD(bhn));
            __m512 gn = rf_i8_tanh16(_mm512_fmadd_ps(gr, hh, _mm512_add_ps(RF_I8_LD(g + 2 * H), RF_I8_LD(b + 2 * H))));
            __m512 hv = RF_I8_LD(hpr);
#undef RF_I8_LD
            __m512 out = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), gz), gn, _mm512_mul_ps(gz, hv));
            _mm512_mask_storeu_ps(yr + j, m, out);
        }
    }
}
#endif

/* The cell's fused pass over nb rows, units [u0, u0 + n): gates / gh (nb, G Hp), h_{t-1} hp and c_{t-1}
 * cp (nb, Hp) -> h_t hy and c_t c (nb, Hp). */
static void rf_i8_cell(const rf_i8_layer* L, int nb, int u0, int n, float* gates, float* gh, const float* hp,
                       const float* cp, float* c, float* hy) {
    int Hp = L->Hp;
#ifdef RF_I8_X86
    if (L->cell == 1 && rf_i8_fast_cells) {
        rf_i8_lstm_avx512(nb, n, Hp, gates + u0, L->b + u0, cp + u0, c + u0, hy + u0, Hp);
        return;
    }
    if (L->cell == 2 && rf_i8_fast_cells) {
        rf_i8_gru_avx512(nb, n, Hp, gates + u0, gh + u0, L->b + u0, L->bhn + u0, hp + u0, Hp, hy + u0, Hp);
        return;
    }
#endif
    if (L->cell == 1)
        rf_lstm_fwd_f(nb, n, Hp, gates + u0, L->b + u0, cp + u0, c + u0, NULL, hy + u0, Hp);
    else if (L->cell == 2)
        rf_gru_fwd_f(nb, n, Hp, gates + u0, gh + u0, L->b + u0, L->bhn + u0, hp + u0, Hp, NULL, hy + u0, Hp);
    else
        rf_rnn_fwd_f(nb, n, Hp, L->relu, gates + u0, L->b + u0, hy + u0, Hp);
}

/* A call's rows, in rnnfast's packed layout (time-major, longest first, padded steps left out): step t
 * has rows [0, bs[t]), the first at off[t]. Row b of step t (p = off[t] + b) reads its input at
 * element xo[p] of x and writes its h_t from element yo[p] of y: the row's place at time t, or for the
 * reverse direction at time L_b - 1 - t, given (row stride, step stride) in elements, step stride 0
 * meaning packed rows (rf_i8_map). len[b] = the steps of row b. */
typedef struct {
    int T, B;
    const int *bs, *off;
    size_t *xo, *yo;
    int* len;
} rf_i8_rows_map;

/* Rows [r0, r1) of a batch, on their own (one thread): per step, the input product x_t W_ih^T from
 * the rows of qx quantized beforehand (in step order), then h_{t-1} W_hh^T, then the cell pass; h_t
 * goes to its output row. h, c (B, H): initial states in, final states out. */
static void rf_i8_rows(const rf_i8_layer* L, int isa, int forced, const rf_i8_rows_map* mp, int r0, int r1,
                       const uint8_t* qx, const float* sx, const int32_t* zx, float* h, float* c, float* y,
                       rf_i8_ws* w) {
    int G = RF_GATES(L->cell), GHp = G * L->Hp, Hp = L->Hp, H = L->H, gru = L->cell == 2;
    int nbk = GHp / 16;
    for (int r = r0; r < r1; r++) {
        memcpy(w->hb[0] + (size_t)(r - r0) * Hp, h + (size_t)r * H, H * sizeof(float));
        if (c) memcpy(w->cb[0] + (size_t)(r - r0) * Hp, c + (size_t)r * H, H * sizeof(float));
    }
    for (int t = 0; t < mp->T; t++) {
        int nb = (mp->bs[t] < r1 ? mp->bs[t] : r1) - r0;
        if (nb <= 0) break;
        size_t row = (size_t)mp->off[t] + r0;
        float *hp = w->hb[t & 1], *hy = w->hb[(t + 1) & 1];
        rf_i8_gemm_fn gemm = rf_i8_gemm_for(isa, forced, nb);
        gemm(nb, L->KpX, qx + row * L->KpX, L->KpX, sx + row, zx + row, L->pih, L->sih, L->cih, 0, nbk, 0,
             w->gates, GHp);
        rf_i8_quant_rows(isa, nb, H, hp, Hp, w->qh, L->KpH, w->sh, w->zh);
        gemm(nb, L->KpH, w->qh, L->KpH, w->sh, w->zh, L->phh, L->shh, L->chh, 0, nbk, !gru, gru ? w->gh : w->gates,
             GHp);
        unsigned int ftz = rf_ftz_enter();
        rf_i8_cell(L, nb, 0, H, w->gates, w->gh, hp, w->cb[t & 1], w->cb[(t + 1) & 1], hy);
        rf_ftz_leave(ftz);
        for (int i = 0; i < nb; i++)
            memcpy(y + mp->yo[row + i], hy + (size_t)i * Hp, H * sizeof(float));
    }
    /* step t wrote h_t, c_t to buffer (t + 1) & 1: a row's last, step len - 1, to len & 1 */
    for (int r = r0; r < r1; r++) {
        int l = mp->len[r] & 1;
        memcpy(h + (size_t)r * H, w->hb[l] + (size_t)(r - r0) * Hp, H * sizeof(float));
        if (c) memcpy(c + (size_t)r * H, w->cb[l] + (size_t)(r - r0) * Hp, H * sizeof(float));
    }
}

/* Batch 1: thread k of nk owns units [j0, j1) (whole 16-row blocks of each gate). It first makes its
 * columns of x W_ih^T for all T steps (an M = T product, AMX-sized), then per step quantizes all of
 * h_{t-1} (each thread for itself: 256 values cost less than a second barrier), adds h W_hh^T on its
 * blocks, runs the cell pass on its units and meets the others at the barrier of rf_latency.h (which
 * also sends thread 0 on alone when a partner is descheduled). xw (T, G Hp), gh (3 Hp), hb and cb
 * (2, Hp): shared, each thread writing its own columns; qh: 16 rows of KpH per thread. Returns the
 * count of long waits. */
static int rf_i8_latency(const rf_i8_layer* L, int isa, int forced, const rf_i8_rows_map* mp, int nth,
                         const uint8_t* qx, const float* sx, const int32_t* zx, float* h, float* c, float* y,
                         float* xw, float* gh, float* hb, float* cb, uint8_t* qh_all, long spin_ns) {
    int G = RF_GATES(L->cell), GHp = G * L->Hp, Hp = L->Hp, H = L->H, gru = L->cell == 2, T = mp->T;
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0, yields = 0;
    memcpy(hb, h, H * sizeof(float));
    if (c) memcpy(cb, c, H * sizeof(float));
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
        int share = rf_i8_round((Hp + nk - 1) / nk, 16);
        uint8_t* qh = qh_all + (size_t)k * 16 * L->KpH;
        float sh;
        int32_t zh;
        int j0, j1;
        rf_units(k, share, Hp, &j0, &j1);
        rf_i8_gemm_fn gx = rf_i8_gemm_for(isa, forced, T), g1 = rf_i8_gemm_for(isa, forced, 1);
        for (int g = 0; g < G && j1 > j0; g++)
            gx(T, L->KpX, qx, L->KpX, sx, zx, L->pih, L->sih, L->cih, (g * Hp + j0) / 16, (g * Hp + j1) / 16, 0,
               xw, GHp);
        int alone = nk == 1, solo = 0;
        unsigned int ftz = rf_ftz_enter();
        for (int t = 0; t < T; t++) {
            float *hp = hb + (size_t)(t & 1) * Hp, *hy = hb + (size_t)((t + 1) & 1) * Hp;
            float* gt = xw + (size_t)t * GHp;
            rf_i8_quant_rows(isa, 1, H, hp, Hp, qh, L->KpH, &sh, &zh);
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, Hp, &u0, &u1);
                if (u1 > H) u1 = H > u0 ? H : u0;  /* the cell pass runs on real units only */
                if (u1 <= u0) continue;
                int b0 = u0 / 16, b1 = (u1 + 15) / 16;
                if (b0 == 0 && b1 == Hp / 16)  /* every unit (one thread): the gates' blocks in one call */
                    g1(1, L->KpH, qh, L->KpH, &sh, &zh, L->phh, L->shh, L->chh, 0, GHp / 16, !gru, gru ? gh : gt, GHp);
                for (int g = 0; g < G && !(b0 == 0 && b1 == Hp / 16); g++)
                    g1(1, L->KpH, qh, L->KpH, &sh, &zh, L->phh, L->shh, L->chh, g * Hp / 16 + b0, g * Hp / 16 + b1,
                       !gru, gru ? gh : gt, GHp);
                rf_i8_cell(L, 1, u0, u1 - u0, gt, gh, hp, cb + (size_t)(t & 1) * Hp, cb + (size_t)((t + 1) & 1) * Hp,
                           hy);
                memcpy(y + mp->yo[t] + u0, hy + u0, (size_t)(u1 - u0) * sizeof(float));
            }
            if (!alone && rf_step_barrier(&bar, nk, spin_ns, t, &solo_at, k, &alone, &solo, &yields)) break;
        }
        rf_ftz_leave(ftz);
    }
    memcpy(h, hb + (size_t)(T & 1) * Hp, H * sizeof(float));
    if (c) memcpy(c, cb + (size_t)(T & 1) * Hp, H * sizeof(float));
    return yields;
}

/* The rows map of a call (rf_i8_rows_map); xo, yo: room for N offsets, len for B ints; xs, ys: x's and
 * y's (row stride, step stride). */
static void rf_i8_map(rf_i8_rows_map* mp, int T, int B, const int* bs, const int* off, int reverse,
                      const size_t* xs, const size_t* ys, size_t* xo, size_t* yo, int* len) {
    mp->T = T;
    mp->B = B;
    mp->bs = bs;
    mp->off = off;
    mp->xo = xo;
    mp->yo = yo;
    mp->len = len;
    for (int b = 0; b < B; b++) len[b] = 0;
    for (int t = 0; t < T; t++)
        for (int b = 0; b < bs[t]; b++) len[b] = t + 1;
    for (int t = 0; t < T; t++)
        for (int b = 0; b < bs[t]; b++) {
            size_t tau = reverse ? (size_t)(len[b] - 1 - t) : (size_t)t;  /* the row's time at step t */
            xo[off[t] + b] = xs[1] ? tau * xs[1] + b * xs[0] : (off[tau] + b) * xs[0];
            yo[off[t] + b] = ys[1] ? tau * ys[1] + b * ys[0] : (off[tau] + b) * ys[0];
        }
}

/* Where a call's scratch goes: byte offsets into one block (rf_i8_plan). */
typedef struct {
    size_t map, qx, sx, zx, rest, per_thread, total;
    int nth;
} rf_i8_scratch;

static inline size_t rf_i8_up64(size_t n) { return (n + 63) / 64 * 64; }

/* The scratch of a call over N rows in T steps of up to B rows on nth threads: the rows map, the
 * quantized input (N + 32 rows: AMX reads whole tiles), then either the batch-1 buffers or one
 * workspace per thread. */
static rf_i8_scratch rf_i8_plan(const rf_i8_layer* L, int T, size_t N, int B, int nth) {
    rf_i8_scratch sp;
    int GHp = RF_GATES(L->cell) * L->Hp;
    if (B > 1 && nth > B) nth = B;
    sp.nth = nth;
    sp.map = 0;
    sp.qx = rf_i8_up64(2 * N * sizeof(size_t) + B * sizeof(int));
    sp.sx = sp.qx + rf_i8_up64((N + 32) * L->KpX);
    sp.zx = sp.sx + rf_i8_up64(N * sizeof(float));
    sp.rest = sp.zx + rf_i8_up64(N * sizeof(int32_t));
    if (B == 1) {  /* xw (T, G Hp), gh (3 Hp), hb (2 Hp), cb (2 Hp); qh: 16 rows a thread */
        sp.per_thread = rf_i8_up64((size_t)16 * L->KpH);
        sp.total = sp.rest + rf_i8_up64(((size_t)T * GHp + 7 * L->Hp) * sizeof(float)) + nth * sp.per_thread;
    } else {
        sp.per_thread = rf_i8_ws_bytes(L, (B + nth - 1) / nth);
        sp.total = sp.rest + nth * sp.per_thread;
    }
    sp.total += 64;  /* room to align the block */
    return sp;
}

/* Forward of one direction of one layer, inference, over a packed batch (rf_i8_rows_map: bs, off (T),
 * reverse). x: F values a row, rows placed by xs (row stride, step stride; step stride 0: packed rows);
 * h, c (B, H): initial states in, final states out (c NULL but for LSTM); y: h_t of each row and step,
 * H values a row from the pointer given (the direction's first column), rows placed by ys. nth threads: batch
 * rows shared out (each thread its own recurrence), or for B = 1 the units (rf_i8_latency). isa,
 * forced: the path (rf_i8_gemm_for). scratch: rf_i8_plan(...).total bytes, reused from call to call
 * (fresh memory would cost page faults every call). Returns the count of long barrier waits. */
static int rf_i8_forward(const rf_i8_layer* L, int isa, int forced, int T, const int* bs, const int* off,
                         int reverse, const float* x, const size_t* xs, float* h, float* c, float* y,
                         const size_t* ys, int nth, long spin_ns, void* scratch) {
    int G = RF_GATES(L->cell), GHp = G * L->Hp, Hp = L->Hp, B = T > 0 ? bs[0] : 0;
    if (B <= 0) return 0;
    size_t N = (size_t)off[T - 1] + bs[T - 1];
    rf_i8_scratch sp = rf_i8_plan(L, T, N, B, nth);
    char* mem = (char*)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    size_t* xo = (size_t*)(mem + sp.map);
    uint8_t* qx = (uint8_t*)(mem + sp.qx);
    float* sx = (float*)(mem + sp.sx);
    int32_t* zx = (int32_t*)(mem + sp.zx);
    nth = sp.nth;
    rf_i8_rows_map mp;
    rf_i8_map(&mp, T, B, bs, off, reverse, xs, ys, xo, xo + N, (int*)(xo + 2 * N));
    /* quantized all at once, in step order; in parallel only when there is enough (a region's start
       can cost more than a batch-1 call: the partner thread may be asleep) */
    int qth = B > 1 && (double)N * L->F > 2e5 ? nth : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(qth) schedule(static) if (qth > 1)
#endif
    for (size_t i = 0; i < N; i++)
        rf_i8_quant_rows(isa, 1, L->F, x + xo[i], L->F, qx + i * L->KpX, L->KpX, sx + i, zx + i);
    if (B == 1) {
        float* xw = (float*)(mem + sp.rest);
        float* gh = xw + (size_t)T * GHp;
        uint8_t* qh = (uint8_t*)(mem + sp.total - 64 - nth * sp.per_thread);
        memset(qh, 0, nth * sp.per_thread);
        return rf_i8_latency(L, isa, forced, &mp, nth, qx, sx, zx, h, c, y, xw, gh, gh + 3 * Hp, gh + 5 * Hp, qh,
                             spin_ns);
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nth)
#endif
    {
        /* nth blocks of rows, each with its workspace; a thread takes every nk-th (OpenMP may give
           fewer threads than asked) */
        RF_THREAD_IDS(k, nk);
        int share = (B + nth - 1) / nth;
        for (int blk = k; blk < nth; blk += nk) {
            int r0 = blk * share < B ? blk * share : B, r1 = r0 + share < B ? r0 + share : B;
            if (r1 <= r0) continue;
            rf_i8_ws w;
            rf_i8_ws_carve(&w, L, r1 - r0, mem + sp.rest + (size_t)blk * sp.per_thread);
            rf_i8_rows(L, isa, forced, &mp, r0, r1, qx, sx, zx, h, c, y, &w);
        }
    }
    return 0;
}

/* rf_i8_plan's total for a call (the Python side sizes the scratch it passes). */
static size_t rf_i8_scratch_bytes(const rf_i8_layer* L, int T, const int* bs, const int* off, int nth) {
    int B = T > 0 ? bs[0] : 0;
    if (B <= 0) return 64;
    return rf_i8_plan(L, T, (size_t)off[T - 1] + bs[T - 1], B, nth).total;
}

#endif
