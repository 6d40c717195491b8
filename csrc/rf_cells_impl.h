/* The fused elementwise passes of the three cells, one time step over nb batch rows; instantiated by
 * rf_cells.h for float (fast activations) and double (exact ones). Included only from there.
 *
 * Each pass updates units [0, n) of H (n < H: a thread's share of the units, pointers offset to it).
 * Shapes (row-major): G (nb, G*H) holds on entry the pre-activations x W_ih^T + h W_hh^T without bias
 * (GRU: x W_ih^T only; its recurrent part gh = h W_hh^T comes apart), and on exit the post-activation
 * gates, which backward reads instead of evaluating exp or tanh again. Backward overwrites the same
 * rows with dG, the gradients of the pre-activations.
 *
 * LSTM (i, f, g, o):  c' = f c + i g,  h' = o tanh(c')
 *   backward: dh~ = dy + dh, dc~ = dc + dh~ o (1 - tanh(c')^2);
 *             dG = (dc~ g i(1-i), dc~ c f(1-f), dc~ i (1-g^2), dh~ tanh(c') o(1-o)); dc_prev = dc~ f.
 * GRU (r, z, n), "reset after":  r = s(a_r + gh_r), z = s(a_z + gh_z), hn = gh_n + b_hn,
 *   n = tanh(a_n + r hn),  h' = (1 - z) n + z h
 *   backward: dan = dh~ (1-z)(1-n^2), dar = dan hn r(1-r), daz = dh~ (h - n) z(1-z);
 *             dGx = (dar, daz, dan) in G, dan r (the recurrent n part) in hn, dh_prev = dh~ z + dGh W_hh.
 * GRU (r, z, n), "reset before" (Keras reset_after=False, ONNX linear_before_reset=0; cell 3). Every
 * bias is summed in b (b_ih + b_hh, n's too), and the n gate's recurrent product is over r h, so a step
 * makes its recurrent product in two parts with a pass after each:
 *   G_rz += h W_hrz^T;  grb_fwd_rz: r = s(a_r), z = s(a_z), s = r h  (s saved for backward in hn)
 *   G_n  += s W_hn^T;   grb_fwd_n:  n = tanh(a_n), h' = (1 - z) n + z h
 *   backward: grb_bwd_nz: dh~ = dy + dh, dan = dh~ (1-z)(1-n^2), daz = dh~ (h - n) z(1-z), dh := dh~ z;
 *             ds = dan W_hn;  grb_bwd_r: dar = ds h r(1-r), dh += ds r;  then dh_prev = dh + (dar, daz) W_hrz.
 *             Weights: dW_hrz = (dar, daz)^T h, dW_hn = dan^T s, db_hh = db_ih = sum dG.
 * RNN:  h' = act(a);  backward: dG = dh~ act'(.), from h' (tanh: 1 - h'^2, relu: h' > 0).
 */
/* Indices are ptrdiff_t: Python builds extensions with -fwrapv, under which int index arithmetic is not
 * affine to GCC and these loops would not vectorise (measured 7x slower). */
#define RF_RESTRICT __restrict__

/* LSTM forward on units [J0_, J1_) of one row whose gates lie HS_ apart (see lstm_fwd). */
#define RF_LSTM_FWD_UNITS(J0_, J1_, HS_, g, b, cpr, cr, tcr, yr)                                      \
    for (ptrdiff_t j = (J0_); j < (J1_); j++) {                                                       \
        RF_T gi = RF_SIGM(g[j] + b[j]);                                                               \
        RF_T gf = RF_SIGM(g[(HS_) + j] + b[(HS_) + j]);                                               \
        RF_T gg = RF_TANH(g[2 * (HS_) + j] + b[2 * (HS_) + j]);                                       \
        RF_T go = RF_SIGM(g[3 * (HS_) + j] + b[3 * (HS_) + j]);                                       \
        RF_T cc = gf * cpr[j] + gi * gg;                                                              \
        RF_T th = RF_TANH(cc);                                                                        \
        g[j] = gi;                                                                                    \
        g[(HS_) + j] = gf;                                                                            \
        g[2 * (HS_) + j] = gg;                                                                        \
        g[3 * (HS_) + j] = go;                                                                        \
        cr[j] = cc;                                                                                   \
        yr[j] = go * th;                                                                              \
        if (tcr) tcr[j] = th;                                                                         \
    }

/* Fewer units than a vector holds (RF_VW) go through one padded vector's width of scratch, so they run
 * vectorised too: one at a time they cost about 18 ns a unit (LSTM, H = 8: 135 ns a step for the pass,
 * padded 95, H = 16 45). (Past a whole vector the compiler's own epilogue takes the rest vectorised.) */
#define RF_VW ((ptrdiff_t)(64 / sizeof(RF_T)))

