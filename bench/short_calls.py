"""Short float32 inference calls (fewer than the planner's packed_min_t steps) of several rows: BLAS's GEMM
against the few-rows kernel on the weight rows in place (``units proj=step``, no pack) and the packed kernel,
each plan forced, interleaved in one process; then batched streaming steps (``layer.step`` on B rows) with
the planner's short-call rule off (BLAS, as before session 20) and on; then ``Linear`` layers on a few rows
with the kernels' few-rows product off (BLAS's GEMM) and on (``_recurrent.matmul``: W's rows in place).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/short_calls.py [--threads 2] [--hidden 256,1024]
        [--rows 2,4,16,32,64] [--steps 1,3] [--rounds 50]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/short_calls.py --linear-rows [--threads 1]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/short_calls.py --rule 150 [--threads 1]

Prints per shape the median us of each plan and the ratio to BLAS (below 1: faster than BLAS); the outputs
of the plans are checked equal first.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import rnnfast as rf
from rnnfast import _planner
from rnnfast._planner import Plan


def _median_us(times):
    """Median in us, the first two rounds left out (warm-up) when there are enough."""
    return float(np.median(times[2:] if len(times) > 4 else times)) * 1e6


def race(cls, H: int, B: int, T: int, threads: int, rounds: int) -> list:
    """[(label, median us)] of BLAS, rows in place and packed on one short call (I = H)."""
    layer = cls(H, H, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((B, T, H)).astype(np.float32)
    split = "units" if threads > 1 else "none"
    rows = "rows" if threads > 1 and B >= 8 else "none"
    plans = {"blas": Plan("blas", "gemm", rows, threads if rows == "rows" else 1),
             "rows in place": Plan("units", "step", split, threads, False),
             "packed": Plan("packed", "step", rows, threads if rows == "rows" else 1)}
    outs = {}
    for label, p in plans.items():
        layer._forced_plan = p
        outs[label] = layer(x)[0]
    for label, o in outs.items():
        np.testing.assert_allclose(o, outs["blas"], rtol=1e-4, atol=1e-5, err_msg=label)
    times: dict = {label: [] for label in plans}
    for rnd in range(rounds):
        for label, p in (list(plans.items()) if rnd % 2 else list(plans.items())[::-1]):
            layer._forced_plan = p
            t0 = time.perf_counter()
            layer(x)
            times[label].append(time.perf_counter() - t0)
    return [(label, _median_us(t)) for label, t in times.items()]


def steps(H: int, B: int, threads: int, rounds: int) -> tuple:
    """Median us of a batched streaming step with the short-call rule off (BLAS) and on."""
    rule = _planner.TABLE["short_rows_min_bytes"]
    times: dict = {"off": [], "on": []}
    x = np.random.default_rng(0).standard_normal((B, H)).astype(np.float32)
    for rnd in range(max(4, rounds // 10)):
        for label in (("off", "on") if rnd % 2 else ("on", "off")):
            _planner.TABLE["short_rows_min_bytes"] = rule if label == "on" else float("inf")
            layer, state = rf.nn.LSTM(H, H, seed=0).eval(), None
            for _ in range(10):
                _, state = layer.step(x, state, n_threads=threads)
            t0 = time.perf_counter()
            for _ in range(100):
                _, state = layer.step(x, state, n_threads=threads)
            times[label].append((time.perf_counter() - t0) / 100)
    _planner.TABLE["short_rows_min_bytes"] = rule
    return float(np.median(times["off"])) * 1e6, float(np.median(times["on"])) * 1e6


def linear(K: int, N: int, M: int, threads: int, rounds: int, force: bool = False) -> tuple:
    """Median us of Linear(K, N) on M rows with the few-rows product off (BLAS) and on (with ``force``, on
    however many rows: W's rows in place past the kernels' own limit too)."""
    from rnnfast._kernels import _recurrent as k
    most = k.FEW_ROWS_MAX
    on = 1 << 30 if force else most
    layer = rf.nn.Linear(K, N, seed=0)
    x = np.random.default_rng(0).standard_normal((M, K)).astype(np.float32)
    times: dict = {"off": [], "on": []}
    for rnd in range(rounds):
        for label in (("off", "on") if rnd % 2 else ("on", "off")):
            k.FEW_ROWS_MAX = on if label == "on" else 0
            t0 = time.perf_counter()
            layer(x, n_threads=threads)
            times[label].append(time.perf_counter() - t0)
    k.FEW_ROWS_MAX = most
    return _median_us(times["off"]), _median_us(times["on"])


# (K, N) of the Linear layers the rows sweep (--linear-rows) races: 0.5-20 MB of weights, K 256-4096
LINEAR_SHAPES = [(512, 256), (256, 512), (1024, 128), (512, 512), (768, 384), (4096, 64), (512, 1024),
                 (512, 2048), (1024, 1024), (512, 4096), (1024, 2048), (1024, 4096), (512, 10000)]


def linear_rows(threads: int, rounds: int, rows=(32, 48, 64, 96, 128, 160, 192, 256), shapes=None) -> list:
    """BLAS / in place (forced) for every ``shapes`` (default LINEAR_SHAPES) layer on ``rows``, printed a
    line per shape ('*' marks the row counts the kernels' rule, _recurrent.in_place_rows_max, sends in
    place) and returned as (K, N, M, ratio, in the rule) tuples."""
    from rnnfast._kernels import _recurrent as k
    out = []
    for K, N in shapes or LINEAR_SHAPES:
        limit = k.in_place_rows_max(K, K * N * 4, threads)
        cells = []
        for M in rows:
            off, on = linear(K, N, M, threads, max(6, min(rounds, int(4e8 / (2 * M * N * K)))), force=True)
            cells.append(f"{M}{'*' if M <= limit else ' '}:{off / on:.2f}")
            out.append((K, N, M, off / on, M <= limit))
        print(f"threads={threads} Linear({K:4d}, {N:5d}) {K * N * 4 / 2**20:5.2f} MB  " + " ".join(cells), flush=True)
    return out


def seeded_shapes(n: int, seed: int = 7):
    """n seeded short inference shapes (cell, B, T, I, H, layers, bidirectional): B 2-64, H 16-384, T 1-3,
    I = H/2, H, 2H or 1."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        cell = str(rng.choice(["lstm", "gru", "rnn"]))
        B = int(rng.choice([2, 3, 4, 6, 8, 12, 16, 32, 64]))
        H = int(rng.choice([16, 32, 48, 64, 100, 128, 200, 256, 384]))
        T = int(rng.choice([1, 2, 3]))
        I = max(1, int(H * rng.choice([0.5, 1, 2]))) if rng.random() > 0.15 else 1
        yield cell, B, T, I, H, int(rng.choice([1, 1, 2])), bool(rng.random() < 0.3)


