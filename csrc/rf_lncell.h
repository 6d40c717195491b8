/* Layer-normalized LSTM and GRU cells: the fused per-row passes of one time step, forward and backward.
 * Plain C, instantiated for float (fast activations, rf_math.h) and double (exact ones); no Python here.
 *
 * Maths (Ba et al. 2016, "Layer Normalization", section 3.1; haste's LayerNormLSTM). LN(a) over one row
 * of n values: mu = mean(a), rstd = 1 / sqrt(var(a) + eps) (biased variance), LN(a) = (a - mu) rstd.
 * Each normalization has its own gain (gamma) and bias (beta).
 *
 *   LSTM (gates i, f, g, o; n = 4H):
 *     pre = gx * LN(x W_ih^T) + bx + gh * LN(h W_hh^T) + bh + b_ih + b_hh
 *     i, f, o = sigmoid(pre_i, pre_f, pre_o), g = tanh(pre_g)
 *     c' = f c + i g
 *     h' = o tanh(gc * LN(c') + bc)                         (LN over the H units)
 *   GRU (gates r, z, n; n = 3H), the reset gate on the normalized recurrent n part:
 *     ax = gx * LN(x W_ih^T) + bx + b_ih,   ah = gh * LN(h W_hh^T) + bh + b_hh
 *     r = sigmoid(ax_r + ah_r), z = sigmoid(ax_z + ah_z), n = tanh(ax_n + r ah_n)
 *     h' = (1 - z) n + z h
 *
 * The kernel hands each pass the constant vectors already summed: LSTM ``bs`` = bx + bh + b_ih + b_hh;
 * GRU ``bs`` = bx + b_ih and ``bsh`` = bh + b_hh.
 *
 * Per row (one sequence at one step) the caller has made the raw products ax = x W_ih^T and ah = h W_hh^T
 * (each G*H); one pass then does both normalizations, the gates, the state update and (LSTM) the cell's
 * normalization, with every vector of the row in L1. Training saves what backward needs, so backward
 * evaluates no exp or tanh and no square root:
 *   xs  (G*H)  LN(ax), written over ax          hs (G*H)  LN(ah)
 *   gt  (G*H)  post-activation gates            st (4)    rstd_x, rstd_h, rstd_c, unused
 *   LSTM: c (H) c', cn (H) LN(c'), tc (H) tanh(gc LN(c') + bc);   GRU: hq (H) ah_n (the r-multiplied part)
 * Backward of one row overwrites xs with d ax and hs with d ah (the gradients of the raw products, from
 * which the weights' and the inputs' gradients are GEMMs), writes nothing else of the row (its other
 * gradients go through a per-task scratch) and adds the gains' and biases' gradients to the caller's
 * accumulators acc = [dgx (GH) | dbx (GH) | dgh (GH) | dbh (GH) | dgc (H) | dbc (H)] (LSTM:
 * dbh is dbx, left alone). LN backward with xh = LN(a), u = dy * gamma:
 *   da = rstd (u - mean(u) - xh mean(u xh)).
 * Activations: float uses rf_math.h's fast sigmoid / tanh (about one float32 ulp, measured there), double
 * libm's; the statistics are sums over the row in the row's type (float32 results within 1e-5 relative of
 * the float64 reference in tests/nn/test_layer_norm_cells.py).
 */
#ifndef RF_LNCELL_H
#define RF_LNCELL_H

#include <stddef.h>
#include "rf_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(RF_NO_CLONES)
#define RF_LN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_LN_CLONES
#endif

/* Reductions may be reordered (vectorised) where OpenMP's simd pragma is understood; the order changes
 * the float32 sums by a few ulp, well inside the tests' tolerances. */
#if defined(_OPENMP)
#define RF_LN_PRAGMA(x) _Pragma(#x)
#define RF_LN_SIMD_SUM(v) RF_LN_PRAGMA(omp simd reduction(+:v))
#else
#define RF_LN_SIMD_SUM(v)
#endif
#define RF_LN_R __restrict__

#define RF_LN_BODY
#define RF_T float
#define RF_LN(n) rf_ln_##n##_f
#define RF_SIGM rf_fast_sigmoidf
#define RF_TANH rf_fast_tanhf
#define RF_SQRT sqrtf
#include "rf_lncell.h"
#undef RF_T
#undef RF_LN
#undef RF_SIGM
#undef RF_TANH
#undef RF_SQRT

