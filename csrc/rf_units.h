/* Few-rows recurrence, float32: the threads share out the hidden units, for every row at once.
 *
 * With a handful of rows (batch 2 to about 16, one direction) there are too few rows to give each
 * thread a block of its own (csrc's row tasks want 4 or more each), and a thread that takes all the
 * rows streams all of [W_ih, W_hh] from its cache at every step alone. Here, as in the batch-1 kernel
 * (rf_latency.h), thread k owns units [j0, j1) and only the weight rows of its units' gates, packed
 * once per call into panels for the small-M product (rf_gemm.h); each step a thread makes its columns
 * of the gates for all nb = bs[t] rows, runs the fused cell pass on its units, and meets the others at
 * a barrier (rf_step_barrier), after which all of h_t is there for the next step. Two threads thus read
 * half the weights each, from two caches (a share that fits L2 where the whole does not stays there).
 *
 * Rows are PyTorch's packed layout (rf_latency.h's comments, csrc's module docstring): step t holds
 * rows [0, bs[t]) at packed offset off[t], longest sequence first. Forward:
 *
 *   G_t[:, cols of unit j] = [x_t, h_{t-1}] . [W_ih, W_hh]^T[:, cols]   (x NULL: += h_{t-1} . W_hh^T,
 *                                                                        onto x W_ih^T made beforehand)
 *   then the cell's fused pass on units [j0, j1) of every row (rf_cells_impl.h).
 *
 * Backward (BPTT), from t = T - 1 down: the cell's backward pass on a thread's units makes its columns
 * of dG_t; a barrier; then dh_{t-1}[:, j0:j1] = dG_t . W_hh[:, j0:j1] from W_hh's columns packed per
 * thread (GRU: + dG_n r . W_hn, onto the dh z the pass left). One barrier a step either way. */
#ifndef RF_UNITS_H
#define RF_UNITS_H

#include "rf_latency.h"

/* A thread's share of H units on nth threads: whole 32-column panels where there are enough units. */
static inline int rf_units_share(int H, int nth) {
    int share = (H + nth - 1) / nth;
    if (nth > 1 && H >= 32 * nth) share = (share + 31) / 32 * 32;
    return share;
}

/* Floats of packed weights a forward call needs: per thread and gate, (KX + H, share) packed, KX = F
 * when the step makes x_t W_ih^T itself, else 0. */
static inline size_t rf_units_fwd_pack_size(int G, int KX, int H, int nth) {
    return (size_t)nth * G * rf_packed_size(KX + H, rf_units_share(H, nth));
}

/* Backward: per thread, W_hh's (G * H, share) columns packed. */
static inline size_t rf_units_bwd_pack_size(int G, int H, int nth) {
    return (size_t)nth * rf_packed_size(G * H, rf_units_share(H, nth));
}

/* The few-rows product, M <= RF_FEW_MR rows: C (M, N) := [A1 (M, K1), A2 (M, K2)] . packed + beta C, on
 * the panels rf_gemm_packed reads (rf_gemm.h: [panel][k][RF_NR]). With two to four rows a step is one
 * pass over a thread's share of the weights, and what limits it is how fast that pass streams, not the
 * arithmetic; rf_gemm_packed suits many rows (an 8-row block, the K loop cut in chunks that stay in L1
 * while the row blocks pass, partial sums through C between chunks). Here each panel's whole K runs in
 * registers, two k at a time into two sets of accumulators (a row's chain of dependent multiply-adds
 * otherwise waits 4 cycles per k: M * 2 chains are too few at M <= 4), and the packed stream is
 * prefetched RF_FEW_PF bytes ahead, across the panel and the gate slot that follow (a thread's slots lie
 * one after another): the hardware prefetcher stops at each 4 KB page. One thread, 2 rows, a share of
 * LSTM I=256 H=512 (4 gates x (512, 256), 2.1 MB): 36-39 us a step -> 30-31; GRU's (1.6 MB) 22 -> 17-18;
 * 3-4 rows 42-47 -> 36; 6-8 MB shares, read from L3, 1-5% (about 30 GB/s a core either way). With 8 rows
 * it lost (the accumulators no longer fit the 32 registers): more rows take rf_gemm_packed. */
#define RF_FEW_MR 4
#define RF_FEW_PF 4096

