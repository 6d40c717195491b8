/* Batch-1 forward recurrence, float32: the latency path.
 *
 * With one sequence the per-step product h_{t-1} W_hh^T is a GEMV that streams all of W_hh from cache
 * at every step, and there are no batch rows to share out. So the threads split the hidden units
 * instead: thread k owns units [j0, j1) and the rows of W_hh of its units' gates, packed once per call
 * (by that thread, into its own cache) with rf_pack_b. Each step a thread computes its gates
 * (rf_gemv_packed), runs the fused cell pass on its units, and meets the others at a barrier, after
 * which all of h_t is there for the next step. Two threads thus read W_hh from two caches at once.
 *
 * gates (T, G*H) holds x W_ih^T on entry (the caller's big GEMM) and the post-activation gates on exit,
 * exactly as the general path leaves them; y (T, ldy), c / tc / hn (T, H) likewise.
 */
#ifndef RF_LATENCY_H
#define RF_LATENCY_H

#include <stdlib.h>
#include "rf_cells.h"
#include "rf_gemm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* Floats of ``work`` for up to nth threads: each thread's packed slice of W_hh (with panel padding)
 * and its step product. cell: 0 RNN, 1 LSTM, 2 GRU. */
static size_t rf_latency_work_size(int G, int H, int nth) {
    return 2 * rf_packed_size(H, G * H) + (size_t)nth * ((size_t)RF_NR * H + (size_t)G * H + 16);
}

static int rf_latency_forward(int cell, int relu, int T, int H, int nth, rf_gemv_fn gemv,
                              const float* w_hh, const float* b, const float* bhn,
                              const float* h0, const float* c0, float* gates, float* gh_full,
                              float* y, int ldy, float* c, float* tc, float* hn, float* work) {
    int G = cell == 1 ? 4 : (cell == 2 ? 3 : 1);
    int GH = G * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth)
#endif
    {
#ifdef _OPENMP
        int k = omp_get_thread_num();
        int nk = omp_get_num_threads();
#else
        int k = 0, nk = 1;
#endif
        /* units are shared out among the threads actually running */
        int share = (H + nk - 1) / nk;
        int j0 = k * share < H ? k * share : H;
        int j1 = j0 + share < H ? j0 + share : H;
        int n = j1 - j0;
        size_t slot = rf_packed_size(H, G * share) + (size_t)G * share + 16;
        float* packed = work + (size_t)k * slot;
        float* prod = packed + rf_packed_size(H, G * share);
        unsigned int ftz = rf_ftz_enter();
        if (n > 0) {
            /* this thread's operand: columns (g, u) -> row g*H + j0 + u of W_hh, transposed, in panels */
            int np = (G * n + RF_NR - 1) / RF_NR;
            for (int p = 0; p < np; p++) {
                float* dst = packed + (size_t)p * H * RF_NR;
                int col0 = p * RF_NR, nw = G * n - col0 < RF_NR ? G * n - col0 : RF_NR;
                for (int kk = 0; kk < H; kk++) {
                    float* d = dst + (size_t)kk * RF_NR;
                    for (int jj = 0; jj < nw; jj++) {
                        int col = col0 + jj, g = col / n, u = col % n;
                        d[jj] = w_hh[(size_t)(g * H + j0 + u) * H + kk];
                    }
                    for (int jj = nw; jj < RF_NR; jj++) d[jj] = 0.0f;
                }
            }
        }
        for (int t = 0; t < T; t++) {
            const float* hp = t == 0 ? h0 : y + (size_t)(t - 1) * ldy;
            float* gt = gates + (size_t)t * GH;
            if (n > 0) {
                gemv(G * n, H, hp, packed, prod);
                if (cell == 2) {
                    for (int g = 0; g < G; g++)
                        for (int u = 0; u < n; u++) gh_full[g * H + j0 + u] = prod[g * n + u];
                    rf_gru_fwd_f(1, n, H, gt + j0, gh_full + j0, b + j0, bhn + j0, hp + j0, H,
                                 hn ? hn + (size_t)t * H + j0 : NULL, y + (size_t)t * ldy + j0, ldy);
                } else {
                    for (int g = 0; g < G; g++)
                        for (int u = 0; u < n; u++) gt[g * H + j0 + u] += prod[g * n + u];
                    if (cell == 1)
                        rf_lstm_fwd_f(1, n, H, gt + j0, b + j0,
                                      (t == 0 ? c0 : c + (size_t)(t - 1) * H) + j0, c + (size_t)t * H + j0,
                                      tc ? tc + (size_t)t * H + j0 : NULL, y + (size_t)t * ldy + j0, ldy);
                    else
                        rf_rnn_fwd_f(1, n, H, relu, gt + j0, b + j0, y + (size_t)t * ldy + j0, ldy);
                }
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        rf_ftz_leave(ftz);
    }
    return 0;
}

#endif
