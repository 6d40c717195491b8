#!/usr/bin/env python3
"""The layer-normalized LSTM / GRU (``layer_norm=True``) against the plain cells, in process.

Run from the repository root (after building in place)::

    python bench/layer_norm.py [rounds] [--cell lstm|gru] [--shape medium|small]

Shape medium: B=64, T=100, I=128, H=256 (small: B=16, T=50, I=64, H=128), float32, inference (eval
forward) and training (forward and backward of the outputs' sum), 2 threads. Rounds interleave the two
layers, 3 calls each after 2 warm-up calls; it prints the median time per call and the ratio
(layer-normalized / plain). The issue's target: at most 1.3x at the medium shape, train and infer.
"""
import argparse
import statistics
import time

import numpy as np

import rnnfast as rf

SHAPES = {"medium": (64, 100, 128, 256), "small": (16, 50, 64, 128)}
THREADS = 2


def call(layer, x, mode):
    """One timed call of ``layer`` on ``x`` in ``mode`` ("infer" or "train")."""
    layer.train(mode == "train")
    dout = None

    def run():
        nonlocal dout
        out, _ = layer(x, n_threads=THREADS)
        if mode == "train":
            if dout is None:
                dout = np.ones_like(out)
            layer.backward(dout, n_threads=THREADS)
    return run


def measure(cell: str, shape: str, rounds: int) -> None:
    B, T, I, H = SHAPES[shape]
    cls = rf.nn.LSTM if cell == "lstm" else rf.nn.GRU
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    for mode in ("infer", "train"):
        runs = {ln: call(cls(I, H, seed=0, layer_norm=ln), x, mode) for ln in (False, True)}
        times = {False: [], True: []}
        for run in runs.values():
            for _ in range(2):
                run()
        for _ in range(rounds):
            for ln, run in runs.items():
                t0 = time.perf_counter()
                for _ in range(3):
                    run()
                times[ln].append((time.perf_counter() - t0) / 3)
        plain, norm = statistics.median(times[False]), statistics.median(times[True])
        print(f"{cell} {shape} B={B} T={T} I={I} H={H} {mode:5s}: plain {plain * 1e3:7.2f} ms  "
              f"layer_norm {norm * 1e3:7.2f} ms  ratio {norm / plain:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rounds", nargs="?", type=int, default=7)
    ap.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    ap.add_argument("--shape", choices=tuple(SHAPES), default="medium")
    args = ap.parse_args()
    measure(args.cell, args.shape, args.rounds)


if __name__ == "__main__":
    main()
