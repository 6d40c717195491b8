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

More groups, the shapes of ``bench/compare.py``:

- ``lstm2bi-medium-{infer,train}``: LSTM, 2 layers, bidirectional, medium shape.
- ``{lstm,gru}-step``: streaming latency of one ``step`` call (B=1, I=128, H=256), the state carried from
  call to call; torch runs ``nn.LSTMCell`` / ``nn.GRUCell`` with the same weights. Times are per call.
- ``{lstm,gru}-varlen-{infer,train}``: medium shape, lengths uniform in [T/4, T] (total a multiple of T).
  ``rnnfast``: ``forward(x, lengths=...)``; ``rnnfast-dense``: the same tokens packed densely into
  sum(lengths)/T full-length sequences; ``torch-packed``: ``pack_padded_sequence`` -> module ->
  ``pad_packed_sequence``.
  FLOPs count the valid steps only (the same for all three).

Run as ``pytest bench/ --benchmark-only`` (see bench/README.md); the repo's ``testpaths = ["tests"]``
keeps a plain ``pytest`` from collecting this folder.
"""
import os
import sys

import numpy as np
import pytest

from rnnfast.nn import GRU, LSTM

# pytest imports this file with --import-mode=importlib, which puts no folder on sys.path: find _cases.py here
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _cases  # noqa: E402
from _cases import SHAPES, STEP_SHAPE  # noqa: E402; name: (B, T, I, H); B, I, H of the streaming case

# Rounds per shape (benchmark.pedantic: warm-up rounds, then timed rounds of one call each). Sized so the
# 32 cases of test_recurrent take a few minutes on 2 cores; the large training cases are ~1 s a call.
ROUNDS = {
    "small": dict(warmup_rounds=3, rounds=30),
    "medium": dict(warmup_rounds=1, rounds=10),
    "large": dict(warmup_rounds=1, rounds=5),
    "latency": dict(warmup_rounds=3, rounds=30),
}

CELLS = {"lstm": LSTM, "gru": GRU}
MODES = ("infer", "train")
IMPLS = ("rnnfast", "torch")

CASES = [(c, s, m, i) for c in CELLS for s in SHAPES for m in MODES for i in IMPLS]


def flops(cell, shape, mode):
    B, T, I, H = SHAPES[shape]
    return _cases.flop(cell, I, H, tokens=B * T, mode=mode)


def _rnnfast_fn(cell, x, mode, state_dict):
    H = state_dict["weight_hh_l0"].shape[1]
    layer = CELLS[cell](x.shape[2], H, dtype=np.float32, seed=0)
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
    return _cases.state_dict(cell, I, H)


# ---------------------------------------------------------------- LSTM 2 layers bidirectional, medium

BIDI_ROUNDS = dict(warmup_rounds=1, rounds=5)


def _train_or_infer_fns(x, mode, make_rnnfast, make_torch, impl, lengths=None):
    """(rnnfast | torch) callable for one forward (infer) or forward + backward of sum(outputs) (train)."""
    if impl.startswith("rnnfast"):
        layer = make_rnnfast()
        if mode == "infer":
            layer.eval()
            return lambda: layer.forward(x, lengths=lengths)
        layer.train()
        out, _ = layer.forward(x, lengths=lengths)
        dout = np.ones_like(out)

        def step():
            layer.forward(x, lengths=lengths)
            return layer.backward(dout)

        return step
    torch = pytest.importorskip("torch")
    mod = make_torch(torch)
    xt = torch.from_numpy(x.copy())
    if lengths is not None:
        lt = torch.from_numpy(np.asarray(lengths))
        rnn = torch.nn.utils.rnn
        T = x.shape[1]

        def fwd(inp):
            y, _ = mod(rnn.pack_padded_sequence(inp, lt, batch_first=True, enforce_sorted=False))
            return rnn.pad_packed_sequence(y, batch_first=True, total_length=T)[0]
    else:
        def fwd(inp):
            return mod(inp)[0]
    if mode == "infer":
        mod.eval()

        def step():
            with torch.inference_mode():
                return fwd(xt)

        return step
    mod.train()
    xt.requires_grad_(True)

    def step():
        mod.zero_grad(set_to_none=True)
        xt.grad = None
        fwd(xt).sum().backward()
        return xt.grad

    return step


def _finish(benchmark, record, impl, f):
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        median = stats.stats.median
        benchmark.extra_info["gflops_median"] = round(f / median / 1e9, 2)
        benchmark.extra_info["gflops_best"] = round(f / stats.stats.min / 1e9, 2)
        record(benchmark.group, impl, median, f / median / 1e9)


BIDI_CASES = [(m, i) for m in MODES for i in IMPLS]


@pytest.mark.parametrize("mode,impl", BIDI_CASES, ids=[f"lstm2bi-medium-{m}-{i}" for m, i in BIDI_CASES])
def test_lstm2bi(benchmark, torch_threads, record, mode, impl):
    B, T, I, H = SHAPES["medium"]
    x = np.random.default_rng(1234).standard_normal((B, T, I)).astype(np.float32)
    sd = _cases.state_dict("lstm", I, H, layers=2, bidirectional=True)

    def make_rnnfast():
        layer = LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)
        layer.load_state_dict(sd)
        return layer

    def make_torch(torch):
        mod = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float32)
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        return mod

    fn = _train_or_infer_fns(x, mode, make_rnnfast, make_torch, impl)
    f = _cases.flop("lstm", I, H, layers=2, D=2, tokens=B * T, mode=mode)
    benchmark.group = f"lstm2bi-medium-{mode}"
    benchmark.extra_info.update(impl=impl, cell="lstm", shape="medium", mode=mode, B=B, T=T, I=I, H=H,
                                num_layers=2, bidirectional=True, threads=torch_threads, flop=f)
    benchmark.pedantic(fn, iterations=1, **BIDI_ROUNDS)
    _finish(benchmark, record, impl, f)


# ---------------------------------------------------------------- streaming step latency, B=1

STEP_ROUNDS = dict(warmup_rounds=2, rounds=30, iterations=100)  # times per call: round time / 100


STEP_CASES = [(c, i) for c in CELLS for i in IMPLS]


@pytest.mark.parametrize("cell,impl", STEP_CASES, ids=[f"{c}-step-{i}" for c, i in STEP_CASES])
def test_step(benchmark, torch_threads, record, cell, impl):
    B, I, H = STEP_SHAPE
    sd = _reference_state_dict(cell, I, H)
    x_t = np.random.default_rng(1234).standard_normal((B, I)).astype(np.float32)
    if impl == "torch":
        torch = pytest.importorskip("torch")
        mod = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(I, H)
        mod.load_state_dict({k[:-3]: torch.from_numpy(v) for k, v in sd.items()})  # drop "_l0"
        mod.eval()
        xt = torch.from_numpy(x_t)
        z = torch.zeros(B, H)
        st = [(z, z) if cell == "lstm" else z]

        def fn():
            with torch.inference_mode():
                st[0] = mod(xt, st[0])
    else:
        layer = CELLS[cell](I, H, dtype=np.float32, seed=0)
        layer.load_state_dict(sd)
        layer.eval()
        st = [None]

        def fn():
            _, st[0] = layer.step(x_t, st[0])

    f = _cases.flop(cell, I, H, tokens=B)
    benchmark.group = f"{cell}-step"
    benchmark.extra_info.update(impl=impl, cell=cell, shape="step", mode="infer", B=B, T=1, I=I, H=H,
                                threads=torch_threads, flop=f)
    benchmark.pedantic(fn, **STEP_ROUNDS)
    _finish(benchmark, record, impl, f)


# ---------------------------------------------------------------- variable lengths vs the same tokens, dense

VARLEN_ROUNDS = dict(warmup_rounds=1, rounds=10)
VARLEN_IMPLS = ("rnnfast", "rnnfast-dense", "torch-packed")


def varlen_batch(B, T, I, seed=1234):
    """x (B, T, I), lengths uniform in [T/4, T] with a total that is a multiple of T, and the same tokens
    packed densely into (sum(lengths) / T, T, I)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 4, T, endpoint=True, size=B)
    while lengths.sum() % T:
        lengths[np.argmax(lengths)] -= 1
    dense = np.concatenate([x[b, :lengths[b]] for b in range(B)]).reshape(-1, T, I)
    return x, lengths.astype(np.int64), np.ascontiguousarray(dense)


