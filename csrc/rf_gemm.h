/* The per-step products, float32 (the float64 kernels keep BLAS).
 *
 * 1. Small-M GEMM with a pre-packed right operand, for the recurrent product of every time step:
 *
 *   C (M, N) := [A1 (M, K1), A2 (M, K2)] . B (K1 + K2, N) + beta C,   row-major, M small (a task's rows),
 *
 * where B is the same for all T steps of a call (W_hh^T, or [W_ih, W_hh]^T in inference, forward; W_hh
 * backward). BLAS packs B again at every call, which for the per-step shapes (M <= 64, B up to 8 MB)
 * costs as much as the product itself; here B is packed once per call into panels of RF_NR columns,
 * [panel][k][RF_NR], zero-padded, and each step streams the panels from cache. The micro-kernel keeps an
 * 8 x RF_NR block of C in vector registers (16 AVX-512 registers), broadcasting one element of A per row
 * and k. Every row count 1..8 has its own copy of the loop (a runtime count kept the accumulators in
 * memory). Every kernel here sums an output's products in one order (one chain over k within each K
 * chunk, the chunks added to beta C in turn), so a row's result never depends on the rows computed beside
 * it (RF_GEMM_KLOOP). With AVX-512, calls of up to RF_FEW_MR rows take the few-rows product rf_units_few
 * instead (rf_gemm_packed_select()). A
 * negative N (-N columns) runs the panels last first: odd steps' half of the serpentine (below).
 * 2. Batch-1 GEMV reading the weights in place (rf_gemv_rows), for the latency kernel and streaming steps.
 *
 * Written with GCC vector extensions, compiled three ways (AVX-512, AVX2+FMA, baseline) and chosen at
 * run time with __builtin_cpu_supports; other compilers get plain loops.
 */
#ifndef RF_GEMM_H
#define RF_GEMM_H

#include <stddef.h>
#include <string.h>

#define RF_NR 32
#define RF_FEW_MR 4     /* rows the few-rows product takes (below) */
#define RF_FEW_PF 4096  /* and how far ahead it prefetches (bytes) */

/* Floats needed for B (K, N) packed. */
static inline size_t rf_packed_size(int K, int N) {
    return (size_t)((N + RF_NR - 1) / RF_NR) * (size_t)K * RF_NR;
}

/* Pack panels [p0, p1) of B (K1 + K2, N) given as two transposed blocks stacked along K:
 * B[k][n] = Bt1[n][k] for k < K1, Bt2[n][k - K1] after (for the forward's [W_ih, W_hh]^T). Panels are
 * independent, so threads can pack disjoint ranges. Rows of Bt are read contiguously, one panel column
 * at a time; the panel being written (K x RF_NR floats) stays in L1. */
static void rf_pack_bt2_scalar(int K1, const float* Bt1, int ldb1, int K2, const float* Bt2, int ldb2, int N,
                               int p0, int p1, float* packed) {
    int K = K1 + K2;
    for (int p = p0; p < p1; p++) {
        float* dst = packed + (size_t)p * K * RF_NR;
        int n0 = p * RF_NR, nw = N - n0 < RF_NR ? N - n0 : RF_NR;
        if (nw < RF_NR) memset(dst, 0, (size_t)K * RF_NR * sizeof(float));
        for (int j = 0; j < nw; j++) {
            const float* s1 = Bt1 + (size_t)(n0 + j) * ldb1;
            const float* s2 = Bt2 + (size_t)(n0 + j) * ldb2;
            for (ptrdiff_t k = 0; k < K1; k++) dst[k * RF_NR + j] = s1[k];
            for (ptrdiff_t k = 0; k < K2; k++) dst[(K1 + k) * RF_NR + j] = s2[k];
        }
    }
}

/* Floats rf_pack_panels needs for n rows of K. */
static inline size_t rf_panels_size(int n, int K) { return (size_t)((n + 15) / 16 * 16) * (size_t)K; }

/* Columns of the panel that starts at row i0 of n: 64, the last one 16, 32 or 48. */
static inline int rf_panel_width(int n, int i0) {
    int w = (n - i0 + 15) / 16 * 16;
    return w < 64 ? w : 64;
}

/* Pack rows [0, n) of [A1 (n, K1), A2 (n, K2)] (row-major, strides lda1 / lda2) transposed into panels
 * for rf_gemv_panels: panels of 64 columns (the last one 16, 32 or 48, zero-padded), each K1 + K2 rows
 * of its width, one after the other. rf_pack_panels (below) moves 16 x 16 blocks through registers;
 * this plain version is its fallback. */
static void rf_pack_panels_scalar(int n, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2,
                           float* P) {
    int K = K1 + K2;
    for (int i0 = 0; i0 < n; i0 += 64) {
        int w = rf_panel_width(n, i0);
        for (int j0 = 0; j0 < w; j0 += 16) {
            for (int j = j0; j < j0 + 16; j++) {
                int i = i0 + j;
                if (i >= n) {
                    for (int k = 0; k < K; k++) P[(size_t)k * w + j] = 0.0f;
                    continue;
                }
                const float* a1 = A1 + (size_t)i * lda1;
                const float* a2 = K2 > 0 ? A2 + (size_t)i * lda2 : A2;
                for (int k = 0; k < K1; k++) P[(size_t)k * w + j] = a1[k];
                for (int k = 0; k < K2; k++) P[(size_t)(K1 + k) * w + j] = a2[k];
            }
        }
        P += (size_t)K * w;
    }
}

/* The kernels' types; NAME_select() returns the best one for this CPU. */
typedef void (*rf_gemm_fn)(int, int, int, const float*, int, int, const float*, int, const float*, float,
                           float*, int);
typedef void (*rf_gemv_rows_fn)(int, int, const float*, int, const float*, int, const float*, int,
                                const float*, float, float*);
typedef void (*rf_gemv_nb_fn)(int, int, int, const float*, int, const float*, int, int, const float*, int,
                              const float*, int, float, float*, int, int);
typedef void (*rf_gemv_panels_fn)(int, int, const float*, int, const float*, const float*, float, float*);
typedef void (*rf_gemv_cols_fn)(int, int, const float*, int, const float*, float, float*);
typedef void (*rf_pack_panels_fn)(int, int, const float*, int, int, const float*, int, float*);

/* A serpentine pass over the weights. A thread reads its share of them once a step, always in the same
 * order, and when the share is a little beyond L2 (or a few times it) a cyclic pass under LRU-like
 * replacement evicts every line just before it is needed again: every read goes to L3. So odd steps take
 * their products, and RF_SERP_CHUNK-row chunks within each, last first: each step starts on the lines the
 * one before read last, still in L2. Every output's sum runs as before: bitwise the same results. (LSTM
 * I=256 H=512, 2 rows, one thread: 17.2 -> 12.6 ms; GRU B=2 I=2400 H=600 L=2: 29.4 -> 25.0.) A chunk is
 * whole panels of either layout (64 rows or columns; rf_pack_panels's, two of rf_pack_bt2's), so a
 * chunk's panels start c0 K floats in. The packed kernel's product reverses its own panel loop instead
 * (N < 0): cut into 64-column calls its panels fell below rf_gemm_pf_bytes and lost their prefetch
 * (B=16 I=H=1024: 4-7% slower). */
#define RF_SERP_CHUNK 64
/* for each chunk [C0_, C0_ + M_) of N_ columns: one chunk of all N_, or (REV_) the chunks last first */
#define RF_SERP_CHUNKS(REV_, N_, C0_, M_)                                                              \
    for (int C0_ = (REV_) ? ((N_) - 1) / RF_SERP_CHUNK * RF_SERP_CHUNK : 0, M_ = (REV_) ? (N_) - C0_ : (N_); \
         C0_ >= 0; C0_ -= RF_SERP_CHUNK, M_ = RF_SERP_CHUNK)
/* A thread's weights below this many bytes stay in L2 either way: the unit-sharing kernels' steps keep
 * one order (the reversed order's bookkeeping cost GRU B=1 I=1 H=16 10%). Tests set it to 0. */
static size_t rf_serp_min_bytes = 256 * 1024;

#if defined(__GNUC__) && defined(__x86_64__)
#define RF_GEMM_VECTORS 1
typedef float rf_v16 __attribute__((vector_size(64), aligned(4)));
typedef int rf_v16i __attribute__((vector_size(64)));

/* Shuffle masks of the 4-stage 16 x 16 transpose (pack) and transpose-add (GEMV): stage s pairs two
 * vectors and swaps their off-diagonal s x s blocks (RF_LO_s keeps the first's lower, RF_HI_s the upper). */
#define RF_LO8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define RF_HI8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define RF_LO4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define RF_HI4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define RF_LO2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define RF_HI2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define RF_LO1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define RF_HI1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}

/* r[0..15] (sixteen rows of sixteen floats) := their transpose, in four stages (stage s swaps the
 * off-diagonal s x s blocks of every 2s x 2s block); q is scratch. The masks as rf_pack_panels_avx512's. */
#define RF_TRANSPOSE16(r, q)                                                                          \
    do {                                                                                              \
        for (int j_ = 0; j_ < 16; j_++)                                                               \
            if (!(j_ & 8)) { q[j_] = __builtin_shuffle(r[j_], r[j_ + 8], lo8);                        \
                             q[j_ + 8] = __builtin_shuffle(r[j_], r[j_ + 8], hi8); }                  \
        for (int j_ = 0; j_ < 16; j_++)                                                               \
            if (!(j_ & 4)) { r[j_] = __builtin_shuffle(q[j_], q[j_ + 4], lo4);                        \
                             r[j_ + 4] = __builtin_shuffle(q[j_], q[j_ + 4], hi4); }                  \
        for (int j_ = 0; j_ < 16; j_++)                                                               \
            if (!(j_ & 2)) { q[j_] = __builtin_shuffle(r[j_], r[j_ + 2], lo2);                        \
                             q[j_ + 2] = __builtin_shuffle(r[j_], r[j_ + 2], hi2); }                  \
        for (int j_ = 0; j_ < 16; j_++)                                                               \
            if (!(j_ & 1)) { r[j_] = __builtin_shuffle(q[j_], q[j_ + 1], lo1);                        \
                             r[j_ + 1] = __builtin_shuffle(q[j_], q[j_ + 1], hi1); }                  \
    } while (0)

