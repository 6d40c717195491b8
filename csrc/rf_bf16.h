/* bfloat16 inference of one layer and direction of an LSTM, GRU (reset after) or RNN: the weights are
 * bfloat16, each step's product inputs (x_t and h_{t-1}) are rounded to bfloat16 (round to nearest even),
 * the products accumulate in float32, and the cell maths (rf_cells_impl.h, fast float32 activations) and
 * the cell state stay float32.
 *
 * Weights, packed once (rf_bf16_pack): per gate g and block j of 16 units, one panel of
 * (Kx + Kh) / 2 rows of 16 units x 2 consecutive k, bfloat16:
 *     P[g][j][p][u][e] = W[g H + 16 j + u][2 p + e],   W = [W_ih | W_hh] along k,
 * with Kx = round32(F) columns of W_ih, then Kh = round32(H) of W_hh, zeros in the padding (units past H,
 * k past F or H). This is the layout vdpbf16ps takes for its second operand (pairs of k per 32-bit lane)
 * and AMX takes for a B tile (16 rows of 64 bytes: 32 k by 16 units), so the three paths share it.
 *
 * A step: for every gate and unit block, C (nb rows, 16 units) = x_t . Wx^T + h_{t-1} . Wh^T into the
 * gates scratch, then the cell's fused pass, then h_t rounded to bfloat16 for the next step. With few rows
 * (proj_all), x W_ih^T is made first for all steps in one product (on tiles) and a step adds h . Wh^T only.
 * The LSTM on AMX (not proj_all) has no gates scratch: per unit block and 32 rows, the four gates' tiles go
 * to a buffer in L1 and the cell runs on them within the next block's products (rf_amx_lstm_step).
 * Paths:
 *   RF_BF16_PORTABLE: plain C, converting bfloat16 to float32 (any CPU);
 *   RF_BF16_AVX512:   vdpbf16ps, 8 rows x 2 blocks of C in registers (2-4 rows: 4 x 4; one row: 1 x 8);
 *   RF_BF16_AMX:      AMX tiles, 2 x 2 tiles (32 rows x 32 units) of C per pass over k, for every full
 *                     16 rows; the rest of the rows (a batch of one, say) on the AVX512-BF16 kernel.
 * Measured (LSTM, 2 threads, interleaved, busy machine; bench/compare.py --precision bf16 for the figures
 * beside PyTorch): AMX 2.4-5x the float32 kernels on the named shapes; AVX512-BF16 wins only where the
 * weights' bytes bound the time (batch 1: 1.2-1.4x), and at large batches ran at 0.6x float32: here
 * vdpbf16ps does 32 multiply-adds per cycle, as two float32 FMAs do. The LSTM AMX step
 * (rf_amx_lstm_step) against the products into the gates scratch and a cell pass after them: process CPU
 * time 1.2x less at LSTM large and small, 1.12x at medium (2 threads, the busy machine).
 * Threads split the batch rows (in multiples of 16, no synchronisation between steps) or, for few rows
 * and for the LSTM on AMX with weights past a core's L2 (each thread keeps its share there), the unit
 * blocks (a barrier per step, as rf_latency.h: every thread needs all of h_{t-1}; after a long wait there
 * thread 0 finishes the call alone, rf_step_barrier).
 *
 * Rows: step t holds bs[t] rows at off[t] of x (N, ldx) and y (N, ldy) (time-major, sorted by length,
 * rf_recurrent's layout), or when given a step stride xts / yts (full-length batches only), row r of step
 * t at x + t xts + r ldx (y likewise: the caller's batch-first arrays themselves, no copies). The running
 * states h (B, Hc) and c (B, Hc), Hc = round16(H), hold h0 / c0 on entry and each row's final state on exit:
 * a row keeps its state from the step it left (forward) or until the step it joins (reverse), which is what
 * lengths need in both directions.
 */
#ifndef RF_BF16_H
#define RF_BF16_H

#include <stdint.h>
#include <string.h>
#include "rf_cpu.h"
#include "rf_latency.h" /* rf_cells.h (cell passes), rf_barrier, RF_THREAD_IDS */
#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 11
#include <immintrin.h>
#define RF_HAVE_BF16_ISA 1
#endif

enum { RF_BF16_PORTABLE = 0, RF_BF16_AVX512 = 1, RF_BF16_AMX = 2 };

/* LSTM on AMX: the threads share out the units (not the rows) from this many rows and packed weights of
 * more bytes than this on (rf_bf16_forward) */
#define RF_AMX_UNITS_MIN_ROWS 32
#define RF_AMX_UNITS_MIN_BYTES (2 * 1024 * 1024)

static inline int rf_round_up(int n, int m) { return (n + m - 1) / m * m; }

/* float -> bfloat16, round to nearest even (NaN stays a quiet NaN), as vcvtneps2bf16. */
static inline uint16_t rf_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float rf_bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Elements of the packed weights of one layer and direction. */
static inline size_t rf_bf16_packed_size(int G, int F, int H) {
    return (size_t)G * rf_round_up(H, 16) * (size_t)(rf_round_up(F, 32) + rf_round_up(H, 32));
}

