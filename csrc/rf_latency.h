/* Batch-1 forward recurrence, float32: the latency path.
 *
 * With one sequence the per-step product h_{t-1} W_hh^T is a GEMV that streams all of W_hh from cache
 * at every step, and there are no batch rows to share out. So the threads split the hidden units
 * instead: thread k owns units [j0, j1) and the rows of W_hh of its units' gates, packed once per call
 * (by that thread, into its own cache) with rf_pack_b. Each step a thread computes its gates
 * (rf_gemv_packed), runs the fused cell pass on its units, and meets the others at a barrier
 * (rf_barrier_wait), after which all of h_t is there for the next step. Two threads thus read W_hh from two caches at once.
 *
 * gates (T, G*H) holds x W_ih^T on entry (the caller's big GEMM) and the post-activation gates on exit,
 * exactly as the general path leaves them; y (T, ldy), c / tc / hn (T, H) likewise.
 */
#ifndef RF_LATENCY_H
#define RF_LATENCY_H

#include <sched.h>
#include <stdlib.h>
#include "rf_cells.h"
#include "rf_gemm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* The per-step barrier. OpenMP's sleeps on a futex after a short spin (rnnfast keeps libgomp's spin
 * short so a competing process is not starved: see rnnfast/_kernels/__init__.py), which at a few
 * microseconds of work per step costs more than the step. This one spins with pause for about 100 us,
 * then yields the core at each check, so it is fast on a quiet machine and gives way on a busy one. */
typedef struct {
    int count;
    int gen;
} rf_barrier;

static inline void rf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Returns 1 when it had to yield the core (the partner was not running: the machine is busy). */
static int rf_barrier_wait(rf_barrier* b, int n) {
    int yielded = 0;
    if (n <= 1) return 0;
    int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return 0;
    }
    for (int spins = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spins++) {
        if (spins < 2000) {
            rf_cpu_relax();
        } else {
            yielded = 1;
            sched_yield();
        }
    }
    return yielded;
}

/* Floats of ``work`` for up to nth threads: each thread's packed slice of W_hh (with panel padding)
 * and its step product. cell: 0 RNN, 1 LSTM, 2 GRU. */
static size_t rf_latency_work_size(int G, int H, int nth) {
    /* per thread: G gate blocks of n <= H/nth + 1 units, each padded to whole panels (+31 columns) */
    return ((size_t)G * H + (size_t)nth * G * (RF_NR + 1)) * (size_t)(H + 1) + (size_t)nth * 16;
}

/* Returns the number of steps at which a thread had to yield at the barrier: many mean another
 * process holds a core, and the caller had better run the next calls on one thread. */
static int rf_latency_forward(int cell, int relu, int T, int H, int nth, rf_gemv_fn gemv,
                              const float* w_hh, const float* b, const float* bhn,
                              const float* h0, const float* c0, float* gates, float* gh_full,
                              float* y, int ldy, float* c, float* tc, float* hn, float* work) {
    int G = cell == 1 ? 4 : (cell == 2 ? 3 : 1);
    int GH = G * H;
    rf_barrier bar = {0, 0};
    int yields = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar) reduction(+ : yields)
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
        /* this thread's operand: for each gate g, rows g*H + j0 .. + n of W_hh (contiguous), transposed
           into panels of their own, so gate g's products land at prod[g*npad + u] */
        int npad = (n + RF_NR - 1) / RF_NR * RF_NR;
        size_t gate_floats = (size_t)npad * H;
        size_t slot_max = (size_t)G * ((share + RF_NR - 1) / RF_NR * RF_NR) * (H + 1) + 16;
        float* packed = work + (size_t)k * slot_max;
        float* prod = packed + (size_t)G * gate_floats;
        unsigned int ftz = rf_ftz_enter();
        if (n > 0)
            for (int g = 0; g < G; g++)
                rf_pack_b(H, n, w_hh + (size_t)(g * H + j0) * H, H, 1, packed + (size_t)g * gate_floats);
        for (int t = 0; t < T; t++) {
            const float* hp = t == 0 ? h0 : y + (size_t)(t - 1) * ldy;
            float* gt = gates + (size_t)t * GH;
            if (n > 0) {
                gemv(G * npad, H, hp, packed, prod);
                if (cell == 2) {
                    for (int g = 0; g < G; g++)
                        for (int u = 0; u < n; u++) gh_full[g * H + j0 + u] = prod[g * npad + u];
                    rf_gru_fwd_f(1, n, H, gt + j0, gh_full + j0, b + j0, bhn + j0, hp + j0, H,
                                 hn ? hn + (size_t)t * H + j0 : NULL, y + (size_t)t * ldy + j0, ldy);
                } else {
                    for (int g = 0; g < G; g++)
                        for (int u = 0; u < n; u++) gt[g * H + j0 + u] += prod[g * npad + u];
                    if (cell == 1)
                        rf_lstm_fwd_f(1, n, H, gt + j0, b + j0,
                                      (t == 0 ? c0 : c + (size_t)(t - 1) * H) + j0, c + (size_t)t * H + j0,
                                      tc ? tc + (size_t)t * H + j0 : NULL, y + (size_t)t * ldy + j0, ldy);
                    else
                        rf_rnn_fwd_f(1, n, H, relu, gt + j0, b + j0, y + (size_t)t * ldy + j0, ldy);
                }
            }
            yields += rf_barrier_wait(&bar, nk);
        }
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