#define RF_TRANSPOSE_MASKS                                                                            \
    static const rf_v16i lo8 = RF_LO8;                                                                \
    static const rf_v16i hi8 = RF_HI8;                                                                \
    static const rf_v16i lo4 = RF_LO4;                                                                \
    static const rf_v16i hi4 = RF_HI4;                                                                \
    static const rf_v16i lo2 = RF_LO2;                                                                \
    static const rf_v16i hi2 = RF_HI2;                                                                \
    static const rf_v16i lo1 = RF_LO1;                                                                \
    static const rf_v16i hi1 = RF_HI1;

/* rf_pack_bt2_scalar by 16 x 16 blocks: each half of a 32-column panel takes sixteen rows of Bt at a
 * time, sixteen floats of each, transposed in registers and stored as sixteen panel rows. Packing a
 * layer's weights is part of every call: [W_ih, W_hh] of I = H = 1024 (32 MB) took 16 ms on one thread
 * element by element, a batch of 8 sequences of 10 steps only 14 ms in all on two. */
__attribute__((target("avx512f,avx512vl,fma"))) static void rf_pack_bt2_avx512(
        int K1, const float* Bt1, int ldb1, int K2, const float* Bt2, int ldb2, int N, int p0, int p1,
        float* packed) {
    RF_TRANSPOSE_MASKS
    int K = K1 + K2;
    for (int p = p0; p < p1; p++) {
        float* dst = packed + (size_t)p * K * RF_NR;
        for (int h = 0; h < RF_NR; h += 16) {
            int n0 = p * RF_NR + h;
            for (int seg = 0; seg < 2; seg++) {
                const float* Bt = seg == 0 ? Bt1 : Bt2;
                int ldb = seg == 0 ? ldb1 : ldb2, Ks = seg == 0 ? K1 : K2, koff = seg == 0 ? 0 : K1;
                int k = 0;
                for (; k + 16 <= Ks; k += 16) {
                    rf_v16 r[16], q[16];
                    for (int j = 0; j < 16; j++) {
                        if (n0 + j < N)
                            memcpy(&r[j], Bt + (size_t)(n0 + j) * ldb + k, 64);
                        else
                            r[j] = (rf_v16){0};
                    }
                    RF_TRANSPOSE16(r, q);
                    for (int j = 0; j < 16; j++) memcpy(dst + (size_t)(koff + k + j) * RF_NR + h, &r[j], 64);
                }
                for (; k < Ks; k++)
                    for (int j = 0; j < 16; j++)
                        dst[(size_t)(koff + k) * RF_NR + h + j] = n0 + j < N ? Bt[(size_t)(n0 + j) * ldb + k] : 0.0f;
            }
        }
    }
}

/* Pack panels [p0, p1) of B (K1 + K2, N) given as two transposed blocks (see rf_pack_bt2_scalar), with
 * the widest vectors this CPU has. */
static void rf_pack_bt2(int K1, const float* Bt1, int ldb1, int K2, const float* Bt2, int ldb2, int N,
                        int p0, int p1, float* packed) {
    static int wide = -1;  /* (several threads may set it at once, to the same value) */
    if (wide < 0) {
        __builtin_cpu_init();
        wide = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    }
    if (wide)
        rf_pack_bt2_avx512(K1, Bt1, ldb1, K2, Bt2, ldb2, N, p0, p1, packed);
    else
        rf_pack_bt2_scalar(K1, Bt1, ldb1, K2, Bt2, ldb2, N, p0, p1, packed);
}




/* Each kernel below is one macro body compiled three ways (AVX-512, AVX2 + FMA, baseline), so each gets
 * its own register allocation, and NAME_select() picks one for this CPU at run time. */
#define RF_INSTANTIATE(NAME, ARGS, BODY)                                                              \
    __attribute__((target("avx512f,avx512vl,fma"))) static void NAME##_avx512(ARGS) { BODY }         \
    __attribute__((target("avx2,fma"))) static void NAME##_avx2(ARGS) { BODY }                       \
    static void NAME##_base(ARGS) { BODY }

#define RF_SELECT(NAME, FN)                                                                           \
    static FN NAME##_select(void) {                                                                   \
        __builtin_cpu_init();                                                                         \
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")                   \
            && __builtin_cpu_supports("fma"))                                                         \
            return NAME##_avx512;                                                                     \
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))                          \
            return NAME##_avx2;                                                                       \
        return NAME##_base;                                                                           \
    }

/* One macro body, instantiated per target so each gets its own register allocation. A is given in two
 * segments of columns, A1 (M, K1) and A2 (M, K2), against the K1 + K2 packed rows of B, so the forward
 * can form [x_t, h_{t-1}] . [W_ih, W_hh]^T without copying the two halves together (K2 = 0: one A). */
#define RF_GEMM_PF(PF_)                                                                               \
    if ((PF_) && pfn > 0) {                                                                           \
        __builtin_prefetch(pfp, 0, 2);                                                                \
        pfp += 16;                                                                                    \
        pfn--;                                                                                        \
    }

/* v stays in a register: the compiler may no longer fold its load into each row's multiply-add, which
 * at 2-3 rows (GCC 12) read every weight vector 2-3 times from cache (see RF_FEW_PANEL). */
#define RF_IN_REG(v) __asm__("" : "+v"(v))

/* One k at a time, one chain of multiply-adds per output (c0, c1: its two 16-column halves), whatever the
 * row count: every product kernel (this one's row blocks of 1-8 rows, the few-rows product) sums a row's
 * products in the one order, k = 0, 1, ... within each K chunk (rf_gemm_chunk), the chunks added to beta C
 * in turn, so a row's result does not depend on the rows beside it (sample-order invariance; before, a block of up to 4 rows summed even and
 * odd k in two sets, 8 rows in one, and a batch's rows permuted came out 1-2e-7 apart). */
#define RF_GEMM_KLOOP(NROWS_, PF_)                                                                    \
    for (int s = 0; s < 2; s++) { /* the segments A1, A2 in one loop nest: the sums stay in registers */ \
        const float* as = s == 0 ? a1 : a2;                                                           \
        const float* bs = s == 0 ? bq : bq + (size_t)(s1b - s1a) * RF_NR;                             \
        int ldas = s == 0 ? lda1 : lda2, ks = s == 0 ? s1b - s1a : s2b - s2a;                         \
        for (int k = 0; k < ks; k++) {                                                                \
            rf_v16 b0, b1;                                                                            \
            RF_GEMM_PF(PF_)                                                                           \
            memcpy(&b0, bs + (size_t)k * RF_NR, 64);                                                  \
            memcpy(&b1, bs + (size_t)k * RF_NR + 16, 64);                                             \
            RF_GEMM_PIN(b0); RF_GEMM_PIN(b1);                                                         \
            for (int r = 0; r < (NROWS_); r++) {                                                      \
                float av = as[(size_t)r * ldas + k];                                                  \
                c0[r] += av * b0;                                                                     \
                c1[r] += av * b1;                                                                     \
            }                                                                                         \
            /* (b0, b1 live past the last row: GCC otherwise wrote sums into them and moved them back) */ \
            RF_GEMM_KEEP(b0); RF_GEMM_KEEP(b1);                                                       \
        }                                                                                             \
    }

/* The K chunk's length (rf_gemm_chunk; 0: all of K). */
static int rf_gemm_kc = 256;

/* Columns [n0, n0 + nw) of a row of C (C_) := C' + the sums V0_, V1_ (their first nw columns), where C' is
 * 0 when BT_ is 0, else BT_ C rounded on its own (fused with the sum in one kernel and not another, the
 * results would differ; through volatile memory, so never fused). The sums pass through locals so no
 * address of V0_, V1_ is taken (an accumulator array whose address is taken went through the stack). */
#define RF_ACC_ADD(C_, NW_, BT_, V0_, V1_)                                                            \
    {                                                                                                 \
        rf_v16 t0_ = (V0_), t1_ = (V1_);                                                              \
        if ((NW_) == RF_NR) {                                                                         \
            if ((BT_) != 0.0f) {                                                                      \
                rf_v16 u0_, u1_;                                                                      \
                memcpy(&u0_, (C_), 64);                                                               \
                memcpy(&u1_, (C_) + 16, 64);                                                          \
                if ((BT_) != 1.0f) {                                                                  \
                    volatile rf_v16 s0_ = (BT_) * u0_, s1_ = (BT_) * u1_;                             \
                    u0_ = s0_;                                                                        \
                    u1_ = s1_;                                                                        \
                }                                                                                     \
                t0_ = u0_ + t0_;                                                                      \
                t1_ = u1_ + t1_;                                                                      \
            }                                                                                         \
            memcpy((C_), &t0_, 64);                                                                   \
            memcpy((C_) + 16, &t1_, 64);                                                              \
        } else {                                                                                      \
            float tout_[RF_NR];                                                                       \
            memcpy(tout_, &t0_, 64);                                                                  \
            memcpy(tout_ + 16, &t1_, 64);                                                             \
            for (int j_ = 0; j_ < (NW_); j_++) {                                                      \
                float u_ = 0.0f;                                                                      \
                if ((BT_) == 1.0f) {                                                                  \
                    u_ = (C_)[j_];                                                                    \
                } else if ((BT_) != 0.0f) {                                                           \
                    volatile float sv_ = (BT_) * (C_)[j_];                                            \
                    u_ = sv_;                                                                         \
                }                                                                                     \
                (C_)[j_] = u_ + tout_[j_];                                                            \
            }                                                                                         \
        }                                                                                             \
    }

/* The K chunk of a product over K rows of B (below): rf_gemm_kc, evened out (K = 513 (I = 1, H = 512)
 * ran a third chunk of one k through C). Every product kernel cuts K alike: a row's sum is the chunks'
 * sums (each one chain from 0) added to beta C in turn, whichever kernel and row block computes it. */
