/* Batch-1 forward recurrence, float32: the latency path.
 *
 * With one sequence the per-step product h_{t-1} W_hh^T is a GEMV that streams all of W_hh from cache
 * at every step, and there are no batch rows to share out. So the threads split the hidden units
 * instead: thread k owns units [j0, j1) and reads only the rows of W_hh (and W_ih) of its units'
 * gates. Each step a thread computes its gates, runs the fused cell pass on its units, and meets the
 * others at a barrier (rf_barrier_wait), after which all of h_t is there for the next step. Two threads
 * thus read the weights from two caches at once. A short call reads the rows in place (rf_gemv_rows:
 * nothing to do before the first step); a long one first has each thread pack its rows into panels
 * (rf_pack_panels), which its cache then streams about 20% faster (rf_gemv_panels).
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

/* This thread's number and the count of threads running the parallel region. */
#ifdef _OPENMP
#define RF_THREAD_IDS(K_, NK_) int K_ = omp_get_thread_num(), NK_ = omp_get_num_threads()
#else
#define RF_THREAD_IDS(K_, NK_) int K_ = 0, NK_ = 1
#endif

/* The per-step barrier. OpenMP's sleeps on a futex after a short spin (rnnfast keeps libgomp's spin
 * short so a competing process is not starved: see rnnfast/_kernels/__init__.py), which at a few
 * microseconds of work per step costs more than the step. This one spins with pause for up to
 * RF_SPIN_NS, then yields the core at each check, so it is fast on a quiet machine and gives way on a
 * busy one. The limit is time, not a count of pauses (a pause took 10 ns here, 140 on other chips):
 * waking the partner thread from its sleep between calls took 20-50 us at times here, and such a wait
 * must not read as a busy machine. */
#define RF_SPIN_NS 200000L  /* the default of rf_latency_forward's spin_ns */
#define RF_SOLO_WAITS 2     /* long waits of a thread, past the first barrier, that end two-thread work */

#define RF_TEAM_MAX 64  /* threads whose CPUs the first barrier compares (rf_leave_shared_cpu) */

typedef struct {
    int count;
    int gen;
    int cpu[RF_TEAM_MAX];  /* 1 + the CPU each thread ran step 0 on (0: unknown) */
} rf_barrier;

/* 1 + the CPU the calling thread runs on, or 0 where that cannot be known. */
static inline int rf_cpu_now(void) {
#if defined(__linux__) && defined(_GNU_SOURCE)
    int c = sched_getcpu();
    return c < 0 ? 0 : c + 1;
#else
    return 0;
#endif
}

/* A barrier for a team that thread 0, the caller, is about to start: it notes the caller's CPU. */
static inline rf_barrier rf_barrier_new(void) {
    rf_barrier b;
    memset(&b, 0, sizeof b);
    b.cpu[0] = rf_cpu_now();
    return b;
}

static void rf_leave_shared_cpu(const rf_barrier* bar, int k, int nk);

/* The start of a team's parallel region: each thread's number, and a pool thread woken onto the caller's
 * CPU moves off it before its first step (rf_leave_shared_cpu). */
#define RF_TEAM_IDS(K_, NK_, BAR_) \
    RF_THREAD_IDS(K_, NK_);       \
    rf_team_start(&(BAR_), K_, NK_)

static inline void rf_team_start(rf_barrier* bar, int k, int nk) {
    if (k <= 0 || k >= RF_TEAM_MAX) return;
    int c = rf_cpu_now();
    __atomic_store_n(&bar->cpu[k], c, __ATOMIC_RELAXED);
    if (c > 0 && c == bar->cpu[0]) rf_leave_shared_cpu(bar, k, nk);
}

/* Moves the calling thread to a CPU of its own affinity mask outside used[0, n) (1 + CPU numbers; 0:
 * unknown), then gives it its mask back; nothing when there is none (a mask of one CPU, OMP_PROC_BIND). */
static void rf_move_off(const int* used, int n) {
#if defined(__linux__) && defined(_GNU_SOURCE)
    cpu_set_t own, to;
    if (sched_getaffinity(0, sizeof own, &own) != 0) return;
    CPU_ZERO(&to);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        int taken = 0;
        for (int j = 0; j < n; j++) taken |= used[j] == c + 1;
        if (CPU_ISSET(c, &own) && !taken) CPU_SET(c, &to);
    }
    if (CPU_COUNT(&to) > 0 && sched_setaffinity(0, sizeof to, &to) == 0) sched_setaffinity(0, sizeof own, &own);
