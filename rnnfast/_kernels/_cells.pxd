# The fused elementwise passes of the three cells, one time step, ``nb`` batch rows.
#
# Shapes (row-major, row strides given): gates G (nb, G*H) hold on entry the pre-activations
# x W_ih^T + h W_hh^T (without bias, GRU without its recurrent part); on exit the post-activation
# gates, which backward reads instead of evaluating exp or tanh again. On backward the same rows are
# overwritten with the gradients of the pre-activations, dG.
#
# LSTM (i, f, g, o):  c' = f c + i g,  h' = o tanh(c')
#   backward: do = dh tanh(c'), dc~ = dc + dh o (1 - tanh(c')^2), di = dc~ g, df = dc~ c, dg = dc~ i,
#             dc_prev = dc~ f; dG = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)).
# GRU (r, z, n), PyTorch's "reset after" form:  r = s(a_r + gh_r), z = s(a_z + gh_z), hn = gh_n + b_hn,
#   n = tanh(a_n + r hn),  h' = (1 - z) n + z h
#   backward: dn = dh (1-z), dz = dh (h - n), dan = dn (1-n^2), dar = dan hn r(1-r), daz = dz z(1-z),
#             dGx = (dar, daz, dan), dGh = (dar, daz, dan r), dh_prev = dh z + dGh W_hh.
# RNN:  h' = act(a),  backward: da = dh act'(.) from h' (tanh: 1 - h'^2, relu: h' > 0).
from cython cimport floating

cdef extern from "rf_math.h" nogil:
    float rf_sigmoidf(float x)
    double rf_sigmoid(double x)
    float rf_tanhf(float x)
    double rf_tanh(double x)


cdef inline floating sigm(floating x) noexcept nogil:
    if floating is float:
        return rf_sigmoidf(x)
    else:
        return rf_sigmoid(x)


cdef inline floating tanh_(floating x) noexcept nogil:
    if floating is float:
        return rf_tanhf(x)
    else:
        return rf_tanh(x)


cdef inline void lstm_fwd(int nb, int H, floating* G, const floating* b, const floating* cp,
                          floating* c, floating* tc, floating* y, int ldy) noexcept nogil:
    """One LSTM step: G (nb, 4H) pre-activations -> gates; c, tc (nb, H); y rows of stride ldy.

    ``cp`` is c_{t-1} (nb, H); ``tc`` may be NULL (inference keeps no tanh(c))."""
    cdef int r, j
    cdef floating gi, gf, gg, go, cc, th
    cdef floating* g
    for r in range(nb):
        g = G + <Py_ssize_t>r * 4 * H
        for j in range(H):
            gi = sigm(g[j] + b[j])
            gf = sigm(g[H + j] + b[H + j])
            gg = tanh_(g[2 * H + j] + b[2 * H + j])
            go = sigm(g[3 * H + j] + b[3 * H + j])
            cc = gf * cp[<Py_ssize_t>r * H + j] + gi * gg
            th = tanh_(cc)
            g[j] = gi
            g[H + j] = gf
            g[2 * H + j] = gg
            g[3 * H + j] = go
            c[<Py_ssize_t>r * H + j] = cc
            if tc != NULL:
                tc[<Py_ssize_t>r * H + j] = th
            y[<Py_ssize_t>r * ldy + j] = go * th


cdef inline void lstm_bwd(int nb, int H, floating* G, const floating* cp, const floating* tc,
                          const floating* dy, int lddy, floating* dh, floating* dc) noexcept nogil:
    """Backward of one LSTM step. dh (nb, H) holds the gradient from step t+1 (or dh_n); dy the
    output gradient. On exit G holds dG and dc the gradient wrt c_{t-1}; dh is left for the GEMM."""
    cdef int r, j
    cdef Py_ssize_t k
    cdef floating gi, gf, gg, go, th, dhh, dct
    cdef floating* g
    for r in range(nb):
        g = G + <Py_ssize_t>r * 4 * H
        for j in range(H):
            k = <Py_ssize_t>r * H + j
            gi = g[j]
            gf = g[H + j]
            gg = g[2 * H + j]
            go = g[3 * H + j]
            th = tc[k]
            dhh = dy[<Py_ssize_t>r * lddy + j] + dh[k]
            dct = dc[k] + dhh * go * (1 - th * th)
            g[j] = dct * gg * gi * (1 - gi)
            g[H + j] = dct * cp[k] * gf * (1 - gf)
            g[2 * H + j] = dct * gi * (1 - gg * gg)
            g[3 * H + j] = dhh * th * go * (1 - go)
            dc[k] = dct * gf


