"""Sample-order invariance of the float32 kernels: a batch's rows permuted give the outputs and final
states permuted, bit for bit, on every kernel path that splits a step's rows into blocks of different
sizes (csrc/rf_gemm.h: row blocks of 8 and tails of 1-7, the few-rows product at 1-4 rows, K in chunks;
every one sums a row's products in one order) or shares them out among threads (row tasks of unequal
size, directions), with and without lengths, in inference and in training's forward.

Before every product summed alike, a row in a tail block of 1-4 rows summed even and odd k apart and one in
a block of 8 in one chain: LSTM B=9 or B=20, rows permuted, came out 1-2e-7 apart, and scikit-learn's
``check_methods_sample_order_invariance`` failed once short calls took the packed kernels.
"""
import numpy as np
import pytest

from rnnfast import nn
from rnnfast._planner import Plan

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# (cell, B, T, I, H, layers, bidirectional, forced plan)
CASES = {
    # row tasks of 5 + 4 rows: a 5-row block beside the few-rows product
    "rows-B9-lstm": ("lstm", 9, 8, 24, 48, 1, False, Plan("packed", "step", "rows", 2, True)),
    # 9 + 8 rows: a block of 8 and a tail of 1; stacked
    "rows-B17-gru-stacked": ("gru", 17, 6, 16, 40, 2, False, Plan("packed", "step", "rows", 2, True)),
    # one task of 20 rows: 8 + 8 + 4; K = I + H = 330 in two chunks
    "rows-B20-one-thread-lstm": ("lstm", 20, 5, 200, 130, 1, False, Plan("packed", "step", "none", 1, True)),
    # the input product over all steps (B T = 60 rows: 7 blocks of 8 and a tail of 4), then row tasks
    "hoisted-B12-rnn": ("rnn", 12, 5, 40, 70, 1, False, Plan("packed", "gemm", "rows", 2, True)),
    # the few-rows kernel, each thread its units for all 3 rows, panels two at a time (and one left)
    "units-B3-lstm": ("lstm", 3, 7, 20, 100, 1, False, Plan("units", "step", "units", 2, True)),
    # ... on the weight rows in place (rf_gemv_nb: groups of 4 rows and the 1-3 left)
    "units-rows-B7-gru": ("gru", 7, 6, 33, 64, 1, False, Plan("units", "step", "units", 2, False)),
    # a direction a thread, 11 rows each (8 + 3)
    "dirs-B11-lstm-bi": ("lstm", 11, 6, 16, 32, 1, True, Plan("packed", "step", "directions", 2, True)),
}


def _layer(cell, I, H, L, bidir, plan):
    m = CELLS[cell](I, H, num_layers=L, bidirectional=bidir, dtype=np.float32, seed=3)
    m._forced_plan = plan
    return m


@pytest.mark.parametrize("training", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_permuted_rows_give_permuted_outputs_bit_for_bit(case, ragged, training):
    cell, B, T, I, H, L, bidir, plan = CASES[case]
    rng = np.random.default_rng(B)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    if ragged:
        lengths[0] = T
    perm = rng.permutation(B)
    m = _layer(cell, I, H, L, bidir, plan)
    assert m.plan_for(x, lengths, training=training) == plan
    m.train(training)
    out, hn = m(x, lengths=lengths, n_threads=plan.threads)
    out_p, hn_p = m(x[perm], lengths=None if lengths is None else lengths[perm], n_threads=plan.threads)
    np.testing.assert_array_equal(out_p, out[perm])
    for a, b in zip(hn if isinstance(hn, tuple) else (hn,), hn_p if isinstance(hn_p, tuple) else (hn_p,)):
        np.testing.assert_array_equal(b, a[:, perm])