static inline int rf_gemm_chunk(int K) {
    int kc = rf_gemm_kc > 0 ? rf_gemm_kc : K;
    if (kc < K) {
        int nch = (K + kc - 1) / kc;
        kc = (K + nch - 1) / nch;
    }
    return kc > 0 ? kc : 1;
}

/* The K loop runs in chunks of rf_gemm_kc rows of B (one chunk of a panel, rf_gemm_kc x RF_NR floats,
 * stays in L1 while every row block of A passes over it; the partial sums go through C between
 * chunks). Without it a panel of a large layer (K = 1024: 128 KB) came from L2 for every row block.
 * While a chunk is in use, the row blocks prefetch the next one into L2, a line per k, each block its
 * part (pfp, pfn): the packed weights of a large layer (8 MB) come from L3 or memory at every step,
 * and the first row block of each chunk waited for them (one thread, 64 x 2048 x 1024: 150-165
 * GFLOP/s before, 165-180 after). */

/* One row block, NROWS_ rows, prefetching if PF_ (constants, so the sums stay in registers): its sums
 * run from 0 over the chunk's part of both segments of A, then go into C (beta C + them in the first
 * chunk, C + them after). Starting the sums from C instead, each block waited for its loads of C (3-6% at
 * K = 64-144, 8 rows). */
#define RF_GEMM_ROWS(NROWS_, PF_)                                                                     \
    {                                                                                                 \
        rf_v16 c0[NROWS_], c1[NROWS_];                                                                \
        for (int r = 0; r < (NROWS_); r++) c0[r] = c1[r] = (rf_v16){0};                               \
        RF_GEMM_KLOOP(NROWS_, PF_)                                                                    \
        for (int r = 0; r < (NROWS_); r++)                                                            \
            RF_ACC_ADD(C + (size_t)(m0 + r) * ldc + n0, nw, bt, c0[r], c1[r])                         \
    }
/* Packed B larger than this (bytes) is prefetched; smaller ones stay in L2 from step to step, where
 * the prefetches only cost (3-6% at 16-32 rows, N = 512-1024). A step of the few-rows kernel streams G
 * such products per thread, so 1 MB, not L2's 2: LSTM B=4, I=128, H=1024 on two threads (2 MB a gate)
 * 41.2 -> 36.2 ms; B=2..8, H=512..1024 1-3% faster; B=128, I=H=512 level. */
static size_t rf_gemm_pf_bytes = (size_t)1 << 20;

/* rf_gemv_nb's pf for weights read in place, nbytes of them streamed per pass: beyond rf_gemm_pf_bytes. */
static inline int rf_nb_pf(double nbytes) { return nbytes > (double)rf_gemm_pf_bytes; }

#define RF_GEMM_BODY                                                                                  \
    int rev = N < 0; /* N < 0: the panels last first (the serpentine, above) */                       \
    if (rev) N = -N;                                                                                  \
    int np = (N + RF_NR - 1) / RF_NR;                                                                 \
    int K = K1 + K2;                                                                                  \
    int kc = rf_gemm_chunk(K);                                                                        \
    int pf = (size_t)K * N * sizeof(float) > rf_gemm_pf_bytes;                                        \
    for (int pi = 0; pi < np; pi++) {                                                                 \
        int p = rev ? np - 1 - pi : pi, pn = rev ? p - 1 : p + 1; /* (pn: the panel after it) */        \
        const float* bp = packed + (size_t)p * K * RF_NR;                                             \
        int n0 = p * RF_NR, nw = N - n0 < RF_NR ? N - n0 : RF_NR;                                     \
        for (int k0 = 0; k0 < K || k0 == 0; k0 += kc) {                                               \
            int k1 = k0 + kc < K ? k0 + kc : K;                                                       \
            int first = k0 == 0;                                                                      \
            /* this chunk's part of each segment: A1 columns [s1a, s1b), A2 columns [s2a, s2b) */     \
            int s1a = k0 < K1 ? k0 : K1, s1b = k1 < K1 ? k1 : K1;                                     \
            int s2a = k0 > K1 ? k0 - K1 : 0, s2b = k1 > K1 ? k1 - K1 : 0;                             \
            /* the next chunk: this panel's, or the next panel's first; nl lines (a k row is two) */  \
            const float* nx = k1 < K ? bp + (size_t)k1 * RF_NR                                        \
                                     : (pi + 1 < np ? packed + (size_t)pn * K * RF_NR : NULL);        \
            int nl = nx == NULL || !pf ? 0 : 2 * (k1 < K ? (K - k1 < kc ? K - k1 : kc) : (K < kc ? K : kc)); \
            for (int m0 = 0; m0 < M; m0 += 8) {                                                       \
                int mr = M - m0 < 8 ? M - m0 : 8;                                                     \
                int pfs = (m0 / 8) * (k1 - k0);                                                       \
                int pfn = nl - pfs < k1 - k0 ? nl - pfs : k1 - k0;                                    \
                const float* pfp = pfn > 0 ? nx + (size_t)pfs * 16 : NULL;                            \
                /* first chunk: C := beta C + its sums; later ones: C += theirs */                    \
                float bt = first ? beta : 1.0f;                                                       \
                const float* a1 = A1 + (size_t)m0 * lda1 + s1a;                                       \
                const float* a2 = K2 > 0 ? A2 + (size_t)m0 * lda2 + s2a : A2;                         \
                const float* bq = bp + (size_t)k0 * RF_NR;                                            \
                /* Every row count 1..8 has its own copy of the loop with the count known to the      \
                   compiler (a runtime count keeps the accumulators in memory: 5-7 rows ran 15-30%     \
                   slower than 8), with and without prefetching (the check alone cost 7%). */          \
                if (mr == 8 && pfn > 0) {                                                             \
                    RF_GEMM_ROWS(8, 1)                                                                \
                } else if (mr == 8) {                                                                 \
                    RF_GEMM_ROWS(8, 0)                                                                \
                } else switch (pfn > 0 ? mr + 8 : mr) {                                               \
                case 1: RF_GEMM_ROWS(1, 0) break;                                                     \
                case 2: RF_GEMM_ROWS(2, 0) break;                                                     \
                case 3: RF_GEMM_ROWS(3, 0) break;                                                     \
                case 4: RF_GEMM_ROWS(4, 0) break;                                                     \
                case 5: RF_GEMM_ROWS(5, 0) break;                                                     \
                case 6: RF_GEMM_ROWS(6, 0) break;                                                     \
                case 7: RF_GEMM_ROWS(7, 0) break;                                                     \
                case 9: RF_GEMM_ROWS(1, 1) break;                                                     \
                case 10: RF_GEMM_ROWS(2, 1) break;                                                    \
                case 11: RF_GEMM_ROWS(3, 1) break;                                                    \
                case 12: RF_GEMM_ROWS(4, 1) break;                                                    \
                case 13: RF_GEMM_ROWS(5, 1) break;                                                    \
                case 14: RF_GEMM_ROWS(6, 1) break;                                                    \
                default: RF_GEMM_ROWS(7, 1) break;                                                    \
                }                                                                                     \
            }                                                                                         \
            if (K == 0) break;                                                                        \
        }                                                                                             \
    }

#define RF_GEMM_ARGS int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2, \
                     const float* packed, float beta, float* C, int ldc

/* The AVX-512 copy pins each weight vector in a register as rf_units_few does (RF_IN_REG; a 64-byte vector
 * is two registers to the other copies, which the constraint cannot name): GCC folded the loads into the
 * multiply-adds of blocks of a few rows (a tail block of 1-4 rows, 5-7 rows). */
#define RF_GEMM_PIN(v) RF_IN_REG(v)
#define RF_GEMM_KEEP(v) __asm__ volatile("" : : "v"(v))
__attribute__((target("avx512f,avx512vl,fma"))) static void rf_gemm_packed_avx512(RF_GEMM_ARGS) { RF_GEMM_BODY }
#undef RF_GEMM_PIN
#undef RF_GEMM_KEEP
#define RF_GEMM_PIN(v) (void)0
#define RF_GEMM_KEEP(v) (void)0
__attribute__((target("avx2,fma"))) static void rf_gemm_packed_avx2(RF_GEMM_ARGS) { RF_GEMM_BODY }
static void rf_gemm_packed_base(RF_GEMM_ARGS) { RF_GEMM_BODY }

/* Batch 1 without packing: y (N) := A1 (N, K1) . x1 + A2 (N, K2) . x2 + beta y, A1 and A2 read in place
 * (row-major, strides lda1 / lda2), e.g. y = W_ih x_t + W_hh h_{t-1}. Sixteen rows a block, one
 * accumulator each, so each row streams contiguously; a 4-stage transpose-add then leaves the sums in
 * one vector (RF_SUM16). The block's rows go in four groups of four consecutive rows, one group's k loop
 * after the other, and the first two stages of the transpose-add (which mix only a group's own four
 * accumulators) run as each group ends: four row streams at a time rather than sixteen, which the
 * prefetchers keep ahead of (a 4 KB row stride no longer overflows an L1 set either, so nothing is
 * staggered), and the same sums bit for bit as sixteen at once. One thread, GB/s, runs against the
 * old kernel interleaved and bench/gemv_rows.c: W 384 x 128 (L1/L2) 70-108 -> 89-111, 512 x 256 87-111 ->
 * 106-109, 1024 x 512 (2 MB, L3) 69-79 -> 81-83, 2048 x 512 60-82 -> 80-82, 3072 x 1024 (12.6 MB, staggered
 * before) 54-78 -> 64-71; whole batch-1 calls 1.02-1.25x. Nothing is packed, so a call costs nothing
 * before its first product. */
/* OUT_ (16 floats) := the sums of the 16 vectors ACC_, lane L holding accumulator bitrev4(L)'s: a 4-stage
 * transpose-add (15 shuffle pairs where 16 separate reductions take 64). */