#else
    (void)used, (void)n;
#endif
}

/* After the first barrier too: a pool thread (k > 0) that ran step 0 on the CPU of a lower-numbered thread of
 * its team moves to a CPU of its own affinity mask that no team thread ran on, then gets its mask back.
 * Why: a pool thread that slept between calls is often woken onto its waker's CPU (the scheduler's wake
 * affinity), and there the two threads take turns at every step's barrier while the other CPU idles: a
 * GRU B=4 T=50 H=256 call took 2.6 ms like that against 0.85 apart, for whole runs of calls, on a quiet machine.
 * Two system calls, made only when the CPU is shared. */
static void rf_leave_shared_cpu(const rf_barrier* bar, int k, int nk) {
    int n = nk < RF_TEAM_MAX ? nk : RF_TEAM_MAX, shared = 0, used[RF_TEAM_MAX];
    if (k >= n) return;
    for (int j = 0; j < n; j++) used[j] = __atomic_load_n(&bar->cpu[j], __ATOMIC_RELAXED);
    for (int j = 0; j < k; j++) shared |= used[k] > 0 && used[j] == used[k];
    if (shared) rf_move_off(used, n);
}

/* The same for a pool thread of a team of independent tasks (the packed kernel's row blocks and
 * directions): off the caller's CPU (``caller``: rf_cpu_now() before the parallel region). Two tasks on one
 * CPU take turns for the whole recurrence while the other CPU idles. */
static inline void rf_leave_cpu(int caller) {
#ifdef _OPENMP
    if (caller > 0 && omp_get_thread_num() > 0 && rf_cpu_now() == caller) rf_move_off(&caller, 1);
#else
    (void)caller;
#endif
}

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

/* The barrier that ends step i (i = 0, 1, ... in the order the steps run) of a batch-1 kernel, and the
 * switch to one thread. Returns 1 when the calling thread must leave the loop (thread 0 then goes on
 * alone: *alone and *solo set, it runs every thread's units from here on).
 * A later wait over spin_ns ends it only when it is this thread's second in the call (RF_SOLO_WAITS).
 * The first barrier waits for a partner that may have been asleep: after 5-100 ms of an idle process,
 * its first two-thread call took 1.7-4.4 ms here instead of 0.8 (an idle virtual CPU is slow to wake).
 * Only a much longer wait there means a busy core. Spinning that long would be wrong, though: the
 * partner may be queued on this very core.
 * A request to go solo made after barrier i names barrier i + 1: a thread reading it right after
 * barrier i may or may not see it yet, so it counts only from barrier i + 1 on, which every thread
 * passes after the request was made. */
