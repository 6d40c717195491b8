/* What an inference call pays to pack a layer-direction's weights (as the kernels do at every call) against
 * an exact check that a kept pack is still valid (memcmp of the weights against the copy they were packed
 * from), on 1 and 2 threads. The minimum over the repetitions is printed, in microseconds.
 *
 *   gcc -O3 -fopenmp -Icsrc bench/pack_cost.c -o /tmp/pack_cost
 *   /tmp/pack_cost CELL F H [REPS [EVICT_MB]]    CELL: 0 RNN, 1 LSTM, 2 GRU; e.g. 0 128 512 (rnn-B6-T10-I128-H512,
 *                                     one direction), 2 256 256, 1 48 96. EVICT_MB > 0: before each timed
 *                                     step, write that many MB elsewhere (weights and copy leave L2, as
 *                                     between two calls of a layer: an inference call's other work)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include "rf_units.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_par(const char* a, const char* b, size_t n, int nth) {
    int diff = 0;
#pragma omp parallel num_threads(nth) reduction(| : diff)
    {
        int k = omp_get_thread_num(), nk = omp_get_num_threads();
        size_t lo = n * k / nk, hi = n * (k + 1) / nk;
        diff |= memcmp(a + lo, b + lo, hi - lo) != 0;
    }
    return diff;
}

int main(int argc, char** argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s CELL F H [REPS]\n", argv[0]); return 2; }
    int cell = atoi(argv[1]), F = atoi(argv[2]), H = atoi(argv[3]), reps = argc > 4 ? atoi(argv[4]) : 200;
    size_t evict = argc > 5 ? (size_t)atoi(argv[5]) << 20 : 0;
    char* ev = evict ? malloc(evict) : NULL;
    int G = RF_GATES(cell), GH = G * H;
    size_t nw = (size_t)GH * (F + H);
    float* w = malloc(nw * sizeof(float));
    float* wc = malloc(nw * sizeof(float));
    for (size_t i = 0; i < nw; i++) w[i] = wc[i] = (float)(i % 13) * 0.01f;
    const float* w_ih = w;
    const float* w_hh = w + (size_t)GH * F;
    size_t big = rf_packed_size(F + H, GH) + rf_units_fwd_pack_size(G, F, H, 1) + 64 * (size_t)G * (F + H);
    float* pk = malloc(big * 2 * sizeof(float));
    rf_pack_panels_fn packp = rf_pack_panels_select();
    double best[6] = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9};
    volatile int sink = 0;
    for (int r = 0; r < reps; r++) {
        for (int v = 0; v < 5; v++) {
            if (ev) memset(ev, r & 0xff, evict);
            double t0 = now();
            if (v == 0) {  /* packed kernel: [W_ih, W_hh]^T whole (pack_fused, one thread) */
                rf_pack_bt2(F, w_ih, F, H, w_hh, H, GH, 0, (GH + RF_NR - 1) / RF_NR, pk);
            } else if (v == 1) {  /* few-rows kernel: each of 2 threads packs its share (rf_units_forward) */
#pragma omp parallel num_threads(2)
                {
                    int k = omp_get_thread_num(), nk = omp_get_num_threads();
                    int share = rf_units_share(H, nk), j0, j1;
                    size_t ps = rf_packed_size(F + H, share);
                    rf_units(k, share, H, &j0, &j1);
                    if (j1 > j0)
                        rf_units_pack_fwd(cell, F, F, H, j0, j1 - j0, ps, w_ih, w_hh, pk + (size_t)k * G * ps);
                }
            } else if (v == 2) {  /* batch-1 kernel's panels on 2 threads (LSTM / RNN; rf_latency_forward) */
#pragma omp parallel num_threads(2)
                {
                    int k = omp_get_thread_num(), nk = omp_get_num_threads();
                    int share = (H + nk - 1) / nk, j0, j1;
                    rf_units(k, share, H, &j0, &j1);
                    float* p = pk + (size_t)k * G * rf_panels_size(share, F + H);
                    for (int g = 0; g < G && j1 > j0; g++) {
                        packp(j1 - j0, F, w_ih + (size_t)(g * H + j0) * F, F, H, w_hh + (size_t)(g * H + j0) * H,
                              H, p);
                        p += rf_panels_size(j1 - j0, F + H);
                    }
                }
            } else if (v == 3) {
                sink += memcmp(w, wc, nw * sizeof(float)) != 0;
            } else {
                sink += cmp_par((const char*)w, (const char*)wc, nw * sizeof(float), 2);
            }
            double d = now() - t0;
            if (d < best[v]) best[v] = d;
        }
    }
    printf("cell %d F %d H %d: weights %.0f KB | pack: packed(1 thr) %.1f us, units(2 thr) %.1f us, "
           "latency panels(2 thr) %.1f us | memcmp: 1 thr %.1f us, 2 thr %.1f us\n",
           cell, F, H, nw * 4 / 1024.0, best[0] * 1e6, best[1] * 1e6, best[2] * 1e6, best[3] * 1e6, best[4] * 1e6);
    return sink < 0;
}