/* Packs w_ih (G H, F) and w_hh (G H, H), float32 row-major, into P (see the top). */
static void rf_bf16_pack(int G, int F, int H, const float* w_ih, const float* w_hh, uint16_t* P) {
    int Kx = rf_round_up(F, 32), Kh = rf_round_up(H, 32), nbk = rf_round_up(H, 16) / 16;
    size_t ps = (size_t)(Kx + Kh) * 16;
    memset(P, 0, rf_bf16_packed_size(G, F, H) * sizeof(uint16_t));
    for (int g = 0; g < G; g++)
        for (int j = 0; j < nbk; j++) {
            uint16_t* pan = P + (size_t)(g * nbk + j) * ps;
            for (int u = 0; u < 16 && 16 * j + u < H; u++) {
                const float* wx = w_ih + (size_t)(g * H + 16 * j + u) * F;
                const float* wh = w_hh + (size_t)(g * H + 16 * j + u) * H;
                for (int k = 0; k < F; k++) pan[(size_t)(k / 2) * 32 + 2 * u + (k & 1)] = rf_f2bf(wx[k]);
                for (int k = 0; k < H; k++) pan[(size_t)((Kx + k) / 2) * 32 + 2 * u + (k & 1)] = rf_f2bf(wh[k]);
            }
        }
}

/* n floats -> bfloat16 (the rest of a row's padding is left as it is). */
static void rf_bf16_convert_portable(int n, const float* src, uint16_t* dst) {
    for (int i = 0; i < n; i++) dst[i] = rf_f2bf(src[i]);
}

/* The product of a block of rows: C (nr, 16 nc) (+)= A1 (nr, K1) . P1 + A2 (nr, K2) . P2, where P1 is the
 * first K1 / 2 pair rows of nc panels (one every ps elements, from P) and P2 the K2 / 2 after them (K1,
 * K2 multiples of 32; either may be 0). A1, A2: bfloat16 rows of lda1, lda2 elements; C: ldc floats,
 * added to when acc, else overwritten. Nothing outside the nr rows is read or written. */
typedef void (*rf_bf16_prod_fn)(int nr, int nc, const uint16_t* A1, int lda1, int K1, const uint16_t* A2,
                                int lda2, int K2, const uint16_t* P, size_t ps, float* C, int ldc, int acc);
typedef void (*rf_bf16_conv_fn)(int n, const float* src, uint16_t* dst);

static void rf_bf16_prod_portable(int nr, int nc, const uint16_t* A1, int lda1, int K1, const uint16_t* A2,
                                  int lda2, int K2, const uint16_t* P, size_t ps, float* C, int ldc, int beta) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nc; j++) {
            float acc[16] = {0};
            if (beta) memcpy(acc, C + (size_t)r * ldc + 16 * j, sizeof acc);
            for (int part = 0; part < 2; part++) {
                const uint16_t* a = part ? A2 + (size_t)r * lda2 : A1 + (size_t)r * lda1;
                const uint16_t* w = P + (size_t)j * ps + (part ? (size_t)K1 * 16 : 0);
                int K = part ? K2 : K1;
                for (int p = 0; p < K / 2; p++, w += 32) {
                    float a0 = rf_bf2f(a[2 * p]), a1 = rf_bf2f(a[2 * p + 1]);
                    if (a0 == 0.0f && a1 == 0.0f) continue;
                    for (int u = 0; u < 16; u++) acc[u] += a0 * rf_bf2f(w[2 * u]) + a1 * rf_bf2f(w[2 * u + 1]);
                }
            }
            memcpy(C + (size_t)r * ldc + 16 * j, acc, sizeof acc);
        }
}

#ifdef RF_HAVE_BF16_ISA
#define RF_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define RF_TARGET_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,amx-tile,amx-bf16")))

RF_TARGET_BF16 static void rf_bf16_convert_avx512(int n, const float* src, uint16_t* dst) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i*)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)v);
    }
}