def short_rule(threads: int, n: int, rounds: int = 9) -> list:
    """The short-call rule (_planner._short_blas) against BLAS's GEMM a step (the rule with
    short_blas_max_bgt unbounded, as before session 23) on the seeded shapes whose plan it changes: warm
    loops of each plan, alternating, median us; printed a line per shape and returned as old / new ratios."""
    ratios = []
    for cell, B, T, I, H, L, bi in seeded_shapes(n):
        layer = getattr(rf.nn, cell.upper())(I, H, num_layers=L, bidirectional=bi, dtype=np.float32, seed=0).eval()
        x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
        layer._kplans.clear()
        new = layer.plan_for(x, n_threads=threads)
        saved = _planner.TABLE["short_blas_max_bgt"]
        _planner.TABLE["short_blas_max_bgt"] = 10**9
        layer._kplans.clear()
        old = layer.plan_for(x, n_threads=threads)
        _planner.TABLE["short_blas_max_bgt"] = saved
        layer._kplans.clear()
        if new == old:
            continue
        layer._forced_plan = old
        t0 = time.perf_counter()
        layer(x, n_threads=threads)
        reps = max(3, int(0.01 / max(time.perf_counter() - t0, 1e-6)))
        times = {"old": [], "new": []}
        for r in range(rounds):
            for key, plan in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
                layer._forced_plan = plan
                t0 = time.perf_counter()
                for _ in range(reps):
                    layer(x, n_threads=threads)
                times[key].append((time.perf_counter() - t0) / reps)
        o, w = (float(np.median(times[k])) * 1e6 for k in ("old", "new"))
        ratios.append(o / w)
        print(f"threads={threads} {cell} B={B} T={T} I={I} H={H} L={L}{' bi' if bi else ''}: BLAS {o:8.1f} us, "
              f"{new} {w:8.1f} us, {o / w:.2f}x", flush=True)
    r = np.array(ratios)
    if len(r):
        print(f"threads={threads}: {len(r)} plans changed, geometric mean {np.exp(np.log(r).mean()):.2f}x, "
              f"range {r.min():.2f}-{r.max():.2f}, {(r < 1).sum()} slower")
    return ratios


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", default="128,256,1024")
    ap.add_argument("--rows", default="2,4,16,32,64")
    ap.add_argument("--steps", default="1,3")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--linear-rows", action="store_true",
                    help="only the Linear rows sweep: BLAS / in place on 32-256 rows of 13 weight shapes")
    ap.add_argument("--rule", type=int, default=0, metavar="N",
                    help="only the short-call rule against BLAS on the first N seeded shapes it changes")
    a = ap.parse_args(argv)
    if a.rule:
        short_rule(a.threads, a.rule)
        return
    if a.linear_rows:
        linear_rows(a.threads, a.rounds)
        return
    ints = [[int(v) for v in s.split(",")] for s in (a.hidden, a.rows, a.steps)]
    for cls in (rf.nn.LSTM, rf.nn.GRU):
        for H in ints[0]:
            for B in ints[1]:
                for T in ints[2]:
                    res = dict(race(cls, H, B, T, a.threads, a.rounds))
                    cells = "  ".join(f"{k} {v:8.0f} ({v / res['blas']:.2f})" for k, v in res.items())
                    print(f"{cls.__name__} I=H={H:<5} B={B:<3} T={T}  {cells}", flush=True)
    for H in ints[0]:
        for B in ints[1]:
            off, on = steps(H, B, a.threads, a.rounds)
            print(f"LSTM I=H={H} step of B={B}: BLAS (rule off) {off:.0f} us, rule on {on:.0f} us, {off / on:.2f}x")
    for K, N in ((768, 384), (1024, 1024), (1024, 4096)):
        for M in (1, 2, 5, 16, 32, 64):
            off, on = linear(K, N, M, a.threads, a.rounds * 4)
            print(f"Linear({K}, {N}) on {M} rows: BLAS {off:.1f} us, in place {on:.1f} us, {off / on:.2f}x")


if __name__ == "__main__":
    main()
