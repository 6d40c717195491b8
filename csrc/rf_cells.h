/* Fused cell passes for float (fast activations) and double (exact), from one template
 * (rf_cells_impl.h); runtime CPU dispatch with GCC's target_clones (AVX-512, AVX2, baseline) where
 * the toolchain supports it, so one wheel runs everywhere and uses the widest vectors it finds. */
#ifndef RF_CELLS_H
#define RF_CELLS_H

#include <stddef.h>
#include "rf_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(RF_NO_CLONES)
#define RF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_CLONES
#endif

/* The cells as the kernels number them: 0 RNN, 1 LSTM, 2 GRU (reset after the product, PyTorch's), 3 GRU
 * reset before (Keras reset_after=False, ONNX linear_before_reset=0); G gates per unit. */
#define RF_GATES(cell) ((cell) == 1 ? 4 : ((cell) >= 2 ? 3 : 1))
#define RF_IS_GRU(cell) ((cell) == 2 || (cell) == 3)

#define RF_T float
#define RF_NAME(n) rf_##n##_f
#define RF_SIGM rf_fast_sigmoidf
#define RF_TANH rf_fast_tanhf
#include "rf_cells_impl.h"
#undef RF_T
#undef RF_NAME
#undef RF_SIGM
#undef RF_TANH

#define RF_T double
#define RF_NAME(n) rf_##n##_d
#define RF_SIGM rf_sigmoid
#define RF_TANH rf_tanh
#include "rf_cells_impl.h"
#undef RF_T
#undef RF_NAME
#undef RF_SIGM
#undef RF_TANH

#endif