#define RF_T double
#define RF_LN(n) rf_ln_##n##_d
#define RF_SIGM rf_sigmoid
#define RF_TANH rf_tanh
#define RF_SQRT sqrt
#include "rf_lncell.h"
#undef RF_T
#undef RF_LN
#undef RF_SIGM
#undef RF_TANH
#undef RF_SQRT
#undef RF_LN_BODY

#endif /* RF_LNCELL_H */

#ifdef RF_LN_BODY
/* ---------------------------------------------------------------- one instance (RF_T) */

/* mean and 1 / sqrt(var + eps) of a[0:n], two passes (the row is in L1); returns the mean. */
static inline RF_T RF_LN(stats)(ptrdiff_t n, const RF_T* RF_LN_R a, RF_T eps, RF_T* rstd) {
    RF_T s = 0, v = 0, mu;
    RF_LN_SIMD_SUM(s)
    for (ptrdiff_t j = 0; j < n; j++) s += a[j];
    mu = s / (RF_T)n;
    RF_LN_SIMD_SUM(v)
    for (ptrdiff_t j = 0; j < n; j++) v += (a[j] - mu) * (a[j] - mu);
    *rstd = (RF_T)1 / RF_SQRT(v / (RF_T)n + eps);
    return mu;
}

/* Both normalizations of one row: xs = LN(ax) (may be ax itself), hs = LN(ah) (may be ah);
 * pre = gx xs + gh hs + bs (GRU: gh hs + bsh goes to hpre apart when hpre is not NULL). */
static inline void RF_LN(norm2)(ptrdiff_t GH, const RF_T* ax, const RF_T* ah, RF_T eps, const RF_T* RF_LN_R gx,
                                const RF_T* RF_LN_R gh, const RF_T* RF_LN_R bs, const RF_T* RF_LN_R bsh,
                                RF_T* xs, RF_T* hs, RF_T* pre, RF_T* RF_LN_R hpre, RF_T* st) {
    RF_T rx, rh;
    RF_T mx = RF_LN(stats)(GH, ax, eps, &rx);
    RF_T mh = RF_LN(stats)(GH, ah, eps, &rh);
    if (hpre == NULL) {
        for (ptrdiff_t j = 0; j < GH; j++) {
            RF_T a = (ax[j] - mx) * rx, b = (ah[j] - mh) * rh;
            xs[j] = a;
            hs[j] = b;
            pre[j] = gx[j] * a + gh[j] * b + bs[j];
        }
    } else {
        for (ptrdiff_t j = 0; j < GH; j++) {
            RF_T a = (ax[j] - mx) * rx, b = (ah[j] - mh) * rh;
            xs[j] = a;
            hs[j] = b;
            pre[j] = gx[j] * a + bs[j];
            hpre[j] = gh[j] * b + bsh[j];
        }
    }
    if (st) {
        st[0] = rx;
        st[1] = rh;
    }
}

/* LSTM, one row forward. ax, ah (4H) the raw products (overwritten: ax by LN(ax) unless xs, ah likewise
 * unless hs); gt (4H) receives the post-activation gates (in inference ax itself); cp (H) the previous
 * cell; c (H) the new cell; y (H) the new h. Training (xs != NULL): xs, hs, st, cn, tc as in the header. */
RF_LN_CLONES static void RF_LN(lstm_fwd)(int H, RF_T eps, RF_T* ax, RF_T* ah, const RF_T* gx, const RF_T* gh,
                                         const RF_T* bs, const RF_T* RF_LN_R gc, const RF_T* RF_LN_R bc,
                                         const RF_T* RF_LN_R cp, RF_T* gt, RF_T* RF_LN_R c,
                                         RF_T* RF_LN_R y, RF_T* xs, RF_T* hs, RF_T* st, RF_T* RF_LN_R cn,
                                         RF_T* RF_LN_R tc) {
    ptrdiff_t n = H;
    RF_T rc, mc;
    RF_LN(norm2)(4 * n, ax, ah, eps, gx, gh, bs, NULL, xs ? xs : ax, hs ? hs : ah, gt, NULL, st);
    for (ptrdiff_t j = 0; j < n; j++) {
        RF_T gi = RF_SIGM(gt[j]), gf = RF_SIGM(gt[n + j]), gg = RF_TANH(gt[2 * n + j]);
        RF_T go = RF_SIGM(gt[3 * n + j]);
        gt[j] = gi;
        gt[n + j] = gf;
        gt[2 * n + j] = gg;
        gt[3 * n + j] = go;
        c[j] = gf * cp[j] + gi * gg;
    }
    mc = RF_LN(stats)(n, c, eps, &rc);
    if (st) st[2] = rc;
    if (cn) {
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T a = (c[j] - mc) * rc, t = RF_TANH(gc[j] * a + bc[j]);
            cn[j] = a;
            tc[j] = t;
            y[j] = gt[3 * n + j] * t;
        }
    } else {
        for (ptrdiff_t j = 0; j < n; j++) y[j] = gt[3 * n + j] * RF_TANH(gc[j] * ((c[j] - mc) * rc) + bc[j]);
    }
}

