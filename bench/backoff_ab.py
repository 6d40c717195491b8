"""The batch-1 back-off against a controlled competitor: two thread policies side by side in one process.

    python bench/backoff_ab.py [--rounds 12] [--shape gru,1,20,512,1024] [--old FILE]

A child process plays another program on the cores, in one of three ways, each for ``--rounds`` rounds:

``quiet``       nothing runs;
``transient``   before each round, two spinning processes for ``--burst`` s (a peer's pool threads spinning
                down after its run, as ONNX Runtime's do in bench/grid.py), the round starting while they spin;
``persistent``  one process spinning for the whole round (a busy service on one of the cores).

Every round times ``--calls`` batch-1 calls of one layer under each policy in turn (the order alternating):
the layer's current ``ThreadPolicy`` and, with ``--old FILE`` (e.g. ``git show <rev>:rnnfast/_planner.py >
/tmp/old_planner.py``), the ThreadPolicy of that file; without it, no back-off at all (every call on the
planned threads). It prints each way's mean call time per round (min / median over the rounds) and the
policy's counters (calls sent to one thread, back-offs, probes, recoveries).
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import sys
import time

import numpy as np

import rnnfast as rf
from rnnfast import _planner


def _spin(q):
    """A competitor process: spin for each duration it is sent (None ends it)."""
    while True:
        d = q.get()
        if d is None:
            return
        t_end = time.perf_counter() + d
        while time.perf_counter() < t_end:
            pass


class NoBackoff(_planner.ThreadPolicy):
    """Every call on the planned threads (the back-off off)."""

    def threads(self, planned):
        super().threads(planned)
        return planned


def _counted(cls):
    """``cls`` counting the calls it sends to one thread (``ones``) and those it lets run (``many``)."""

    class Counted(cls):
        ones = many = 0

        def threads(self, planned):
            n = super().threads(planned)
            if planned > 1:
                if n == 1:
                    self.ones += 1
                else:
                    self.many += 1
            return n

    return Counted


def _policies(old_path):
    ways = {"new": _planner.ThreadPolicy}
    if old_path:
        spec = importlib.util.spec_from_file_location("old_planner", old_path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["old_planner"] = mod  # (its dataclasses look their module up)
        spec.loader.exec_module(mod)
        ways["old"] = mod.ThreadPolicy
    else:
        ways["none"] = NoBackoff
    return ways


def _round(layer, x, calls, nth):
    t0 = time.perf_counter()
    for _ in range(calls):
        layer(x, n_threads=nth)
    return (time.perf_counter() - t0) / calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=6, help="calls a round (default 6)")
    ap.add_argument("--shape", default="gru,1,20,512,1024", help="cell,B,T,I,H (default gru,1,20,512,1024)")
    ap.add_argument("--burst", type=float, default=0.025, help="the transient's spin, s (default 0.025)")
    ap.add_argument("--modes", default="quiet,transient,persistent")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--old", default=None, help="a _planner.py whose ThreadPolicy to compare with")
    args = ap.parse_args(argv)
    cell, B, T, I, H = args.shape.split(",")
    B, T, I, H = int(B), int(T), int(I), int(H)
    layer = getattr(rf.nn, cell.upper())(I, H, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    ways = _policies(args.old)
    pols = {k: _counted(cls)() for k, cls in ways.items()}
    qs = [mp.Queue() for _ in range(2)]
    kids = [mp.Process(target=_spin, args=(q,), daemon=True) for q in qs]
    for k in kids:
        k.start()
    try:
        for mode in args.modes.split(","):
            times = {k: [] for k in ways}
            for r in range(args.rounds):
                order = list(ways) if r % 2 == 0 else list(ways)[::-1]
                for k in order:
                    layer.thread_policy = pols[k]
                    layer(x, n_threads=args.threads)  # (untimed: the first call after the switch)
                    time.sleep(0.03)
                    if mode == "transient":
                        for q in qs:
                            q.put(args.burst)
                    elif mode == "persistent":
                        qs[0].put(1e9)  # (ended by the next put: see below)
                    t = _round(layer, x, args.calls, args.threads)
                    times[k].append(t)
                    if mode == "persistent":
                        _stop(kids, qs)
                        kids[:] = [mp.Process(target=_spin, args=(q,), daemon=True) for q in qs]
                        for p in kids:
                            p.start()
            line = "  ".join(f"{k}: min {min(v) * 1e3:.2f} med {np.median(v) * 1e3:.2f} ms" for k, v in times.items())
            print(f"{args.shape} {mode:10s} {line}", flush=True)
        for k, p in pols.items():
            print(f"  {k}: one thread {p.ones}, several {p.many}; {getattr(p, 'stats', '')}")
    finally:
        _stop(kids, qs)


def _stop(kids, qs):
    for p in kids:
        if p.is_alive():
            p.terminate()
        p.join()


if __name__ == "__main__":
    main()
