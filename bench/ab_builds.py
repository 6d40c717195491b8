#!/usr/bin/env python3
"""Two builds of rnnfast side by side: one worker process per checkout, rounds alternating between them.

Timings on a shared machine drift by 2-3x from minute to minute; two runs of a benchmark one after the other
compare the machine's moods, not the builds. Here each build keeps a warm worker (its own checkout first on
``sys.path``) holding the same layers and inputs, and every round times each shape in one build, then in the
other, so both see the same load. Per shape and build it prints the minimum and the median of the rounds'
mean call times, and the ratio of medians (A / B: above 1, B is faster).

    python bench/ab_builds.py /work/main . 'lstm B=8 T=50 I=1024 H=128' 'gru B=6 T=50 I=256 H=256 L=2 bi'

A shape is ``cell B=.. T=.. I=.. H=..`` with optional ``L=..``, ``bi``, ``train`` (forward and backward of
the outputs' sum) and ``f64``. Options: ``--rounds`` (default 15), ``--min-s`` (a round's shortest time per
shape, default 0.05), ``--threads`` (default 2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
import rnnfast as rf

def build(spec, threads):
    f = dict(w.split("=") for w in spec.split()[1:] if "=" in w)
    flags = set(spec.split()[1:])
    cell, B, T, I, H = spec.split()[0], int(f["B"]), int(f["T"]), int(f["I"]), int(f["H"])
    dtype = np.float64 if "f64" in flags else np.float32
    layer = getattr(rf.nn, cell.upper())(I, H, num_layers=int(f.get("L", 1)), bidirectional="bi" in flags,
                                         dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(dtype)
    if "train" in flags:
        layer.train()
        def call():
            out, _ = layer(x, n_threads=threads)
            layer.backward(np.ones_like(out), n_threads=threads)
    else:
        layer.eval()
        def call():
            layer(x, n_threads=threads)
    plan = str(layer.plan_for(x, training="train" in flags, n_threads=threads))
    return call, plan

threads = int(sys.argv[1])
calls = {}
for line in sys.stdin:
    msg = json.loads(line)
    spec = msg["spec"]
    if spec not in calls:
        call, plan = build(spec, threads)
        for _ in range(3):
            call()
        t0 = time.perf_counter()
        call()
        n = max(1, int(msg["min_s"] / max(1e-7, time.perf_counter() - t0)))
        calls[spec] = (call, plan, n)
    call, plan, n = calls[spec]
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    print(json.dumps({"s": (time.perf_counter() - t0) / n, "plan": plan}), flush=True)
"""


def start(tree: str, threads: int) -> subprocess.Popen:
    """A worker that imports rnnfast from ``tree`` (run from /tmp, so no other checkout is on the path)."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    return subprocess.Popen([sys.executable, "-c", WORKER, str(threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd="/tmp")


def ask(proc: subprocess.Popen, spec: str, min_s: float) -> dict:
    """One round of one shape in one worker: its mean call time (s) and plan."""
    proc.stdin.write(json.dumps({"spec": spec, "min_s": min_s}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker died on {spec!r}")
    return json.loads(line)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="checkout A (e.g. /work/main)")
    p.add_argument("b", help="checkout B")
    p.add_argument("shapes", nargs="+", help="'cell B=.. T=.. I=.. H=.. [L=..] [bi] [train] [f64]'")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--min-s", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    procs = [start(args.a, args.threads), start(args.b, args.threads)]
    times: dict = {s: ([], []) for s in args.shapes}
    plans: dict = {}
    try:
        for r in range(args.rounds):
            for spec in args.shapes:
                order = (0, 1) if r % 2 == 0 else (1, 0)
                for i in order:
                    got = ask(procs[i], spec, args.min_s)
                    times[spec][i].append(got["s"])
                    plans[(spec, i)] = got["plan"]
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait()
    print(f"A = {args.a}, B = {args.b}; {args.rounds} rounds, {args.threads} threads; ms min / median")
    for spec in args.shapes:
        a, b = times[spec]
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{spec:40s} A {min(a) * 1e3:8.3f} / {ma * 1e3:8.3f}  B {min(b) * 1e3:8.3f} / {mb * 1e3:8.3f}  "
              f"A/B {ma / mb:5.2f}  [{plans[(spec, 0)]} | {plans[(spec, 1)]}]")


if __name__ == "__main__":
    main()
