"""The batch-1 back-off (rnnfast._planner.ThreadPolicy) against a controlled competitor, side by side in one process.

    python bench/backoff_ab.py --old /tmp/old_planner.py          # timed: this ThreadPolicy against another
    python bench/backoff_ab.py --old /tmp/old_planner.py --replay # no timing: call patterns on a fake clock
    python bench/backoff_ab.py --solo-cost                        # what a call that ends alone costs

(``git show <rev>:rnnfast/_planner.py > /tmp/old_planner.py`` gives another revision's policy; without
``--old`` the comparison is with no back-off at all: every call on the planned threads.)

Timed (the default): a competitor plays another program on the cores, in turn

``quiet``       nothing runs;
``transient``   before each round, two processes spinning for ``--burst`` s (a peer's pool threads spinning
                down after its run, as ONNX Runtime's do in bench/grid.py), the round starting while they spin;
``persistent``  one process spinning for the whole round (a busy service on one of the cores).

Every round times ``--calls`` calls of one layer under each policy (the order alternating); it prints each
policy's mean call time per round (min / median over ``--rounds``) and its counters (calls sent to one thread,
back-offs, probes, recoveries).

``--replay``: the same policies on a fake clock through fixed call patterns (rounds of 4 calls 100 ms apart
whose first call finds the cores busy, as a partner waking after an idle pause or a peer's spinning thread
can make it; every call busy; busy for a while, then quiet), a call costing 5 ms on two threads, 10 on one and
12 when busy (a wait, then alone): the share of calls run on one thread and the mean call time.

``--solo-cost``: the few-rows and batch-1 kernels' in-call switch to one thread (after one barrier wait over
200 us the rest of the call runs on thread 0): a call on two threads, one forced alone from its first
barrier (every wait counted as long), and one on one thread, alternating.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import random
import sys
import time

import numpy as np

import rnnfast as rf
from rnnfast import _planner


def _spin(gen, seconds):
    """A competitor process: spin for ``seconds`` or until ``gen`` changes."""
    g0, t_end = gen.value, time.perf_counter() + seconds
    while time.perf_counter() < t_end and gen.value == g0:
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
    """{"new": this checkout's ThreadPolicy, "old" (from ``old_path``) or "none": no back-off}."""
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


def _layer(shape):
    cell, B, T, I, H = shape.split(",")
    layer = getattr(rf.nn, cell.upper())(int(I), int(H), seed=0).eval()
    return layer, np.random.default_rng(0).standard_normal((int(B), int(T), int(I))).astype(np.float32)


def _competitor(mode, burst):
    """Start the competitor of one round; returns a function that ends it."""
    gen = mp.Value("i", 0)
    n, seconds = {"quiet": (0, 0.0), "transient": (2, burst), "persistent": (1, 1e9)}[mode]
    kids = [mp.Process(target=_spin, args=(gen, seconds), daemon=True) for _ in range(n)]
    for p in kids:
        p.start()

    def stop():
        gen.value += 1
        for p in kids:
            p.join()

    return stop


def timed(args):
    layer, x = _layer(args.shape)
    ways = _policies(args.old)
    pols = {k: _counted(cls)() for k, cls in ways.items()}
    for mode in args.modes.split(","):
        times = {k: [] for k in ways}
        for r in range(args.rounds):
            for k in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                layer.thread_policy = pols[k]
                layer(x, n_threads=args.threads)  # (untimed: the first call after the switch)
                time.sleep(0.03)
                stop = _competitor(mode, args.burst)
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    layer(x, n_threads=args.threads)
                times[k].append((time.perf_counter() - t0) / args.calls)
                stop()
        line = "  ".join(f"{k}: min {min(v) * 1e3:.2f} med {np.median(v) * 1e3:.2f} ms" for k, v in times.items())
        print(f"{args.shape} {mode:10s} {line}", flush=True)
    for k, p in pols.items():
        print(f"  {k}: one thread {p.ones}, several {p.many}; {getattr(p, 'stats', '')}")


def _replay(cls, pattern, t2=5e-3, t1=10e-3, t_busy=12e-3):
    """(share of calls on one thread, mean call s) of ``pattern``, a list of (pause before, busy on two
    threads), through a ``cls`` policy on a fake clock."""
    now = [0.0]
    pol = cls(clock=lambda: now[0], perf=lambda: now[0])
    ones, spent = 0, 0.0
    for gap, busy in pattern:
        now[0] += gap
        n = pol.threads(2)
        took = t1 if n == 1 else (t_busy if busy else t2)
        now[0] += took
        spent += took
        pol.note(n, int(busy and n > 1))
        ones += n == 1
    return ones / len(pattern), spent / len(pattern)


def _rounds(p_busy, n=200, calls=4, seed=0):
    """Rounds of ``calls`` calls 100 ms apart: the first busy, each other busy with probability ``p_busy``."""
    rng = random.Random(seed)
    return [(0.1 if c == 0 else 1e-4, c == 0 or rng.random() < p_busy) for _ in range(n) for c in range(calls)]


def replay(args):
    ways = _policies(args.old)
    patterns = {"rounds, the first call busy": _rounds(0.0), "... and 3% of the others": _rounds(0.03),
                "... and 10% of the others": _rounds(0.1), "every call busy": [(1e-4, True)] * 160,
                "busy for 80 calls, then quiet": [(1e-4, True)] * 80 + [(1e-4, False)] * 80,
                "quiet": [(1e-4, False)] * 160}
    for name, pat in patterns.items():
        cols = []
        for k, cls in ways.items():
            share, mean = _replay(cls, pat)
            cols.append(f"{k}: {share:4.0%} on one thread, {mean * 1e3:5.2f} ms a call")
        print(f"{name:32s} " + "   ".join(cols))


def solo_cost(args):
    from rnnfast._kernels import _recurrent as kern

    layer, x = _layer(args.shape)
    ways = {"2 threads": (2, 200_000), "2, alone from the 1st barrier": (2, 0), "1 thread": (1, 200_000)}
    res = {k: [] for k in ways}
    for r in range(args.rounds):
        for k in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            nth, spin = ways[k]
            old = kern.set_latency_spin_ns(spin)
            try:
                layer.thread_policy = NoBackoff()
                layer(x, n_threads=nth)
                t0 = time.perf_counter()
                layer(x, n_threads=nth)
                res[k].append(time.perf_counter() - t0)
            finally:
                kern.set_latency_spin_ns(old)
    print(f"{args.shape}: " + "  ".join(f"{k}: min {min(v) * 1e3:.2f} med {np.median(v) * 1e3:.2f} ms"
                                        for k, v in res.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=6, help="calls a round (default 6)")
    ap.add_argument("--shape", default="gru,1,20,512,1024", help="cell,B,T,I,H (default gru,1,20,512,1024)")
    ap.add_argument("--burst", type=float, default=0.025, help="the transient's spin, s (default 0.025)")
    ap.add_argument("--modes", default="quiet,transient,persistent")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--old", default=None, help="a _planner.py whose ThreadPolicy to compare with")
    ap.add_argument("--replay", action="store_true", help="call patterns on a fake clock (no timing)")
    ap.add_argument("--solo-cost", action="store_true", help="the in-call switch to one thread")
    args = ap.parse_args(argv)
    (replay if args.replay else solo_cost if args.solo_cost else timed)(args)


if __name__ == "__main__":
    main()
