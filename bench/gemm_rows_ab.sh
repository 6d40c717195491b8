#!/bin/sh
# The per-step product at 1..8 rows, one thread: csrc/ of a base revision against this checkout's, in one
# process, rounds alternating (min / median us of a product). Three columns: the base's rf_gemm_packed (what
# its row tasks ran), the base's few-rows kernel up to 4 rows as its units kernel ran it, and this checkout's
# rf_gemm_packed_select() (what every kernel runs now).
#
#   sh bench/gemm_rows_ab.sh [BASE_REV] [K N ...]     e.g. sh bench/gemm_rows_ab.sh dda3a72 144 512 512 1024
#   ROWS=20 BETA=1 sh bench/gemm_rows_ab.sh ...       rows 1..20 (default 8), C := product + C (default 0)
set -e
base=${1:-HEAD}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- 144 512 256 1024 512 1024 1152 512
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/old"
for f in $(git -C "$here" ls-tree --name-only "$base" csrc/); do git -C "$here" show "$base:$f" > "$tmp/old/$(basename "$f")"; done
cat > "$tmp/old.c" <<'C'
#include "rf_units.h"
static void both(int M, int N, int K1, const float* A1, int lda1, int K2, const float* A2, int lda2,
                 const float* p, float beta, float* C, int ldc) {
    rf_units_gemm(rf_gemm_packed_select(), M, N, K1, A1, lda1, K2, A2, lda2, p, beta, C, ldc);
}
rf_gemm_fn old_units(void) { return both; }
rf_gemm_fn old_rows(void) { return rf_gemm_packed_select(); }
C
cat > "$tmp/new.c" <<'C'
#include "rf_units.h"
rf_gemm_fn new_rows(void) { return rf_gemm_packed_select(); }
C
cat > "$tmp/main.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "rf_gemm.h"
rf_gemm_fn old_units(void), old_rows(void), new_rows(void);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return x < y ? -1 : x > y; }
int main(int argc, char** argv) {
    int K = atoi(argv[1]), N = atoi(argv[2]), reps = 100, rounds = 15, MM = getenv("ROWS") ? atoi(getenv("ROWS")) : 8;
    float beta = getenv("BETA") ? (float)atof(getenv("BETA")) : 0.0f;
    size_t ps = rf_packed_size(K, N);
    float *W = malloc((size_t)N * K * 4), *pk = malloc(ps * 4), *A = malloc((size_t)MM * K * 4), *C = malloc((size_t)MM * N * 4);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (float)(i % 7) * 0.01f;
    for (int i = 0; i < MM * K; i++) A[i] = (float)(i % 5) * 0.1f;
    rf_pack_bt2(K, W, K, 0, W, 0, N, 0, (N + RF_NR - 1) / RF_NR, pk);
    rf_gemm_fn f[3] = {old_rows(), old_units(), new_rows()};
    printf("K=%d N=%d beta=%g (%.2f MB): us a product, min / median of %d alternating rounds\n", K, N, beta, ps * 4 / 1e6, rounds);
    printf("rows   base rows task     base units         now\n");
    for (int M = 1; M <= MM; M++) {
        double t[3][15];
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < 3; v++) {
                double t0 = now();
                for (int i = 0; i < reps; i++) f[v](M, N, 0, NULL, 0, K, A, K, pk, beta, C, N);
                t[v][r] = (now() - t0) / reps * 1e6;
            }
        printf("%d", M);
        for (int v = 0; v < 3; v++) {
            qsort(t[v], rounds, sizeof(double), cmp);
            printf("   %7.2f / %7.2f", t[v][0], t[v][rounds / 2]);
        }
        printf("\n");
    }
    return 0;
}
C
gcc -O3 -fopenmp -I "$tmp/old" -c "$tmp/old.c" -o "$tmp/old.o"
gcc -O3 -fopenmp -I "$here/csrc" -c "$tmp/new.c" -o "$tmp/new.o"
gcc -O3 -fopenmp -I "$here/csrc" "$tmp/main.c" "$tmp/old.o" "$tmp/new.o" -o "$tmp/ab" -lm
while [ $# -ge 2 ]; do "$tmp/ab" "$1" "$2"; shift 2; done