#define RF_SUM16(ACC_, OUT_)                                                                          \
    {                                                                                                 \
        const rf_v16i m1a = RF_LO8, m1b = RF_HI8, m2a = RF_LO4, m2b = RF_HI4;                         \
        const rf_v16i m3a = RF_LO2, m3b = RF_HI2, m4a = RF_LO1, m4b = RF_HI1;                         \
        rf_v16 s1[8], s2[4], s3[2], s4;                                                               \
        for (int i = 0; i < 8; i++)                                                                   \
            s1[i] = __builtin_shuffle((ACC_)[2 * i], (ACC_)[2 * i + 1], m1a)                          \
                    + __builtin_shuffle((ACC_)[2 * i], (ACC_)[2 * i + 1], m1b);                       \
        for (int i = 0; i < 4; i++)                                                                   \
            s2[i] = __builtin_shuffle(s1[2 * i], s1[2 * i + 1], m2a)                                  \
                    + __builtin_shuffle(s1[2 * i], s1[2 * i + 1], m2b);                               \
        for (int i = 0; i < 2; i++)                                                                   \
            s3[i] = __builtin_shuffle(s2[2 * i], s2[2 * i + 1], m3a)                                  \
                    + __builtin_shuffle(s2[2 * i], s2[2 * i + 1], m3b);                               \
        s4 = __builtin_shuffle(s3[0], s3[1], m4a) + __builtin_shuffle(s3[0], s3[1], m4b);             \
        memcpy((OUT_), &s4, 64);                                                                      \
    }

/* Rows g0 .. g0 + 3 of A_ (clamped to N - 1) against X_ over K_: a0..a3 += the 16-float chunks' products,
 * tail[g0 - n0 + j] += the last K_ % 16 floats'. */
#define RF_ROWS4_SEG(A_, LDA_, K_, X_)                                                                \
    {                                                                                                 \
        const float* w0 = (A_) + (size_t)(g0 < N ? g0 : N - 1) * (LDA_);                              \
        const float* w1 = (A_) + (size_t)(g0 + 1 < N ? g0 + 1 : N - 1) * (LDA_);                      \
        const float* w2 = (A_) + (size_t)(g0 + 2 < N ? g0 + 2 : N - 1) * (LDA_);                      \
        const float* w3 = (A_) + (size_t)(g0 + 3 < N ? g0 + 3 : N - 1) * (LDA_);                      \
        int k = 0;                                                                                    \
        for (; k + 16 <= (K_); k += 16) {                                                             \
            rf_v16 xv, t0, t1, t2, t3;                                                                \
            memcpy(&xv, (X_) + k, 64);                                                                \
            memcpy(&t0, w0 + k, 64);                                                                  \
            memcpy(&t1, w1 + k, 64);                                                                  \
            memcpy(&t2, w2 + k, 64);                                                                  \
            memcpy(&t3, w3 + k, 64);                                                                  \
            a0 += t0 * xv;                                                                            \
            a1 += t1 * xv;                                                                            \
            a2 += t2 * xv;                                                                            \
            a3 += t3 * xv;                                                                            \
        }                                                                                             \
        for (; k < (K_); k++) {                                                                       \
            float xs = (X_)[k];                                                                       \
            tail[g0 - n0] += w0[k] * xs;                                                              \
            tail[g0 - n0 + 1] += w1[k] * xs;                                                          \
            tail[g0 - n0 + 2] += w2[k] * xs;                                                          \
            tail[g0 - n0 + 3] += w3[k] * xs;                                                          \
        }                                                                                             \
    }
/* Group G_ of the block at n0 (rows n0 + 4 G_ ..): its four sums, stages 1-2 of RF_SUM16, into S2_. */
#define RF_ROWS4(G_, S2_)                                                                             \
    {                                                                                                 \
        int g0 = n0 + 4 * (G_);                                                                       \
        rf_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                \
        if (K1 > 0) RF_ROWS4_SEG(A1, lda1, K1, x1)                                                    \
        if (K2 > 0) RF_ROWS4_SEG(A2, lda2, K2, x2)                                                    \
        rf_v16 p = __builtin_shuffle(a0, a1, m1a) + __builtin_shuffle(a0, a1, m1b);                   \
        rf_v16 q = __builtin_shuffle(a2, a3, m1a) + __builtin_shuffle(a2, a3, m1b);                   \
        S2_ = __builtin_shuffle(p, q, m2a) + __builtin_shuffle(p, q, m2b);                            \
    }

#define RF_GEMV_ROWS_BODY                                                                             \
    static const int br[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};                 \
    if (K1 + K2 < 16) { /* tiny layers: no 16-wide chunk to stream, plain dot products */            \
        for (int n = 0; n < N; n++) {                                                                 \
            float s = 0.0f;                                                                           \
            for (int k = 0; k < K1; k++) s += A1[(size_t)n * lda1 + k] * x1[k];                       \
            for (int k = 0; k < K2; k++) s += A2[(size_t)n * lda2 + k] * x2[k];                       \
            y[n] = (beta == 0.0f ? 0.0f : beta * y[n]) + s;                                           \
        }                                                                                             \
        return;                                                                                       \
    }                                                                                                 \
    const rf_v16i m1a = RF_LO8, m1b = RF_HI8, m2a = RF_LO4, m2b = RF_HI4;                             \
    const rf_v16i m3a = RF_LO2, m3b = RF_HI2, m4a = RF_LO1, m4b = RF_HI1;                             \
    for (int n0 = 0; n0 < N; n0 += 16) {                                                              \
        float tail[16] = {0};                                                                         \
        rf_v16 s20, s21, s22, s23;                                                                    \
        RF_ROWS4(0, s20)                                                                              \
        RF_ROWS4(1, s21)                                                                              \
        RF_ROWS4(2, s22)                                                                              \
        RF_ROWS4(3, s23)                                                                              \
        rf_v16 s3a = __builtin_shuffle(s20, s21, m3a) + __builtin_shuffle(s20, s21, m3b);             \
        rf_v16 s3b = __builtin_shuffle(s22, s23, m3a) + __builtin_shuffle(s22, s23, m3b);             \
        rf_v16 s4 = __builtin_shuffle(s3a, s3b, m4a) + __builtin_shuffle(s3a, s3b, m4b);              \
        float out[16]; /* lane L: row n0 + bitrev4(L) */                                              \
        memcpy(out, &s4, 64);                                                                         \
        int nv = N - n0 < 16 ? N - n0 : 16;                                                           \
        for (int L = 0; L < 16; L++) {                                                                \
            int r = br[L];                                                                            \
            if (r < nv) y[n0 + r] = (beta == 0.0f ? 0.0f : beta * y[n0 + r]) + (out[L] + tail[r]);    \
        }                                                                                             \
    }

#define RF_GEMV_ROWS_ARGS int N, int K1, const float* A1, int lda1, const float* x1, int K2, \
                          const float* A2, int lda2, const float* x2, float beta, float* y

RF_INSTANTIATE(rf_gemv_rows, RF_GEMV_ROWS_ARGS, RF_GEMV_ROWS_BODY)
RF_SELECT(rf_gemv_rows, rf_gemv_rows_fn)

/* A few rows without packing: Y (nb, N) := X1 (nb, K1) . A1^T + X2 (nb, K2) . A2^T + beta Y, A1 (N, K1)
 * and A2 (N, K2) read in place (row-major, strides lda1 / lda2), rows of X1 / X2 / Y at strides ldx1 /
 * ldx2 / ldy. rf_gemv_rows for up to 4 rows of x at once (more go 4 at a time): the few-rows kernel's
 * short calls, whose weights a pack would read and write once more than the steps themselves do (LSTM
 * B=2, T=10, I=H=1024 on one thread: the pack was a third of the call). The 16 accumulators hold
 * (weight row, x row) pairs, 16 / nb weight rows a block, so each weight row streams once for all nb
 * rows; the same transpose-add leaves pair p = i nb + r in lane p (accumulator bitrev4(p) holds it).
 * pf (weights beyond L2, the caller's call: rf_nb_pf): the first group of x rows over a block prefetches
 * the next block's weight rows, a line per row and k, into L2. A block's 2-16 rows are short streams
 * (4 KB at K = 1024) the hardware prefetcher meets too late; prefetched, from L3 (16 MB, one thread, K =
 * 1024): 3 rows 0.39 -> 0.34 ms, 4 rows 0.54 -> 0.43, 8 rows 1.16 -> 0.86-0.99, 2 rows level; from
 * memory 1.3x; but from L2 the prefetches only cost (1 MB: 2 rows 16%, 3 rows 11%, 4-8 rows 4-5%). */
/* (blocks of two to four x rows read eight to four weight rows at a time; one row of x goes to
 * rf_gemv_rows. Two-row blocks staggered along their rows (sixteen weight rows at a 4 KB stride overflowed
 * an L1 set, which staggering had cured) lost on Zen 4, LSTM B=2 T=10 I=H=1024 9.9 -> 11.9 ms on one
 * thread, 5.0 -> 6.3 on two; GRU B=2 T=20 I=512 H=1024 9.0 -> 11.4) */
#define RF_GEMV_NB_SEG(NB_, A_, LDA_, K_, X_, LDX_)                                                    \
    for (int i = 0; i < WR; i++) w[i] = (A_) + (size_t)(n0 + i < N ? n0 + i : N - 1) * (LDA_);        \
    for (k = 0; k + 16 <= (K_); k += 16) {                                                            \
        rf_v16 xv[NB_];                                                                               \
        _Pragma("GCC unroll 5") for (int r = 0; r < (NB_); r++) {                                     \
            memcpy(&xv[r], (X_) + (size_t)r * (LDX_) + k, 64);                                        \
            RF_NB_PIN(xv[r]);                                                                         \
        }                                                                                             \
        _Pragma("GCC unroll 16") for (int i = 0; i < WR; i++) {                                       \
            rf_v16 t;                                                                                 \
            memcpy(&t, w[i] + k, 64);                                                                 \
            RF_NB_PIN(t);                                                                             \
            if (pf_next) __builtin_prefetch(w[i] + (size_t)WR * (LDA_) + k, 0, 1);                    \
            _Pragma("GCC unroll 5") for (int r = 0; r < (NB_); r++) acc[br[i * (NB_) + r]] += t * xv[r];\
        }                                                                                             \
    }                                                                                                 \
    for (int i = 0; i < WR; i++)                                                                      \
        for (int r = 0; r < (NB_); r++)                                                               \
            for (int kk = k; kk < (K_); kk++) tail[i * (NB_) + r] += w[i][kk] * (X_)[(size_t)r * (LDX_) + kk];

