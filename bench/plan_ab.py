"""Time every candidate plan of a shape side by side in one process: the planner's choice against the others.

For each shape (a grid point's name, e.g. ``lstm-B2-T10-I1024-H1024-L2-bi-infer``), the candidates of
``rnnfast._planner.candidates`` on ``--threads`` threads and on one (as ``rnnfast.tune`` times them) run
interleaved, one call each a round, for ``--rounds`` rounds after a warm-up; it prints each plan's min and
median ms, the cost model's estimate, and marks the plan the planner picks (``*``). With ``--batch-ratio``
it also times the same call at batch 1 and prints B / batch-1 (the issue's "batch 2-3 within 1.3x").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/plan_ab.py --threads 2 \\
        lstm-B2-T10-I1024-H1024-L2-bi-infer gru-B2-T50-I256-H256-L1-uni-infer
"""
from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace

import numpy as np

import rnnfast as rf
from rnnfast import _planner, _tune

_NAME = re.compile(r"(lstm|gru|rnn)-B(\d+)-T(\d+)-I(\d+)-H(\d+)-L(\d+)-(uni|bi)(?:-(infer|train))?$")


def make(name: str):
    """(layer, x, training) for a grid point's name."""
    m = _NAME.match(name)
    if not m:
        raise SystemExit(f"not a shape name: {name!r}")
    cell, B, T, I, H, L, bi, mode = m.groups()
    cls = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[cell]
    layer = cls(int(I), int(H), num_layers=int(L), bidirectional=bi == "bi", seed=0)
    x = np.random.default_rng(0).standard_normal((int(B), int(T), int(I))).astype(np.float32)
    return layer, x, mode == "train"


def once(layer, x, training: bool, plan) -> float:
    """Seconds of one call (forward, and backward when training) under ``plan``."""
    layer._forced_plan = plan
    t0 = time.perf_counter()
    out = layer(x, n_threads=plan.threads)[0]
    if training:
        layer.backward(np.ones_like(out), n_threads=plan.threads)
    return time.perf_counter() - t0


def race(entries, rounds: int) -> list:
    """[(label, times)] of the entries ((label, layer, x, training, plan)), interleaved, one warm-up round."""
    times: dict = {e[0]: [] for e in entries}
    for rnd in range(rounds + 1):
        order = entries if rnd % 2 else entries[::-1]  # alternate the order: neither runs always first
        for label, layer, x, training, plan in order:
            t = once(layer, x, training, plan)
            if rnd:
                times[label].append(t)
    return [(e[0], times[e[0]]) for e in entries]


def run(name: str, threads: int, rounds: int, batch_ratio: bool, flip_panels: bool = False) -> None:
    layer, x, training = make(name)
    layer.train(training)
    call = layer._describe(x, None, training)
    chosen = _planner.plan_call(call, threads)
    m = _planner.machine()
    entries, model = [], {}
    plans = list(_tune._candidates(call, threads))
    if flip_panels:  # also the other weight layout of every batch-1 / few-rows plan
        plans += [q for q in (replace(p, panels=not p.panels) for p in plans if p.kernel in ("latency", "units"))
                  if q not in plans]
    for p in plans:
        label = ("* " if p == chosen else "  ") + str(p)
        entries.append((label, layer, x, training, p))
        model[label] = _planner._cost(call, p.kernel, p.proj, p.threads, m) if p.kernel != "blas" else float("nan")
    if batch_ratio:
        l1, x1 = layer, x[:1]
        p1 = _planner.plan_call(l1._describe(x1, None, training), threads)
        entries.append(("  B=1: " + str(p1), l1, x1, training, p1))
    res = race(entries, rounds)
    print(f"{name}  threads={threads}  rounds={rounds}")
    best = min(float(np.median(t)) for _, t in res)
    for label, t in res:
        med = float(np.median(t))
        est = model.get(label, float("nan")) * 1e3
        print(f"  {label:<45} min {min(t) * 1e3:8.3f}  median {med * 1e3:8.3f} ms  ({med / best:5.2f}x best)"
              f"  model {est:7.3f}")
    if batch_ratio:
        b1 = float(np.median(res[-1][1]))
        ch = float(np.median(dict(res)[("* " + str(chosen))]))
        print(f"  B={x.shape[0]} / B=1 (medians, planner's plans): {ch / b1:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="grid point names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch-ratio", action="store_true", help="also time batch 1 and print B / batch-1")
    ap.add_argument("--flip-panels", action="store_true",
                    help="also time every batch-1 / few-rows plan with its weights packed or in place the other way")
    a = ap.parse_args(argv)
    for name in a.names:
        run(name, a.threads, a.rounds, a.batch_ratio, a.flip_panels)


if __name__ == "__main__":
    main()