cdef inline void gru_fwd(int nb, int H, floating* G, const floating* gh, const floating* b,
                         const floating* bhn, const floating* hp, int ldh, floating* hn,
                         floating* y, int ldy) noexcept nogil:
    """One GRU step: G (nb, 3H) input pre-activations, gh (nb, 3H) = h W_hh^T; hp rows of h_{t-1}
    (stride ldh). Writes gates r, z, n into G, W_hn h + b_hn into hn (NULL in inference), h into y."""
    cdef int r, j
    cdef floating gr, gz, gn, hh
    cdef floating* g
    cdef const floating* q
    for r in range(nb):
        g = G + <Py_ssize_t>r * 3 * H
        q = gh + <Py_ssize_t>r * 3 * H
        for j in range(H):
            gr = sigm(g[j] + b[j] + q[j])
            gz = sigm(g[H + j] + b[H + j] + q[H + j])
            hh = q[2 * H + j] + bhn[j]
            gn = tanh_(g[2 * H + j] + b[2 * H + j] + gr * hh)
            g[j] = gr
            g[H + j] = gz
            g[2 * H + j] = gn
            if hn != NULL:
                hn[<Py_ssize_t>r * H + j] = hh
            y[<Py_ssize_t>r * ldy + j] = (1 - gz) * gn + gz * hp[<Py_ssize_t>r * ldh + j]


cdef inline void gru_bwd(int nb, int H, floating* G, floating* hn, const floating* hp, int ldh,
                         const floating* dy, int lddy, floating* dh) noexcept nogil:
    """Backward of one GRU step. On exit G holds dGx = (dar, daz, dan), hn holds dan * r (the
    recurrent n-gradient) and dh holds dh * z, to which the GEMMs add dGh W_hh."""
    cdef int r, j
    cdef Py_ssize_t k
    cdef floating gr, gz, gn, dhh, dan
    cdef floating* g
    for r in range(nb):
        g = G + <Py_ssize_t>r * 3 * H
        for j in range(H):
            k = <Py_ssize_t>r * H + j
            gr = g[j]
            gz = g[H + j]
            gn = g[2 * H + j]
            dhh = dy[<Py_ssize_t>r * lddy + j] + dh[k]
            dan = dhh * (1 - gz) * (1 - gn * gn)
            g[j] = dan * hn[k] * gr * (1 - gr)
            g[H + j] = dhh * (hp[<Py_ssize_t>r * ldh + j] - gn) * gz * (1 - gz)
            g[2 * H + j] = dan
            hn[k] = dan * gr
            dh[k] = dhh * gz


cdef inline void rnn_fwd(int nb, int H, int relu, floating* G, const floating* b,
                         floating* y, int ldy) noexcept nogil:
    """One simple-RNN step: G (nb, H) pre-activations -> h (kept in G for backward and in y)."""
    cdef int r, j
    cdef floating a
    for r in range(nb):
        for j in range(H):
            a = G[<Py_ssize_t>r * H + j] + b[j]
            if relu:
                a = a if a > 0 else 0
            else:
                a = tanh_(a)
            G[<Py_ssize_t>r * H + j] = a
            y[<Py_ssize_t>r * ldy + j] = a


cdef inline void rnn_bwd(int nb, int H, int relu, floating* G, const floating* dy, int lddy,
                         const floating* dh) noexcept nogil:
    """Backward of one simple-RNN step: G (h on entry) becomes dG = (dy + dh) act'."""
    cdef int r, j
    cdef Py_ssize_t k
    cdef floating a, d
    for r in range(nb):
        for j in range(H):
            k = <Py_ssize_t>r * H + j
            a = G[k]
            d = dy[<Py_ssize_t>r * lddy + j] + dh[k]
            if relu:
                G[k] = d if a > 0 else 0
            else:
                G[k] = d * (1 - a * a)