/* Rows [R0_, R1_) of x in groups of NB_: each block of WR weight rows (16 KB at K = 1024) passes every
 * group while it is in L1, so the weights stream once for all the rows. */
#define RF_GEMV_NB_BLOCKS(NB_, R0_, R1_)                                                              \
    {                                                                                                 \
        enum { WR = 16 / (NB_) };                                                                     \
        for (int n0 = 0; n0 < N; n0 += WR)                                                            \
            for (int r0 = (R0_); r0 < (R1_); r0 += (NB_)) {                                           \
                const float* x1 = X1 ? X1 + (size_t)r0 * ldx1 : X1;                                   \
                const float* x2 = X2 ? X2 + (size_t)r0 * ldx2 : X2;                                   \
                float* y = Y + (size_t)r0 * ldy;                                                      \
                rf_v16 acc[16];                                                                       \
                const float* w[WR];                                                                   \
                int pf_next = pf && r0 == (R0_) && n0 + WR < N; /* (the first group, as it streams) */ \
                float tail[16] = {0}, out[16];                                                        \
                int k;                                                                                \
                for (int i = 0; i < 16; i++) acc[i] = (rf_v16){0};                                    \
                if (K1 > 0) {                                                                         \
                    RF_GEMV_NB_SEG(NB_, A1, lda1, K1, x1, ldx1)                                       \
                }                                                                                     \
                if (K2 > 0) {                                                                         \
                    RF_GEMV_NB_SEG(NB_, A2, lda2, K2, x2, ldx2)                                       \
                }                                                                                     \
                RF_SUM16(acc, out)                                                                    \
                for (int p = 0; p < WR * (NB_); p++) {                                                \
                    int n = n0 + p / (NB_);                                                           \
                    if (n >= N) break;                                                                \
                    float* d = y + (size_t)(p % (NB_)) * ldy + n;                                     \
                    *d = (beta == 0.0f ? 0.0f : beta * *d) + (out[p] + tail[p]);                      \
                }                                                                                     \
            }                                                                                         \
    }

/* The rows of x a group of rf_gemv_nb takes (each group passes over a block of weight rows while it is in
 * L1): 4, or 3 or 5 where those make up nb and 4s do not (6, 9, 10, 15 ...), so the weights stream once
 * for all the rows, where 4s and the 1-3 left took two passes (one thread, W (1536, 768) from L3: 5 rows
 * 0.158 -> 0.116 ms, 6 0.202 -> 0.155, 9 0.296 -> 0.230, 10 0.264 -> 0.232; the same sums; 7 rows as one
 * group of two weight rows were no faster than 4 + 3). */
static inline int rf_gemv_nb_group(int nb) {
    if (nb > 4 && nb % 4 != 0) {
        if (nb % 3 == 0) return 3;
        if (nb % 5 == 0) return 5;
    }
    return 4;
}

/* Passes rf_gemv_nb makes over the weights for nb rows of x: one, or two where the 1-3 rows left after
 * the groups of 4 take another. */
static inline int rf_gemv_nb_passes(int nb) { return nb <= 4 || nb % rf_gemv_nb_group(nb) == 0 ? 1 : 2; }

#define RF_GEMV_NB_BODY                                                                               \
    static const int br[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};                 \
    switch (rf_gemv_nb_group(nb)) {                                                                   \
    case 3: RF_GEMV_NB_BLOCKS(3, 0, nb) return;                                                       \
    case 5: RF_GEMV_NB_BLOCKS(5, 0, nb) return;                                                       \
    default: break;                                                                                   \
    }                                                                                                 \
    int full = nb / 4 * 4;  /* groups of 4 rows, then the 1-3 left (one more pass over the weights) */ \
    if (full > 0) RF_GEMV_NB_BLOCKS(4, 0, full)                                                       \
    switch (nb - full) {                                                                              \
    case 1: /* one row: rf_gemv_rows's groups of four weight rows (sixteen streams ran 15-45% slower) */ \
        RF_NB_ROWS(N, K1, A1, lda1, X1 ? X1 + (size_t)full * ldx1 : X1, K2, A2, lda2,                   \
                   X2 ? X2 + (size_t)full * ldx2 : X2, beta, Y + (size_t)full * ldy);                 \
        break;                                                                                        \
    case 2: RF_GEMV_NB_BLOCKS(2, full, nb) break;                                                     \
    case 3: RF_GEMV_NB_BLOCKS(3, full, nb) break;                                                     \
    default: break;                                                                                   \
    }

#define RF_GEMV_NB_ARGS int nb, int N, int K1, const float* A1, int lda1, const float* X1, int ldx1, int K2, \
                        const float* A2, int lda2, const float* X2, int ldx2, float beta, float* Y, int ldy, \
                        int pf

/* The AVX-512 copy pins the x rows and the weight vector in registers (RF_IN_REG): GCC 12 otherwise
 * folded the x loads into every multiply-add and loaded each weight vector once per x row, 24 loads a
 * k for 16 multiply-adds, and spilled an accumulator (20 rows, K = 512, 3072 weight rows, one thread:
 * 57 GFLOP/s from L1 / L2). The other copies hold a 64-byte vector in two registers (see RF_GEMM_PIN). */
#define RF_NB_PIN(v) RF_IN_REG(v)
#define RF_NB_ROWS rf_gemv_rows_avx512
__attribute__((target("avx512f,avx512vl,fma"))) static void rf_gemv_nb_avx512(RF_GEMV_NB_ARGS) { RF_GEMV_NB_BODY }
#undef RF_NB_PIN
#undef RF_NB_ROWS
#define RF_NB_PIN(v) (void)0
#define RF_NB_ROWS rf_gemv_rows_avx2
__attribute__((target("avx2,fma"))) static void rf_gemv_nb_avx2(RF_GEMV_NB_ARGS) { RF_GEMV_NB_BODY }
#undef RF_NB_ROWS
#define RF_NB_ROWS rf_gemv_rows_base
static void rf_gemv_nb_base(RF_GEMV_NB_ARGS) { RF_GEMV_NB_BODY }
#undef RF_NB_PIN
#undef RF_NB_ROWS
RF_SELECT(rf_gemv_nb, rf_gemv_nb_fn)

/* The few-rows product, M <= RF_FEW_MR rows: C (M, N) := [A1 (M, K1), A2 (M, K2)] . packed + beta C, on
 * the panels rf_gemm_packed reads (rf_gemm.h: [panel][k][RF_NR]). With two to four rows a step is one
 * pass over a thread's share of the weights, and what limits it is how fast that pass streams, not the
 * arithmetic; rf_gemm_packed suits many rows (an 8-row block, the K loop cut in chunks that stay in L1
 * while the row blocks pass, partial sums through C between chunks). Here two panels at a time run in
 * registers, each chunk of K (rf_gemm_chunk, as rf_gemm_packed's) whole (a row's chain of dependent
 * multiply-adds waits 4 cycles per k: M * 2 chains of one panel are too few at M <= 4; two k at a time into
 * two sets of accumulators, as before, summed a row's terms in another order than rf_gemm_packed's blocks
 * of 8 rows, so a row's result depended on its neighbours; two panels: 2-4 rows 1.05-1.25x faster in
 * bench/gemm_rows_ab.sh), and the packed stream is
 * prefetched RF_FEW_PF bytes ahead, across the panel and the gate slot that follow (a thread's slots lie
 * one after another): the hardware prefetcher stops at each 4 KB page. One thread, 2 rows, a share of
 * LSTM I=256 H=512 (4 gates x (512, 256), 2.1 MB): 36-39 us a step -> 30-31; GRU's (1.6 MB) 22 -> 17-18;
 * 3-4 rows 42-47 -> 36; 6-8 MB shares, read from L3, 1-5% (about 30 GB/s a core either way). With 8 rows
 * it lost (the accumulators no longer fit the 32 registers): more rows take rf_gemm_packed. Each weight vector
 * is pinned in a register (RF_IN_REG): GCC 12 otherwise folded its load into every row's multiply-add, so 2-3
 * rows read the stream 2-3 times from L1 (one thread, G=4 x (256, 256), 1 MB: 2 rows 15.4 -> 11.1 us, 3 rows
 * 21.5 -> 12.1, against 9.3-9.7 for 1; bench/units_kernel.c, bench/gemm_rows_ab.sh).
 * The prefetching is the Xeon's: on AMD Zen 4 the hardware alone streams the panels at a sequential
 * read's rate (about 90 GB/s a core from L3) and the prefetches slow it (one thread, 2 rows of a 4 MB share:
 * 59-62 us -> 45-51; 3 rows 65-68 -> 56-59; a 1-16 MB share, one or two threads, 0.87-1.36x; 4 rows
 * level), so rf_few_prefetch, set when the extension loads, is off on AMD processors (tests and
 * benchmarks switch it: _recurrent.set_few_prefetch). */
static int rf_few_prefetch = 1;

/* Two panels at a time (NP_ 2; the last alone, NP_ 1), each output one chain over k within each K chunk
 * as in rf_gemm_packed (bit for bit its sums), the chunk's sums added to C (beta C first). */
