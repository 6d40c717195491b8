"""csrc/rf_gemm.h's products, every instruction-set copy the machine can run: rf_gemv_nb (a few rows of x
against weight rows read in place: the few-rows kernel's short calls), and rf_gemm_packed either way round,
compiled here from the C sources into a small program that compares each copy (AVX-512, AVX2, plain C)
with a float64 reference over row counts 1-10 (groups of 4 and the 1-3 left, of 3, of 5), weight-row
counts that end inside a block, both K segments with 16-wide chunks and tails, one segment alone, and
beta 0 and 1.
The layers' tests reach only the copy the machine selects."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include "rf_gemm.h"

static float* randf(size_t n, unsigned* s) {
    float* p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) { *s = *s * 1103515245u + 12345u; p[i] = ((*s >> 8) & 0xffff) / 32768.0f - 1.0f; }
    return p;
}

typedef void (*nb_fn)(int, int, int, const float*, int, const float*, int, int, const float*, int, const float*,
                      int, float, float*, int, int);

/* worst relative error of fn against float64 for one case; y starts as a copy of y0; rows of A1 / A2
   lda_al floats apart when lda_al > 0 (a multiple of 512: rows in the same L1 sets) */
static double check_lda(nb_fn fn, int nb, int N, int K1, int K2, float beta, unsigned seed, int lda_al) {
    unsigned s = seed;
    int lda1 = lda_al ? lda_al : K1 + 3, lda2 = lda_al ? lda_al : K2 + 5, ldx1 = K1 + 7, ldx2 = K2 + 2, ldy = N + 4;
    float *A1 = randf((size_t)N * lda1, &s), *A2 = randf((size_t)N * lda2, &s);
    float *X1 = randf((size_t)nb * ldx1, &s), *X2 = randf((size_t)nb * ldx2, &s);
    float *y = randf((size_t)nb * ldy, &s), *y0 = malloc((size_t)nb * ldy * sizeof(float));
    float *yp = malloc((size_t)nb * ldy * sizeof(float));
    for (size_t i = 0; i < (size_t)nb * ldy; i++) y0[i] = yp[i] = y[i];
    fn(nb, N, K1, K1 ? A1 : NULL, lda1, K1 ? X1 : NULL, ldx1, K2, A2, lda2, X2, ldx2, beta, y, ldy, 0);
    /* prefetching the weight rows ahead (pf) changes no bit */
    fn(nb, N, K1, K1 ? A1 : NULL, lda1, K1 ? X1 : NULL, ldx1, K2, A2, lda2, X2, ldx2, beta, yp, ldy, 1);
    double worst = memcmp(y, yp, (size_t)nb * ldy * sizeof(float)) ? 1.0 : 0.0;
    free(yp);
    for (int r = 0; r < nb; r++)
        for (int n = 0; n < ldy; n++) {
            double want;
            if (n < N) {
                double acc = beta == 0.0f ? 0.0 : (double)beta * y0[(size_t)r * ldy + n], mag = fabs(acc);
                for (int k = 0; k < K1; k++) { double t = (double)A1[(size_t)n * lda1 + k] * X1[(size_t)r * ldx1 + k]; acc += t; mag += fabs(t); }
                for (int k = 0; k < K2; k++) { double t = (double)A2[(size_t)n * lda2 + k] * X2[(size_t)r * ldx2 + k]; acc += t; mag += fabs(t); }
                double e = fabs(acc - y[(size_t)r * ldy + n]) / (mag + 1e-30);
                if (e > worst) worst = e;
            } else {
                want = y0[(size_t)r * ldy + n];  /* past N: untouched */
                if (y[(size_t)r * ldy + n] != (float)want) worst = 1.0;
            }
        }
    free(A1); free(A2); free(X1); free(X2); free(y); free(y0);
    return worst;
}

static double check(nb_fn fn, int nb, int N, int K1, int K2, float beta, unsigned seed) {
    return check_lda(fn, nb, N, K1, K2, beta, seed, 0);
}

#if RF_GEMM_VECTORS
/* rf_gemv_rows (batch 1, rows in place) as an nb_fn: one row of x at a time */
#define ROWS_AS_NB(NAME)                                                                                \
    static void NAME##_nb(int nb, int N, int K1, const float* A1, int lda1, const float* X1, int ldx1,   \
                          int K2, const float* A2, int lda2, const float* X2, int ldx2, float beta,      \
                          float* Y, int ldy, int pf) {                                                   \
        (void)pf;                                                                                        \
        for (int r = 0; r < nb; r++)                                                                     \
            NAME(N, K1, A1, lda1, X1 ? X1 + (size_t)r * ldx1 : X1, K2, A2, lda2,                        \
                 X2 ? X2 + (size_t)r * ldx2 : X2, beta, Y + (size_t)r * ldy);                           \
    }
ROWS_AS_NB(rf_gemv_rows_avx512)
ROWS_AS_NB(rf_gemv_rows_avx2)
ROWS_AS_NB(rf_gemv_rows_base)
#endif

typedef void (*gemm_fn)(int, int, int, const float*, int, int, const float*, int, const float*, float, float*, int);

/* rf_gemm_packed's copies: C (M, N) := [A1, A2] . [W1, W2]^T + beta C, panels forward (N > 0) and last first
   (N < 0, the serpentine); worst relative error against float64, and *diff set when the two orders differ
   in any bit */
static double check_gemm(gemm_fn fn, int M, int N, int K1, int K2, float beta, unsigned seed, int* diff) {
    unsigned s = seed;
    int K = K1 + K2, lda1 = K1 + 3, lda2 = K2 + 1, ldc = N + 5;
    float *W1 = randf((size_t)N * K1, &s), *W2 = randf((size_t)N * K2, &s);
    float *A1 = randf((size_t)M * lda1, &s), *A2 = randf((size_t)M * lda2, &s), *C0 = randf((size_t)M * ldc, &s);
    float *pk = malloc(rf_packed_size(K, N) * sizeof(float)), *C[2];
    rf_pack_bt2(K1, W1, K1, K2, W2, K2, N, 0, (N + RF_NR - 1) / RF_NR, pk);
    double worst = 0.0;
    for (int d = 0; d < 2; d++) {
        C[d] = malloc((size_t)M * ldc * sizeof(float));
        for (size_t i = 0; i < (size_t)M * ldc; i++) C[d][i] = C0[i];
        fn(M, d ? -N : N, K1, A1, lda1, K2, A2, lda2, pk, beta, C[d], ldc);
    }
    for (int r = 0; r < M; r++)
        for (int n = 0; n < ldc; n++) {
            size_t i = (size_t)r * ldc + n;
            if (C[0][i] != C[1][i]) *diff = 1;
            if (n >= N) { if (C[0][i] != C0[i]) worst = 1.0; continue; }
            double acc = beta == 0.0f ? 0.0 : (double)beta * C0[i], mag = fabs(acc);
            for (int k = 0; k < K1; k++) { double t = (double)A1[(size_t)r * lda1 + k] * W1[(size_t)n * K1 + k]; acc += t; mag += fabs(t); }
            for (int k = 0; k < K2; k++) { double t = (double)A2[(size_t)r * lda2 + k] * W2[(size_t)n * K2 + k]; acc += t; mag += fabs(t); }
            double e = fabs(acc - C[0][i]) / (mag + 1e-30);
            if (e > worst) worst = e;
        }
    free(W1); free(W2); free(A1); free(A2); free(C0); free(pk); free(C[0]); free(C[1]);
    return worst;
}

static void gemm_copies(void) {
#if RF_GEMM_VECTORS
    struct { const char* name; gemm_fn fn; int ok; } fns[] = {
        {"gemm_rows_avx512", rf_gemm_rows_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")},
        {"gemm_avx512", rf_gemm_packed_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")},
        {"gemm_avx2", rf_gemm_packed_avx2, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
        {"gemm_base", rf_gemm_packed_base, 1}};
#else
    struct { const char* name; gemm_fn fn; int ok; } fns[] = {{"gemm_base", rf_gemm_packed_base, 1}};
#endif
    int Ms[] = {1, 3, 4, 5, 8, 11}, Ns[] = {7, 32, 70, 160}, Ks[][2] = {{0, 9}, {5, 33}, {64, 64}};
    unsigned seed = 7;
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        if (!fns[f].ok) continue;
        double worst = 0.0;
        int cases = 0, diff = 0;
        for (size_t m = 0; m < sizeof Ms / sizeof Ms[0]; m++)
            for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++)
                for (size_t j = 0; j < sizeof Ks / sizeof Ks[0]; j++)
                    for (int b = 0; b < 2; b++) {
                        double e = check_gemm(fns[f].fn, Ms[m], Ns[i], Ks[j][0], Ks[j][1], b ? 1.0f : 0.0f, seed++, &diff);
                        if (e > worst) worst = e;
                        cases++;
                    }
        printf("%s %d %.3g %d\n", fns[f].name, cases, worst, diff);
    }
}

/* Sample-order invariance: row r of C is the same bits whichever rows share its call (a block of 8, a
   tail of 1-7, the few-rows product at 1-4), with K in one chunk or several (rf_gemm_kc 0, 64, default:
   each its own reference), and across the copies of one instruction set (the few-rows dispatch and rf_gemm_packed's AVX-512 copy).
   Prints each copy's cases and how many rows differed in any bit. */
static void row_invariance(void) {
#if RF_GEMM_VECTORS
    struct { const char* name; gemm_fn fn; int ok, isa; } fns[] = {
        {"rowinv_rows_avx512", rf_gemm_rows_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"), 0},
        {"rowinv_avx512", rf_gemm_packed_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"), 0},
        {"rowinv_avx2", rf_gemm_packed_avx2, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), 1},
        {"rowinv_base", rf_gemm_packed_base, 1, 2}};
#else
    struct { const char* name; gemm_fn fn; int ok, isa; } fns[] = {{"rowinv_base", rf_gemm_packed_base, 1, 2}};
#endif
    enum { MM = 19 };
    int Ns[] = {7, 70, 160}, Ks[][2] = {{5, 33}, {100, 300}, {0, 17}};
    float betas[] = {0.0f, 1.0f, 0.5f};
    int kcs[] = {0, 64, rf_gemm_kc}, kc0 = rf_gemm_kc;
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        if (!fns[f].ok) continue;
        int cases = 0, diffs = 0;
        unsigned seed = 11;
        for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++)
            for (size_t j = 0; j < sizeof Ks / sizeof Ks[0]; j++)
                for (size_t b = 0; b < sizeof betas / sizeof betas[0]; b++) {
                    unsigned s = seed++;
                    int N = Ns[i], K1 = Ks[j][0], K2 = Ks[j][1], K = K1 + K2, ldc = N + 3;
                    float *W1 = randf((size_t)N * K1, &s), *W2 = randf((size_t)N * K2, &s);
                    float *A1 = randf((size_t)MM * (K1 + 1), &s), *A2 = randf((size_t)MM * (K2 + 2), &s);
                    float *C0 = randf((size_t)MM * ldc, &s), *R = malloc((size_t)MM * ldc * sizeof(float));
                    float *C = malloc((size_t)MM * ldc * sizeof(float)), *pk = malloc(rf_packed_size(K, N) * sizeof(float));
                    rf_pack_bt2(K1, W1, K1, K2, W2, K2, N, 0, (N + RF_NR - 1) / RF_NR, pk);
                    for (size_t q = 0; q < sizeof kcs / sizeof kcs[0]; q++) {
                        rf_gemm_kc = kcs[q];
                        /* the reference: every copy of this instruction set against the first one's 19 rows
                           (the K chunk is part of the order: the same in every kernel, not across chunks) */
                        memcpy(R, C0, (size_t)MM * ldc * sizeof(float));
                        fns[0].fn(MM, N, K1, A1, K1 + 1, K2, A2, K2 + 2, pk, betas[b], R, ldc);
                        if (fns[0].isa != fns[f].isa) {
                            memcpy(R, C0, (size_t)MM * ldc * sizeof(float));
                            fns[f].fn(MM, N, K1, A1, K1 + 1, K2, A2, K2 + 2, pk, betas[b], R, ldc);
                        }
                        for (int M = 1; M <= MM; M++)
                            for (int off = 0; off <= MM - M; off += (MM - M > 0 ? MM - M : 1)) {
                                memcpy(C, C0, (size_t)MM * ldc * sizeof(float));
                                fns[f].fn(M, (M & 1) ? -N : N, K1, A1 + (size_t)off * (K1 + 1), K1 + 1, K2,
                                          A2 + (size_t)off * (K2 + 2), K2 + 2, pk, betas[b], C + (size_t)off * ldc, ldc);
                                for (int r = off; r < off + M; r++)
                                    diffs += memcmp(C + (size_t)r * ldc, R + (size_t)r * ldc, (size_t)N * sizeof(float)) != 0;
                                cases++;
                            }
                        rf_gemm_kc = kc0;
                    }
                    free(W1); free(W2); free(A1); free(A2); free(C0); free(R); free(C); free(pk);
                }
        printf("%s %d %d\n", fns[f].name, cases, diffs);
    }
}

int main(void) {
    gemm_copies();
    row_invariance();
#if RF_GEMM_VECTORS
    __builtin_cpu_init();
    struct { const char* name; nb_fn fn; int ok; } fns[] = {
        {"avx512", rf_gemv_nb_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")},
        {"avx2", rf_gemv_nb_avx2, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
        {"base", rf_gemv_nb_base, 1}};
#else
    struct { const char* name; nb_fn fn; int ok; } fns[] = {{"base", rf_gemv_nb_base, 1}};
#endif
    int Ns[] = {1, 5, 16, 17, 37}, Ks[][2] = {{0, 9}, {0, 48}, {7, 33}, {16, 16}, {40, 0}, {3, 100}};
    unsigned seed = 1;
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        if (!fns[f].ok) continue;
        double worst = 0.0;
        int cases = 0;
        for (int nb = 1; nb <= 10; nb++)
            for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++)
                for (size_t j = 0; j < sizeof Ks / sizeof Ks[0]; j++)
                    for (int b = 0; b < 2; b++) {
                        double e = check(fns[f].fn, nb, Ns[i], Ks[j][0], Ks[j][1], b ? 1.0f : 0.0f, seed++);
                        if (e > worst) worst = e;
                        cases++;
                    }
        printf("%s %d %.3g\n", fns[f].name, cases, worst);
    }
#if RF_GEMM_VECTORS
    /* weight rows 512 or 1024 floats apart (all of a group's rows in one L1 set), rf_gemv_nb and
       rf_gemv_rows; K ending inside a chunk, fewer than four chunks, one segment */
    struct { const char* name; nb_fn fn; int ok; } al[] = {
        {"aliased_nb_avx512", rf_gemv_nb_avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")},
        {"aliased_nb_avx2", rf_gemv_nb_avx2, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
        {"aliased_rows_avx512", rf_gemv_rows_avx512_nb, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")},
        {"aliased_rows_avx2", rf_gemv_rows_avx2_nb, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
        {"aliased_rows_base", rf_gemv_rows_base_nb, 1}};
    int aN[] = {5, 16, 37}, aK[][3] = {{512, 0, 512}, {500, 0, 512}, {0, 1024, 1024}, {100, 1000, 1024}, {40, 0, 1024},
                                       {9, 24, 1024}};
    for (size_t f = 0; f < sizeof al / sizeof al[0]; f++) {
        if (!al[f].ok) continue;
        double worst = 0.0;
        int cases = 0;
        for (int nb = 1; nb <= 5; nb++)
            for (size_t i = 0; i < sizeof aN / sizeof aN[0]; i++)
                for (size_t j = 0; j < sizeof aK / sizeof aK[0]; j++) {
                    double e = check_lda(al[f].fn, nb, aN[i], aK[j][0], aK[j][1], (nb & 1) ? 1.0f : 0.0f, seed++, aK[j][2]);
                    if (e > worst) worst = e;
                    cases++;
                }
        printf("%s %d %.3g\n", al[f].name, cases, worst);
    }
#endif
    return 0;
}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None or not os.path.isfile(os.path.join(CSRC, "rf_gemm.h")):
        pytest.skip("no C compiler, or no csrc/ beside the tests")
    d = tmp_path_factory.mktemp("gemv_nb")
    src, exe = d / "check.c", d / "check"
    src.write_text(PROGRAM)
    subprocess.run([cc, "-O2", "-std=gnu11", f"-I{CSRC}", str(src), "-o", str(exe), "-lm"], check=True,
                   capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=120).stdout
    return {w[0]: tuple(float(v) if "." in v or "e" in v else int(v) for v in w[1:])
            for w in (line.split() for line in out.splitlines())}


def test_every_copy_matches_float64(results):
    assert "base" in results
    for name, (cases, err) in ((k, v) for k, v in results.items() if not k.startswith(("gemm_", "aliased_", "rowinv_"))):
        assert cases == 10 * 5 * 6 * 2, name
        assert err < 1e-5, (name, err)  # (relative to the sum of the terms' magnitudes; past N untouched; pf on = off)


def test_rows_a_multiple_of_2kb_apart_are_exact(results):
    """Weight rows 512 or 1024 floats apart (at 1024 a group's four rows share one L1 set): rf_gemv_rows and
    rf_gemv_nb (whose one-row blocks are rf_gemv_rows's) in every copy the machine runs match float64, with
    K ending inside a chunk, fewer chunks than a row's four groups, either segment alone, beta 0 and 1."""
    aliased = {k: v for k, v in results.items() if k.startswith("aliased_")}
    if not any(k.endswith("avx512") or k.endswith("avx2") for k in aliased):
        pytest.skip("no vector copy on this machine")
    for name, (cases, err) in aliased.items():
        assert cases == 5 * 3 * 6, name
        assert err < 1e-5, (name, err)


def test_packed_gemm_copies_run_their_panels_either_way(results):
    """rf_gemm_packed (and, with AVX-512, its few-rows dispatch) with N < 0 runs the panels last first (the
    odd steps of the serpentine): bit for bit what N > 0 gives, and both match float64, at row counts
    around the few-rows and 8-row blocks, N inside a panel, at one, and across several (a partial one last)."""
    assert "gemm_base" in results
    for name, (cases, err, diff) in ((k, v) for k, v in results.items() if k.startswith("gemm_")):
        assert cases == 6 * 4 * 3 * 2, name
        assert err < 1e-5, (name, err)
        assert diff == 0, name


def test_a_rows_sums_do_not_depend_on_the_rows_beside_it(results):
    """Every product copy sums a row's products in one order (k = 0 .. K-1, one chain an output within
    each K chunk, the chunks added to beta C in turn), so a row's result is the same bits in a call of 1 to
    19 rows (blocks of 8, tails of 1-7, the few-rows product at 1-4 with AVX-512), at the front or back of
    the call, panels either way round, K in one chunk or several, beta 0, 1 and 0.5: a batch's rows
    permuted give permuted outputs, bit for bit (scikit-learn's sample-order invariance)."""
    rowinv = {k: v for k, v in results.items() if k.startswith("rowinv_")}
    assert "rowinv_base" in rowinv
    for name, (cases, diffs) in rowinv.items():
        assert cases == 3 * 3 * 3 * 3 * (1 + 2 * 18), name
        assert diffs == 0, (name, diffs)