RF_CLONES static void RF_NAME(lstm_fwd)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT b,
                                         const RF_T* RF_RESTRICT cp, RF_T* RF_RESTRICT c,
                                         RF_T* RF_RESTRICT tc, RF_T* RF_RESTRICT y, int ldy) {
    ptrdiff_t nv = n < RF_VW ? 0 : n, m = n - nv;
    RF_T sg[4 * RF_VW], sb[4 * RF_VW], scp[RF_VW], sc[RF_VW], sy[RF_VW], stc[RF_VW];
    if (m)
        for (ptrdiff_t q = 0; q < 4; q++)
            for (ptrdiff_t j = 0; j < RF_VW; j++) sb[q * RF_VW + j] = j < m ? b[q * H + nv + j] : 0;
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 4 * H;
        const RF_T* RF_RESTRICT cpr = cp + (ptrdiff_t)r * H;
        RF_T* RF_RESTRICT cr = c + (ptrdiff_t)r * H;
        RF_T* RF_RESTRICT yr = y + (ptrdiff_t)r * ldy;
        RF_T* RF_RESTRICT tcr = tc ? tc + (ptrdiff_t)r * H : NULL;
        RF_LSTM_FWD_UNITS(0, nv, H, g, b, cpr, cr, tcr, yr)
        if (!m) continue;
        for (ptrdiff_t j = 0; j < RF_VW; j++) {
            for (ptrdiff_t q = 0; q < 4; q++) sg[q * RF_VW + j] = j < m ? g[q * H + nv + j] : 0;
            scp[j] = j < m ? cpr[nv + j] : 0;
        }
        RF_T* stcp = tcr ? stc : NULL;
        RF_LSTM_FWD_UNITS(0, RF_VW, RF_VW, sg, sb, scp, sc, stcp, sy)
        for (ptrdiff_t j = 0; j < m; j++) {
            for (ptrdiff_t q = 0; q < 4; q++) g[q * H + nv + j] = sg[q * RF_VW + j];
            cr[nv + j] = sc[j];
            yr[nv + j] = sy[j];
            if (tcr) tcr[nv + j] = stc[j];
        }
    }
}

RF_CLONES static void RF_NAME(lstm_bwd)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT cp,
                                         const RF_T* RF_RESTRICT tc, const RF_T* RF_RESTRICT dy, int lddy,
                                         RF_T* RF_RESTRICT dh, RF_T* RF_RESTRICT dc) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 4 * H;
        const RF_T* RF_RESTRICT cpr = cp + (ptrdiff_t)r * H;
        const RF_T* RF_RESTRICT tcr = tc + (ptrdiff_t)r * H;
        const RF_T* RF_RESTRICT dyr = dy + (ptrdiff_t)r * lddy;
        const RF_T* RF_RESTRICT dhr = dh + (ptrdiff_t)r * H;
        RF_T* RF_RESTRICT dcr = dc + (ptrdiff_t)r * H;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j], th = tcr[j];
            RF_T dhh = dyr[j] + dhr[j];
            RF_T dct = dcr[j] + dhh * go * (1 - th * th);
            g[j] = dct * gg * gi * (1 - gi);
            g[H + j] = dct * cpr[j] * gf * (1 - gf);
            g[2 * H + j] = dct * gi * (1 - gg * gg);
            g[3 * H + j] = dhh * th * go * (1 - go);
            dcr[j] = dct * gf;
        }
    }
}

RF_CLONES static void RF_NAME(gru_fwd)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT gh,
                                        const RF_T* RF_RESTRICT b, const RF_T* RF_RESTRICT bhn,
                                        const RF_T* RF_RESTRICT hp, int ldh, RF_T* RF_RESTRICT hn,
                                        RF_T* RF_RESTRICT y, int ldy) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT q = gh + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        RF_T* RF_RESTRICT yr = y + (ptrdiff_t)r * ldy;
        RF_T* RF_RESTRICT hnr = hn ? hn + (ptrdiff_t)r * H : NULL;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gr = RF_SIGM(g[j] + b[j] + q[j]);
            RF_T gz = RF_SIGM(g[H + j] + b[H + j] + q[H + j]);
            RF_T hh = q[2 * H + j] + bhn[j];
            RF_T gn = RF_TANH(g[2 * H + j] + b[2 * H + j] + gr * hh);
            g[j] = gr;
            g[H + j] = gz;
            g[2 * H + j] = gn;
            yr[j] = (1 - gz) * gn + gz * hpr[j];
            if (hnr) hnr[j] = hh;
        }
    }
}

RF_CLONES static void RF_NAME(gru_bwd)(int nb, int n, int H, RF_T* RF_RESTRICT G, RF_T* RF_RESTRICT hn,
                                        const RF_T* RF_RESTRICT hp, int ldh, const RF_T* RF_RESTRICT dy,
                                        int lddy, RF_T* RF_RESTRICT dh) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        RF_T* RF_RESTRICT hnr = hn + (ptrdiff_t)r * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        const RF_T* RF_RESTRICT dyr = dy + (ptrdiff_t)r * lddy;
        RF_T* RF_RESTRICT dhr = dh + (ptrdiff_t)r * H;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gr = g[j], gz = g[H + j], gn = g[2 * H + j];
            RF_T dhh = dyr[j] + dhr[j];
            RF_T dan = dhh * (1 - gz) * (1 - gn * gn);
            g[j] = dan * hnr[j] * gr * (1 - gr);
            g[H + j] = dhh * (hpr[j] - gn) * gz * (1 - gz);
            g[2 * H + j] = dan;
            hnr[j] = dan * gr;
            dhr[j] = dhh * gz;
        }
    }
}

