/* rf_gemv_rows (batch 1, weight rows read in place, csrc/rf_gemm.h: sixteen rows a block in four groups of
 * four consecutive rows) against the same product with all sixteen row streams at once (its layout before
 * session 25), on one thread: the minimum over the repetitions in GB/s of weights read. The weights stay
 * where they fit (L2 up to 1 MB, L3 beyond, the memory past what this machine's neighbours leave of L3).
 *
 *   gcc -O3 -march=native -Icsrc bench/gemv_rows.c -o /tmp/gemv_rows
 *   /tmp/gemv_rows N K [REPS]        e.g. 2048 512 (an LSTM's W_hh at H = 512: 4 MB)
 *
 * The machine is shared: run each case a few times and keep the largest figures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "rf_gemm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#if RF_GEMM_VECTORS
/* y (N) := A (N, K) . x, sixteen rows at once, one accumulator each (N a multiple of 16, K of 16). */
__attribute__((target("avx512f,avx512vl,fma"))) static void sixteen_streams(int N, int K, const float* A,
                                                                           const float* x, float* y) {
    for (int n0 = 0; n0 < N; n0 += 16) {
        rf_v16 acc[16];
        for (int i = 0; i < 16; i++) acc[i] = (rf_v16){0};
        for (int k = 0; k < K; k += 16) {
            rf_v16 xv;
            memcpy(&xv, x + k, 64);
            for (int i = 0; i < 16; i++) {
                rf_v16 t;
                memcpy(&t, A + (size_t)(n0 + i) * K + k, 64);
                acc[i] += t * xv;
            }
        }
        for (int i = 0; i < 16; i++) {
            float s[16];
            memcpy(s, &acc[i], 64);
            float v = 0.0f;
            for (int L = 0; L < 16; L++) v += s[L];
            y[n0 + i] = v;
        }
    }
}
#endif

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s N K [REPS]\n", argv[0]);
        return 2;
    }
    int N = atoi(argv[1]) / 16 * 16, K = atoi(argv[2]) / 16 * 16, reps = argc > 3 ? atoi(argv[3]) : 200;
    float* A = aligned_alloc(64, sizeof(float) * (size_t)N * K + 64);
    float* x = aligned_alloc(64, sizeof(float) * (size_t)K + 64);
    float* y = aligned_alloc(64, sizeof(float) * (size_t)N + 64);
    for (size_t i = 0; i < (size_t)N * K; i++) A[i] = (float)(i % 11) * 0.01f;
    for (int i = 0; i < K; i++) x[i] = (float)(i % 7) * 0.1f;
    rf_gemv_rows_fn rows = rf_gemv_rows_select();
    double best[2] = {1e9, 1e9};
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < 2; v++) {
            double t0 = now();
            if (v == 0)
                rows(N, K, A, K, x, 0, NULL, 0, NULL, 0.0f, y);
#if RF_GEMM_VECTORS
            else
                sixteen_streams(N, K, A, x, y);
#endif
            double t = now() - t0;
            if (t < best[v]) best[v] = t;
        }
    double mb = 4.0 * N * K;
    printf("N=%d K=%d (%.1f MB): rf_gemv_rows %.1f GB/s, sixteen streams %.1f GB/s\n", N, K, mb / 1e6,
           mb / best[0] / 1e9, mb / best[1] / 1e9);
    return 0;
}