VARLEN_CASES = [(c, m, i) for c in CELLS for m in MODES for i in VARLEN_IMPLS]


@pytest.mark.parametrize("cell,mode,impl", VARLEN_CASES, ids=["{}-varlen-{}-{}".format(*c) for c in VARLEN_CASES])
def test_varlen(benchmark, torch_threads, record, cell, mode, impl):
    B, T, I, H = SHAPES["medium"]
    x, lengths, dense = varlen_batch(B, T, I)
    sd = _reference_state_dict(cell, I, H)

    def make_rnnfast():
        layer = CELLS[cell](I, H, dtype=np.float32, seed=0)
        layer.load_state_dict(sd)
        return layer

    def make_torch(torch):
        mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True, dtype=torch.float32)
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        return mod

    if impl == "rnnfast-dense":
        fn = _train_or_infer_fns(dense, mode, make_rnnfast, make_torch, "rnnfast")
    else:
        fn = _train_or_infer_fns(x, mode, make_rnnfast, make_torch, impl, lengths=lengths)
    tokens = int(lengths.sum())
    f = _cases.flop(cell, I, H, tokens=tokens, mode=mode)
    benchmark.group = f"{cell}-varlen-{mode}"
    benchmark.extra_info.update(impl=impl, cell=cell, shape="medium", mode=mode, B=B, T=T, I=I, H=H,
                                tokens=tokens, dense_batch=tokens // T, threads=torch_threads, flop=f)
    benchmark.pedantic(fn, iterations=1, **VARLEN_ROUNDS)
    _finish(benchmark, record, impl, f)