/* Reset before, first pass: r, z from their pre-activations (G[:, :2H], bias not yet added) and s = r h
 * into s (nb, lds). */
RF_CLONES static void RF_NAME(grb_fwd_rz)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT b,
                                           const RF_T* RF_RESTRICT hp, int ldh, RF_T* RF_RESTRICT s, int lds) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        RF_T* RF_RESTRICT sr = s + (ptrdiff_t)r * lds;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gr = RF_SIGM(g[j] + b[j]);
            g[j] = gr;
            g[H + j] = RF_SIGM(g[H + j] + b[H + j]);
            sr[j] = gr * hpr[j];
        }
    }
}

/* Reset before, second pass: n from a_n + s W_hn^T (in G[:, 2H:]), and h'. */
RF_CLONES static void RF_NAME(grb_fwd_n)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT b,
                                          const RF_T* RF_RESTRICT hp, int ldh, RF_T* RF_RESTRICT y, int ldy) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        RF_T* RF_RESTRICT yr = y + (ptrdiff_t)r * ldy;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gz = g[H + j];
            RF_T gn = RF_TANH(g[2 * H + j] + b[2 * H + j]);
            g[2 * H + j] = gn;
            yr[j] = (1 - gz) * gn + gz * hpr[j];
        }
    }
}

/* Reset before, backward first pass: dG_n, dG_z, and dh := dh~ z. */
RF_CLONES static void RF_NAME(grb_bwd_nz)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT hp,
                                           int ldh, const RF_T* RF_RESTRICT dy, int lddy, RF_T* RF_RESTRICT dh) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        const RF_T* RF_RESTRICT dyr = dy + (ptrdiff_t)r * lddy;
        RF_T* RF_RESTRICT dhr = dh + (ptrdiff_t)r * H;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gz = g[H + j], gn = g[2 * H + j];
            RF_T dhh = dyr[j] + dhr[j];
            g[H + j] = dhh * (hpr[j] - gn) * gz * (1 - gz);
            g[2 * H + j] = dhh * (1 - gz) * (1 - gn * gn);
            dhr[j] = dhh * gz;
        }
    }
}

/* Reset before, backward second pass, from ds = dG_n W_hn (nb, ldds): dG_r, and dh += ds r. */
RF_CLONES static void RF_NAME(grb_bwd_r)(int nb, int n, int H, RF_T* RF_RESTRICT G, const RF_T* RF_RESTRICT hp,
                                          int ldh, const RF_T* RF_RESTRICT ds, int ldds, RF_T* RF_RESTRICT dh) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * 3 * H;
        const RF_T* RF_RESTRICT hpr = hp + (ptrdiff_t)r * ldh;
        const RF_T* RF_RESTRICT dsr = ds + (ptrdiff_t)r * ldds;
        RF_T* RF_RESTRICT dhr = dh + (ptrdiff_t)r * H;
        for (ptrdiff_t j = 0; j < n; j++) {
            RF_T gr = g[j];
            g[j] = dsr[j] * hpr[j] * gr * (1 - gr);
            dhr[j] += dsr[j] * gr;
        }
    }
}

RF_CLONES static void RF_NAME(rnn_fwd)(int nb, int n, int H, int relu, RF_T* RF_RESTRICT G,
                                        const RF_T* RF_RESTRICT b, RF_T* RF_RESTRICT y, int ldy) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * H;
        RF_T* RF_RESTRICT yr = y + (ptrdiff_t)r * ldy;
        if (relu) {
            for (ptrdiff_t j = 0; j < n; j++) {
                RF_T a = g[j] + b[j];
                a = a < 0 ? 0 : a;  /* NaN stays NaN (relu(NaN) = NaN, as in PyTorch) */
                g[j] = a;
                yr[j] = a;
            }
        } else {
            for (ptrdiff_t j = 0; j < n; j++) {
                RF_T a = RF_TANH(g[j] + b[j]);
                g[j] = a;
                yr[j] = a;
            }
        }
    }
}

RF_CLONES static void RF_NAME(rnn_bwd)(int nb, int n, int H, int relu, RF_T* RF_RESTRICT G,
                                        const RF_T* RF_RESTRICT dy, int lddy, const RF_T* RF_RESTRICT dh) {
    for (ptrdiff_t r = 0; r < nb; r++) {
        RF_T* RF_RESTRICT g = G + (ptrdiff_t)r * H;
        const RF_T* RF_RESTRICT dyr = dy + (ptrdiff_t)r * lddy;
        const RF_T* RF_RESTRICT dhr = dh + (ptrdiff_t)r * H;
        if (relu) {
            for (ptrdiff_t j = 0; j < n; j++) g[j] = g[j] > 0 ? dyr[j] + dhr[j] : 0;
        } else {
            for (ptrdiff_t j = 0; j < n; j++) g[j] = (dyr[j] + dhr[j]) * (1 - g[j] * g[j]);
        }
    }
}

#undef RF_RESTRICT