#define RF_FEW_PANELS(MR_, NP_, PF_)                                                                  \
    for (int k0 = 0; k0 < K || k0 == 0; k0 += kc) {                                                   \
        int k1 = k0 + kc < K ? k0 + kc : K;                                                           \
        float bt = k0 == 0 ? beta : 1.0f;                                                             \
        rf_v16 c0[MR_], c1[MR_], d0[MR_], d1[MR_];                                                    \
        for (int r = 0; r < (MR_); r++) c0[r] = c1[r] = d0[r] = d1[r] = (rf_v16){0};                  \
        const float* bq = bp + (size_t)k0 * RF_NR;                                                    \
        for (int s = 0; s < 2; s++) { /* this chunk's part of A1's columns, then of A2's */           \
            const float* A = s == 0 ? A1 : A2;                                                        \
            int lda = s == 0 ? lda1 : lda2, off = s == 0 ? 0 : K1;                                    \
            int ka = k0 > off ? k0 - off : 0, kb = k1 - off < (s == 0 ? K1 : K2) ? k1 - off : (s == 0 ? K1 : K2); \
            for (int k = ka; k < kb; k++, bq += RF_NR) {                                              \
                if (PF_) {                                                                            \
                    const char* pf = (const char*)bq + RF_FEW_PF; /* (a prefetch never faults) */     \
                    __builtin_prefetch(pf, 0, 3);                                                     \
                    __builtin_prefetch(pf + 64, 0, 3);                                                \
                    if ((NP_) == 2) {                                                                 \
                        __builtin_prefetch(pf + (size_t)K * RF_NR * 4, 0, 3);                         \
                        __builtin_prefetch(pf + (size_t)K * RF_NR * 4 + 64, 0, 3);                    \
                    }                                                                                 \
                }                                                                                     \
                rf_v16 b0, b1, e0, e1;                                                                \
                memcpy(&b0, bq, 64);                                                                  \
                memcpy(&b1, bq + 16, 64);                                                             \
                RF_IN_REG(b0); RF_IN_REG(b1);                                                         \
                if ((NP_) == 2) {                                                                     \
                    memcpy(&e0, bq + (size_t)K * RF_NR, 64);                                          \
                    memcpy(&e1, bq + (size_t)K * RF_NR + 16, 64);                                     \
                    RF_IN_REG(e0); RF_IN_REG(e1);                                                     \
                }                                                                                     \
                for (int r = 0; r < (MR_); r++) {                                                     \
                    float a = A[(size_t)r * lda + k];                                                 \
                    c0[r] += a * b0;                                                                  \
                    c1[r] += a * b1;                                                                  \
                    if ((NP_) == 2) {                                                                 \
                        d0[r] += a * e0;                                                              \
                        d1[r] += a * e1;                                                              \
                    }                                                                                 \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
        for (int r = 0; r < (MR_); r++) {                                                             \
            RF_ACC_ADD(C + (size_t)r * ldc + n0, nw, bt, c0[r], c1[r])                                \
            if ((NP_) == 2) RF_ACC_ADD(C + (size_t)r * ldc + n0 + RF_NR, nw2, bt, d0[r], d1[r])       \
        }                                                                                             \
        if (K == 0) break;                                                                            \
    }

#define RF_FEW_CASES(NP_)                                                                             \
    switch (rf_few_prefetch ? M + 4 : M) {                                                            \
    case 1: RF_FEW_PANELS(1, NP_, 0) break;                                                           \
    case 2: RF_FEW_PANELS(2, NP_, 0) break;                                                           \
    case 3: RF_FEW_PANELS(3, NP_, 0) break;                                                           \
    case 4: RF_FEW_PANELS(4, NP_, 0) break;                                                           \
    case 5: RF_FEW_PANELS(1, NP_, 1) break;                                                           \
    case 6: RF_FEW_PANELS(2, NP_, 1) break;                                                           \
    case 7: RF_FEW_PANELS(3, NP_, 1) break;                                                           \
    default: RF_FEW_PANELS(4, NP_, 1) break;                                                          \
    }

__attribute__((target("avx512f,avx512vl,fma"))) static void rf_units_few_avx512(
        int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2, const float* packed,
        float beta, float* C, int ldc) {
    int K = K1 + K2, kc = rf_gemm_chunk(K);
    if (M <= 0) return;
    for (int n0 = 0; n0 < N; n0 += 2 * RF_NR) {
        const float* bp = packed + (size_t)(n0 / RF_NR) * K * RF_NR;
        int nw = N - n0 < RF_NR ? N - n0 : RF_NR, nw2 = N - n0 - RF_NR;
        if (nw2 > RF_NR) nw2 = RF_NR;
        if (nw2 > 0) {
            RF_FEW_CASES(2)
        } else {
            RF_FEW_CASES(1)
        }
    }
}

/* The few-rows product for this CPU, or NULL (rf_gemm_packed then takes every row count). */
static rf_gemm_fn rf_units_few_select(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return rf_units_few_avx512;
    return NULL;
}

/* rf_gemm_packed for this CPU: with AVX-512, calls of up to RF_FEW_MR rows (a row task of 4 rows, a
 * batch of 2-4 projected over all steps) take the few-rows product (one thread, 4 rows of 512 columns,
 * K = 144: 5.5 us against 4.4). */
__attribute__((target("avx512f,avx512vl,fma"))) static void rf_gemm_rows_avx512(RF_GEMM_ARGS) {
    if (M <= RF_FEW_MR && N < 0) {  /* the panels last first, two at a time (the serpentine) */
        N = -N;
        RF_SERP_CHUNKS(1, N, c0, m)
            rf_units_few_avx512(M, m, K1, A1, lda1, K2, A2, lda2, packed + (size_t)c0 * (K1 + K2), beta, C + c0,
                                ldc);
    } else if (M <= RF_FEW_MR)
        rf_units_few_avx512(M, N, K1, A1, lda1, K2, A2, lda2, packed, beta, C, ldc);
    else
        rf_gemm_packed_avx512(M, N, K1, A1, lda1, K2, A2, lda2, packed, beta, C, ldc);
}

static rf_gemm_fn rf_gemm_packed_select(void) {
    __builtin_cpu_init();
    if (rf_units_few_select())
        return rf_gemm_rows_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return rf_gemm_packed_avx2;
    return rf_gemm_packed_base;
}

/* Chosen once, when the extension loads (the kernels' threads then only read it). */
static rf_gemm_fn rf_units_few;
static rf_gemv_nb_fn rf_gemv_nb;
__attribute__((constructor)) static void rf_units_few_init(void) {
    rf_units_few = rf_units_few_select();
    rf_gemv_nb = rf_gemv_nb_select();
    rf_few_prefetch = !__builtin_cpu_is("amd");
}

/* Batch 1 over panels: y (n) := P^T [x1; x2] + beta y, where P holds a (K1 + K2, n) matrix as
 * rf_pack_panels leaves it. Each panel is read front to back, one stream, which the cache delivers
 * faster than sixteen row streams (a thread's share of an LSTM's W_hh at H = 256, 512 KB: 3.4 us against
 * 4.4 for rf_gemv_rows here); packing costs about one pass over the weights, so the latency kernel packs
 * once per call and only for calls long enough to repay it. */
#define RF_GEMV_BLOCK(NV_, KU_, STRIDE_)                                                              \
    { /* out[0, 16 NV_) := [x1; x2] . the rows from w on, STRIDE_ floats apart */                     \
        rf_v16 acc[KU_][NV_];                                                                         \
        for (int u = 0; u < KU_; u++)                                                                 \
            for (int v = 0; v < NV_; v++) acc[u][v] = (rf_v16){0};                                    \
        for (int s = 0; s < 2; s++) {                                                                 \
            const float* xs = s == 0 ? x1 : x2;                                                       \
            int Ks = s == 0 ? K1 : K2;                                                                \
            int k = 0;                                                                                \
            for (; k + KU_ <= Ks; k += KU_)                                                           \
                for (int u = 0; u < KU_; u++) {                                                       \
                    float xv = xs[k + u];                                                             \
                    for (int v = 0; v < NV_; v++) {                                                   \
                        rf_v16 t;                                                                     \
                        memcpy(&t, w + 16 * v, 64);                                                   \
                        acc[u][v] += t * xv;                                                          \
                    }                                                                                 \
                    w += (STRIDE_);                                                                   \
                }                                                                                     \
            for (; k < Ks; k++) {                                                                     \
                float xv = xs[k];                                                                     \
                for (int v = 0; v < NV_; v++) {                                                       \
                    rf_v16 t;                                                                         \
                    memcpy(&t, w + 16 * v, 64);                                                       \
                    acc[0][v] += t * xv;                                                              \
                }                                                                                     \
                w += (STRIDE_);                                                                       \
            }                                                                                         \
        }                                                                                             \
        for (int u = 1; u < KU_; u++)                                                                 \
            for (int v = 0; v < NV_; v++) acc[0][v] += acc[u][v];                                     \
        memcpy(out, acc[0], 64 * NV_);                                                                \
    }

#define RF_GEMV_PANELS_BODY                                                                           \
    const float* pp = P;                                                                              \
    int K = K1 + K2;                                                                                  \
    for (int i0 = 0; i0 < n; i0 += 64) {                                                              \
        int nv = rf_panel_width(n, i0) / 16;                                                          \
        float out[64];                                                                                \
        const float* w = pp;                                                                          \
        switch (nv) {                                                                                 \
        case 4: RF_GEMV_BLOCK(4, 2, 64) break;                                                        \
        case 3: RF_GEMV_BLOCK(3, 2, 48) break;                                                        \
        case 2: RF_GEMV_BLOCK(2, 4, 32) break;                                                        \
        default: RF_GEMV_BLOCK(1, 4, 16) break;                                                       \
        }                                                                                             \
        int nw = n - i0 < 64 ? n - i0 : 64;                                                           \
        for (int j = 0; j < nw; j++) y[i0 + j] = (beta == 0.0f ? 0.0f : beta * y[i0 + j]) + out[j];   \
        pp += (size_t)K * 16 * nv;                                                                    \
    }

#define RF_GEMV_PANELS_ARGS int n, int K1, const float* x1, int K2, const float* x2, const float* P, \
                            float beta, float* y

RF_INSTANTIATE(rf_gemv_panels, RF_GEMV_PANELS_ARGS, RF_GEMV_PANELS_BODY)
RF_SELECT(rf_gemv_panels, rf_gemv_panels_fn)

/* Batch 1, transposed, in place: y (n) := v (K) . W (K, n) + beta y, W row-major with stride ldw (the
 * backward's dh_{t-1} = dG_t W_hh on a thread's columns). Blocks of 64 columns, each read row after
 * row (a constant stride the prefetchers follow); columns past the last multiple of 16 one at a time. */
#define RF_GEMV_COLS_BODY                                                                             \
    int nfull = n / 16 * 16;                                                                          \
    const float* x1 = v;                                                                              \
    const float* x2 = NULL;                                                                           \
    int K1 = K, K2 = 0;                                                                               \
    for (int j0 = 0; j0 < nfull; j0 += 64) {                                                          \
        int nv = (nfull - j0) / 16 < 4 ? (nfull - j0) / 16 : 4;                                       \
        float out[64];                                                                                \
        const float* w = W + j0;                                                                      \
        switch (nv) {                                                                                 \
        case 4: RF_GEMV_BLOCK(4, 2, ldw) break;                                                       \
        case 3: RF_GEMV_BLOCK(3, 2, ldw) break;                                                       \
        case 2: RF_GEMV_BLOCK(2, 2, ldw) break;                                                       \
        default: RF_GEMV_BLOCK(1, 2, ldw) break;                                                      \
        }                                                                                             \
        for (int j = 0; j < 16 * nv; j++) y[j0 + j] = (beta == 0.0f ? 0.0f : beta * y[j0 + j]) + out[j]; \
    }                                                                                                 \
    for (int j = nfull; j < n; j++) {                                                                 \
        float s = 0.0f;                                                                               \
        for (int k = 0; k < K; k++) s += v[k] * W[(size_t)k * ldw + j];                               \
        y[j] = (beta == 0.0f ? 0.0f : beta * y[j]) + s;                                               \
    }

#define RF_GEMV_COLS_ARGS int K, int n, const float* W, int ldw, const float* v, float beta, float* y

RF_INSTANTIATE(rf_gemv_cols, RF_GEMV_COLS_ARGS, RF_GEMV_COLS_BODY)
RF_SELECT(rf_gemv_cols, rf_gemv_cols_fn)

/* rf_pack_panels_scalar by 16 x 16 blocks: sixteen rows' next sixteen floats are loaded, transposed
 * (RF_TRANSPOSE16) and stored as sixteen panel rows (260 us -> about 20 for 512 KB here). */
__attribute__((target("avx512f,avx512vl,fma"))) static void rf_pack_panels_avx512(
        int n, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2, float* P) {
    RF_TRANSPOSE_MASKS
    int K = K1 + K2;
    for (int i0 = 0; i0 < n; i0 += 64) {
        int w = rf_panel_width(n, i0);
        for (int j0 = 0; j0 < w; j0 += 16) {
            for (int seg = 0; seg < 2; seg++) {
                const float* A = seg == 0 ? A1 : A2;
                int lda = seg == 0 ? lda1 : lda2, Ks = seg == 0 ? K1 : K2, koff = seg == 0 ? 0 : K1;
                int k = 0;
                for (; k + 16 <= Ks; k += 16) {
                    rf_v16 r[16], q[16];
                    for (int j = 0; j < 16; j++) {
                        int i = i0 + j0 + j;
                        if (i < n)
                            memcpy(&r[j], A + (size_t)i * lda + k, 64);
                        else
                            r[j] = (rf_v16){0};
                    }
                    RF_TRANSPOSE16(r, q);
                    for (int j = 0; j < 16; j++) memcpy(P + (size_t)(koff + k + j) * w + j0, &r[j], 64);
                }
                for (; k < Ks; k++)
                    for (int j = 0; j < 16; j++) {
                        int i = i0 + j0 + j;
                        P[(size_t)(koff + k) * w + j0 + j] = i < n ? A[(size_t)i * lda + k] : 0.0f;
                    }
            }
        }
        P += (size_t)K * w;
    }
}

static rf_pack_panels_fn rf_pack_panels_select(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        return rf_pack_panels_avx512;
    return rf_pack_panels_scalar;
}

#else
#define RF_GEMM_VECTORS 0

static void rf_pack_bt2(int K1, const float* Bt1, int ldb1, int K2, const float* Bt2, int ldb2, int N,
                        int p0, int p1, float* packed) {
    rf_pack_bt2_scalar(K1, Bt1, ldb1, K2, Bt2, ldb2, N, p0, p1, packed);
}

static void rf_gemm_packed_base(int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2,
                                int lda2, const float* packed, float beta, float* C, int ldc) {
    if (N < 0) N = -N;  /* (the order of the panels: see the vector copies) */
    int np = (N + RF_NR - 1) / RF_NR, K = K1 + K2;
    for (int m = 0; m < M; m++)
        for (int p = 0; p < np; p++) {
            int n0 = p * RF_NR, nw = N - n0 < RF_NR ? N - n0 : RF_NR;
            float acc[RF_NR] = {0};
            for (int k = 0; k < K; k++) {
                float av = k < K1 ? A1[(size_t)m * lda1 + k] : A2[(size_t)m * lda2 + k - K1];
                for (int j = 0; j < RF_NR; j++) acc[j] += av * packed[((size_t)p * K + k) * RF_NR + j];
            }
            for (int j = 0; j < nw; j++)
                C[(size_t)m * ldc + n0 + j] = (beta == 0.0f ? 0.0f : beta * C[(size_t)m * ldc + n0 + j]) + acc[j];
        }
}

static rf_gemm_fn rf_gemm_packed_select(void) { return rf_gemm_packed_base; }

static const rf_gemm_fn rf_units_few = NULL;
static int rf_few_prefetch = 0;  /* (no few-rows kernel here) */

static void rf_gemv_rows_base(int N, int K1, const float* A1, int lda1, const float* x1, int K2,
                              const float* A2, int lda2, const float* x2, float beta, float* y) {
    for (int n = 0; n < N; n++) {
        float s = 0.0f;
        for (int k = 0; k < K1; k++) s += A1[(size_t)n * lda1 + k] * x1[k];
        for (int k = 0; k < K2; k++) s += A2[(size_t)n * lda2 + k] * x2[k];
        y[n] = (beta == 0.0f ? 0.0f : beta * y[n]) + s;
    }
}

static rf_gemv_rows_fn rf_gemv_rows_select(void) { return rf_gemv_rows_base; }

static void rf_gemv_nb_base(int nb, int N, int K1, const float* A1, int lda1, const float* X1, int ldx1, int K2,
                            const float* A2, int lda2, const float* X2, int ldx2, float beta, float* Y, int ldy,
                            int pf) {
    (void)pf;
    for (int r = 0; r < nb; r++)
        rf_gemv_rows_base(N, K1, A1, lda1, X1 ? X1 + (size_t)r * ldx1 : X1, K2, A2, lda2,
                          X2 ? X2 + (size_t)r * ldx2 : X2, beta, Y + (size_t)r * ldy);
}

static rf_gemv_nb_fn rf_gemv_nb_select(void) { return rf_gemv_nb_base; }
static const rf_gemv_nb_fn rf_gemv_nb = rf_gemv_nb_base;

static void rf_gemv_panels_base(int n, int K1, const float* x1, int K2, const float* x2, const float* P,
                                float beta, float* y) {
    int K = K1 + K2;
    for (int i0 = 0; i0 < n; i0 += 64) {
        int w = rf_panel_width(n, i0);
        int nw = n - i0 < 64 ? n - i0 : 64;
        for (int j = 0; j < nw; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += P[(size_t)k * w + j] * (k < K1 ? x1[k] : x2[k - K1]);
            y[i0 + j] = (beta == 0.0f ? 0.0f : beta * y[i0 + j]) + s;
        }
        P += (size_t)K * w;
    }
}

static rf_gemv_panels_fn rf_gemv_panels_select(void) { return rf_gemv_panels_base; }

static void rf_gemv_cols_base(int K, int n, const float* W, int ldw, const float* v, float beta, float* y) {
    for (int j = 0; j < n; j++) {
        float s = 0.0f;
        for (int k = 0; k < K; k++) s += v[k] * W[(size_t)k * ldw + j];
        y[j] = (beta == 0.0f ? 0.0f : beta * y[j]) + s;
    }
}

static rf_gemv_cols_fn rf_gemv_cols_select(void) { return rf_gemv_cols_base; }

static rf_pack_panels_fn rf_pack_panels_select(void) { return rf_pack_panels_scalar; }
#endif

/* Pack B into panels. B is (K, N) row-major with stride ldb if !trans, else given as its transpose
 * Bt (N, K) row-major with stride ldb (B[k][n] = Bt[n][k]). */
static void rf_pack_b(int K, int N, const float* B, int ldb, int trans, float* packed) {
    int np = (N + RF_NR - 1) / RF_NR;
    if (trans) {  /* the transposing packer's 16 x 16 blocks */
        rf_pack_bt2(K, B, ldb, 0, B, 0, N, 0, np, packed);
        return;
    }
    for (int p = 0; p < np; p++) {
        float* dst = packed + (size_t)p * K * RF_NR;
        int n0 = p * RF_NR, nw = N - n0 < RF_NR ? N - n0 : RF_NR;
        for (int k = 0; k < K; k++) {
            float* d = dst + (size_t)k * RF_NR;
            memcpy(d, B + (size_t)k * ldb + n0, (size_t)nw * sizeof(float));
            for (int j = nw; j < RF_NR; j++) d[j] = 0.0f;
        }
    }
}

/* One thread's part of C (M, N) := A (M, K) . Bt^T, Bt (N, K) row-major (the input projection X W_ih^T
 * over all steps): column panels [p0, p1) of C, packed into `scratch` at their own place (as rf_pack_b
 * lays out the whole), so threads never share a panel: no barrier, no panel packed twice, where BLAS
 * packs W_ih^T again in every thread's block of rows. Few rows: groups of the thread's panels, about
 * 512 KB each, are packed in turn into the start of its part of `scratch`, which stays in L2, and each
 * group makes its columns for every row (the weights pass through memory once). Many rows (when A's
 * extra passes, one per group, would outweigh two more over the thread's weights): all its panels
 * packed first, then blocks of about 512 KB of A's rows, each kept in L2 while every panel passes. A
 * group, too, takes A's rows in blocks (256 KB), which stay in L2 while its panels pass, where all of A
 * passed once per panel (one thread, half the columns of 400 x 1024 x 512: 1.46 -> 1.32 ms; 800 x 512 x
 * 1024: 2.84 -> 2.49). One
 * thread against scipy's OpenBLAS (the same product, no copies): 20 x 1024 x 2048 1.11 against 1.44 ms,
 * 128 x 768 x 768 0.93 / 1.09, 400 x 1024 x 256 1.42 / 1.42, 2560 x 128 x 256 1.12 / 1.23; packing the
 * whole first and then multiplying every row read the weights three times (20 x 1024 x 4096: 7.3 ms,
 * BLAS 3.2, groups 2.35). */
static void rf_gemm_bt_panels(rf_gemm_fn gemm, int M, int N, int K, const float* A, int lda, const float* Bt,
                              int ldb, int p0, int p1, float* scratch, float* C, int ldc) {
    int gp = (int)((512 * 1024) / ((size_t)K * RF_NR * sizeof(float)));
    int n0 = p0 * RF_NR, n1 = p1 * RF_NR < N ? p1 * RF_NR : N;
    float* pk = scratch + (size_t)p0 * K * RF_NR;
    if (n1 <= n0 || M <= 0) return;
    if (gp < 1) gp = 1;
    int groups = (p1 - p0 + gp - 1) / gp;
    if ((size_t)(groups - 1) * M > 2 * (size_t)(n1 - n0)) {
        int mb = (512 * 1024 / 4) / K / 8 * 8;
        if (mb < 32) mb = 32;
        rf_pack_bt2(K, Bt + (size_t)n0 * ldb, ldb, 0, Bt, 0, n1 - n0, 0, p1 - p0, pk);
        for (int m0 = 0; m0 < M; m0 += mb)
            gemm(M - m0 < mb ? M - m0 : mb, n1 - n0, K, A + (size_t)m0 * lda, lda, 0, A, 0, pk, 0.0f,
                 C + (size_t)m0 * ldc + n0, ldc);
        return;
    }
    int mb = (256 * 1024 / 4) / K / 8 * 8;  /* (and a group's rows in blocks of about 256 KB of A) */
    if (mb < 32) mb = 32;
    for (int q0 = p0; q0 < p1; q0 += gp) {
        int q1 = q0 + gp < p1 ? q0 + gp : p1;
        int c0 = q0 * RF_NR, c1 = q1 * RF_NR < N ? q1 * RF_NR : N;
        rf_pack_bt2(K, Bt + (size_t)c0 * ldb, ldb, 0, Bt, 0, c1 - c0, 0, q1 - q0, pk);
        for (int m0 = 0; m0 < M; m0 += mb)
            gemm(M - m0 < mb ? M - m0 : mb, c1 - c0, K, A + (size_t)m0 * lda, lda, 0, A, 0, pk, 0.0f,
                 C + (size_t)m0 * ldc + c0, ldc);
    }
}

/* rf_gemm_bt_panels on B^T kept packed whole from call to call (a frozen layer's W_ih^T, rnnfast.nn.freeze):
 * panel p at packed + p K RF_NR, as rf_pack_bt2 lays every panel out. With ``pack``, panels [p0, p1) are
 * packed into place first (the first call); after, the call reads them without packing (the groups of
 * panels in the same order, each read from memory once and kept in L2 over the blocks of rows). */
static void rf_gemm_bt_kept_panels(rf_gemm_fn gemm, int M, int N, int K, const float* A, int lda, const float* Bt,
                                   int ldb, int p0, int p1, int pack, float* packed, float* C, int ldc) {
    int gp = (int)((512 * 1024) / ((size_t)K * RF_NR * sizeof(float)));
    int n0 = p0 * RF_NR, n1 = p1 * RF_NR < N ? p1 * RF_NR : N;
    if (n1 <= n0 || M <= 0) return;
    if (gp < 1) gp = 1;
    if (pack) rf_pack_bt2(K, Bt, ldb, 0, Bt, 0, N, p0, p1, packed);
    int mb = (256 * 1024 / 4) / K / 8 * 8;
    if (mb < 32) mb = 32;
    for (int q0 = p0; q0 < p1; q0 += gp) {
        int q1 = q0 + gp < p1 ? q0 + gp : p1;
        int c0 = q0 * RF_NR, c1 = q1 * RF_NR < N ? q1 * RF_NR : N;
        for (int m0 = 0; m0 < M; m0 += mb)
            gemm(M - m0 < mb ? M - m0 : mb, c1 - c0, K, A + (size_t)m0 * lda, lda, 0, A, 0,
                 packed + (size_t)q0 * K * RF_NR, 0.0f, C + (size_t)m0 * ldc + c0, ldc);
    }
}

/* C (P, Q) := L^T R + beta C for L (K, P) and R (K, Q) row-major, long K: the weight gradients over all N
 * rows, [dW_ih, dW_hh]^T = [X, H_prev]^T dG. One thread's columns [q0, q1) of C (q0 a multiple of RF_NR).
 * BLAS copied dG with a transposing pack (sgemm_otcopy: 8% of LSTM B=512 T=25 I=12 H=200 training, two
 * threads); here R's rows pack into panels as they are (plain copies) and L, the narrow operand, is
 * transposed. K goes in blocks of RF_TN_KB rows: a block of L transposed into lt (P, kb); then the
 * thread's columns in groups of about 512 KB of panels, each packed and, in blocks of rows of lt of about
 * 256 KB (both in L2), added to C by the packed product. Every output sums the blocks in order, one chain
 * over k in each (RF_GEMM_KLOOP): the same whatever the threads, which take disjoint columns.
 * `scratch`: rf_gemm_tn_scratch(P) floats. sum1, sum2 (or NULL): R's column sums added to them, columns
 * [q0, q1) (rf_pack_rows: the bias gradients in the same pass over dG). */
#define RF_TN_KB 256
#define RF_TN_GROUP_PANELS 16 /* 16 panels of RF_TN_KB rows: 512 KB */

static inline size_t rf_gemm_tn_scratch(int P) {
    return (size_t)P * RF_TN_KB + rf_packed_size(RF_TN_KB, RF_TN_GROUP_PANELS * RF_NR);
}

/* rf_pack_b of B (K, N) row-major as it is: panel rows copied 32 floats at a time, inline (memcpy's calls
 * were 11% of rf_gemm_tn_cols); with sum1 (and sum2), each column's K values added to sum1[n] (sum2[n]) in
 * row order, as rf_colsum_add does (the bias gradients, from the rows this pass reads anyway). */
static void rf_pack_rows(int K, int N, const float* B, int ldb, float* packed, float* sum1, float* sum2) {
    int np = (N + RF_NR - 1) / RF_NR;
    for (int p = 0; p < np; p++) {
        float* dst = packed + (size_t)p * K * RF_NR;
        const float* src = B + (size_t)p * RF_NR;
        int nw = N - p * RF_NR < RF_NR ? N - p * RF_NR : RF_NR;
        if (nw == RF_NR) {
            for (int k = 0; k < K; k++)
                for (int j = 0; j < RF_NR; j++) dst[(size_t)k * RF_NR + j] = src[(size_t)k * ldb + j];
        } else {
            for (int k = 0; k < K; k++)
                for (int j = 0; j < RF_NR; j++) dst[(size_t)k * RF_NR + j] = j < nw ? src[(size_t)k * ldb + j] : 0.0f;
        }
        for (int s = 0; s < 2; s++) {
            float* sum = s == 0 ? sum1 : sum2;
            if (sum == NULL) continue;
            float acc[RF_NR];
            for (int j = 0; j < nw; j++) acc[j] = sum[p * RF_NR + j];
            for (int k = 0; k < K; k++)
                for (int j = 0; j < nw; j++) acc[j] += src[(size_t)k * ldb + j];
            for (int j = 0; j < nw; j++) sum[p * RF_NR + j] = acc[j];
        }
    }
}

static void rf_gemm_tn_cols(rf_gemm_fn gemm, int P, int Q, int K, const float* L, int ldl, const float* R, int ldr,
                            int q0, int q1, float beta, float* C, int ldc, float* scratch, float* sum1, float* sum2) {
    float* lt = scratch;
    float* rp = scratch + (size_t)P * RF_TN_KB;
    int mb = (256 * 1024 / 4) / RF_TN_KB / 8 * 8;  /* rows of lt a product takes: 256 KB */
    if (q1 > Q) q1 = Q;
    if (q1 <= q0 || P <= 0) return;
    if (K == 0) {  /* (no sums: C := beta C, as BLAS) */
        for (int i = 0; i < P; i++)
            for (int j = q0; j < q1; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    for (int k0 = 0; k0 < K; k0 += RF_TN_KB) {
        int kb = K - k0 < RF_TN_KB ? K - k0 : RF_TN_KB;
        float bt = k0 == 0 ? beta : 1.0f;
        const float* lk = L + (size_t)k0 * ldl;
        for (int i0 = 0; i0 < P; i0 += 16)  /* lt (P, kb) := L[k0:k0 + kb, :]^T, 16 columns of L a pass */
            for (int k = 0; k < kb; k++) {
                int iw = P - i0 < 16 ? P - i0 : 16;
                const float* src = lk + (size_t)k * ldl + i0;
                for (int i = 0; i < iw; i++) lt[(size_t)(i0 + i) * kb + k] = src[i];
            }
        for (int c0 = q0; c0 < q1; c0 += RF_TN_GROUP_PANELS * RF_NR) {
            int c1 = c0 + RF_TN_GROUP_PANELS * RF_NR < q1 ? c0 + RF_TN_GROUP_PANELS * RF_NR : q1;
            rf_pack_rows(kb, c1 - c0, R + (size_t)k0 * ldr + c0, ldr, rp, sum1 ? sum1 + c0 : NULL,
                         sum2 ? sum2 + c0 : NULL);
            for (int m0 = 0; m0 < P; m0 += mb)
                gemm(P - m0 < mb ? P - m0 : mb, c1 - c0, kb, lt + (size_t)m0 * kb, kb, 0, lt, 0, rp, bt,
                     C + (size_t)m0 * ldc + c0, ldc);
        }
    }
}

#endif
