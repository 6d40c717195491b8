# The fused elementwise passes of the three cells (maths and shapes: csrc/rf_cells_impl.h), typed for
# Cython's ``floating``: float runs the fast-activation C instance, double the exact one. These
# wrappers update all H units; the C functions also take a unit count n < H (the latency kernel).
from cython cimport floating

cdef extern from "rf_cells.h" nogil:
    void rf_lstm_fwd_f(int nb, int n, int H, float* G, const float* b, const float* cp, float* c, float* tc,
                       float* y, int ldy)
    void rf_lstm_fwd_d(int nb, int n, int H, double* G, const double* b, const double* cp, double* c, double* tc,
                       double* y, int ldy)
    void rf_lstm_bwd_f(int nb, int n, int H, float* G, const float* cp, const float* tc, const float* dy, int lddy,
                       float* dh, float* dc)
    void rf_lstm_bwd_d(int nb, int n, int H, double* G, const double* cp, const double* tc, const double* dy,
                       int lddy, double* dh, double* dc)
    void rf_gru_fwd_f(int nb, int n, int H, float* G, const float* gh, const float* b, const float* bhn,
                      const float* hp, int ldh, float* hn, float* y, int ldy)
    void rf_gru_fwd_d(int nb, int n, int H, double* G, const double* gh, const double* b, const double* bhn,
                      const double* hp, int ldh, double* hn, double* y, int ldy)
    void rf_gru_bwd_f(int nb, int n, int H, float* G, float* hn, const float* hp, int ldh, const float* dy,
                      int lddy, float* dh)
    void rf_gru_bwd_d(int nb, int n, int H, double* G, double* hn, const double* hp, int ldh, const double* dy,
                      int lddy, double* dh)
    void rf_grb_fwd_rz_f(int nb, int n, int H, float* G, const float* b, const float* hp, int ldh, float* s, int lds)
    void rf_grb_fwd_rz_d(int nb, int n, int H, double* G, const double* b, const double* hp, int ldh, double* s,
                         int lds)
    void rf_grb_fwd_n_f(int nb, int n, int H, float* G, const float* b, const float* hp, int ldh, float* y, int ldy)
    void rf_grb_fwd_n_d(int nb, int n, int H, double* G, const double* b, const double* hp, int ldh, double* y,
                        int ldy)
    void rf_grb_bwd_nz_f(int nb, int n, int H, float* G, const float* hp, int ldh, const float* dy, int lddy,
                         float* dh)
    void rf_grb_bwd_nz_d(int nb, int n, int H, double* G, const double* hp, int ldh, const double* dy, int lddy,
                         double* dh)
    void rf_grb_bwd_r_f(int nb, int n, int H, float* G, const float* hp, int ldh, const float* ds, int ldds,
                        float* dh)
    void rf_grb_bwd_r_d(int nb, int n, int H, double* G, const double* hp, int ldh, const double* ds, int ldds,
                        double* dh)
    void rf_rnn_fwd_f(int nb, int n, int H, int relu, float* G, const float* b, float* y, int ldy)
    void rf_rnn_fwd_d(int nb, int n, int H, int relu, double* G, const double* b, double* y, int ldy)
    void rf_rnn_bwd_f(int nb, int n, int H, int relu, float* G, const float* dy, int lddy, const float* dh)
    void rf_rnn_bwd_d(int nb, int n, int H, int relu, double* G, const double* dy, int lddy, const double* dh)


cdef inline void lstm_fwd(int nb, int H, floating* G, const floating* b, const floating* cp,
                          floating* c, floating* tc, floating* y, int ldy) noexcept nogil:
    if floating is float:
        rf_lstm_fwd_f(nb, H, H, G, b, cp, c, tc, y, ldy)
    else:
        rf_lstm_fwd_d(nb, H, H, G, b, cp, c, tc, y, ldy)


cdef inline void lstm_bwd(int nb, int H, floating* G, const floating* cp, const floating* tc,
                          const floating* dy, int lddy, floating* dh, floating* dc) noexcept nogil:
    if floating is float:
        rf_lstm_bwd_f(nb, H, H, G, cp, tc, dy, lddy, dh, dc)
    else:
        rf_lstm_bwd_d(nb, H, H, G, cp, tc, dy, lddy, dh, dc)


cdef inline void gru_fwd(int nb, int H, floating* G, const floating* gh, const floating* b,
                         const floating* bhn, const floating* hp, int ldh, floating* hn,
                         floating* y, int ldy) noexcept nogil:
    if floating is float:
        rf_gru_fwd_f(nb, H, H, G, gh, b, bhn, hp, ldh, hn, y, ldy)
    else:
        rf_gru_fwd_d(nb, H, H, G, gh, b, bhn, hp, ldh, hn, y, ldy)


cdef inline void gru_bwd(int nb, int H, floating* G, floating* hn, const floating* hp, int ldh,
                         const floating* dy, int lddy, floating* dh) noexcept nogil:
    if floating is float:
        rf_gru_bwd_f(nb, H, H, G, hn, hp, ldh, dy, lddy, dh)
    else:
        rf_gru_bwd_d(nb, H, H, G, hn, hp, ldh, dy, lddy, dh)


# GRU, reset before (rf_cells_impl.h): two passes a step each way, around the n gate's product over r h
cdef inline void grb_fwd_rz(int nb, int H, floating* G, const floating* b, const floating* hp, int ldh,
                            floating* s, int lds) noexcept nogil:
    if floating is float:
        rf_grb_fwd_rz_f(nb, H, H, G, b, hp, ldh, s, lds)
    else:
        rf_grb_fwd_rz_d(nb, H, H, G, b, hp, ldh, s, lds)


cdef inline void grb_fwd_n(int nb, int H, floating* G, const floating* b, const floating* hp, int ldh,
                           floating* y, int ldy) noexcept nogil:
    if floating is float:
        rf_grb_fwd_n_f(nb, H, H, G, b, hp, ldh, y, ldy)
    else:
        rf_grb_fwd_n_d(nb, H, H, G, b, hp, ldh, y, ldy)


cdef inline void grb_bwd_nz(int nb, int H, floating* G, const floating* hp, int ldh, const floating* dy,
                            int lddy, floating* dh) noexcept nogil:
    if floating is float:
        rf_grb_bwd_nz_f(nb, H, H, G, hp, ldh, dy, lddy, dh)
    else:
        rf_grb_bwd_nz_d(nb, H, H, G, hp, ldh, dy, lddy, dh)


cdef inline void grb_bwd_r(int nb, int H, floating* G, const floating* hp, int ldh, const floating* ds,
                           int ldds, floating* dh) noexcept nogil:
    if floating is float:
        rf_grb_bwd_r_f(nb, H, H, G, hp, ldh, ds, ldds, dh)
    else:
        rf_grb_bwd_r_d(nb, H, H, G, hp, ldh, ds, ldds, dh)


cdef inline void rnn_fwd(int nb, int H, int relu, floating* G, const floating* b,
                         floating* y, int ldy) noexcept nogil:
    if floating is float:
        rf_rnn_fwd_f(nb, H, H, relu, G, b, y, ldy)
    else:
        rf_rnn_fwd_d(nb, H, H, relu, G, b, y, ldy)


cdef inline void rnn_bwd(int nb, int H, int relu, floating* G, const floating* dy, int lddy,
                         const floating* dh) noexcept nogil:
    if floating is float:
        rf_rnn_bwd_f(nb, H, H, relu, G, dy, lddy, dh)
    else:
        rf_rnn_bwd_d(nb, H, H, relu, G, dy, lddy, dh)
