"""The kernel paths the planner picks for shapes off the small test grid, at the shapes that select them (no
forced plan), against PyTorch with the same weights: float32 inference, and training's forward and backward
(every gradient), with and without lengths; float64 (BLAS) at the same shapes.

* bidirectional, a few rows (one included), weights that fit L2 only when two threads share them: the
  few-rows kernel runs the directions one after the other (``units``), the input product over all steps
  first (``proj=gemm``);
* wide input, small H: the input product over all steps on rf's packed GEMM (several row blocks, GH not a
  multiple of its 32-column panels), the recurrence by row tasks;
* bidirectional with row tasks per direction, the input product of both directions in one parallel region;
* long calls of a wide input on the few-rows and batch-1 kernels (the input product over many rows);
* the few-rows kernel on its weight rows in place (short calls, or weights beyond L2), and packed first
  (``units+panels``: long calls);
* weight rows read in place 4 KB apart (H = 1024: a group's rows in one L1 set), on the batch-1 and few-rows
  kernels.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# (_single_threaded_torch: the autouse fixture, one torch thread)
from nn.test_torch import TORCH_DTYPE, _classes, _single_threaded_torch  # noqa: E402,F401

# the shapes select their kernel paths by the reference machine's caches (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("reference_machine")


@pytest.fixture(autouse=True)
def _packing_at_every_call(monkeypatch):
    """The plans below are those of calls that pack at every call (with packs kept the few-rows kernel takes
    panels at most of these shapes: rnnfast._planner._panels); tests/nn/test_packs.py holds kept packs to
    these calls' results bit for bit."""
    from rnnfast.nn import _packs

    monkeypatch.setattr(_packs, "KEEP_PACKS", False)

# (cell, B, T, I, H, layers, bidirectional, the plan at 2 threads in inference; training's the same, the
# few-rows kernel packing its weights)
CASES = {
    "bi-B2-wide-lstm": ("lstm", 2, 5, 768, 384, 2, True, "units proj=gemm split=unitsx2"),
    "bi-B2-wide-gru": ("gru", 2, 4, 768, 384, 1, True, "units proj=gemm split=unitsx2"),
    "bi-B1-gru": ("gru", 1, 6, 256, 512, 1, True, "units proj=gemm split=unitsx2"),
    "bi-B1-lstm": ("lstm", 1, 6, 256, 384, 2, True, "units proj=gemm split=unitsx2"),
    "wide-input-lstm": ("lstm", 8, 30, 1024, 100, 1, False, "packed proj=gemm split=rowsx2"),
    "wide-input-gru": ("gru", 8, 20, 1024, 128, 1, False, "packed proj=gemm split=rowsx2"),
    "bi-rows-rnn": ("rnn", 6, 10, 128, 512, 1, True, "packed proj=gemm split=directionsx2"),
    # one row a direction, small weights: the input product hoisted for the steps' too few FMA chains
    "bi-B1-tiny-lstm": ("lstm", 1, 100, 24, 48, 2, True, "packed proj=gemm split=directionsx2"),
    # many rows of a wide input: the projection packs a thread's panels first, then row blocks
    "long-wide-units-lstm": ("lstm", 3, 200, 1024, 200, 1, False, "units+panels proj=gemm split=unitsx2"),
    # a few rows of weights beyond L2 over a middling length: the few-rows kernel reads the rows in place
    "mid-B2-big-lstm": ("lstm", 2, 40, 128, 768, 1, False, "units proj=gemm split=unitsx2"),
    "long-wide-batch1-gru": ("gru", 1, 200, 1024, 256, 1, False, "latency+panels proj=gemm split=unitsx2"),
    # weight rows 4 KB apart read in place (a group's four rows in one L1 set, csrc/rf_gemm.h): the batch-1
    # kernel's rf_gemv_rows, and the few-rows kernel's rf_gemv_nb with one row a direction
    "batch1-rows-4kb-gru": ("gru", 1, 6, 512, 1024, 1, False, "latency proj=gemm split=unitsx2"),
    "bi-B1-rows-4kb-lstm": ("lstm", 1, 5, 256, 1024, 1, True, "units proj=gemm split=unitsx2"),
}


def _pair(cell, I, H, L, bidir, dtype):
    tcls, rcls = _classes(cell)
    torch.manual_seed(0)
    tmod = tcls(I, H, num_layers=L, bidirectional=bidir, batch_first=True).to(TORCH_DTYPE[dtype])
    rmod = rcls(I, H, num_layers=L, bidirectional=bidir, dtype=dtype, seed=1)
    rmod.load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
    return tmod, rmod


def _torch_run(tmod, x, lengths, dout):
    xt = torch.tensor(x, requires_grad=True)
    tmod.zero_grad(set_to_none=True)
    if lengths is None:
        out, _ = tmod(xt)
    else:
        packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(tmod(packed)[0], batch_first=True, total_length=x.shape[1])
    (out * torch.tensor(dout)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), {k: p.grad.numpy() for k, p in tmod.named_parameters()}


def _close(actual, desired, dtype, what):
    scale = max(1.0, float(np.max(np.abs(desired))))
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-10, 1e-12)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol * scale, err_msg=what)


def check_against_torch(spec, x, lengths, dout):
    """Run the layer of ``spec`` (cell, B, T, I, H, layers, bidirectional, plan) on ``x`` (dtype: x's) beside
    PyTorch's: float32 first asserts the plan at 2 threads (inference and training); then inference,
    training's forward, dx and every gradient."""
    cell, B, T, I, H, L, bidir, plan = spec
    dtype = x.dtype.type
    tmod, rmod = _pair(cell, I, H, L, bidir, dtype)
    if dtype == np.float32:
        for training in (False, True):
            # (training's few-rows kernel always packs: "units" in inference is "units+panels" there)
            want = plan.replace("units ", "units+panels ") if training else plan
            assert str(rmod.plan_for(x, lengths, training=training, n_threads=2)) == want
    t_out, t_dx, t_grads = _torch_run(tmod, x, lengths, dout)
    rmod.eval()
    _close(rmod(x, lengths=lengths, n_threads=2)[0], t_out, dtype, "inference out")
    rmod.train()
    rmod.zero_grad()
    out, _ = rmod(x, lengths=lengths, n_threads=2)
    _close(out, t_out, dtype, "training out")
    dx, _ = rmod.backward(dout, n_threads=2)
    _close(dx, t_dx, dtype, "dx")
    for k, g in t_grads.items():
        _close(rmod.grads[k], g, dtype, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_planned_path_matches_torch(case, ragged, dtype):
    cell, B, T, I, H, L, bidir, plan = CASES[case]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = None
    if ragged:
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = 1
        lengths[-1] = T  # (one row: its whole length, given)
    dout = rng.standard_normal((B, T, H * (2 if bidir else 1))).astype(dtype)
    check_against_torch(CASES[case], x, lengths, dout)
