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
 * A short call, whose pack would cost more than its steps gain from panels, reads the weight rows in
 * place instead (pack NULL: rf_gemv_nb, as the batch-1 kernel's short calls do).
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

/* The few-rows product rf_units_few (<= RF_FEW_MR rows) lives in rf_gemm.h, beside rf_gemm_packed. */


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

/* C (nb, n) := [A1 (nb, K1), A2 (nb, K2)] . W^T + beta C, W = [W1 (n, K1), W2 (n, K2)]: from its panels pk
 * (rf_units_gemm), or with pk NULL from W1's and W2's rows read in place (strides ldw1 / ldw2; rf_gemv_nb,
 * prefetching the rows ahead when pf). */
static inline void rf_units_prod(rf_gemm_fn gemm, int nb, int n, int K1, const float* A1, int lda1, int K2,
                                 const float* A2, int lda2, const float* pk, const float* W1, int ldw1,
                                 const float* W2, int ldw2, float beta, float* C, int ldc, int pf) {
    if (pk)
        rf_units_gemm(gemm, nb, n, K1, A1, lda1, K2, A2, lda2, pk, beta, C, ldc);
    else if (K1 > 0)
        rf_gemv_nb(nb, n, K1, W1, ldw1, A1, lda1, K2, W2, ldw2, A2, lda2, beta, C, ldc, pf);
    else
        rf_gemv_nb(nb, n, K2, W2, ldw2, A2, lda2, 0, NULL, 0, NULL, 0, beta, C, ldc, pf);
}

/* rf_units_prod in chunks of RF_SERP_CHUNK units (two panels), the last chunk first when rev: odd steps'
 * serpentine pass (rf_gemm.h). */
static inline void rf_units_prod_dir(int rev, rf_gemm_fn gemm, int nb, int n, int K1, const float* A1, int lda1,
                                     int K2, const float* A2, int lda2, const float* pk, const float* W1, int ldw1,
                                     const float* W2, int ldw2, float beta, float* C, int ldc, int pf) {
    RF_SERP_CHUNKS(rev, n, c0, m)
        rf_units_prod(gemm, nb, m, K1, A1, lda1, K2, A2, lda2, pk ? pk + (size_t)c0 * (K1 + K2) : NULL,
                      W1 ? W1 + (size_t)c0 * ldw1 : NULL, ldw1, W2 ? W2 + (size_t)c0 * ldw2 : NULL, ldw2, beta,
                      C + c0, ldc, pf);
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
 * W_hn's packed columns pkn (NULL: its rows in w_hh, in place). Forward: a_n += s W_hn^T (s: stride lds), then n and h' into y. */
static void rf_units_grb_fwd(rf_gemm_fn gemm, int nb, int n, int u0, int H, const float* pkn, const float* w_hh,
                             const float* s, int lds, float* gt, const float* b, const float* hp, int ldh, float* y,
                             int ldy, int pf) {
    rf_units_prod(gemm, nb, n, 0, NULL, 0, H, s, lds, pkn, NULL, 0, w_hh + (size_t)(2 * H + u0) * H, H, 1.0f,
                  gt + 2 * H + u0, 3 * H, pf);
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
 * (N, H) packed (tc, hn: training only, else NULL). pack: rf_units_fwd_pack_size floats, or NULL: the weight
 * rows read in place. pack_nk: NULL, pack them at this call; else see rf_latency_forward (the same kept-pack
 * protocol). */
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
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0;
    int yields = 0;
    int kept = pack_nk ? *pack_nk : 0, ran = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at, ran) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
        if (k == 0) ran = nk;
        if (kept > 0 && kept != nk) goto done;
        int share = rf_units_share(H, nk);
        size_t ps = rf_packed_size(KX + H, share);
        int j0, j1;
        rf_units(k, share, H, &j0, &j1);
        if (j1 > j0) {
            if (!kept && pack) rf_units_pack_fwd(cell, F, KX, H, j0, j1 - j0, ps, w_ih, w_hh, pack + (size_t)k * G * ps);
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
                const float* pk = pack ? pack + (size_t)r * G * ps : NULL;
                /* the step's products: the GX gates from [x_t, h_{t-1}], then GRU's W_hn h (reset after) and
                   W_in x; odd steps run them last first (rf_units_prod_dir) */
                int np = GX + (cell == 2) + (gru && xt), rev = (t & 1) && 4.0 * G * n * (KX + H) > rf_serp_min_bytes;
                int pf = rf_nb_pf(4.0 * G * n * (KX + H));  /* (rows in place: prefetched beyond L2) */
                for (int q = 0; q < np; q++) {
                    int g = rev ? np - 1 - q : q;
                    if (g < GX)
                        rf_units_prod_dir(rev, gemm, nb, n, KX, xt, ldx, H, hp, ldh, pk ? pk + (size_t)g * ps : NULL,
                                          w_ih + (size_t)(g * H + u0) * F, F, w_hh + (size_t)(g * H + u0) * H, H,
                                          xt ? 0.0f : 1.0f, gt + g * H + u0, GH, pf);
                    else if (g == GX && cell == 2)
                        rf_units_prod_dir(rev, gemm, nb, n, 0, NULL, 0, H, hp, ldh, pk ? pk + 2 * ps : NULL, NULL, 0,
                                          w_hh + (size_t)(2 * H + u0) * H, H, 0.0f, gh + 2 * H + u0, GH, pf);
                    else
                        rf_units_prod_dir(rev, gemm, nb, n, 0, NULL, 0, KX, xt, ldx,
                                          pk ? pk + 2 * ps + rf_packed_size(H, n) : NULL, NULL, 0,
                                          w_ih + (size_t)(2 * H + u0) * F, F, 0.0f, gt + 2 * H + u0, GH, pf);
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
                    rf_units_grb_fwd(gemm, nb, n, u0, H, pack ? pack + (size_t)r * G * ps + 2 * ps : NULL, w_hh, sv,
                                     lds, gt, b, hp, ldh, yt, ldy, rf_nb_pf(4.0 * G * n * (KX + H)));
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
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0;
    int yields = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
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
                int rev = (i & 1) && 4.0 * GH * n > rf_serp_min_bytes;  /* (the serpentine, rf_gemm.h) */
                if (cell == 2) {  /* (in this order: both add onto dh) */
                    rf_units_prod_dir(rev, gemm, nb, n, 0, NULL, 0, 2 * H, gt, GH, pk, NULL, 0, NULL, 0, 1.0f,
                                      dh + u0, H, 0);
                    rf_units_prod_dir(rev, gemm, nb, n, 0, NULL, 0, H, hnt, H, pk + rf_packed_size(2 * H, n), NULL,
                                      0, NULL, 0, 1.0f, dh + u0, H, 0);
                } else {
                    rf_units_prod_dir(rev, gemm, nb, n, 0, NULL, 0, cell == 3 ? 2 * H : GH, gt, GH, pk, NULL, 0,
                                      NULL, 0, cell == 3 ? 1.0f : 0.0f, dh + u0, H, 0);
                }
            }
        }
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
