"""The small-call rule on and off: calls below the planner's ``min_parallel_flops`` on two threads.

A plain float32 inference call that small runs on one thread, unless it follows the layer's last small
call within ``small_warm_s`` (libgomp's workers still spinning) and its plan with the threads awake gives
them tasks of their own of ``small_min_t`` steps or more; then ``ThreadPolicy.small_threads`` takes the way
this shape has lately been faster (``rnnfast._planner.Ways``). This races, on seeded small shapes the rule
applies to, the layer as it is against the same layer with the rule off (one thread, as before), calls
``--gaps`` microseconds apart (0: back to back, a benchmark's loop; 300: the workers asleep), interleaved:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/small_calls.py --seed 11 --shapes 60

It prints each shape's medians and off / on, then the geometric mean per gap (above 1: the rule faster).
"""
from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

from plan_ab import make
from rnnfast._planner import TABLE


def seeded(n: int, seed: int) -> list:
    """``n`` seeded shape names (grid point names) of small calls: one or two layers, either direction."""
    rng, names = random.Random(seed), []
    while len(names) < n:
        cell = rng.choice(["lstm", "gru", "rnn"])
        B, H = rng.choice([2, 3, 4, 6, 8, 12, 16, 32]), rng.choice([8, 16, 24, 32, 48, 64, 96, 128])
        I, T = rng.choice([1, 2, 4, 8, 16, 32, 64]), rng.choice([4, 8, 16, 25, 50])
        L, d = rng.choice([1, 1, 2]), rng.choice(["uni", "uni", "bi"])
        G, D = {"lstm": 4, "gru": 3, "rnn": 1}[cell], 2 if d == "bi" else 1
        flops = 2.0 * B * T * G * H * (I + H) * L * D
        if 5e4 <= flops < TABLE["min_parallel_flops"]:
            names.append(f"{cell}-B{B}-T{T}-I{I}-H{H}-L{L}-{d}-infer")
    return names


def _spin(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def race(name: str, gap_us: float, rounds: int = 8, calls: int = 100) -> tuple:
    """(rule on, rule off) median seconds a call of shape ``name`` on two threads, ``gap_us`` apart; None
    when the rule does not apply to the shape."""
    on, x, _ = make(name)
    off, _, _ = make(name)
    on.eval()
    off.eval()
    off._small_key = lambda *a: None  # (the rule off: the planner's one thread)
    if on._small_key(x.shape[0], x.shape[1], 2) is None:
        return None
    t: dict = {0: [], 1: []}
    for r in range(rounds):
        for i, layer in ((0, on), (1, off)) if r % 2 else ((1, off), (0, on)):
            for _ in range(calls + calls // 2):  # (settles the way the rule takes, and the caches)
                _spin(gap_us)
                layer(x, n_threads=2)
            ts = []
            for _ in range(calls):
                _spin(gap_us)
                t0 = time.perf_counter()
                layer(x, n_threads=2)
                ts.append(time.perf_counter() - t0)
            t[i].append(float(np.median(ts)))
    return float(np.median(t[0])), float(np.median(t[1]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--shapes", type=int, default=60, help="seeded shapes drawn (those the rule applies to run)")
    ap.add_argument("--gaps", default="0,300", help="microseconds between calls, comma-separated")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args(argv)
    gaps = [float(g) for g in a.gaps.split(",")]
    ratios: dict = {g: [] for g in gaps}
    for name in seeded(a.shapes, a.seed):
        for gap in gaps:
            got = race(name, gap, a.rounds, a.calls)
            if got is None:
                break
            on, off = got
            ratios[gap].append(off / on)
            print(f"{name:40s} gap {gap:4.0f} us: rule {on * 1e6:6.1f} us  one thread {off * 1e6:6.1f}  "
                  f"off/on {off / on:.2f}", flush=True)
    for gap, rs in ratios.items():
        if rs:
            print(f"gap {gap:.0f} us: {len(rs)} shapes, off/on geometric mean "
                  f"{math.exp(sum(map(math.log, rs)) / len(rs)):.3f}, {min(rs):.2f}-{max(rs):.2f}")


if __name__ == "__main__":
    main()