/* GRU, one row forward. ax, ah (3H) raw products (overwritten as LSTM's); gt (3H) receives r, z, n;
 * hq (H) receives ah_n = gh_n LN(ah)_n + bsh_n (saved for backward when training, else scratch); hp (H)
 * the previous h; y (H) the new h. */
RF_LN_CLONES static void RF_LN(gru_fwd)(int H, RF_T eps, RF_T* ax, RF_T* ah, const RF_T* gx, const RF_T* gh,
                                        const RF_T* bs, const RF_T* bsh, const RF_T* RF_LN_R hp,
                                        RF_T* gt, RF_T* RF_LN_R hpre, RF_T* RF_LN_R hq,
                                        RF_T* RF_LN_R y, RF_T* xs, RF_T* hs, RF_T* st) {
    ptrdiff_t n = H;
    RF_LN(norm2)(3 * n, ax, ah, eps, gx, gh, bs, bsh, xs ? xs : ax, hs ? hs : ah, gt, hpre, st);
    for (ptrdiff_t j = 0; j < n; j++) {
        RF_T r = RF_SIGM(gt[j] + hpre[j]), z = RF_SIGM(gt[n + j] + hpre[n + j]);
        RF_T q = hpre[2 * n + j];
        RF_T nn = RF_TANH(gt[2 * n + j] + r * q);
        gt[j] = r;
        gt[n + j] = z;
        gt[2 * n + j] = nn;
        hq[j] = q;
        y[j] = (1 - z) * nn + z * hp[j];
    }
}

/* LN backward of one row: u (n) holds dy * gamma, xs LN(a); out (n; may be u or xs) receives d a. */
static inline void RF_LN(norm_bwd)(ptrdiff_t n, const RF_T* u, const RF_T* xs, RF_T rstd, RF_T* out) {
    RF_T s1 = 0, s2 = 0, m1, m2;
    RF_LN_SIMD_SUM(s1)
    for (ptrdiff_t j = 0; j < n; j++) s1 += u[j];
    RF_LN_SIMD_SUM(s2)
    for (ptrdiff_t j = 0; j < n; j++) s2 += u[j] * xs[j];
    m1 = s1 / (RF_T)n;
    m2 = s2 / (RF_T)n;
    for (ptrdiff_t j = 0; j < n; j++) out[j] = rstd * (u[j] - m1 - xs[j] * m2);
}

/* One normalized side of a row backward: dp (GH) the gradient of gamma LN(a) + beta; accumulates
 * dgamma += dp xs and (unless db is NULL) dbeta += dp, and turns xs into d a. tmp: GH scratch. */
static inline void RF_LN(side_bwd)(ptrdiff_t GH, const RF_T* RF_LN_R dp, const RF_T* RF_LN_R g,
                                   RF_T* xs, RF_T rstd, RF_T* RF_LN_R dg, RF_T* RF_LN_R db,
                                   RF_T* RF_LN_R tmp) {
    for (ptrdiff_t j = 0; j < GH; j++) {
        dg[j] += dp[j] * xs[j];
        tmp[j] = dp[j] * g[j];
    }
    if (db)
        for (ptrdiff_t j = 0; j < GH; j++) db[j] += dp[j];
    RF_LN(norm_bwd)(GH, tmp, xs, rstd, xs);
}

