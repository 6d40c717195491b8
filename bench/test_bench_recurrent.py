"""rnnfast vs PyTorch: one recurrent layer, float32, batch-first, same thread count, same weights.

Cases: cell (LSTM, GRU) x shape (small, medium, large, latency) x mode (infer, train) x impl (rnnfast,
torch). Each (cell, shape, mode) is one benchmark group, e.g. ``lstm-small-train``, so both libraries
sit side by side in the report; the two cases of a group run back to back.

- infer: eval-mode forward (torch under ``torch.inference_mode()``).
- train: forward + backward of one layer with loss = sum of outputs (rnnfast: ``dout = ones``; torch:
  ``out.sum().backward()``), computing the input gradient and the weight/bias gradients on both sides.
  rnnfast accumulates into ``layer.grads`` (its design); torch's grads are reset with
  ``zero_grad(set_to_none=True)`` as in a usual training loop.

FLOPs per time step and sequence: 2*G*H*(I+H) forward (G = 4 LSTM, 3 GRU); training = 3x forward.
``extra_info`` holds the FLOP count and GFLOP/s at the median and at the minimum.

Run as ``pytest bench/ --benchmark-only`` (see bench/README.md); the repo's ``testpaths = ["tests"]``
keeps a plain ``pytest`` from collecting this folder.
"""
import numpy as np
import pytest

import rnnfast
from rnnfast.nn import GRU, LSTM

# name: (B, T, I, H)
SHAPES = {
    "small": (32, 50, 64, 128),
    "medium": (64, 100, 128, 256),
    "large": (128, 100, 512, 512),
    "latency": (1, 100, 128, 256),
}

# Rounds per shape (benchmark.pedantic: warm-up rounds, then timed rounds of one call each). Sized so the
# whole suite (32 cases) takes a few minutes on 2 cores; the large training cases are ~1 s a call.
ROUNDS = {
    "small": dict(warmup_rounds=3, rounds=30),
    "medium": dict(warmup_rounds=1, rounds=10),
    "large": dict(warmup_rounds=1, rounds=5),
    "latency": dict(warmup_rounds=3, rounds=30),
}

CELLS = {"lstm": (LSTM, 4), "gru": (GRU, 3)}
MODES = ("infer", "train")
IMPLS = ("rnnfast", "torch")

CASES = [(c, s, m, i) for c in CELLS for s in SHAPES for m in MODES for i in IMPLS]


def flops(cell, shape, mode):
    B, T, I, H = SHAPES[shape]
    G = CELLS[cell][1]
    f = 2.0 * G * H * (I + H) * B * T
    return 3.0 * f if mode == "train" else f


def _rnnfast_fn(cell, x, mode, state_dict):
    H = state_dict["weight_hh_l0"].shape[1]
    layer = CELLS[cell][0](x.shape[2], H, dtype=np.float32, seed=0)
    layer.load_state_dict(state_dict)
    if mode == "infer":
        layer.eval()
        return lambda: layer.forward(x)
    layer.train()
    dout = np.ones((x.shape[0], x.shape[1], H), np.float32)  # loss = sum of outputs

    def step():
        layer.forward(x)
        return layer.backward(dout)

    return step


def _torch_fn(torch, cell, x_np, mode, state_dict):
    H = state_dict["weight_hh_l0"].shape[1]
    mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
        x_np.shape[2], H, num_layers=1, batch_first=True, dtype=torch.float32)
    mod.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    x = torch.from_numpy(x_np.copy())
    if mode == "infer":
        mod.eval()

        def step():
            with torch.inference_mode():
                return mod(x)

        return step
    mod.train()
    x.requires_grad_(True)  # rnnfast's backward computes dx too

    def step():
        mod.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = mod(x)
        out.sum().backward()
        return x.grad

    return step


@pytest.mark.parametrize("cell,shape,mode,impl", CASES, ids=["-".join(c) for c in CASES])
def test_recurrent(benchmark, torch_threads, record, cell, shape, mode, impl):
    B, T, I, H = SHAPES[shape]
    x = np.random.default_rng(1234).standard_normal((B, T, I)).astype(np.float32)
    sd = _reference_state_dict(cell, I, H)  # same weights for both libraries
    if impl == "torch":
        torch = pytest.importorskip("torch")
        fn = _torch_fn(torch, cell, x, mode, sd)
    else:
        fn = _rnnfast_fn(cell, x, mode, sd)

    f = flops(cell, shape, mode)
    benchmark.group = f"{cell}-{shape}-{mode}"
    benchmark.extra_info.update(impl=impl, cell=cell, shape=shape, mode=mode, B=B, T=T, I=I, H=H,
                                threads=torch_threads, flop=f)
    benchmark.pedantic(fn, iterations=1, **ROUNDS[shape])

    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        median = stats.stats.median
        benchmark.extra_info["gflops_median"] = round(f / median / 1e9, 2)
        benchmark.extra_info["gflops_best"] = round(f / stats.stats.min / 1e9, 2)
        record(benchmark.group, impl, median, f / median / 1e9)


def _reference_state_dict(cell, I, H):
    """Weights shared by both libraries: uniform(-1/sqrt(H), 1/sqrt(H)) from a fixed seed, torch's keys."""
    G = CELLS[cell][1]
    rng = np.random.default_rng(42)
    k = 1.0 / np.sqrt(H)
    return {
        "weight_ih_l0": rng.uniform(-k, k, (G * H, I)).astype(np.float32),
        "weight_hh_l0": rng.uniform(-k, k, (G * H, H)).astype(np.float32),
        "bias_ih_l0": rng.uniform(-k, k, (G * H,)).astype(np.float32),
        "bias_hh_l0": rng.uniform(-k, k, (G * H,)).astype(np.float32),
    }