static int rf_step_barrier(rf_barrier* bar, int nk, long spin_ns, int i, int* solo_at, int k, int* alone,
                           int* solo, int* yields) {
    if (i == 0 && k < RF_TEAM_MAX) __atomic_store_n(&bar->cpu[k], rf_cpu_now(), __ATOMIC_RELAXED);
    int waited = rf_barrier_wait(bar, nk, spin_ns, i == 0 ? 50 * spin_ns : spin_ns);
    if (i == 0 && k > 0) rf_leave_shared_cpu(bar, k, nk);
    int at = __atomic_load_n(solo_at, __ATOMIC_ACQUIRE);
    if (at > 0 && i >= at) {
        if (k != 0) return 1;
        *alone = 1;
        *solo = 1;
        return 0;
    }
    if (waited) {
        int none = 0;
        (*yields)++;
        /* Thread 0 alone runs at half of two threads' speed or less (it reads the partner's panels
           from the other core's cache), so one stolen time slice of the partner (a few ms) costs less
           waited out than the rest of the call alone: go solo at the first barrier's wait (the partner
           never started) or at this thread's second long wait in the call (the core stays busy). */
        if (i == 0 || *yields >= RF_SOLO_WAITS)
            __atomic_compare_exchange_n(solo_at, &none, i + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    return 0;
}

/* The units [u0, u1) of thread r when H units are shared out `share` to a thread (empty past H). */
static inline void rf_units(int r, int share, int H, int* u0, int* u1) {
    *u0 = r * share < H ? r * share : H;
    *u1 = *u0 + share < H ? *u0 + share : H;
}

/* y (n) := [W1 (n, K1), W2 (n, K2)] . [x1; x2] + beta y, from the rows of W1 / W2 in place (gemv) or
 * their panels pk (gemvp), in chunks last first when rev (the serpentine, rf_gemm.h). */
static inline void rf_latency_prod(int rev, rf_gemv_rows_fn gemv, rf_gemv_panels_fn gemvp, int n, int K1,
                                   const float* W1, int ldw1, const float* x1, int K2, const float* W2, int ldw2,
                                   const float* x2, const float* pk, float beta, float* y) {
    RF_SERP_CHUNKS(rev, n, c0, m) {
        if (pk)
            gemvp(m, K1, x1, K2, x2, pk + (size_t)c0 * (K1 + K2), beta, y + c0);
        else
            gemv(m, K1, W1 ? W1 + (size_t)c0 * ldw1 : NULL, ldw1, x1, K2, W2 ? W2 + (size_t)c0 * ldw2 : NULL,
                 ldw2, x2, beta, y + c0);
    }
}

/* y (n) := v (K) . W (K, n) + beta y (row stride ldw), in chunks of RF_SERP_CHUNK columns last first
 * when rev (the backward's serpentine). */
static inline void rf_latency_cols(int rev, rf_gemv_cols_fn gemvc, int K, int n, const float* W, int ldw,
                                   const float* v, float beta, float* y) {
    RF_SERP_CHUNKS(rev, n, c0, m) gemvc(K, m, W + c0, ldw, v, beta, y + c0);
}

/* Reset before (cell 3), the second part of a step on units [u0, u0 + n), once s = r h_{t-1} is whole:
 * a_n += W_hn s (pk: the region's panels as rf_latency_forward lays them out, or NULL: rows in place),
 * then n and h'. */
static void rf_latency_grb_n(int n, int u0, int H, int KX, rf_gemv_rows_fn gemv, rf_gemv_panels_fn gemvp,
                             const float* pk, const float* w_hh, const float* sv, const float* b, const float* hp,
                             float* gt, float* yt, int ldy) {
    if (pk)
        gemvp(n, H, sv, 0, NULL, pk + (size_t)2 * rf_panels_size(n, KX + H), 1.0f, gt + 2 * H + u0);
    else
        gemv(n, H, w_hh + (size_t)(2 * H + u0) * H, H, sv, 0, NULL, 0, NULL, 1.0f, gt + 2 * H + u0);
    rf_grb_fwd_n_f(1, n, H, gt + u0, b + u0, hp + u0, H, yt + u0, ldy);
}

/* Returns the number of steps at which a thread waited over RF_SPIN_NS at the barrier: another
 * process holds a core, and the caller had better run its next calls on one thread for a while.
 * Within the call too: after such a wait the other threads leave and thread 0 runs the remaining steps
 * alone (a partner that is not running would otherwise cost a scheduler time slice at every step).
 * Every thread sees that switch at the same step (see rf_step_barrier).
 * x (T, ldx) given: each step also makes x_t W_ih^T (the whole step is then one pass over
 * [W_ih, W_hh], which is what a short call or a streaming step needs); x NULL: gates hold x W_ih^T on
 * entry, made by the caller's big GEMM. pack: NULL, or room for the panels of every thread
 * (nth * G * round16(ceil(H / nth)) * (F + H) floats or more). pack_nk (a pack kept from call to call):
 * NULL, the panels are packed at this call; *pack_nk == 0, they are packed and *pack_nk set to the
 * threads that ran (their layout depends on it); > 0, pack already holds the panels of that many threads
 * and is only read, unless another count of threads runs: then nothing is done and -1 returned. */
static int rf_latency_forward(int cell, int relu, int T, int F, int H, int nth, long spin_ns, rf_gemv_rows_fn gemv,
                              rf_gemv_panels_fn gemvp, rf_pack_panels_fn packp, float* pack, int* pack_nk,
                              const float* x, int ldx, const float* w_ih, const float* w_hh,
                              const float* b, const float* bhn, const float* h0, const float* c0,
                              float* gates, float* gh_full, float* y, int ldy, float* c, float* tc,
                              float* hn) {
    int G = RF_GATES(cell), gru = RF_IS_GRU(cell);
    int GH = G * H;
    int KX = x ? F : 0;  /* columns of W_ih a step reads */
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0;  /* > 0: thread 0 runs alone after the barrier of this step */
    int yields = 0;
    int kept = pack_nk ? *pack_nk : 0, ran = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at, ran) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
        if (k == 0) ran = nk;
        if (kept > 0 && kept != nk) goto done;
        /* units are shared out among the threads actually running; a thread reads only the rows of
           W_ih and W_hh of its units' gates, so they stay in its own cache from step to step */
        int share = (H + nk - 1) / nk;
        int j0, j1;
        rf_units(k, share, H, &j0, &j1);
        /* with pack: thread k's rows, transposed into panels (rf_gemv_panels), at region k; per gate g
           W_hh's rows then (GRU) W_ih's, or (LSTM, RNN) [W_ih, W_hh]'s rows together */
        size_t region = (size_t)G * rf_panels_size(share, KX + H);
        /* GRU's r and z sum their two parts, so they take them in one product like LSTM's gates; its
           n gate keeps them apart, and the r, z parts of gh_full stay zero */
        int GX = gru ? 2 : G;  /* gates made from [x_t, h_{t-1}] in one product */
        /* one thread, LSTM / RNN: the G gates' rows are one block of W, so one product over all G*H rows
           (tiny layers paid a call per gate: I=1, H=8, T=100 took 35 us a call) */
        int whole = nk == 1 && !gru;
        if (cell == 2)
            for (int g = 0; g < 2; g++) memset(gh_full + g * H + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        if (pack && kept) {
            /* (kept from an earlier call, for nk threads) */
        } else if (pack && whole) {
            packp(GH, KX, w_ih, F, H, w_hh, H, pack);
        } else if (pack && j1 > j0) {
            float* pk = pack + (size_t)k * region;
            for (int g = 0; g < GX; g++) {
                packp(j1 - j0, KX, w_ih + (size_t)(g * H + j0) * F, F, H, w_hh + (size_t)(g * H + j0) * H, H, pk);
                pk += rf_panels_size(j1 - j0, KX + H);
            }
            if (gru) {  /* W_hn's rows, then W_in's */
                packp(j1 - j0, H, w_hh + (size_t)(2 * H + j0) * H, H, 0, NULL, 0, pk);
                pk += rf_panels_size(j1 - j0, H);
                if (KX) packp(j1 - j0, F, w_ih + (size_t)(2 * H + j0) * F, F, 0, NULL, 0, pk);
            }
        }
        int alone = nk == 1;
        int solo = 0;  /* thread 0 alone after the others left: it runs every region */
        int serp = 4.0 * G * share * (KX + H) > rf_serp_min_bytes;
        unsigned int ftz = rf_ftz_enter();
        for (int t = 0; t < T; t++) {
            const float* hp = t == 0 ? h0 : y + (size_t)(t - 1) * ldy;
            /* the other threads' parts of h_{t-1} are in their caches: ask for all of it at once
               rather than a line at a time as the product reaches it (3-5% a step at H = 256) */
            for (int i = 0; i < H; i += 16) __builtin_prefetch(hp + i);
            const float* xt = x ? x + (size_t)t * ldx : NULL;
            float* gt = gates + (size_t)t * GH;
            float* sv = hn ? hn + (size_t)t * H : gh_full;  /* reset before: s = r h_{t-1} */
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                int n = u1 - u0;
                if (n <= 0) continue;
                const float* pk = pack ? pack + (size_t)r * region : NULL;
                size_t pg = rf_panels_size(n, KX + H);  /* a gate's panels */
                /* the step's products: all G H rows at once (whole), or the GX gates from [x_t, h_{t-1}] (or h
                   onto x W_ih^T), then GRU's n: W_hn h (reset after) and W_in x; odd steps last first */
                int np = whole ? 1 : GX + (cell == 2) + (gru && xt), rev = serp && (t & 1);
                for (int q = 0; q < np; q++) {
                    int g = rev ? np - 1 - q : q;
                    if (whole)
                        rf_latency_prod(rev, gemv, gemvp, GH, KX, w_ih, F, xt, H, w_hh, H, hp, pk, xt ? 0.0f : 1.0f,
                                        gt);
                    else if (g < GX)
                        rf_latency_prod(rev, gemv, gemvp, n, KX, w_ih + (size_t)(g * H + u0) * F, F, xt, H,
                                        w_hh + (size_t)(g * H + u0) * H, H, hp, pk ? pk + (size_t)g * pg : NULL,
                                        xt ? 0.0f : 1.0f, gt + g * H + u0);
                    else if (g == GX && cell == 2)
                        rf_latency_prod(rev, gemv, gemvp, n, H, w_hh + (size_t)(2 * H + u0) * H, H, hp, 0, NULL, 0,
                                        NULL, pk ? pk + 2 * pg : NULL, 0.0f, gh_full + 2 * H + u0);
                    else
                        rf_latency_prod(rev, gemv, gemvp, n, F, w_ih + (size_t)(2 * H + u0) * F, F, xt, 0, NULL, 0,
                                        NULL, pk ? pk + 2 * pg + rf_panels_size(n, H) : NULL, 0.0f, gt + 2 * H + u0);
                }
                if (cell == 2)
                    rf_gru_fwd_f(1, n, H, gt + u0, gh_full + u0, b + u0, bhn + u0, hp + u0, H,
                                 hn ? hn + (size_t)t * H + u0 : NULL, y + (size_t)t * ldy + u0, ldy);
                else if (cell == 3)
                    rf_grb_fwd_rz_f(1, n, H, gt + u0, b + u0, hp + u0, H, sv + u0, H);
                else if (cell == 1)
                    rf_lstm_fwd_f(1, n, H, gt + u0, b + u0, (t == 0 ? c0 : c + (size_t)(t - 1) * H) + u0,
                                  c + (size_t)t * H + u0, tc ? tc + (size_t)t * H + u0 : NULL,
                                  y + (size_t)t * ldy + u0, ldy);
                else
                    rf_rnn_fwd_f(1, n, H, relu, gt + u0, b + u0, y + (size_t)t * ldy + u0, ldy);
            }
            if (cell == 3) {  /* reset before: all of s is there after a barrier; then W_hn s and n */
                if (!alone && rf_step_barrier(&bar, nk, spin_ns, 2 * t, &solo_at, k, &alone, &solo, &yields))
                    break;
                for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                    int u0, u1;
                    rf_units(r, share, H, &u0, &u1);
                    int n = u1 - u0;
                    if (n <= 0) continue;
                    rf_latency_grb_n(n, u0, H, KX, gemv, gemvp, pack ? pack + (size_t)r * region : NULL, w_hh, sv,
                                     b, hp, gt, y + (size_t)t * ldy, ldy);
                }
            }
            if (!alone && rf_step_barrier(&bar, nk, spin_ns, cell == 3 ? 2 * t + 1 : t, &solo_at, k, &alone, &solo,
                                          &yields))
                break;
        }
        rf_ftz_leave(ftz);
    done:;
    }
    if (kept > 0 && kept != ran) return -1;
    if (pack_nk) *pack_nk = ran;
    return yields;
}

