"""The few-rows kernel (csrc/rf_units.h, its product rf_units_few in csrc/rf_gemm.h) at 2 and 3 rows on the
shapes issue 10's batch-2-3 target measures (I = 64, H = 256: whole 32-column panels, a long K, the weights
in L2), forced on one thread and on two, x_t W_ih^T in the step or over all steps first, against PyTorch
with the same weights: float32 inference, training's forward, dx and every gradient; with lengths (steps of
3, 2 and 1 rows), bidirectional and stacked. (The product keeps each weight vector in a register for all
rows: RF_IN_REG.)
"""
import numpy as np
import pytest

pytest.importorskip("torch")
from rnnfast._planner import Plan  # noqa: E402

# (_single_threaded_torch: the autouse fixture, one torch thread)
from nn.test_planned_paths import _close, _pair, _torch_run  # noqa: E402
from nn.test_torch import _single_threaded_torch  # noqa: E402,F401

# (the weight rows in place, and packed into panels first)
PLANS = [Plan("units", "step", "none", 1), Plan("units", "gemm", "none", 1), Plan("units", "step", "units", 2),
         Plan("units", "step", "none", 1, True), Plan("units", "gemm", "units", 2, True)]

# (layers, bidirectional)
LAYOUTS = {"uni": (1, False), "stacked": (2, False), "bi": (1, True)}


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("B", [2, 3])
@pytest.mark.parametrize("plan", PLANS, ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_few_rows_kernel_matches_torch(cell, plan, B, layout, ragged):
    L, bidir = LAYOUTS[layout]
    T, I, H = 6, 64, 256
    rng = np.random.default_rng(11 + B)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = None
    if ragged:
        lengths = np.array([T, 1, 4][:B])  # steps of B rows, then fewer, down to one
    dout = rng.standard_normal((B, T, H * (2 if bidir else 1))).astype(np.float32)
    tmod, rmod = _pair(cell, I, H, L, bidir, np.float32)
    rmod._forced_plan = plan
    assert rmod.plan_for(x, lengths, n_threads=plan.threads) == plan
    t_out, t_dx, t_grads = _torch_run(tmod, x, lengths, dout)
    rmod.eval()
    _close(rmod(x, lengths=lengths, n_threads=plan.threads)[0], t_out, np.float32, "inference out")
    rmod.train()
    rmod.zero_grad()
    out, _ = rmod(x, lengths=lengths, n_threads=plan.threads)
    _close(out, t_out, np.float32, "training out")
    dx, _ = rmod.backward(dout, n_threads=plan.threads)
    _close(dx, t_dx, np.float32, "dx")
    for k, g in t_grads.items():
        _close(rmod.grads[k], g, np.float32, k)


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("B", [5, 6, 9, 10])
@pytest.mark.parametrize("plan", [Plan("units", "gemm", "none", 1), Plan("units", "step", "units", 2)], ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_more_rows_on_the_weight_rows_in_place_match_torch(cell, plan, B, ragged):
    """5-10 rows on the weight rows in place (a tuning candidate in inference: rf_gemv_nb's groups of 5, 3,
    or 4 and one more pass for the rows left), the rows per step shrinking with the lengths, against PyTorch."""
    T, I, H = 5, 48, 96
    rng = np.random.default_rng(B)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([T - (i % T) for i in range(B)]) if ragged else None
    tmod, rmod = _pair(cell, I, H, 1, False, np.float32)
    rmod._forced_plan = plan
    t_out, _, _ = _torch_run(tmod, x, lengths, rng.standard_normal((B, T, H)).astype(np.float32))
    rmod.eval()
    _close(rmod(x, lengths=lengths, n_threads=plan.threads)[0], t_out, np.float32, "inference out")
