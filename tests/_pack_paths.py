"""The kernel paths that pack weights (batch-1, few-rows, packed), as layers and inputs whose plan takes
each on the reference machine: shared by tests/nn/test_packs.py and tests/nn/test_freeze.py."""
import numpy as np

from rnnfast.nn import GRU, LSTM, RNN

# (class, kwargs, B, T, H, bidirectional, layers, the kernel the planner picks at 2 threads)
PATHS = [
    (LSTM, {}, 1, 300, 96, False, 1, "latency"),
    (GRU, {}, 1, 300, 96, False, 2, "latency"),
    (RNN, {}, 1, 300, 96, False, 1, "latency"),
    (GRU, {"reset_after": False}, 1, 300, 96, False, 1, "latency"),
    (LSTM, {}, 3, 20, 128, False, 1, "units"),
    (GRU, {}, 3, 20, 128, False, 2, "units"),
    (RNN, {}, 3, 20, 192, False, 1, "units"),
    (GRU, {"reset_after": False}, 3, 20, 128, False, 1, "units"),
    (LSTM, {}, 2, 20, 384, True, 1, "units"),
    (GRU, {}, 2, 20, 384, True, 1, "units"),
    (LSTM, {}, 8, 12, 40, False, 2, "packed"),
    (GRU, {}, 8, 12, 40, True, 1, "packed"),
    (RNN, {}, 8, 12, 40, True, 2, "packed"),
    (GRU, {"reset_after": False}, 8, 12, 40, False, 1, "packed"),
    (LSTM, {}, 64, 5, 40, True, 1, "packed"),
    (RNN, {}, 6, 10, 512, True, 1, "packed"),
]
IDS = [f"{c.__name__}{'-rb' if kw else ''}-B{B}-T{T}-H{H}-{'bi' if bi else 'uni'}-L{L}-{k}"
       for c, kw, B, T, H, bi, L, k in PATHS]
I_SIZE = 24


def pin_threads(layer):
    """No batch-1 back-off to one thread on a busy machine: every call runs the plan asked for (another plan
    rounds differently)."""
    layer.thread_policy.threads = lambda n: n
    layer.thread_policy.note = lambda *a: None


def pack_path_layer(cls, kw, B, T, H, bi, L, kernel):
    layer = cls(I_SIZE, H, num_layers=L, bidirectional=bi, seed=3, **kw).eval()
    pin_threads(layer)
    x = np.random.default_rng(B * T + L).standard_normal((B, T, I_SIZE)).astype(np.float32)
    plan = layer.plan_for(x, n_threads=2)
    assert plan.kernel == kernel and (kernel != "latency" or plan.panels), str(plan)
    return layer, x
