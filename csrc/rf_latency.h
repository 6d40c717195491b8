/* Batch-1 forward recurrence, float32: the latency path.
 *
 * With one sequence the per-step product h_{t-1} W_hh^T is a GEMV that streams all of W_hh from cache
 * at every step, and there are no batch rows to share out. So the threads split the hidden units
 * instead: thread k owns units [j0, j1) and reads, in place, the rows of W_hh (and W_ih) of its units'
 * gates. Each step a thread computes its gates (rf_gemv_rows: no packing, so a call costs nothing
 * before its first step), runs the fused cell pass on its units, and meets the others at a barrier
 * (rf_barrier_wait), after which all of h_t is there for the next step. Two threads thus read the
 * weights from two caches at once.
 *
 * gates (T, G*H) receives the post-activation gates, exactly as the general path leaves them; y (T, ldy),
 * c / tc / hn (T, H) likewise.
 */
#ifndef RF_LATENCY_H
#define RF_LATENCY_H

#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include "rf_cells.h"
#include "rf_gemm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* The per-step barrier. OpenMP's sleeps on a futex after a short spin (rnnfast keeps libgomp's spin
 * short so a competing process is not starved: see rnnfast/_kernels/__init__.py), which at a few
 * microseconds of work per step costs more than the step. This one spins with pause for up to
 * RF_SPIN_NS, then yields the core at each check, so it is fast on a quiet machine and gives way on a
 * busy one. The limit is time, not a count of pauses (a pause took 10 ns here, 140 on other chips):
 * waking the partner thread from its sleep between calls took 20-50 us at times here, and such a wait
 * must not read as a busy machine. */
#define RF_SPIN_NS 200000L  /* the default of rf_latency_forward's spin_ns */

typedef struct {
    int count;
    int gen;
} rf_barrier;

static inline void rf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline long rf_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Waits for the other threads; spins for spin_ns, then yields the core at each check. Returns 1 when
 * the wait lasted over busy_ns (the partner was not running: the machine is busy). */
static int rf_barrier_wait(rf_barrier* b, int n, long spin_ns, long busy_ns) {
    int yielding = 0;
    if (n <= 1) return 0;
    int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return 0;
    }
    long t0 = 0, t = 0;
    if (spin_ns <= 0 || busy_ns <= 0) {  /* (tests: every wait counts) */
        while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen) sched_yield();
        return 1;
    }
    for (int spins = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spins++) {
        if (yielding) {
            sched_yield();
        } else {
            rf_cpu_relax();
        }
        if ((spins & 63) == 63) {
            t = rf_now_ns();
            if (t0 == 0) t0 = t;
            if (t - t0 > spin_ns) yielding = 1;
        }
    }
    return t0 != 0 && t - t0 > busy_ns;
}

/* Returns the number of steps at which a thread waited over RF_SPIN_NS at the barrier: another
 * process holds a core, and the caller had better run its next calls on one thread for a while.
 * Within the call too: after such a wait the other threads leave and thread 0 runs the remaining steps
 * alone (a partner that is not running would otherwise cost a scheduler time slice at every step).
 * Every thread sees that switch at the same step (see the barrier's comments below).
 * x (T, ldx) given: each step also makes x_t W_ih^T, from W_ih in place (the whole step is then one
 * pass over [W_ih, W_hh], which is what a short call or a streaming step needs); x NULL: gates hold
 * x W_ih^T on entry, made by the caller's big GEMM. */
static int rf_latency_forward(int cell, int relu, int T, int F, int H, int nth, long spin_ns, rf_gemv_rows_fn gemv,
                              const float* x, int ldx, const float* w_ih, const float* w_hh,
                              const float* b, const float* bhn, const float* h0, const float* c0,
                              float* gates, float* gh_full, float* y, int ldy, float* c, float* tc,
                              float* hn) {
    int G = cell == 1 ? 4 : (cell == 2 ? 3 : 1);
    int GH = G * H;
    rf_barrier bar = {0, 0};
    int solo_at = 0;  /* > 0: thread 0 runs alone after the barrier of this step */
    int yields = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
#ifdef _OPENMP
        int k = omp_get_thread_num();
        int nk = omp_get_num_threads();
#else
        int k = 0, nk = 1;
#endif
        /* units are shared out among the threads actually running; a thread reads only the rows of
           W_ih and W_hh of its units' gates, so they stay in its own cache from step to step */
        int share = (H + nk - 1) / nk;
        int j0 = k * share < H ? k * share : H;
        int j1 = j0 + share < H ? j0 + share : H;
        int alone = nk == 1;
        unsigned int ftz = rf_ftz_enter();
        for (int t = 0; t < T; t++) {
            const float* hp = t == 0 ? h0 : y + (size_t)(t - 1) * ldy;
            const float* xt = x ? x + (size_t)t * ldx : NULL;
            float* gt = gates + (size_t)t * GH;
            int n = j1 - j0;
            if (n > 0) {
                for (int g = 0; g < G; g++) {
                    const float* wh = w_hh + (size_t)(g * H + j0) * H;
                    const float* wx = w_ih + (size_t)(g * H + j0) * F;
                    float* dst = gt + g * H + j0;
                    if (cell == 2) {
                        gemv(n, H, wh, H, hp, 0, NULL, 0, NULL, 0.0f, gh_full + g * H + j0);
                        if (xt) gemv(n, F, wx, F, xt, 0, NULL, 0, NULL, 0.0f, dst);
                    } else if (xt) {
                        gemv(n, F, wx, F, xt, H, wh, H, hp, 0.0f, dst);
                    } else {
                        gemv(n, H, wh, H, hp, 0, NULL, 0, NULL, 1.0f, dst);
                    }
                }
                if (cell == 2)
                    rf_gru_fwd_f(1, n, H, gt + j0, gh_full + j0, b + j0, bhn + j0, hp + j0, H,
                                 hn ? hn + (size_t)t * H + j0 : NULL, y + (size_t)t * ldy + j0, ldy);
                else if (cell == 1)
                    rf_lstm_fwd_f(1, n, H, gt + j0, b + j0, (t == 0 ? c0 : c + (size_t)(t - 1) * H) + j0,
                                  c + (size_t)t * H + j0, tc ? tc + (size_t)t * H + j0 : NULL,
                                  y + (size_t)t * ldy + j0, ldy);
                else
                    rf_rnn_fwd_f(1, n, H, relu, gt + j0, b + j0, y + (size_t)t * ldy + j0, ldy);
            }
            if (alone) continue;
            /* the first barrier waits for a partner that may have been asleep: after 5-100 ms of an
               idle process, its first two-thread call took 1.7-4.4 ms here instead of 0.8 (an idle
               virtual CPU is slow to wake). Only a much longer wait there means a busy core. Spinning
               that long would be wrong, though: the partner may be queued on this very core. */
            int waited = rf_barrier_wait(&bar, nk, spin_ns, t == 0 ? 50 * spin_ns : spin_ns);
            /* A request made after barrier t names step t + 1: a thread reading it right after barrier t
               may or may not see it yet, so it counts only from barrier t + 1 on, which every thread
               passes after the request was made. */
            int at = __atomic_load_n(&solo_at, __ATOMIC_ACQUIRE);
            if (at > 0 && t >= at) {
                if (k != 0) break;
                alone = 1;
                j0 = 0;
                j1 = H;
                continue;
            }
            if (waited) {
                int none = 0;
                yields++;
                __atomic_compare_exchange_n(&solo_at, &none, t + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
            }
        }
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
