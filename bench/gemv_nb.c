/* rf_gemv_nb (a few rows of x against weight rows read in place, csrc/rf_gemm.h) with and without pf (the
 * next block's weight rows prefetched into L2), against packing the weights and rf_gemm_bt_panels: the
 * measurements behind session 24's pinned registers and prefetch (bench/README.md). One thread; per
 * variant the minimum over the repetitions, in ms and GFLOP/s. "cold" first walks a 64 MB buffer
 * (read-modify-write: a memset's non-temporal stores would leave the weights in L3) so the weights come
 * from memory; else they come from wherever they fit (16 MB: L3).
 *
 *   gcc -O3 -march=native -Icsrc bench/gemv_nb.c -o /tmp/gemv_nb
 *   /tmp/gemv_nb M N K [REPS] [cold]     e.g. 3 4096 1024 (three rows, W (4096, 1024): 16 MB)
 *
 * The machine is shared: run each case a few times and keep the smallest.
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

static void walk(char* buf, size_t n, int r) {
    for (size_t z = 0; z < n; z += 64) buf[z] += (char)r;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s M N K [REPS] [cold]\n", argv[0]);
        return 2;
    }
    int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]), reps = argc > 4 ? atoi(argv[4]) : 30;
    int cold = argc > 5 && strcmp(argv[5], "cold") == 0;
    size_t flush = (size_t)64 << 20;
    char* fl = calloc(flush, 1);
    float* X = aligned_alloc(64, sizeof(float) * (size_t)M * K + 64);
    float* Y = aligned_alloc(64, sizeof(float) * (size_t)M * N + 64);
    float* W = aligned_alloc(64, sizeof(float) * (size_t)N * K + 64);
    float* pk = aligned_alloc(64, sizeof(float) * rf_packed_size(K, N) + 64);
    for (size_t i = 0; i < (size_t)M * K; i++) X[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (float)(i % 11) * 0.01f;
    rf_gemv_nb_fn nb = rf_gemv_nb_select();
    rf_gemm_fn gemm = rf_gemm_packed_select();
    double best[3] = {1e9, 1e9, 1e9};
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < 3; v++) {
            if (cold) walk(fl, flush, r);
            double t0 = now();
            if (v < 2)
                nb(M, N, K, W, K, X, K, 0, NULL, 0, NULL, 0, 0.0f, Y, N, v);
            else
                rf_gemm_bt_panels(gemm, M, N, K, X, K, W, K, 0, (N + RF_NR - 1) / RF_NR, pk, Y, N);
            double t = now() - t0;
            if (t < best[v]) best[v] = t;
        }
    const char* names[3] = {"in place", "in place, pf", "pack + gemm"};
    printf("M=%d N=%d K=%d (%s, %.1f MB):", M, N, K, cold ? "from memory" : "warm", 4.0 * N * K / (1 << 20));
    for (int v = 0; v < 3; v++)
        printf("  %s %.4f ms (%.1f GFLOP/s)", names[v], best[v] * 1e3, 2.0 * M * N * K / best[v] / 1e9);
    printf("\n");
    return 0;
}
