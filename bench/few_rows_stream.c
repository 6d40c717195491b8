/* The few-rows product's stream with and without its software prefetching (csrc/rf_gemm.h, rf_few_prefetch),
 * against a plain sequential read of the same bytes: the measurement behind switching the prefetch off on AMD
 * processors (bench/README.md, "Session 22"). One thread; the minimum over the repetitions, in microseconds.
 *
 *   gcc -O3 -march=x86-64 -Icsrc bench/few_rows_stream.c -o /tmp/few_rows_stream
 *   /tmp/few_rows_stream M N K [REPS]     e.g. 2 2048 512 (two rows of an LSTM H=512 share: 4 MB packed)
 *
 * Run two copies at once (taskset -c 0 / -c 1) for the two-thread case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "rf_gemm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Sum of n floats read in order (the rate a sequential stream of the packed bytes gets). */
static float read_all(const float* p, size_t n) {
    float s[16] = {0};
    for (size_t i = 0; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) s[j] += p[i + j];
    float t = 0;
    for (int j = 0; j < 16; j++) t += s[j];
    return t;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s M N K [REPS]\n", argv[0]);
        return 2;
    }
    int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]), reps = argc > 4 ? atoi(argv[4]) : 200;
    if (M < 1 || M > RF_FEW_MR || N < 1 || K < 1) {
        fprintf(stderr, "M must be 1..%d, N and K positive\n", RF_FEW_MR);
        return 2;
    }
    size_t ps = rf_packed_size(K, N);
    float* A = aligned_alloc(64, sizeof(float) * ((size_t)M * K + 16));
    float* C = aligned_alloc(64, sizeof(float) * ((size_t)M * N + 16));
    float* Bt = aligned_alloc(64, sizeof(float) * ((size_t)N * K + 16));
    float* pk = aligned_alloc(64, sizeof(float) * (ps + 16));
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) Bt[i] = (float)(i % 11) * 0.01f;
    rf_pack_b(K, N, Bt, K, 1, pk);
    rf_gemm_fn gemm = rf_gemm_packed_select();  /* M <= RF_FEW_MR: the few-rows product where AVX-512 is */
    double best[3] = {1e9, 1e9, 1e9};
    volatile float sink = 0;
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < 3; v++) {
            double t0 = now();
            if (v == 2) {
                sink += read_all(pk, ps);
            } else {
                rf_few_prefetch = v;
                gemm(M, N, K, A, K, 0, A, 0, pk, 0.0f, C, N);
            }
            double t = now() - t0;
            if (t < best[v]) best[v] = t;
        }
    double mb = 4.0 * ps / 1e6;
    printf("M=%d N=%d K=%d (%.1f MB packed): prefetch off %.1f us (%.0f GB/s), on %.1f us (%.0f GB/s), "
           "sequential read %.1f us (%.0f GB/s)\n", M, N, K, mb, best[0] * 1e6, mb / best[0] / 1e3,
           best[1] * 1e6, mb / best[1] / 1e3, best[2] * 1e6, mb / best[2] / 1e3);
    (void)sink;
    return 0;
}
