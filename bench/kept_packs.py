"""Inference with the weight packs kept between calls against packing them at every call, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/kept_packs.py [--rounds 7] [--calls 50]
        [--threads 2] [--only REGEX]

Each round times ``--calls`` calls of every case twice, the two ways alternating (which goes first
swaps every round): packs kept (``rnnfast.nn._packs.KEEP_PACKS``, the default) and packed at every call (what
rnnfast did before). Per case it prints the per-call time of both (min and median over the rounds) and
their ratio (old / new, median and min over the rounds); the outputs of both ways are checked equal bit for
bit first. The last column ("weights changed", median ms) times calls with the packs kept while one weight
is written before every call (what an optimizer stepping between inference calls does): the worst case for
keeping, a check that fails, then a new copy of the weights and packing into new buffers.
"""
from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

from rnnfast.nn import GRU, LSTM, RNN, _packs

# (name, class, B, T, I, H, layers, bidirectional): issue 10's short-call losers and the kernel paths
CASES = [
    ("rnn-B6-T10-I128-H512-bi", RNN, 6, 10, 128, 512, 1, True),
    ("gru-B4-T50-I256-H256", GRU, 4, 50, 256, 256, 1, False),
    ("lstm-B8-T8-I48-H96", LSTM, 8, 8, 48, 96, 1, False),
    ("lstm-B2-T10-I256-H512", LSTM, 2, 10, 256, 512, 1, False),
    ("gru-B1-T100-I256-H256", GRU, 1, 100, 256, 256, 1, False),
    ("lstm-B32-T20-I128-H256-L2", LSTM, 32, 20, 128, 256, 2, False),
    ("lstm-B2-T100-I256-H512", LSTM, 2, 100, 256, 512, 1, False),
]


def _time(layer, x, calls, nth, change):
    w = layer._params["weight_hh_l0"]
    t0 = time.perf_counter()
    for i in range(calls):
        if change:
            w[0, 0] = np.float32(0.01 * (i % 7))
        layer(x, n_threads=nth)
    return (time.perf_counter() - t0) / calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="regular expression on the case names")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'case':28s} {'plan':34s} {'per call ms: min / median':>26s} {'kept/per-call':>14s}"
          f" {'weights changed':>16s}")
    for name, cls, B, T, I, H, L, bi in CASES:
        if args.only and not re.search(args.only, name):
            continue
        layer = cls(I, H, num_layers=L, bidirectional=bi, seed=0).eval()
        # the plan asked for at every call (no batch-1 back-off to one thread, which changes the plan)
        layer.thread_policy.threads = lambda n: n
        layer.thread_policy.note = lambda *a: None
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        outs = []
        for keep in (False, True, True):
            _packs.KEEP_PACKS = keep
            outs.append(layer(x, n_threads=args.threads)[0])
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), name
        times = {False: [], True: [], "changed": []}
        for r in range(args.rounds):
            for keep in ((False, True) if r % 2 == 0 else (True, False)):
                _packs.KEEP_PACKS = keep
                times[keep].append(_time(layer, x, args.calls, args.threads, False))
            _packs.KEEP_PACKS = True
            times["changed"].append(_time(layer, x, args.calls, args.threads, True))
        _packs.KEEP_PACKS = True
        old, new, chg = (sorted(times[k]) for k in (False, True, "changed"))
        ratios = sorted(a / b for a, b in zip(times[False], times[True]))
        print(f"{name:28s} {str(layer.plan_for(x, n_threads=args.threads)):34s} "
              f"{min(old) * 1e3:6.3f} / {statistics.median(old) * 1e3:6.3f} -> "
              f"{min(new) * 1e3:6.3f} / {statistics.median(new) * 1e3:6.3f}   "
              f"{statistics.median(ratios):5.2f}x (min {ratios[0]:.2f})  "
              f"{statistics.median(chg) * 1e3:6.3f}")


if __name__ == "__main__":
    main()
