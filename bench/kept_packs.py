"""Inference with the weight packs kept between calls against packing them at every call, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/kept_packs.py [--rounds 7] [--calls 50]
        [--threads 2] [--only REGEX]

Each round times ``--calls`` calls of every case three ways, in an order that rotates every round: packed at
every call (the default), packs kept and compared with the weights at every call
(``rnnfast.nn._packs.KEEP_PACKS``, the default: checked by the weights' digests), and a frozen copy (``rf.nn.freeze``: packs kept and trusted). Per case it
prints the per-call time of each (median over the rounds) and the ratios per-call / kept and per-call /
frozen (median and min over the rounds); the outputs of all three are checked equal bit for bit first. The
last column ("weights changed", median ms) times calls with the packs kept while one weight is written
before every call (what an optimizer stepping between inference calls does): the worst case for keeping, a
check that fails, then a new copy of the weights and packing into new buffers.
"""
from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

from rnnfast.nn import GRU, LSTM, RNN, _packs, freeze

# (name, class, B, T, I, H, layers, bidirectional): issue 10's short-call losers and the kernel paths
CASES = [
    ("rnn-B6-T10-I128-H512-bi", RNN, 6, 10, 128, 512, 1, True),
    ("gru-B4-T50-I256-H256", GRU, 4, 50, 256, 256, 1, False),
    ("lstm-B8-T8-I48-H96", LSTM, 8, 8, 48, 96, 1, False),
    ("lstm-B2-T10-I256-H512", LSTM, 2, 10, 256, 512, 1, False),
    ("gru-B1-T100-I256-H256", GRU, 1, 100, 256, 256, 1, False),
    ("lstm-B32-T20-I128-H256-L2", LSTM, 32, 20, 128, 256, 2, False),
    ("lstm-B2-T100-I256-H512", LSTM, 2, 100, 256, 512, 1, False),
    ("gru-B2-T50-I2400-H600-L2", GRU, 2, 50, 2400, 600, 2, False),
    ("lstm-B8-T30-I512-H512", LSTM, 8, 30, 512, 512, 1, False),
    ("lstm-B8-T50-I1024-H128", LSTM, 8, 50, 1024, 128, 1, False),
    ("gru-B1-T20-I512-H1024", GRU, 1, 20, 512, 1024, 1, False),
    ("lstm-B256-T20-I64-H64", LSTM, 256, 20, 64, 64, 1, False),
    ("lstm-B1-T10-I1024-H1024", LSTM, 1, 10, 1024, 1024, 1, False),
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
    print(f"{'case':28s} {'plan':34s} {'median ms: per call / kept / frozen':>37s} {'per-call/kept':>18s}"
          f" {'per-call/frozen':>18s} {'weights changed':>16s}")
    for name, cls, B, T, I, H, L, bi in CASES:
        if args.only and not re.search(args.only, name):
            continue
        layer = cls(I, H, num_layers=L, bidirectional=bi, seed=0).eval()
        frozen = freeze(layer)
        for m in (layer, frozen):  # the plan asked for at every call (no batch-1 back-off to one thread)
            m.thread_policy.threads = lambda n: n
            m.thread_policy.note = lambda *a: None
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        ways = {"per call": (layer, False), "kept": (layer, True), "frozen": (frozen, False)}
        outs = []
        for way in list(ways) + ["kept", "frozen"]:
            m, _packs.KEEP_PACKS = ways[way]
            outs.append(m(x, n_threads=args.threads)[0])
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), name
        times = {k: [] for k in list(ways) + ["changed"]}
        order = list(ways)
        for r in range(args.rounds):
            for way in order[r % 3:] + order[:r % 3]:
                m, _packs.KEEP_PACKS = ways[way]
                m._pack_skip = 0  # (the steady state: the last round's changing weights left a skip count)
                times[way].append(_time(m, x, args.calls, args.threads, False))
            _packs.KEEP_PACKS = True
            times["changed"].append(_time(layer, x, args.calls, args.threads, True))
        _packs.KEEP_PACKS = False
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cols = []
        for way in ("kept", "frozen"):
            ratios = sorted(a / b for a, b in zip(times["per call"], times[way]))
            cols.append(f"{statistics.median(ratios):5.2f}x (min {ratios[0]:.2f})")
        print(f"{name:28s} {str(layer.plan_for(x, n_threads=args.threads)):34s} "
              f"{med['per call']:9.3f} / {med['kept']:9.3f} / {med['frozen']:9.3f}   {cols[0]:>18s} {cols[1]:>18s} "
              f"{med['changed']:9.3f}")


if __name__ == "__main__":
    main()
