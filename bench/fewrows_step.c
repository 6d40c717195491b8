/* A step of the few-rows kernel (rf_units_forward) at 1, 2, 3 rows against the batch-1 kernel
 * (rf_latency_forward, panels) at the same I, H, T, one thread, inference, in one process, rounds
 * alternating; and the parts of a few-rows step: the products alone (what rf_units_forward runs per step),
 * so the rest (cell pass, loop) is the difference. Packs kept from call to call (pack_nk), as a layer keeps
 * them; "+pack" also times a call that packs. Prints min / median us a step.
 *
 *   gcc -O3 -fopenmp -Icsrc bench/fewrows_step.c -o /tmp/fewrows_step -lm
 *   /tmp/fewrows_step CELL I H T [STEP_PROJ [ROUNDS [NTH]]]   CELL 1 LSTM, 2 GRU; STEP_PROJ 1: x_t W_ih^T in the
 *                                     step; NTH threads for the kernels (the products alone: one thread's share)
 *   FR_ONLY=03 /tmp/fewrows_step ...: variants 0 and 3 alone (the others' packs then stay out of L2)
 *   e.g. 2 64 256 50 1 (gru-T50-I64-H256), 1 64 256 200 0 (lstm-T200-I64-H256), 2 128 384 200 0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "rf_units.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}
static float* randf(size_t n, float s) {
    float* p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = s * ((float)rand() / RAND_MAX - 0.5f);
    return p;
}

#define NV 6
int main(int argc, char** argv) {
    if (argc < 5) return fprintf(stderr, "usage: %s CELL I H T [STEP_PROJ [ROUNDS]]\n", argv[0]), 2;
    int cell = atoi(argv[1]), F = atoi(argv[2]), H = atoi(argv[3]), T = atoi(argv[4]);
    int sp = argc > 5 ? atoi(argv[5]) : 1, rounds = argc > 6 ? atoi(argv[6]) : 41, nth = argc > 7 ? atoi(argv[7]) : 1;
    int G = RF_GATES(cell), GH = G * H, B = 3, GX = RF_IS_GRU(cell) ? 2 : G;
    float *x = randf((size_t)B * T * F, 2), *wih = randf((size_t)GH * F, 0.2f), *whh = randf((size_t)GH * H, 0.2f);
    float *b = randf(2 * GH, 0.2f), *bhn = randf(H, 0.2f), *h0 = randf((size_t)B * H, 1), *c0 = randf((size_t)B * H, 1);
    float *gates = randf((size_t)B * T * GH, 0), *gh = randf((size_t)B * GH, 0), *y = randf((size_t)B * T * H, 0);
    float *c = randf((size_t)B * T * H, 0);
    float *xp = randf((size_t)B * T * GH, 1);  /* hoisted x W_ih^T (values only matter for timing) */
    int bs[4096], off[4096];
    rf_gemm_fn gemm = rf_gemm_packed_select();
    size_t psz = rf_units_fwd_pack_size(G, sp ? F : 0, H, nth);
    size_t lsz = (size_t)nth * G * rf_panels_size((H + nth - 1) / nth, F + H) + 64;
    float *pk[4], *lpk = randf(lsz, 0);
    int nk[4] = {0, 0, 0, 0}, lnk = 0;
    for (int i = 0; i < 4; i++) pk[i] = randf(psz, 0);
    const char* name[NV] = {"batch-1 kernel", "few-rows 1 row", "few-rows 2 rows", "few-rows 3 rows",
                            "products, 2 rows", "products, 3 rows"};
    double* tm = malloc(sizeof(double) * NV * rounds);
    const char* only = getenv("FR_ONLY");  /* e.g. FR_ONLY=03: those variants alone */
    for (int r = -1; r < rounds; r++)
        for (int v = 0; v < NV; v++) {
            if (only && !strchr(only, '0' + v)) continue;
            int nb = v >= 4 ? v - 2 : (v == 0 ? 1 : v);
            for (int t = 0; t < T; t++) bs[t] = nb, off[t] = t * nb;
            if (!sp) memcpy(gates, xp, (size_t)nb * T * GH * sizeof(float));
            double t0 = now();
            if (v == 0) {
                rf_latency_forward(cell, 0, T, F, H, nth, RF_SPIN_NS, rf_gemv_rows_select(), rf_gemv_panels_select(),
                                   rf_pack_panels_select(), lpk, &lnk, sp ? x : NULL, F, wih, whh, b, bhn, h0, c0,
                                   sp ? gates : gates, gh, y, H, c, NULL, NULL);
            } else if (v <= 3) {
                rf_units_forward(cell, 0, T, bs, off, F, H, nth, RF_SPIN_NS, gemm, pk[v], &nk[v], sp ? x : NULL, T * F,
                                 sp ? F : 0, wih, whh, b, bhn, h0, c0, sp ? gates : gates, sp, gh, y, T * H, H, c,
                                 NULL, NULL);
            } else {  /* the products of rf_units_forward's steps alone, on the kept pack of 3 rows */
                int KX = sp ? F : 0;
                int n = rf_units_share(H, nth);
                size_t ps = rf_packed_size(KX + H, n);
                for (int t = 0; t < T; t++) {
                    const float* hp = t == 0 ? h0 : y + (t - 1) * H;
                    int ldh = t == 0 ? H : T * H;
                    float* gt = sp ? gates : gates + (size_t)t * nb * GH;
                    for (int g = 0; g < GX; g++)
                        rf_units_gemm(gemm, nb, n, KX, x + t * F, T * F, H, hp, ldh, pk[3] + g * ps,
                                      sp ? 0.0f : 1.0f, gt + g * H, GH);
                    if (GX == 2) {
                        rf_units_gemm(gemm, nb, n, 0, NULL, 0, H, hp, ldh, pk[3] + 2 * ps, 0.0f, gh + 2 * H, GH);
                        if (sp) rf_units_gemm(gemm, nb, n, 0, NULL, 0, F, x + t * F, T * F,
                                              pk[3] + 2 * ps + rf_packed_size(H, n), 0.0f, gt + 2 * H, GH);
                    }
                }
            }
            if (r >= 0) tm[v * rounds + r] = (now() - t0) / T * 1e6;
        }
    printf("cell %d I=%d H=%d T=%d, x W_ih^T %s; %d thread(s), us a step, min / median of %d rounds\n", cell, F, H, T,
           sp ? "in the step" : "hoisted", nth, rounds);
    double b1 = 0;
    for (int v = 0; v < NV; v++) {
        if (only && !strchr(only, '0' + v)) continue;
        qsort(tm + v * rounds, rounds, sizeof(double), cmp);
        double mn = tm[v * rounds], md = tm[v * rounds + rounds / 2];
        if (v == 0) b1 = md;
        printf("  %-18s %7.2f / %7.2f   (%.2fx batch 1)\n", name[v], mn, md, md / b1);
    }
    return 0;
}
