/* The few-rows kernel's per-step product on one thread: rf_units_few against rf_gemm_packed's 8-row
 * blocks (csrc/rf_gemm.h; the kernels' rf_gemm_packed_select() takes the first up to RF_FEW_MR rows, the
 * second beyond) on one thread's share of a layer's gates, and the batch-1 kernel's
 * GEMV over the same weights (rf_gemv_panels, rf_gemv_rows) for the batch-2-3 against batch-1 target.
 * Each variant runs its repetitions in a row (the weights stay where the step would find them: in L2
 * when they fit); the minimum is printed, with the bytes a step streams and the rate.
 *
 *   gcc -O3 -fopenmp -Icsrc bench/units_kernel.c -o /tmp/units_kernel -lm
 *   /tmp/units_kernel G K N [REPS]     e.g. 4 512 256: LSTM, H=512 over two threads (K = H: the input
 *                                      product hoisted), each thread 256 units
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "rf_units.h"

static double rf_bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s G K N [REPS]\n", argv[0]);
        return 2;
    }
    int G = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]), reps = argc > 4 ? atoi(argv[4]) : 300;
    size_t ps = rf_packed_size(K, N);
    float* W = malloc((size_t)G * N * K * sizeof(float));  /* G gates' (N, K) rows, as W_hh holds them */
    float* pk = malloc(ps * G * sizeof(float));
    float* pn = malloc(rf_panels_size(G * N, K) * sizeof(float));
    float* A = malloc((size_t)8 * K * sizeof(float));
    float* C = malloc((size_t)8 * G * N * sizeof(float));
    for (size_t i = 0; i < (size_t)G * N * K; i++) W[i] = (float)(i % 7) * 0.01f;
    for (int i = 0; i < 8 * K; i++) A[i] = (float)(i % 5) * 0.1f;
    for (int g = 0; g < G; g++) rf_pack_bt2(K, W + (size_t)g * N * K, K, 0, W, 0, N, 0, (N + RF_NR - 1) / RF_NR, pk + g * ps);
    rf_pack_panels_select()(G * N, K, W, K, 0, NULL, 0, pn);
    rf_gemm_fn packed = rf_gemm_packed_select();
#if RF_GEMM_VECTORS
    if (rf_units_few) packed = rf_gemm_packed_avx512;  /* the 8-row blocks at every row count */
#endif
    rf_gemv_panels_fn panels = rf_gemv_panels_select();
    rf_gemv_rows_fn rows = rf_gemv_rows_select();
    double mb = (double)ps * G * sizeof(float) / 1e6;
    printf("G=%d K=%d N=%d: %.2f MB a step; %s\n", G, K, N, mb, rf_units_few ? "rf_units_few: AVX-512" : "no rf_units_few");
    for (int v = 0; v < 2; v++) {
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = rf_bench_now();
            if (v == 0) panels(G * N, K, A, 0, NULL, pn, 0.0f, C);
            else rows(G * N, K, W, K, A, 0, NULL, 0, NULL, 0.0f, C);
            double t = rf_bench_now() - t0;
            if (t < best) best = t;
        }
        printf("  1 row  %-15s %8.1f us  %6.1f GB/s\n", v == 0 ? "gemv_panels" : "gemv_rows", best * 1e6, mb / best / 1e3);
    }
    for (int M = 1; M <= 8; M++) {
        double best[2] = {1e9, 1e9};
        for (int v = 0; v < 2; v++) {
            rf_gemm_fn f = v == 0 ? packed : rf_units_few;
            if (!f || (v == 1 && M > RF_FEW_MR)) continue;
            for (int r = 0; r < reps; r++) {
                double t0 = rf_bench_now();
                for (int g = 0; g < G; g++) f(M, N, 0, NULL, 0, K, A, K, pk + g * ps, 0.0f, C + g * N, G * N);
                double t = rf_bench_now() - t0;
                if (t < best[v]) best[v] = t;
            }
        }
        printf("  %d rows gemm_packed %8.1f us  %6.1f GB/s", M, best[0] * 1e6, mb / best[0] / 1e3);
        if (best[1] < 1e9) printf("   units_few %8.1f us  %6.1f GB/s", best[1] * 1e6, mb / best[1] / 1e3);
        printf("\n");
    }
    free(W), free(pk), free(pn), free(A), free(C);
    return 0;
}