/* Batch-1 backward through time (BPTT), float32, one layer and direction: the threads split the
 * hidden units as in the forward. At each step, from t = T - 1 down, a thread runs the cell's backward
 * pass on its units (they need only its own parts of dh and dc), meets the others at a barrier (dG_t is
 * then whole), and makes its part of dh_{t-1} = dG_t W_hh from its columns of every row of W_hh, read
 * in place (rf_gemv_cols); GRU adds the n part from hn and keeps the dh z the pass left in dh. The
 * weight and input gradients are the caller's big GEMMs over all steps afterwards.
 *
 * gates, hn: as the forward left them (post-activation gates; W_hn h + b_hn), overwritten with dG and
 * (GRU) dG_n r; y (T, ldy), c / tc (T, H): the forward's; dy (T, lddy); dh, dc (H): on entry the
 * gradients wrt the final state, on exit those wrt h0 and c0; ds (H): reset-before scratch (dG_n W_hn).
 * Returns the count of long waits, as rf_latency_forward, which it also follows in running the rest
 * alone after one. Reset before (cell 3) meets twice a step: after dG_n, then after dG_r. */
static int rf_latency_backward(int cell, int relu, int T, int H, int nth, long spin_ns, rf_gemv_cols_fn gemvc,
                               const float* w_hh, const float* h0, const float* c0, float* gates, float* hn,
                               const float* y, int ldy, const float* c, const float* tc, const float* dy,
                               int lddy, float* dh, float* dc, float* ds) {
    int G = RF_GATES(cell);
    int GH = G * H;
    rf_barrier bar = rf_barrier_new();
    int solo_at = 0;  /* > 0: thread 0 runs alone after the barrier of this step's index (T - 1 - t) */
    int yields = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) shared(bar, solo_at) reduction(+ : yields)
