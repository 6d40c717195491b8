"""Fit the cost model's rates to this machine: the planner TABLE values under which the planner picks the
plans that ran fastest in ``bench/plan_ab.py`` sweeps.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/plan_ab.py --grid . --rounds 5 > sweep.txt
    python bench/fit_table.py sweep.txt [more sweeps] [--keys core_flops,bw_l3] [--min-ms 0.2]

A sweep holds every candidate plan of each point with its median time. For a TABLE, the score of a
point is the median of the plan the planner then picks over the fastest candidate's (1.0: it picks the
fastest); the fit minimises the geometric mean over the points (inference and training alike), one key
at a time, each scaled by a few factors, for two rounds (a coordinate search: the model is a handful of
max() and sums, with no gradient to follow). Points whose fastest plan ran under ``--min-ms`` are left
out: at tens of microseconds the interleaved rounds measure the neighbouring plans as much as the
plan. It prints the score before and after, the keys it moved and the worst misses left; the fit is a
suggestion to measure (``plan_ab.py --old-plans``), not a setting: nothing is written.
"""
from __future__ import annotations

import argparse
import math
import re
import statistics

from plan_ab import make  # bench/ on sys.path when run from there or by tests/bench's conftest
from rnnfast import _planner

_HEAD = re.compile(r"^(\S+)\s+threads=(\d+)\s+rounds=\d+")
_LINE = re.compile(r"^\s+\*?\s*(\S.*?)\s+min\s+([\d.]+)\s+median\s+([\d.]+) ms")
KEYS = ["core_flops", "bw_l2", "bw_l3", "overlap", "step_s", "barrier_s", "region_s", "cell_s", "fma_chains",
        "serp_l2_share", "hoist_reads_share"]
FACTORS = (0.33, 0.5, 0.7, 1.4, 2.0, 3.0)


def parse(lines, min_ms: float = 0.0) -> dict:
    """{(point name, threads): {plan text: median ms}} from plan_ab.py's output lines, the medians of
    repeated blocks pooled; points whose fastest plan ran under ``min_ms`` left out."""
    pts: dict = {}
    cur = None
    for ln in lines:
        m = _HEAD.match(ln)
        if m:
            cur = (m.group(1), int(m.group(2)))
            pts.setdefault(cur, {})
            continue
        m = _LINE.match(ln)
        if m and cur:
            pts[cur].setdefault(m.group(1).strip(), []).append(float(m.group(3)))
    out = {k: {p: statistics.median(v) for p, v in d.items()} for k, d in pts.items() if d}
    return {k: d for k, d in out.items() if min(d.values()) >= min_ms}


_CALLS: dict = {}


def _call(name: str):
    if name not in _CALLS:
        layer, x, training = make(name)
        layer.train(training)
        _CALLS[name] = layer._describe(x, None, training)
    return _CALLS[name]


def score(pts: dict) -> tuple:
    """(geometric mean of chosen / fastest over the points, [(ratio, name, threads, plan)] of the misses
    over 5%, worst first). A point whose chosen plan the sweep did not time counts as 1."""
    logs, misses = [], []
    for (name, threads), d in pts.items():
        plan = str(_planner.plan_call(_call(name), threads))
        r = d[plan] / min(d.values()) if plan in d else 1.0
        logs.append(math.log(r))
        if r > 1.05:
            misses.append((r, name, threads, plan))
    return math.exp(sum(logs) / max(1, len(logs))), sorted(misses, reverse=True)


def fit(pts: dict, keys=KEYS, rounds: int = 2, factors=FACTORS) -> dict:
    """Coordinate search: {key: factor} of the TABLE keys that lowered the score by over 0.002 (TABLE is
    left as it was)."""
    table = _planner.TABLE
    saved = {k: table[k] for k in keys}
    best, moved = score(pts)[0], {}
    try:
        for _ in range(rounds):
            for k in keys:
                v0 = table[k]
                tries = []
                for f in factors:
                    table[k] = v0 * f
                    tries.append((score(pts)[0], f))
                table[k] = v0
                s, f = min(tries)
                if s < best - 0.002:
                    table[k], best = v0 * f, s
                    moved[k] = moved.get(k, 1.0) * f
    finally:
        table.update(saved)
    return moved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweeps", nargs="+", help="plan_ab.py output files")
    ap.add_argument("--keys", default=",".join(KEYS), help="TABLE keys to fit, comma-separated")
    ap.add_argument("--min-ms", type=float, default=0.2)
    args = ap.parse_args(argv)
    pts = {}
    for path in args.sweeps:
        with open(path) as f:
            pts.update(parse(f, args.min_ms))
    before, misses = score(pts)
    print(f"{len(pts)} points; chosen / fastest {before:.4f}, {len(misses)} misses over 5%")
    moved = fit(pts, [k.strip() for k in args.keys.split(",") if k.strip()])
    saved = {k: _planner.TABLE[k] for k in moved}
    for k, f in moved.items():
        _planner.TABLE[k] = saved[k] * f
        print(f"  {k}: {saved[k]:g} -> {saved[k] * f:g} (x{f:g})")
    after, misses = score(pts)
    _planner.TABLE.update(saved)
    print(f"fitted: chosen / fastest {after:.4f}, {len(misses)} misses over 5%")
    for r, name, threads, plan in misses[:10]:
        print(f"  {r:5.2f}x  {name} x{threads}  {plan}")


if __name__ == "__main__":
    main()