#if RF_GEMM_VECTORS
#define RF_FEW_PANEL(MR_)                                                                             \
    {                                                                                                 \
        rf_v16 c0[MR_], c1[MR_], d0[MR_], d1[MR_];                                                    \
        for (int r = 0; r < (MR_); r++) c0[r] = c1[r] = d0[r] = d1[r] = (rf_v16){0};                  \
        const float* bq = bp;                                                                         \
        for (int s = 0; s < 2; s++) {                                                                 \
            const float* A = s == 0 ? A1 : A2;                                                        \
            int lda = s == 0 ? lda1 : lda2, Ks = s == 0 ? K1 : K2, k = 0;                             \
            for (; k + 2 <= Ks; k += 2, bq += 2 * RF_NR) {                                            \
                const char* pf = (const char*)bq + RF_FEW_PF; /* (a prefetch never faults) */         \
                __builtin_prefetch(pf, 0, 3);                                                         \
                __builtin_prefetch(pf + 64, 0, 3);                                                    \
                __builtin_prefetch(pf + 128, 0, 3);                                                   \
                __builtin_prefetch(pf + 192, 0, 3);                                                   \
                rf_v16 b0, b1, e0, e1;                                                                \
                memcpy(&b0, bq, 64);                                                                  \
                memcpy(&b1, bq + 16, 64);                                                             \
                memcpy(&e0, bq + 32, 64);                                                             \
                memcpy(&e1, bq + 48, 64);                                                             \
                for (int r = 0; r < (MR_); r++) {                                                     \
                    float a = A[(size_t)r * lda + k], a2 = A[(size_t)r * lda + k + 1];                \
                    c0[r] += a * b0;                                                                  \
                    c1[r] += a * b1;                                                                  \
                    d0[r] += a2 * e0;                                                                 \
                    d1[r] += a2 * e1;                                                                 \
                }                                                                                     \
            }                                                                                         \
            for (; k < Ks; k++, bq += RF_NR) {                                                        \
                rf_v16 b0, b1;                                                                        \
                memcpy(&b0, bq, 64);                                                                  \
                memcpy(&b1, bq + 16, 64);                                                             \
                for (int r = 0; r < (MR_); r++) {                                                     \
                    float a = A[(size_t)r * lda + k];                                                 \
                    c0[r] += a * b0;                                                                  \
                    c1[r] += a * b1;                                                                  \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
        for (int r = 0; r < (MR_); r++) {                                                             \
            float out[RF_NR];                                                                         \
            rf_v16 o0 = c0[r] + d0[r], o1 = c1[r] + d1[r];                                            \
            float* c = C + (size_t)r * ldc + n0;                                                      \
            memcpy(out, &o0, 64);                                                                     \
            memcpy(out + 16, &o1, 64);                                                                \
            for (int j = 0; j < nw; j++) c[j] = (beta == 0.0f ? 0.0f : beta * c[j]) + out[j];         \
        }                                                                                             \
    }

__attribute__((target("avx512f,avx512vl,fma"))) static void rf_units_few_avx512(
        int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2, const float* packed,
        float beta, float* C, int ldc) {
    int K = K1 + K2;
    if (M <= 0) return;
    for (int n0 = 0; n0 < N; n0 += RF_NR) {
        const float* bp = packed + (size_t)(n0 / RF_NR) * K * RF_NR;
        int nw = N - n0 < RF_NR ? N - n0 : RF_NR;
        switch (M) {
        case 1: RF_FEW_PANEL(1) break;
        case 2: RF_FEW_PANEL(2) break;
        case 3: RF_FEW_PANEL(3) break;
        default: RF_FEW_PANEL(4) break;
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

/* Chosen once, when the extension loads (the kernels' threads then only read it). */
static rf_gemm_fn rf_units_few;
__attribute__((constructor)) static void rf_units_few_init(void) { rf_units_few = rf_units_few_select(); }
#else
static const rf_gemm_fn rf_units_few = NULL;
#endif

/* C (nb, n) := [A1 (nb, K1), A2 (nb, K2)] . packed + beta C, K1 = 0 meaning A2 alone: the few-rows
 * product up to RF_FEW_MR rows, else gemm (rf_gemm_packed). */
static inline void rf_units_gemm(rf_gemm_fn gemm, int nb, int n, int K1, const float* A1, int lda1, int K2,
                                 const float* A2, int lda2, const float* pk, float beta, float* C, int ldc) {
    if (nb <= RF_FEW_MR && rf_units_few) gemm = rf_units_few;
    if (K1 > 0)
        gemm(nb, n, K1, A1, lda1, K2, A2, lda2, pk, beta, C, ldc);
    else
        gemm(nb, n, K2, A2, lda2, 0, A2, 0, pk, beta, C, ldc);
}

/* Packs thread r's weight panels for the forward at pk: per gate g < GX, the (KX + H, n) columns of
 * [W_ih, W_hh]^T of its units; GRU then W_hn^T's and (KX) W_in^T's, each in a slot of size ps. */
static void rf_units_pack_fwd(int cell, int F, int KX, int H, int j0, int n, size_t ps, const float* w_ih,
                              const float* w_hh, float* pk) {
    int GX = RF_IS_GRU(cell) ? 2 : RF_GATES(cell);
    int np = (n + RF_NR - 1) / RF_NR;
    for (int g = 0; g < GX; g++)
        rf_pack_bt2(KX, w_ih + (size_t)(g * H + j0) * F, F, H, w_hh + (size_t)(g * H + j0) * H, H, n, 0, np,
                    pk + (size_t)g * ps);
    if (RF_IS_GRU(cell)) {
        rf_pack_bt2(H, w_hh + (size_t)(2 * H + j0) * H, H, 0, w_hh, 0, n, 0, np, pk + 2 * ps);
        if (KX) rf_pack_bt2(KX, w_ih + (size_t)(2 * H + j0) * F, F, 0, w_ih, 0, n, 0, np,
                            pk + 2 * ps + rf_packed_size(H, n));
    }
}

/* Reset before (cell 3), the middle of a step on units [u0, u0 + n) of nb rows, after a barrier, from
 * W_hn's packed columns pkn. Forward: a_n += s W_hn^T (s: stride lds), then n and h' into y. */
static void rf_units_grb_fwd(rf_gemm_fn gemm, int nb, int n, int u0, int H, const float* pkn, const float* s,
                             int lds, float* gt, const float* b, const float* hp, int ldh, float* y, int ldy) {
    rf_units_gemm(gemm, nb, n, 0, NULL, 0, H, s, lds, pkn, 1.0f, gt + 2 * H + u0, 3 * H);
    rf_grb_fwd_n_f(nb, n, H, gt + u0, b + u0, hp + u0, ldh, y + u0, ldy);
}

/* Backward: ds = dG_n W_hn (ds: (nb, 3H) scratch), then dG_r and dh += ds r. */
static void rf_units_grb_bwd(rf_gemm_fn gemm, int nb, int n, int u0, int H, const float* pkn, float* gt,
                             float* ds, const float* hp, int ldh, float* dh) {
    rf_units_gemm(gemm, nb, n, 0, NULL, 0, H, gt + 2 * H, 3 * H, pkn, 0.0f, ds + u0, 3 * H);
    rf_grb_bwd_r_f(nb, n, H, gt + u0, hp + u0, ldh, ds + u0, 3 * H, dh + u0);
}

/* Returns the count of long barrier waits, as rf_latency_forward (after one, thread 0 runs the rest).
 * x (rows of step t at x + t * xts, or packed at x + off[t] * ldx when xts == 0; row stride ldx) or
 * NULL: gates (N, G*H) then hold x W_ih^T at the packed rows on entry. gates: (B, G*H) scratch when
 * gscratch (inference), else (N, G*H) packed rows, left holding the post-activation gates. gh: (B, G*H)
 * GRU recurrent products. y: rows at y + t * yts, or packed (yts == 0); row stride ldy. c, tc, hn:
 * (N, H) packed (tc, hn: training only, else NULL). pack: rf_units_fwd_pack_size floats. pack_nk: NULL, pack
 * them at this call; else see rf_latency_forward (the same kept-pack protocol). */
static int rf_units_forward(int cell, int relu, int T, const int* bs, const int* off, int F, int H, int nth,
                            long spin_ns, rf_gemm_fn gemm, float* pack, int* pack_nk, const float* x, int ldx,
                            ptrdiff_t xts,
                            const float* w_ih, const float* w_hh, const float* b, const float* bhn,
                            const float* h0, const float* c0, float* gates, int gscratch, float* gh, float* y,
                            int ldy, ptrdiff_t yts, float* c, float* tc, float* hn) {
    int G = RF_GATES(cell), gru = RF_IS_GRU(cell);
    int GH = G * H;
    int KX = x ? F : 0;
    int GX = gru ? 2 : G;  /* gates made from [x_t, h_{t-1}] in one product (GRU's n apart) */
    rf_barrier bar = {0, 0};
    int solo_at = 0;
    int yields = 0;
    int kept = pack_nk ? *pack_nk : 0, ran = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at, ran) reduction(+ : yields)
#endif
    {
        RF_THREAD_IDS(k, nk);
        if (k == 0) ran = nk;
        if (kept > 0 && kept != nk) goto done;
        int share = rf_units_share(H, nk);
        size_t ps = rf_packed_size(KX + H, share);
        int j0, j1;
        rf_units(k, share, H, &j0, &j1);
        if (j1 > j0) {
            if (!kept) rf_units_pack_fwd(cell, F, KX, H, j0, j1 - j0, ps, w_ih, w_hh, pack + (size_t)k * G * ps);
            if (cell == 2)  /* r and z take their recurrent part in the gates: gh's stay zero */
                for (int r = 0; r < bs[0]; r++)
                    for (int g = 0; g < 2; g++)
                        memset(gh + (size_t)r * GH + g * H + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        }
        /* (solo mode reads the others' packs: it starts after a step's barrier, when they are done) */
        int alone = nk == 1, solo = 0;
        unsigned int ftz = rf_ftz_enter();
        for (int t = 0; t < T; t++) {
            int nb = bs[t];
            const float* hp = t == 0 ? h0 : (yts ? y + (t - 1) * yts : y + (size_t)off[t - 1] * ldy);
            int ldh = t == 0 ? H : ldy;
            const float* cp = t == 0 ? c0 : c + (size_t)off[t - 1] * H;
            const float* xt = x ? (xts ? x + t * xts : x + (size_t)off[t] * ldx) : NULL;
            float* gt = gscratch ? gates : gates + (size_t)off[t] * GH;
            float* yt = yts ? y + t * yts : y + (size_t)off[t] * ldy;
            /* reset before: s = r h_{t-1}, saved (training) or a step's scratch */
            float* sv = hn ? hn + (size_t)off[t] * H : gh;
            int lds = hn ? H : GH;
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                int n = u1 - u0;
                if (n <= 0) continue;
                const float* pk = pack + (size_t)r * G * ps;
                for (int g = 0; g < GX; g++)
                    rf_units_gemm(gemm, nb, n, KX, xt, ldx, H, hp, ldh, pk + (size_t)g * ps, xt ? 0.0f : 1.0f,
                                  gt + g * H + u0, GH);
                if (gru) {
                    if (cell == 2)
                        rf_units_gemm(gemm, nb, n, 0, NULL, 0, H, hp, ldh, pk + 2 * ps, 0.0f, gh + 2 * H + u0, GH);
                    if (xt) rf_units_gemm(gemm, nb, n, 0, NULL, 0, KX, xt, ldx, pk + 2 * ps + rf_packed_size(H, n),
                                          0.0f, gt + 2 * H + u0, GH);
                }
                if (cell == 2) {
                    rf_gru_fwd_f(nb, n, H, gt + u0, gh + u0, b + u0, bhn + u0, hp + u0, ldh,
                                 hn ? hn + (size_t)off[t] * H + u0 : NULL, yt + u0, ldy);
                } else if (cell == 3) {
                    rf_grb_fwd_rz_f(nb, n, H, gt + u0, b + u0, hp + u0, ldh, sv + u0, lds);
                } else if (cell == 1) {
                    rf_lstm_fwd_f(nb, n, H, gt + u0, b + u0, cp + u0, c + (size_t)off[t] * H + u0,
                                  tc ? tc + (size_t)off[t] * H + u0 : NULL, yt + u0, ldy);
                } else {
                    rf_rnn_fwd_f(nb, n, H, relu, gt + u0, b + u0, yt + u0, ldy);
                }
            }
            if (cell == 3) {  /* reset before: all of s after a barrier, then s W_hn^T onto a_n and n */
                if (!alone && rf_step_barrier(&bar, nk, spin_ns, 2 * t, &solo_at, k, &alone, &solo, &yields))
                    break;
                for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                    int u0, u1;
                    rf_units(r, share, H, &u0, &u1);
                    int n = u1 - u0;
                    if (n <= 0) continue;
                    rf_units_grb_fwd(gemm, nb, n, u0, H, pack + (size_t)r * G * ps + 2 * ps, sv, lds, gt, b, hp, ldh,
                                     yt, ldy);
                }
            }
            if (!alone && rf_step_barrier(&bar, nk, spin_ns, cell == 3 ? 2 * t + 1 : t, &solo_at, k, &alone, &solo,
                                          &yields))
                break;
        }
        rf_ftz_leave(ftz);
    done:;
    }
    if (kept > 0 && kept != ran) return -1;
    if (pack_nk) *pack_nk = ran;
    return yields;
}

/* Backward of one layer and direction (see the top). gates, hn: as the forward left them (training),
 * overwritten with dG and (GRU) dG_n r; y (N, ldy), c / tc (N, H): the forward's packed rows; dy (N,
 * lddy); dh, dc (B, H): on entry the gradients wrt the final states, on exit those wrt h0 and c0 (a row
 * keeps its entry value until its own last step); ds (B, 3H): reset-before scratch (dG_n W_hn, first H
 * columns). pack: rf_units_bwd_pack_size floats. Returns the count of long waits. Reset before (cell 3)
 * meets twice a step, forward and backward (see rf_cells_impl.h). */
static int rf_units_backward(int cell, int relu, int T, const int* bs, const int* off, int H, int nth,
                             long spin_ns, rf_gemm_fn gemm, float* pack, const float* w_hh, const float* h0,
                             const float* c0, float* gates, float* hn, const float* y, int ldy, const float* c,
                             const float* tc, const float* dy, int lddy, float* dh, float* dc, float* ds) {
    int G = RF_GATES(cell);
    int GH = G * H;
    rf_barrier bar = {0, 0};
    int solo_at = 0;
    int yields = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
        RF_THREAD_IDS(k, nk);
        int share = rf_units_share(H, nk);
        size_t ps = rf_packed_size(GH, share);
        int j0, j1;
        rf_units(k, share, H, &j0, &j1);
        if (j1 > j0) {
            float* pk = pack + (size_t)k * ps;
            if (RF_IS_GRU(cell)) {
                rf_pack_b(2 * H, j1 - j0, w_hh + j0, H, 0, pk);
                rf_pack_b(H, j1 - j0, w_hh + (size_t)2 * H * H + j0, H, 0, pk + rf_packed_size(2 * H, j1 - j0));
            } else {
                rf_pack_b(GH, j1 - j0, w_hh + j0, H, 0, pk);
            }
        }
        int alone = nk == 1, solo = 0;
        unsigned int ftz = rf_ftz_enter();
        for (int t = T - 1; t >= 0; t--) {
            int i = T - 1 - t, nb = bs[t];
            const float* hp = t == 0 ? h0 : y + (size_t)off[t - 1] * ldy;
            int ldh = t == 0 ? H : ldy;
            const float* cp = t == 0 ? c0 : c + (size_t)off[t - 1] * H;
            float* gt = gates + (size_t)off[t] * GH;
            float* hnt = hn ? hn + (size_t)off[t] * H : NULL;
            const float* dyt = dy + (size_t)off[t] * lddy;
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                int n = u1 - u0;
                if (n <= 0) continue;
                if (cell == 1)
                    rf_lstm_bwd_f(nb, n, H, gt + u0, cp + u0, tc + (size_t)off[t] * H + u0, dyt + u0, lddy,
                                  dh + u0, dc + u0);
                else if (cell == 2)
                    rf_gru_bwd_f(nb, n, H, gt + u0, hnt + u0, hp + u0, ldh, dyt + u0, lddy, dh + u0);
                else if (cell == 3)
                    rf_grb_bwd_nz_f(nb, n, H, gt + u0, hp + u0, ldh, dyt + u0, lddy, dh + u0);
                else
                    rf_rnn_bwd_f(nb, n, H, relu, gt + u0, dyt + u0, lddy, dh + u0);
            }
            if (!alone && rf_step_barrier(&bar, nk, spin_ns, cell == 3 ? 2 * i : i, &solo_at, k, &alone, &solo,
                                          &yields))
                break;
            if (cell == 3) {  /* reset before: ds = dG_n W_hn on a thread's columns, dG_r from it; a barrier */
                for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                    int u0, u1;
                    rf_units(r, share, H, &u0, &u1);
                    int n = u1 - u0;
                    if (n <= 0) continue;
                    rf_units_grb_bwd(gemm, nb, n, u0, H, pack + (size_t)r * ps + rf_packed_size(2 * H, n), gt, ds, hp,
                                     ldh, dh);
                }
                if (!alone && rf_step_barrier(&bar, nk, spin_ns, 2 * i + 1, &solo_at, k, &alone, &solo, &yields))
                    break;
            }
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                int n = u1 - u0;
                if (n <= 0) continue;
                const float* pk = pack + (size_t)r * ps;
                if (cell == 2) {
                    rf_units_gemm(gemm, nb, n, 0, NULL, 0, 2 * H, gt, GH, pk, 1.0f, dh + u0, H);
                    rf_units_gemm(gemm, nb, n, 0, NULL, 0, H, hnt, H, pk + rf_packed_size(2 * H, n), 1.0f,
                                  dh + u0, H);
                } else if (cell == 3) {
                    rf_units_gemm(gemm, nb, n, 0, NULL, 0, 2 * H, gt, GH, pk, 1.0f, dh + u0, H);
                } else {
                    rf_units_gemm(gemm, nb, n, 0, NULL, 0, GH, gt, GH, pk, 0.0f, dh + u0, H);
                }
            }
        }
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
