"""Row blocks of 5, 6 and 7 rows in the packed per-step product (csrc/rf_gemm.h: every row count 1..8 has its
own copy of the micro-kernel loop), at the shapes that select them, against PyTorch with the same weights:
float32 inference and training (outputs, dx, every gradient), with and without lengths (a ragged batch
steps through every row count below B), float64 at the same shapes.

* B = 5..7 on the few-rows kernel (``units``: every thread's columns for all rows, one row block);
* B = 13 and 15 by row tasks (blocks of 7 + 6 and 8 + 7 rows), stacked;
* bidirectional, one task per direction, 6-7 rows each;
* the input product over all steps as one GEMM (rows B T = 35: a 3-row tail block), then row tasks of 4 and
  3 rows.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
# (_single_threaded_torch: the autouse fixture, one torch thread)
from nn.test_planned_paths import check_against_torch  # noqa: E402
from nn.test_torch import _single_threaded_torch  # noqa: E402,F401

# the shapes select their kernel paths by the reference machine's caches (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("reference_machine")

# (cell, B, T, I, H, layers, bidirectional, the plan at 2 threads in inference and training)
CASES = {
    "units-B5-lstm": ("lstm", 5, 12, 48, 96, 1, False, "units+panels proj=step split=unitsx2"),
    # (H=72 shares out as 64 + 8 units, whose panels the planner counts now: the packed kernel there; at
    # H=96 two row tasks of 3 rows now win, rows_per_task)
    "units-B6-gru-stacked": ("gru", 6, 16, 40, 128, 2, False, "units+panels proj=step split=unitsx2"),
    "units-B5-wide-lstm": ("lstm", 5, 4, 512, 384, 1, False, "units+panels proj=gemm split=unitsx2"),
    "rows-B13-lstm-stacked": ("lstm", 13, 6, 64, 64, 2, False, "packed proj=step split=rowsx2"),
    "rows-B15-gru": ("gru", 15, 5, 24, 80, 1, False, "packed proj=step split=rowsx2"),
    "dirs-B7-rnn-bi": ("rnn", 7, 6, 33, 130, 1, True, "packed proj=step split=directionsx2"),
    "dirs-B6-lstm-bi": ("lstm", 6, 5, 64, 64, 1, True, "packed proj=step split=directionsx2"),
    "hoisted-B7-lstm": ("lstm", 7, 5, 1024, 100, 1, False, "packed proj=gemm split=rowsx2"),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_row_blocks_match_torch(case, ragged, dtype):
    cell, B, T, I, H, L, bidir, _ = CASES[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = None
    if ragged:
        lengths = np.arange(B) % T + 1  # every length 1..T, so a step has every row count up to B
        lengths[-1] = T
    dout = rng.standard_normal((B, T, H * (2 if bidir else 1))).astype(dtype)
    check_against_torch(CASES[case], x, lengths, dout)