/* LSTM, one row backward. gt (4H) the saved gates; cp (H) the previous cell; cn, tc (H) saved; dy (H) the
 * output's gradient; dh (H) the running gradient wrt this step's h (read); dc (H) the running gradient wrt
 * c (in: this step's, out: the previous step's); xs, hs, st as saved (xs, hs become d ax, d ah); acc as in
 * the header; tmp (8H) scratch (the pre-activation gradients and LN's), so that backward writes nothing
 * of a row but d ax and d ah. */
RF_LN_CLONES static void RF_LN(lstm_bwd)(int H, const RF_T* RF_LN_R gt, const RF_T* RF_LN_R cp,
                                         const RF_T* RF_LN_R cn, const RF_T* RF_LN_R tc, const RF_T* RF_LN_R gx,
                                         const RF_T* RF_LN_R gh, const RF_T* RF_LN_R gc, const RF_T* st,
                                         const RF_T* RF_LN_R dy, const RF_T* RF_LN_R dh, RF_T* RF_LN_R dc,
                                         RF_T* xs, RF_T* hs, RF_T* RF_LN_R acc, RF_T* RF_LN_R tmp) {
    ptrdiff_t n = H, GH = 4 * (ptrdiff_t)H;
    RF_T* RF_LN_R dgc = acc + 4 * GH;
    RF_T* RF_LN_R dbc = dgc + n;
    RF_T* RF_LN_R dp = tmp + GH;
    RF_T* RF_LN_R u = tmp;
    for (ptrdiff_t j = 0; j < n; j++) {
        RF_T d = dy[j] + dh[j], t = tc[j], o = gt[3 * n + j];
        RF_T dC = d * o * (1 - t * t);
        dgc[j] += dC * cn[j];
        dbc[j] += dC;
        u[j] = dC * gc[j];
        dp[3 * n + j] = d * t * o * (1 - o);
    }
    RF_LN(norm_bwd)(n, u, cn, st[2], u);
    for (ptrdiff_t j = 0; j < n; j++) {
        RF_T d = dc[j] + u[j], gi = gt[j], gf = gt[n + j], gg = gt[2 * n + j];
        dp[j] = d * gg * gi * (1 - gi);
        dp[n + j] = d * cp[j] * gf * (1 - gf);
        dp[2 * n + j] = d * gi * (1 - gg * gg);
        dc[j] = d * gf;
    }
    RF_LN(side_bwd)(GH, dp, gx, xs, st[0], acc, acc + GH, tmp);
    RF_LN(side_bwd)(GH, dp, gh, hs, st[1], acc + 2 * GH, NULL, tmp);
}

/* GRU, one row backward. gt (3H) the saved r, z, n; hq (H) the saved ah_n; hp (H) the previous h; dy (H);
 * dh (H) in: the running gradient wrt this step's h, out: its part that reaches the previous h directly
 * (dh z; the caller adds d ah W_hh); xs, hs, st, acc as LSTM's; tmp (6H) scratch. */
RF_LN_CLONES static void RF_LN(gru_bwd)(int H, const RF_T* RF_LN_R gt, const RF_T* RF_LN_R hq,
                                        const RF_T* RF_LN_R hp, const RF_T* RF_LN_R gx, const RF_T* RF_LN_R gh,
                                        const RF_T* st, const RF_T* RF_LN_R dy, RF_T* RF_LN_R dh, RF_T* xs,
                                        RF_T* hs, RF_T* RF_LN_R acc, RF_T* RF_LN_R tmp) {
    ptrdiff_t n = H, GH = 3 * (ptrdiff_t)H;
    RF_T* RF_LN_R dp = tmp + GH;
    for (ptrdiff_t j = 0; j < n; j++) {
        RF_T d = dy[j] + dh[j], r = gt[j], z = gt[n + j], nn = gt[2 * n + j];
        RF_T dn = d * (1 - z) * (1 - nn * nn);
        dp[j] = dn * hq[j] * r * (1 - r);
        dp[n + j] = d * (hp[j] - nn) * z * (1 - z);
        dp[2 * n + j] = dn;
        dh[j] = d * z;
    }
    RF_LN(side_bwd)(GH, dp, gx, xs, st[0], acc, acc + GH, tmp);
    for (ptrdiff_t j = 0; j < n; j++) dp[2 * n + j] *= gt[j];  /* the recurrent n part: dn r */
    RF_LN(side_bwd)(GH, dp, gh, hs, st[1], acc + 2 * GH, acc + 3 * GH, tmp);
}

#endif /* RF_LN_BODY */
