#!/usr/bin/env python3
"""The reset-before GRU (``reset_after=False``) against PyTorch's form (``reset_after=True``), in process.

Run from the repository root (after building in place)::

    python bench/gru_reset_before.py [rounds]

Shapes: B in {1, 8, 64}, T=50, I=H=256, float32, inference (eval forward) and training (forward and
backward of the sum of the outputs), 2 threads. Rounds interleave the two forms, 5 calls each, after 3
warm-up calls; it prints the median time per call, the ratio (reset before / reset after) and the plan.
"""
import statistics
import sys
import time

import numpy as np

import rnnfast as rf

T, I, H, THREADS = 50, 256, 256, 2


def call(layer, x, mode):
    """One timed call of ``layer`` on ``x`` in ``mode`` ("infer" or "train")."""
    layer.train(mode == "train")

    def run():
        out, _ = layer(x, n_threads=THREADS)
        if mode == "train":
            layer.backward(np.ones_like(out), n_threads=THREADS)
    return run


def main(rounds: int) -> None:
    for B in (1, 8, 64):
        x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
        for mode in ("infer", "train"):
            layers = {ra: rf.nn.GRU(I, H, seed=0, reset_after=ra) for ra in (True, False)}
            runs = {ra: call(m, x, mode) for ra, m in layers.items()}
            times = {True: [], False: []}
            for ra in runs:
                for _ in range(3):
                    runs[ra]()
            for _ in range(rounds):
                for ra in (True, False):
                    t0 = time.perf_counter()
                    for _ in range(5):
                        runs[ra]()
                    times[ra].append((time.perf_counter() - t0) / 5 * 1e3)
            after, before = statistics.median(times[True]), statistics.median(times[False])
            plan = layers[False].plan_for(x, training=mode == "train", n_threads=THREADS)
            print(f"B={B:3d} {mode:5s}  reset_after {after:8.3f} ms  reset_before {before:8.3f} ms  "
                  f"ratio {before / after:5.2f}   plan {plan}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
