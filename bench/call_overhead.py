#!/usr/bin/env python3
"""Per-call cost of repeated eval-mode calls: tiny layers (issue 10) and a serving batch (issue 13).

Times ``layer(x)`` in a tight loop for the tiny shapes, and the Python a ``rnnfast.serving.Batcher`` worker
spends around the kernel for one batch of 32 ragged sequences (an LSTM classifier, H=128, T 40-60, 40
batches of new lengths in rotation; the kernel's own time is subtracted). Prints one line per figure. To
compare two trees, run it under each, alternating, several times (the machine's load moves the figures)::

    for r in 1 2 3; do for t in /work/main /work/wt-fastpath; do \\
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$t python bench/call_overhead.py; done; done
"""
import argparse
import statistics
import time
import timeit

import numpy as np

import rnnfast as rf

TINY = [("rnn", 1, 8, 1, 16), ("lstm", 1, 32, 1, 16), ("lstm", 8, 8, 48, 96)]


def tiny(rounds: int) -> None:
    """min and median microseconds of one ``layer(x)`` call per shape, over ``rounds`` rounds."""
    for cell, B, T, I, H in TINY:
        layer = getattr(rf.nn, cell.upper())(I, H, seed=0).eval()
        x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
        for _ in range(200):
            layer(x)
        n = 2000 if H < 50 else 500
        ts = [timeit.timeit(lambda: layer(x), number=n) / n * 1e6 for _ in range(rounds)]
        print(f"{cell}-B{B}-T{T}-I{I}-H{H}: min {min(ts):.2f} med {statistics.median(ts):.2f} us a call")


def serving(batches: int) -> None:
    """The Batcher worker's per-batch Python (its adapter's ``run``) beside the kernel's time."""
    from rnnfast.nn import _rnn_calls
    from rnnfast.serving import _adapter
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(40, 61, 32 * 40)]
    est = rf.LSTMClassifier(hidden_size=128, epochs=1, random_state=0, n_threads=1).fit(X[:64],
                                                                                         rng.integers(0, 3, 64))
    ad = _adapter(est, "predict", None)
    bs = [[ad.check(x) for x in X[i:i + 32]] for i in range(0, len(X), 32)]
    kernels, spent = _rnn_calls._k, [0.0]

    class Timed:  # the kernel module, its forward timed
        def __getattr__(self, name):
            return getattr(kernels, name)

        @staticmethod
        def forward(*a, **k):
            t0 = time.perf_counter()
            try:
                return kernels.forward(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0

    _rnn_calls._k = Timed()
    try:
        for xs in bs[:5]:
            ad.run(xs)
        tot, ker = [], []
        for i in range(batches):
            spent[0] = 0.0
            t0 = time.perf_counter()
            ad.run(bs[i % len(bs)])
            tot.append((time.perf_counter() - t0) * 1e6)
            ker.append(spent[0] * 1e6)
    finally:
        _rnn_calls._k = kernels
    py = [a - b for a, b in zip(tot, ker)]
    print(f"serving batch of 32 (LSTM H=128, T 40-60 ragged, 1 thread): total med {statistics.median(tot):.0f} us, "
          f"kernel med {statistics.median(ker):.0f} us, Python around it min {min(py):.0f} med "
          f"{statistics.median(py):.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds per tiny shape (default 5)")
    ap.add_argument("--batches", type=int, default=200, help="serving batches timed (default 200)")
    args = ap.parse_args()
    print(rf.__file__)
    tiny(args.rounds)
    serving(args.batches)


if __name__ == "__main__":
    main()