#endif
    {
        RF_TEAM_IDS(k, nk, bar);
        int share = (H + nk - 1) / nk;
        int alone = nk == 1;
        int solo = 0;
        unsigned int ftz = rf_ftz_enter();
        for (int t = T - 1; t >= 0; t--) {
            int i = T - 1 - t;
            const float* hp = t == 0 ? h0 : y + (size_t)(t - 1) * ldy;
            const float* cp = t == 0 ? c0 : c + (size_t)(t - 1) * H;
            float* gt = gates + (size_t)t * GH;
            float* hnt = hn ? hn + (size_t)t * H : NULL;
            const float* dyt = dy + (size_t)t * lddy;
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                if (u1 <= u0) continue;
                if (cell == 1)
                    rf_lstm_bwd_f(1, u1 - u0, H, gt + u0, cp + u0, tc + (size_t)t * H + u0, dyt + u0, lddy,
                                  dh + u0, dc + u0);
                else if (cell == 2)
                    rf_gru_bwd_f(1, u1 - u0, H, gt + u0, hnt + u0, hp + u0, H, dyt + u0, lddy, dh + u0);
                else if (cell == 3)
                    rf_grb_bwd_nz_f(1, u1 - u0, H, gt + u0, hp + u0, H, dyt + u0, lddy, dh + u0);
                else
                    rf_rnn_bwd_f(1, u1 - u0, H, relu, gt + u0, dyt + u0, lddy, dh + u0);
            }
            if (!alone && rf_step_barrier(&bar, nk, spin_ns, cell == 3 ? 2 * i : i, &solo_at, k, &alone, &solo,
                                          &yields))
                break;
            if (cell == 3) {  /* reset before: ds = dG_n W_hn on a thread's columns, dG_r from it; a barrier */
                for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                    int u0, u1;
                    rf_units(r, share, H, &u0, &u1);
                    if (u1 <= u0) continue;
                    gemvc(H, u1 - u0, w_hh + (size_t)2 * H * H + u0, H, gt + 2 * H, 0.0f, ds + u0);
                    rf_grb_bwd_r_f(1, u1 - u0, H, gt + u0, hp + u0, H, ds + u0, H, dh + u0);
                }
                if (!alone && rf_step_barrier(&bar, nk, spin_ns, 2 * i + 1, &solo_at, k, &alone, &solo, &yields))
                    break;
            }
            for (int r = solo ? 0 : k; r < (solo ? nk : k + 1); r++) {
                int u0, u1;
                rf_units(r, share, H, &u0, &u1);
                if (u1 <= u0) continue;
                int rev = (i & 1) && 4.0 * G * H * (u1 - u0) > rf_serp_min_bytes;  /* (the serpentine, rf_gemm.h) */
                if (cell == 2) {  /* (in this order: both add onto dh) */
                    rf_latency_cols(rev, gemvc, 2 * H, u1 - u0, w_hh + u0, H, gt, 1.0f, dh + u0);
                    rf_latency_cols(rev, gemvc, H, u1 - u0, w_hh + (size_t)2 * H * H + u0, H, hnt, 1.0f, dh + u0);
                } else {
                    rf_latency_cols(rev, gemvc, cell == 3 ? 2 * H : GH, u1 - u0, w_hh + u0, H, gt,
                                    cell == 3 ? 1.0f : 0.0f, dh + u0);
                }
            }
        }
        rf_ftz_leave(ftz);
    }
    return yields;
}

#endif