/* One block of at most NR rows x NC panels, accumulators in registers (NR, NC compile-time constants). */
#define RF_BF16_BLOCK(NR, NC)                                                                              \
    RF_TARGET_BF16 static void rf_bf16_block_##NR##x##NC(int nr, int nc, const uint16_t* A1, int lda1,   \
                                                          int K1, const uint16_t* A2, int lda2, int K2,    \
                                                          const uint16_t* P, size_t ps, float* C, int ldc, \
                                                          int beta) {                                      \
        __m512 acc[NR][NC];                                                                                \
        for (int r = 0; r < NR; r++)                                                                       \
            for (int j = 0; j < NC; j++)                                                                   \
                acc[r][j] = beta && r < nr && j < nc ? _mm512_loadu_ps(C + (size_t)r * ldc + 16 * j)       \
                                                     : _mm512_setzero_ps();                                \
        for (int part = 0; part < 2; part++) {                                                             \
            const uint16_t* a = part ? A2 : A1;                                                            \
            int lda = part ? lda2 : lda1, K = part ? K2 : K1;                                              \
            const uint16_t* w = P + (part ? (size_t)K1 * 16 : 0);                                          \
            for (int p = 0; p < K / 2; p++, w += 32) {                                                     \
                __m512bh wv[NC];                                                                           \
                for (int j = 0; j < NC; j++)                                                               \
                    wv[j] = (__m512bh)_mm512_loadu_si512(w + (size_t)(j < nc ? j : 0) * ps);               \
                for (int r = 0; r < NR; r++) {                                                             \
                    int32_t pair;                                                                          \
                    memcpy(&pair, a + (size_t)(r < nr ? r : 0) * lda + 2 * p, 4);                          \
                    __m512bh av = (__m512bh)_mm512_set1_epi32(pair);                                       \
                    for (int j = 0; j < NC; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, wv[j]);       \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < NR && r < nr; r++)                                                             \
            for (int j = 0; j < NC && j < nc; j++) _mm512_storeu_ps(C + (size_t)r * ldc + 16 * j, acc[r][j]); \
    }
RF_BF16_BLOCK(8, 2)
RF_BF16_BLOCK(4, 4)
RF_BF16_BLOCK(1, 8)
RF_BF16_BLOCK(1, 4)
#undef RF_BF16_BLOCK

/* Rows 8 at a time by 2 panels (the weights, streamed from L2, are read once per 8 rows), 2-4 rows by 4
 * panels, a single row by 8 (enough accumulators to hide vdpbf16ps's latency). */
RF_TARGET_BF16 static void rf_bf16_prod_avx512(int nr, int nc, const uint16_t* A1, int lda1, int K1,
                                               const uint16_t* A2, int lda2, int K2, const uint16_t* P, size_t ps,
                                               float* C, int ldc, int beta) {
    for (int r = 0; r < nr;) {
        int mr = nr - r >= 5 ? (nr - r < 8 ? nr - r : 8) : (nr - r < 4 ? nr - r : 4);
        const uint16_t* a1 = A1 + (size_t)r * lda1;
        const uint16_t* a2 = A2 + (size_t)r * lda2;
        float* c = C + (size_t)r * ldc;
        if (mr == 1) {
            int j = 0;
            for (; j + 4 < nc; j += 8)
                rf_bf16_block_1x8(1, nc - j, a1, lda1, K1, a2, lda2, K2, P + j * ps, ps, c + 16 * j, ldc, beta);
            for (; j < nc; j += 4)
                rf_bf16_block_1x4(1, nc - j, a1, lda1, K1, a2, lda2, K2, P + j * ps, ps, c + 16 * j, ldc, beta);
        } else if (mr <= 4) {
            for (int j = 0; j < nc; j += 4)
                rf_bf16_block_4x4(mr, nc - j, a1, lda1, K1, a2, lda2, K2, P + j * ps, ps, c + 16 * j, ldc, beta);
        } else {
            for (int j = 0; j < nc; j += 2)
                rf_bf16_block_8x2(mr, nc - j, a1, lda1, K1, a2, lda2, K2, P + j * ps, ps, c + 16 * j, ldc, beta);
        }
        r += mr;
    }
}

#define RF_TARGET_BF16_CELL __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

/* tanh on 16 lanes: Eigen's rational approximation (x clamped to +-7.9053, x P(x^2) / Q(x^2), degrees 13 and
 * 6), the division by vrcp14ps and a Newton step; within 3.5e-7 of tanh (relative) over all floats, about
 * half the instructions of rf_fast_tanhf's two branches. */
RF_TARGET_BF16_CELL static inline __m512 rf_bf16_tanh16(__m512 x) {
    /* a NaN stays (vmaxps / vminps return their second operand when either is a NaN) */
    x = _mm512_min_ps(_mm512_set1_ps(7.90531110763549805f), _mm512_max_ps(_mm512_set1_ps(-7.90531110763549805f), x));
    __m512 z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-2.76076847742355e-16f), z, _mm512_set1_ps(2.00018790482477e-13f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-8.60467152213735e-11f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(5.12229709037114e-08f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.48572235717979e-05f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(6.37261928875436e-04f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(4.89352455891786e-03f));
    p = _mm512_mul_ps(p, x);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.19825839466702e-06f), z, _mm512_set1_ps(1.18534705686654e-04f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(2.26843463243900e-03f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(4.89352518554385e-03f));
    __m512 r = _mm512_rcp14_ps(q);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(p, r);
}

/* sigmoid(x) = (1 + tanh(x / 2)) / 2 (absolute error below 2e-7). */
RF_TARGET_BF16_CELL static inline __m512 rf_bf16_sigm16(__m512 x) {
    __m512 h = _mm512_set1_ps(0.5f);
    return _mm512_fmadd_ps(h, rf_bf16_tanh16(_mm512_mul_ps(h, x)), h);
}

/* The fused pass on one row's units [0, n), n <= 16 (the mask m): g the row's gates (gate q at g + q gq), b the
 * biases (gate q at b + q Hc); c, y, hs, hn the row's c, output, state and bfloat16 next input. */
RF_TARGET_BF16_CELL static inline void rf_bf16_lstm_16(__mmask16 m, int Hc, const float* g, int gq, const float* b,
                                                      float* c, float* y, float* hs, uint16_t* hn) {
#define RF_BF16_PRE(k) _mm512_add_ps(_mm512_maskz_loadu_ps(m, g + (k) * gq), _mm512_maskz_loadu_ps(m, b + (k) * Hc))
    __m512 gi = rf_bf16_sigm16(RF_BF16_PRE(0)), gf = rf_bf16_sigm16(RF_BF16_PRE(1));
    __m512 gg = rf_bf16_tanh16(RF_BF16_PRE(2)), go = rf_bf16_sigm16(RF_BF16_PRE(3));
#undef RF_BF16_PRE
    __m512 cc = _mm512_fmadd_ps(gf, _mm512_maskz_loadu_ps(m, c), _mm512_mul_ps(gi, gg));
    _mm512_mask_storeu_ps(c, m, cc);
    __m512 hv = _mm512_mul_ps(go, rf_bf16_tanh16(cc));
    _mm512_mask_storeu_ps(y, m, hv);
    _mm512_mask_storeu_ps(hs, m, hv);
    _mm256_mask_storeu_epi16(hn, m, (__m256i)_mm512_cvtneps_pbh(hv));
}

static inline __mmask16 rf_mask16(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* LSTM's fused pass on the AVX512-BF16 and AMX paths: no divisions (rf_bf16_tanh16, rf_bf16_sigm16), and h_t
 * written to y, to the running state hs and, rounded, to the next step's product input hn in the same pass.
 * G: gates, row r's gate q at G + r ldg + q gq (the gates scratch: ldg 4 Hc, gq Hc); b: biases (4 Hc); c:
 * (nr, Hc), c_{t-1} in, c_t out; hn: rows of ldn. At LSTM large (B 128, H 512), rf_lstm_fwd_f and the
 * separate copy and conversion took a third as long as the products; then a quarter. */
RF_TARGET_BF16_CELL static void rf_bf16_lstm_avx512(int nr, int n, int Hc, const float* G, int ldg, int gq,
                                                    const float* b, float* c, float* y, int ldy, float* hs,
                                                    uint16_t* hn, int ldn) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < n; j += 16)
            rf_bf16_lstm_16(rf_mask16(n - j), Hc, G + (size_t)r * ldg + j, gq, b + j, c + (size_t)r * Hc + j,
                            y + (size_t)r * ldy + j, hs + (size_t)r * Hc + j, hn + (size_t)r * ldn + j);
}

/* AMX: tiles 0-3 hold C (2 row tiles x 2 unit tiles), 4-5 A, 6-7 B, over rows 16 at a time; the last
 * nr % 16 rows go to the AVX512-BF16 kernel (a tile would touch rows past nr, which may be another step's). */
RF_TARGET_AMX static void rf_amx_begin(void) { rf_amx_config_16x64(); }

RF_TARGET_AMX static void rf_amx_end(void) { _tile_release(); }

#define RF_AMX_KLOOP(TWO_R, TWO_C)                                                                         \
    for (int part = 0; part < 2; part++) {                                                                 \
        const uint16_t* a = part ? A2 + (size_t)r * lda2 : A1 + (size_t)r * lda1;                          \
        int lda = part ? lda2 : lda1, K = part ? K2 : K1;                                                  \
        const uint16_t* w = P + (size_t)j * ps + (part ? (size_t)K1 * 16 : 0);                             \
        const uint16_t* f = pf ? pf + (part ? (size_t)K1 * 16 : 0) : NULL;                                \
        for (int k = 0; k < K; k += 32) {                                                                  \
            if (f)                                                                                         \
                for (int l = 0; l < 512; l += 32) {                                                        \
                    _mm_prefetch((const char*)(f + (size_t)k * 16 + l), _MM_HINT_T1);                      \
                    _mm_prefetch((const char*)(f + ps + (size_t)k * 16 + l), _MM_HINT_T1);                 \
                }                                                                                          \
            _tile_loadd(4, a + k, lda * 2);                                                                \
            _tile_loadd(6, w + (size_t)k * 16, 64);                                                        \
            if (TWO_R) _tile_loadd(5, a + (size_t)16 * lda + k, lda * 2);                                  \
            if (TWO_C) _tile_loadd(7, w + ps + (size_t)k * 16, 64);                                        \
            _tile_dpbf16ps(0, 4, 6);                                                                       \
            if (TWO_C) _tile_dpbf16ps(1, 4, 7);                                                            \
            if (TWO_R) _tile_dpbf16ps(2, 5, 6);                                                            \
            if (TWO_R && TWO_C) _tile_dpbf16ps(3, 5, 7);                                                   \
        }                                                                                                  \
    }

/* C rows [r, r + 16 or 32) by unit panels [j, j + 1 or 2): one group of C tiles over all of k. pf: the next
 * pair of panels, or NULL: its rows for each k are prefetched into L2 on the way (the weights of a step
 * outgrow L2, and the tile loads of the next pair otherwise wait on L3; about 2% at LSTM large). */
RF_TARGET_AMX static void rf_amx_group(int two_r, int two_c, int r, int j, const uint16_t* A1, int lda1, int K1,
                                       const uint16_t* A2, int lda2, int K2, const uint16_t* P, size_t ps,
                                       float* C, int ldc, int beta, const uint16_t* pf) {
    float* c = C + (size_t)r * ldc + 16 * j;
    if (beta) {
        _tile_loadd(0, c, ldc * 4);
        if (two_c) _tile_loadd(1, c + 16, ldc * 4);
        if (two_r) _tile_loadd(2, c + (size_t)16 * ldc, ldc * 4);
        if (two_r && two_c) _tile_loadd(3, c + (size_t)16 * ldc + 16, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    if (two_r && two_c) {
        RF_AMX_KLOOP(1, 1)
    } else if (two_r) {
        RF_AMX_KLOOP(1, 0)
    } else if (two_c) {
        RF_AMX_KLOOP(0, 1)
    } else {
        RF_AMX_KLOOP(0, 0)
    }
    _tile_stored(0, c, ldc * 4);
    if (two_c) _tile_stored(1, c + 16, ldc * 4);
    if (two_r) _tile_stored(2, c + (size_t)16 * ldc, ldc * 4);
    if (two_r && two_c) _tile_stored(3, c + (size_t)16 * ldc + 16, ldc * 4);
}

/* Rows are taken in blocks whose A part stays in L2 (RF_AMX_A_BYTES); within a block each pair of unit
 * panels is read once and kept (L1 / L2) while every row tile of the block uses it. Looping over the rows
 * outermost read all the weights again for every 32 rows: LSTM large (B 128, I = H = 512, 4 MB of bfloat16
 * weights) streamed them from memory twice a step per thread. */
#define RF_AMX_A_BYTES (256 * 1024)


RF_TARGET_AMX static void rf_bf16_prod_amx(int nr, int nc, const uint16_t* A1, int lda1, int K1,
                                           const uint16_t* A2, int lda2, int K2, const uint16_t* P, size_t ps,
                                           float* C, int ldc, int beta) {
    int full = nr / 16 * 16;
    int rb = RF_AMX_A_BYTES / (2 * (K1 + K2 > 0 ? K1 + K2 : 1)) / 32 * 32;
    rb = rb < 32 ? 32 : rb;
    for (int r0 = 0; r0 < full; r0 += rb) {
        int r1 = r0 + rb < full ? r0 + rb : full;
        for (int j = 0; j < nc; j += 2)
            for (int r = r0; r < r1; r += 32)
                rf_amx_group(r1 - r > 16, nc - j > 1, r, j, A1, lda1, K1, A2, lda2, K2, P, ps, C, ldc, beta,
                             r == r0 && j + 2 < nc ? P + (size_t)(j + 2) * ps : NULL);
    }
    if (full < nr)
        rf_bf16_prod_avx512(nr - full, nc, A1 ? A1 + (size_t)full * lda1 : NULL, lda1, K1,
                            A2 ? A2 + (size_t)full * lda2 : NULL, lda2, K2, P, ps, C + (size_t)full * ldc, ldc, beta);
}
#undef RF_AMX_KLOOP
#endif /* RF_HAVE_BF16_ISA */

/* 1 if this machine (and OS) can run path. */
static int rf_bf16_path_available(int path) {
    if (path == RF_BF16_PORTABLE) return 1;
#ifdef RF_HAVE_BF16_ISA
    if (path == RF_BF16_AVX512) return (rf_cpu_features() & RF_CPU_AVX512_BF16) != 0;
    if (path == RF_BF16_AMX)
        return (rf_cpu_features() & (RF_CPU_AMX_BF16 | RF_CPU_AVX512_BF16)) == (RF_CPU_AMX_BF16 | RF_CPU_AVX512_BF16)
               && rf_amx_enable();
#endif
    return 0;
}

/* One direction's call: sizes, weights and buffers (shapes at the top and in rf_bf16_forward). */
typedef struct {
    int cell, relu, G, F, H, Hc, Kx, Kh, nbk, proj_all;
    size_t ps;
    const uint16_t* P;
    const float *b, *bhn;
    const uint16_t* xb; /* (N, Kx): x rounded, zero-padded */
    uint16_t* hb;       /* (2, Bp, Kh): h_{t-1} rounded, two buffers in turn */
    size_t hbs;         /* elements of one hb buffer */
    float *gs, *gh;     /* gates: (N, G Hc) with proj_all, else (Bp, G Hc); (Bp, 3 Hc) GRU's recurrent n part */
    float *h, *c, *y;
    int ldy;
    ptrdiff_t yts; /* y's step stride, or 0: packed rows */
    rf_bf16_prod_fn prod;
    rf_bf16_conv_fn conv;
    int simd; /* the AVX512-BF16 or AMX path: rf_bf16_lstm_avx512 for the LSTM cell */
} rf_bf16_dir;

/* Rows [r0, r0 + nr) and unit blocks [j0, j1) of the step whose rows start at xrow, reading hb buffer cur
 * and writing h_t into buffer 1 - cur. With proj_all the gates rows hold x_t W_ih^T already (the n gate's
 * too): the step adds h_{t-1} W_hh^T; else one product over [x_t, h_{t-1}] makes them. */
static void rf_bf16_step_part(const rf_bf16_dir* d, int t, int xrow, int r0, int nr, int j0, int j1, int cur) {
    int G = d->G, Hc = d->Hc, GHc = G * Hc, gru = RF_IS_GRU(d->cell), all = d->proj_all;
    const uint16_t* xa = all ? NULL : d->xb + (size_t)(xrow + r0) * d->Kx;
    int K1 = all ? 0 : d->Kx;
    size_t skip = all ? (size_t)d->Kx * 16 : 0; /* the W_ih part of each panel, when not used */
    const uint16_t* ha = d->hb + (size_t)cur * d->hbs + (size_t)r0 * d->Kh;
    uint16_t* hn = d->hb + (size_t)(1 - cur) * d->hbs + (size_t)r0 * d->Kh;
    float* gt = d->gs + (size_t)(all ? xrow + r0 : r0) * GHc;
    int nc = j1 - j0, u0 = 16 * j0, n = (16 * j1 < d->H ? 16 * j1 : d->H) - u0;
    for (int g = 0; g < (gru ? 2 : G); g++)
        d->prod(nr, nc, xa, d->Kx, K1, ha, d->Kh, d->Kh, d->P + (size_t)(g * d->nbk + j0) * d->ps + skip, d->ps,
                gt + g * Hc + u0, GHc, all);
    float* yt = d->y + (d->yts ? t * d->yts : (ptrdiff_t)xrow * d->ldy) + (ptrdiff_t)r0 * d->ldy;
    float* hp = d->h + (size_t)r0 * Hc;
    if (gru) {
        const uint16_t* pn = d->P + (size_t)(2 * d->nbk + j0) * d->ps;
        float* ght = d->gh + (size_t)r0 * 3 * Hc;
        if (!all) d->prod(nr, nc, xa, d->Kx, d->Kx, NULL, 0, 0, pn, d->ps, gt + 2 * Hc + u0, GHc, 0);
        d->prod(nr, nc, NULL, 0, 0, ha, d->Kh, d->Kh, pn + (size_t)d->Kx * 16, d->ps, ght + 2 * Hc + u0, 3 * Hc, 0);
        rf_gru_fwd_f(nr, n, Hc, gt + u0, ght + u0, d->b + u0, d->bhn + u0, hp + u0, Hc, NULL, yt + u0, d->ldy);
    } else if (d->cell == 1 && d->simd) {
#ifdef RF_HAVE_BF16_ISA
        rf_bf16_lstm_avx512(nr, n, Hc, gt + u0, GHc, Hc, d->b + u0, d->c + (size_t)r0 * Hc + u0, yt + u0, d->ldy, hp + u0,
                            hn + u0, d->Kh);
#endif
        return;
    } else if (d->cell == 1) {
        float* cp = d->c + (size_t)r0 * Hc + u0;
        rf_lstm_fwd_f(nr, n, Hc, gt + u0, d->b + u0, cp, cp, NULL, yt + u0, d->ldy);
    } else {
        rf_rnn_fwd_f(nr, n, Hc, d->relu, gt + u0, d->b + u0, yt + u0, d->ldy);
    }
    for (int r = 0; r < nr; r++) {
        memcpy(hp + (size_t)r * Hc + u0, yt + (size_t)r * d->ldy + u0, (size_t)n * sizeof(float));
        d->conv(n, yt + (size_t)r * d->ldy + u0, hn + (size_t)r * d->Kh + u0);
    }
}

#ifdef RF_HAVE_BF16_ISA
/* A block's cell pass waiting to run, one row at a time, between the tile products of the next block
 * (rf_amx_lstm_step): the AVX-512 cell maths then overlaps the AMX unit's work instead of following it. */
typedef struct {
    int nr, done, n, Hc, ldy, ldn, it, its; /* rows done by k block it of its (spread evenly) */
    const float *g, *b; /* gates: rows of 64 floats, i f g o by 16 */
    float *c, *y, *hs;
    uint16_t* hn;
} rf_lstm_pending;

RF_TARGET_AMX static inline void rf_pending_row(rf_lstm_pending* p) {
    int upto = (int)(((long)p->nr * ++p->it + p->its - 1) / p->its);
    while (p->done < p->nr && p->done < upto) {
        int r = p->done++;
        rf_bf16_lstm_16(rf_mask16(p->n), p->Hc, p->g + (size_t)r * 64, 16, p->b, p->c + (size_t)r * p->Hc,
                        p->y + (size_t)r * p->ldy, p->hs + (size_t)r * p->Hc, p->hn + (size_t)r * p->ldn);
    }
}

/* Two gates' products for 16 or 32 rows (two_r) and one unit block: tiles 0-3 = [x, h] . [W0, W1] over all of
 * k (w: W0's panel, W1's gps further), stored to g (rows of 64 floats); after each k block, the pending cell
 * pass's share of rows. No prefetching: the weights are in L2 already (rf_amx_lstm_step's order), and
 * prefetching them cost 3%. */
RF_TARGET_AMX static void rf_amx_lstm_pair(int two_r, const uint16_t* x, int Kx, const uint16_t* h, int Kh,
                                           const uint16_t* w, size_t gps, float* g, rf_lstm_pending* pend) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int part = 0; part < 2; part++) {
        const uint16_t* a = part ? h : x;
        int lda = part ? Kh : Kx, K = part ? Kh : Kx;
        const uint16_t* wp = w + (part ? (size_t)Kx * 16 : 0);
        for (int k = 0; k < K; k += 32) {
            _tile_loadd(4, a + k, lda * 2);
            _tile_loadd(6, wp + (size_t)k * 16, 64);
            _tile_loadd(7, wp + gps + (size_t)k * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            if (two_r) {
                _tile_loadd(5, a + (size_t)16 * lda + k, lda * 2);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            rf_pending_row(pend);
        }
    }
    _tile_stored(0, g, 256);
    _tile_stored(1, g + 16, 256);
    if (two_r) {
        _tile_stored(2, g + 16 * 64, 256);
        _tile_stored(3, g + 16 * 64 + 16, 256);
    }
}

/* A step of the LSTM on AMX, rows [r0, nb) and unit blocks [j0, j1) (rf_bf16_forward: the threads share
 * out the units when the weights outgrow a core's L2, else the rows). For each unit block and 32 rows: the
 * four gates' products, [x_t, h_{t-1}] over all of k, in two 2 x 2 tile groups (gates i, f; g, o) into buf
 * (two halves of 32 rows x 64 floats, in L1, in turn; no gates scratch), and the cell on them, one row at a
 * time, within the next block's products (LSTM large: 1.2x less CPU time than the products, then the cell
 * pass over the gates scratch). A thread reads its weights once a step, in the opposite order from the step
 * before (backward): the panels read last are still in L2 when the next step starts with them (with the
 * units shared out, a thread's half of LSTM large's 4 MB). Rows past the last full 16 go to
 * rf_bf16_step_part (AVX512-BF16). */
RF_TARGET_AMX static void rf_amx_lstm_step(const rf_bf16_dir* d, int t, int xrow, int r0, int nb, int j0, int j1,
                                            int cur, int backward, float* buf) {
    int Hc = d->Hc, Kx = d->Kx, Kh = d->Kh, full = r0 + (nb - r0) / 16 * 16, half = 0;
    size_t gps = (size_t)d->nbk * d->ps; /* from a unit block's panel of one gate to the next gate's */
    const uint16_t* xa = d->xb + (size_t)xrow * Kx;
    const uint16_t* ha = d->hb + (size_t)cur * d->hbs;
    uint16_t* hn = d->hb + (size_t)(1 - cur) * d->hbs;
    float* yt = d->y + (d->yts ? t * d->yts : (ptrdiff_t)xrow * d->ldy);
    int its = (Kx + Kh) / 16; /* k blocks of a unit block's two tile groups */
    rf_lstm_pending pend = {0, 0, 16, Hc, d->ldy, Kh, 0, its, buf, d->b, d->c, yt, d->h, hn};
    for (int i = j0; i < j1; i++) {
        int j = backward ? j0 + j1 - 1 - i : i, u0 = 16 * j;
        const uint16_t* pj = d->P + (size_t)j * d->ps;
        for (int r = r0; r < full; r += 32) {
            int two_r = full - r > 16;
            const uint16_t *x = xa + (size_t)r * Kx, *h = ha + (size_t)r * Kh;
            float* g = buf + (size_t)half * 32 * 64;
            rf_amx_lstm_pair(two_r, x, Kx, h, Kh, pj, gps, g, &pend);
            rf_amx_lstm_pair(two_r, x, Kx, h, Kh, pj + 2 * gps, gps, g + 32, &pend);
            while (pend.done < pend.nr) rf_pending_row(&pend);
            rf_lstm_pending next = {two_r ? 32 : 16, 0, u0 + 16 < d->H ? 16 : d->H - u0, Hc, d->ldy, Kh, 0, its, g,
                                    d->b + u0, d->c + (size_t)r * Hc + u0, yt + (ptrdiff_t)r * d->ldy + u0,
                                    d->h + (size_t)r * Hc + u0, hn + (size_t)r * Kh + u0};
            pend = next;
            half ^= 1;
        }
    }
    while (pend.done < pend.nr) rf_pending_row(&pend);
    if (full < nb) rf_bf16_step_part(d, t, xrow, full, nb - full, j0, j1, cur);
}
#endif

/* Before the steps, each thread its share of rows: x rounded into xb, with proj_all x W_ih^T into gs (all
 * gates, one product over every row), h0 rounded into both hb buffers, GRU's r, z recurrent parts zeroed. */
static void rf_bf16_prologue(const rf_bf16_dir* d, int k, int nk, int N, int B, const float* x, int ldx,
                             ptrdiff_t xts) {
    int x0 = (int)((long)N * k / nk), x1 = (int)((long)N * (k + 1) / nk);
    if (d->proj_all) { /* shares of whole row tiles, so that AMX runs on full tiles */
        int tiles = (N + 15) / 16;
        x0 = (int)((long)tiles * k / nk) * 16;
        x1 = (int)((long)tiles * (k + 1) / nk) * 16;
        x1 = x1 < N ? x1 : N;
    }
    for (int r = x0; r < x1; r++) {
        uint16_t* dst = (uint16_t*)d->xb + (size_t)r * d->Kx;
        memset(dst, 0, (size_t)d->Kx * sizeof(uint16_t));
        d->conv(d->F, xts ? x + (r / B) * xts + (ptrdiff_t)(r % B) * ldx : x + (size_t)r * ldx, dst);
    }
    if (d->proj_all && x1 > x0)
        d->prod(x1 - x0, d->G * d->nbk, d->xb + (size_t)x0 * d->Kx, d->Kx, d->Kx, NULL, 0, 0, d->P, d->ps,
                d->gs + (size_t)x0 * d->G * d->Hc, d->G * d->Hc, 0);
    int Bp = rf_round_up(B, 16);
    int h0r = (int)((long)Bp * k / nk), h1r = (int)((long)Bp * (k + 1) / nk);
    for (int r = h0r; r < h1r; r++) {
        uint16_t* dst = d->hb + (size_t)r * d->Kh;
        memset(dst, 0, (size_t)d->Kh * sizeof(uint16_t));
        if (r < B) d->conv(d->H, d->h + (size_t)r * d->Hc, dst);
        memcpy(dst + d->hbs, dst, (size_t)d->Kh * sizeof(uint16_t));
        if (RF_IS_GRU(d->cell)) memset(d->gh + (size_t)r * 3 * d->Hc, 0, (size_t)2 * d->Hc * sizeof(float));
    }
}

/* One layer and direction (see the top). bs, off: (T) rows and first row of each step; reverse: run the
 * steps from T - 1 down; split_units: the threads share out the unit blocks (else the rows); proj_all: make
 * x W_ih^T for every row first (gs then (N, G Hc)), else step by step with h (gs (Bp, G Hc)). x, y: float32
 * rows as the top says (xts, yts: 0 for the packed layout); xb (N, Kx), hb (2 Bp Kh), gh (Bp, 3 Hc): scratch (Bp = round16(B)). Returns the number of long
 * barrier waits (a busy machine), as rf_latency_forward. */
static int rf_bf16_forward(int path, int cell, int relu, int T, const int* bs, const int* off, int reverse, int B,
                           int F, int H, int nth, int split_units, int proj_all, const uint16_t* P, const float* x,
                           int ldx, ptrdiff_t xts, const float* b, const float* bhn, float* h, float* c, float* y,
                           int ldy, ptrdiff_t yts, uint16_t* xb, uint16_t* hb, float* gs, float* gh) {
    rf_bf16_dir d;
    d.cell = cell;
    d.relu = relu;
    d.G = RF_GATES(cell);
    d.F = F;
    d.H = H;
    d.Hc = rf_round_up(H, 16);
    d.Kx = rf_round_up(F, 32);
    d.Kh = rf_round_up(H, 32);
    d.nbk = d.Hc / 16;
    d.proj_all = proj_all;
    d.ps = (size_t)(d.Kx + d.Kh) * 16;
    d.P = P;
    d.b = b;
    d.bhn = bhn;
    d.xb = xb;
    d.hb = hb;
    d.hbs = (size_t)rf_round_up(B, 16) * d.Kh;
    d.gs = gs;
    d.gh = gh;
    d.h = h;
    d.c = c;
    d.y = y;
    d.ldy = ldy;
    d.yts = yts;
    d.prod = rf_bf16_prod_portable;
    d.conv = rf_bf16_convert_portable;
    d.simd = 0;
    int N = off[T - 1] + bs[T - 1];
    /* no product of 16 rows or more: no tiles to configure (a streaming step of one row paid for it) */
    if (path == RF_BF16_AMX && (proj_all ? N : B) < 16) path = RF_BF16_AVX512;
    /* LSTM on AMX: rf_amx_lstm_step (B >= 16 here), the threads sharing out the units when the weights
       outgrow a core's L2 at many rows (each then keeps its half there), else as split_units says */
    int fused = path == RF_BF16_AMX && cell == 1 && !proj_all;
    if (fused && B >= RF_AMX_UNITS_MIN_ROWS
        && rf_bf16_packed_size(d.G, F, H) * sizeof(uint16_t) > RF_AMX_UNITS_MIN_BYTES)
        split_units = 1;
#ifdef RF_HAVE_BF16_ISA
    if (path == RF_BF16_AVX512 || path == RF_BF16_AMX) {
        d.prod = path == RF_BF16_AMX ? rf_bf16_prod_amx : rf_bf16_prod_avx512;
        d.conv = rf_bf16_convert_avx512;
        d.simd = 1;
    }
#endif
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0; /* > 0: thread 0 runs alone after the barrier of this step (rf_step_barrier) */
    int yields = 0;
    if (nth < 1) nth = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
        unsigned int ftz = rf_ftz_enter();
        float buf[2 * 32 * 64] __attribute__((aligned(64))); /* rf_amx_lstm_step's gates */
#ifdef RF_HAVE_BF16_ISA
        if (path == RF_BF16_AMX) rf_amx_begin();
#endif
        rf_bf16_prologue(&d, k, nk, N, B, x, ldx, xts);
#ifdef _OPENMP
#pragma omp barrier
#endif
        int rshare = rf_round_up((B + nk - 1) / nk, 16), jshare = (d.nbk + nk - 1) / nk;
        int r0 = split_units ? 0 : k * rshare, r1 = split_units ? B : (k + 1) * rshare;
        int j0 = split_units ? k * jshare : 0, j1 = split_units ? (k + 1) * jshare : d.nbk;
        if (j1 > d.nbk) j1 = d.nbk;
        /* split units: a barrier ends each step; after a long wait there (a busy core) the other threads
           leave and thread 0 runs every unit from the next step on, as rf_latency_forward */
        int alone = nk == 1 || !split_units, solo = 0;
        for (int i = 0; i < T; i++) {
            int t = reverse ? T - 1 - i : i;
            int nb = bs[t] < r1 ? bs[t] : r1;
            if (solo) j0 = 0, j1 = d.nbk;
#ifdef RF_HAVE_BF16_ISA
            if (fused && nb > r0 && j1 > j0)
                rf_amx_lstm_step(&d, t, off[t], r0, nb, j0, j1, i & 1, i & 1, buf);
            else
#endif
            if (nb > r0 && j1 > j0) rf_bf16_step_part(&d, t, off[t], r0, nb - r0, j0, j1, i & 1);
            if (!alone && rf_step_barrier(&bar, nk, RF_SPIN_NS, i, &solo_at, k, &alone, &solo, &yields)) break;
        }
#ifdef RF_HAVE_BF16_ISA
        if (path == RF_BF16_AMX) rf_amx_end();
#endif
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
