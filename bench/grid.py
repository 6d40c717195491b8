#!/usr/bin/env python3
"""The shape grid: rnnfast beside PyTorch, ONNX Runtime and TensorFlow on a fixed, seeded set of shapes.

Run from the repository root::

    python bench/grid.py                         # every point (93), 2 threads, 7 rounds
    python bench/grid.py --quick                 # a fixed subset (32 points), 5 shorter rounds
    python bench/grid.py --list                  # the points and a rough estimate of a run's length
    python bench/grid.py --only 'lstm-B2-|issue' --rounds 3 --peers torch
    python bench/grid.py --quick --precision bf16,int8   # low precision: the inference points only

Method: that of ``compare.py``, whose code it shares (``_runner.py``, ``_peers.py``, ``_cases.py``): the same
weights for every framework (PyTorch's layout, converted), outputs and gradients checked against rnnfast
before anything is timed, one process per framework, the same thread count everywhere (``--threads``,
default 2), rounds interleaved across the frameworks, the median time per call. The workers run without
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``.

The points (``grid_points()``): the losing cases named in issue 10 (tag ``issue``), tiny models (H <= 16,
one feature; ``tiny``), a sweep that gives every batch size every cell (``sweep``) and random draws
(``random``), all from one seed. B runs over 1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256 and 512; H from 16 to
1024 with non-powers of two; I from 1 to 4H; T from 8 to 1000; LSTM, GRU and RNN (tanh); 1 or 2 layers,
uni- or bidirectional; ``infer`` (eval-mode forward) and ``train`` (forward + backward of the sum of the
outputs, every gradient). T (and, if need be, the draw) is cut until a call is expected to take under
``CALL_BUDGET_S`` in PyTorch, so that no point dominates the run.

Per point it prints rnnfast's time, each peer's, the ratio (fastest peer ms / rnnfast ms: above 1 rnnfast
is faster), rnnfast's GFLOP/s and the kernel plan rnnfast chose (``layer.plan_for(...)``; "-" where the
layer has none) and, in brackets, what disturbed rnnfast's rounds: its calls whose barriers found the cores
busy (the rest of such a call runs on one thread) and those the batch-1 back-off ran on one thread, the
most of a core the other workers used during one of its rounds, and the median share other programs used
(``_runner.interference``; a point with such a note is worth re-running on a quiet machine); then the
summary (worst ratio, geometric mean, share of points >= 1.0) for infer, train and all. It writes every record to JSON (``--json``) and, when matplotlib is installed, a plot of the
ratios against B and against H, one panel per cell and mode (``--plot``).

``--precision bf16,int8`` times low-precision inference instead (issue 16): every inference point runs
rnnfast float32 (the reference of the checks), ``rnnfast.quantize(layer, p)`` and the peers' own paths of
that precision, as ``compare.py --precision`` does (``_runner.LOWP_IMPLS``: PyTorch bfloat16 weights and
bfloat16 autocast; ONNX Runtime ``quantize_dynamic``, which has an int8 operator for LSTM only), each checked
against rnnfast float32 within ``_runner.LOWP_RTOL`` (5e-2: bfloat16 keeps 8 bits, int8 differs by 1e-2 to
2e-2). The train points are left out: quantized models are inference only. Per point and precision it
prints rnnfast's low-precision ms, its float32 ms and speed-up, each peer's ms, the ratio (fastest peer of
that precision / rnnfast's) and the instruction path; the summary (worst, geometric mean, share >= 1) is
per precision, and the plot's panels are per cell and precision.

``--precision f32-frozen`` (not a precision) times float32 inference on ``rf.nn.freeze``'s read-only copy,
which keeps its weight packs from call to call as an ONNX Runtime session does its own, against the float32
ONNX Runtime and PyTorch (``ort-f32``, ``torch-f32``): its "x f32" column is frozen against the ordinary
layer, its ratio fastest peer / frozen.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time

from _cases import CELLS, MODES, Shape
from _peers import FRAMEWORKS
from _runner import (LOWP_IMPLS, WorkerProc, add_timing_options, fmt_ms, impl, interference, lowp_impls,
                     machine_info, parse_precisions, run_case, seq_impls, slow_blas_warning, start_workers,
                     timing_defaults)

PEERS = tuple(f for f in FRAMEWORKS if f != "rnnfast")
BATCHES = (1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 512)
HIDDEN = (16, 24, 32, 48, 64, 96, 128, 200, 256, 384, 512, 600, 768, 1024)
STEPS = (8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 300, 500, 1000)
INPUT_RATIOS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4)  # I = ratio * H (or a single feature, see _draw_input)
SEED = 20261205
ROUNDS = 7  # timed rounds per framework and point (--quick: 5); compare.py takes 11 over far fewer cases
N_RANDOM = 40
CALL_BUDGET_S = 0.15  # a point's expected PyTorch call stays under this (see estimate_call_s)
AXIS_TICKS = {"B": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512), "H": (8, 16, 32, 64, 128, 256, 512, 1024)}
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The off-grid cases of issue 10 that lost to a peer, and tiny models (per-call overhead).
ISSUE_SHAPES = (
    Shape("lstm", 2, 100, 256, 512, mode="train"), Shape("lstm", 2, 100, 256, 512, mode="infer"),
    Shape("lstm", 8, 50, 1024, 128, mode="infer"), Shape("gru", 4, 50, 256, 256, mode="infer"),
    Shape("lstm", 8, 30, 512, 512, mode="infer"), Shape("lstm", 8, 30, 512, 512, mode="train"),
    Shape("lstm", 256, 20, 64, 64, mode="infer"), Shape("gru", 1, 20, 512, 1024, mode="infer"),
    Shape("lstm", 16, 50, 1024, 1024, mode="infer"),
)
TINY_SHAPES = (
    Shape("lstm", 1, 100, 1, 8, mode="infer"), Shape("gru", 1, 1000, 1, 16, mode="infer"),
    Shape("rnn", 1, 8, 1, 16, mode="infer"), Shape("rnn", 4, 50, 1, 16, mode="train"),
    Shape("lstm", 32, 200, 1, 16, mode="train"), Shape("gru", 2, 20, 1, 8, mode="train"),
    Shape("lstm", 16, 50, 1, 16, layers=2, bidirectional=True, mode="infer"),
    Shape("lstm", 1, 1000, 1, 16, mode="train"),
)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: a shape, the stratum it comes from, and whether ``--quick`` runs it."""

    shape: Shape
    tag: str
    quick: bool = False

    @property
    def name(self) -> str:
        return self.shape.name


# ----------------------------------------------------------------------------------------------- the points


def estimate_call_s(s: Shape) -> float:
    """A rough, deliberately pessimistic PyTorch time per call on 2 cores (seconds), used only to bound T.

    Products run at ``min(100, 8 B)`` GFLOP/s (batch 1 is a GEMV, bound by reading the weights), plus a fixed
    cost per time step, layer and direction: 20 us in inference, 150 us in training (measured with torch 2.13
    at B = 1-4, H = 8-16: 17 and 174 us).
    """
    rate = min(100e9, 8e9 * s.B)
    per_step = 150e-6 if s.mode == "train" else 20e-6
    return s.flop / rate + per_step * s.T * s.layers * s.D


def _pick(rng: random.Random, seq):
    """An element of ``seq`` from ``rng.random()`` alone (whose stream Python guarantees across versions)."""
    return seq[int(rng.random() * len(seq))]


def _draw_input(rng: random.Random, H: int) -> int:
    if rng.random() < 0.1:
        return 1  # one feature
    return max(1, round(H * _pick(rng, INPUT_RATIOS)))


def _fit_steps(s: Shape) -> Shape | None:
    """``s`` with T cut to the longest of :data:`STEPS` (at most its own) within the budget; None if none is."""
    for T in sorted((t for t in STEPS if t <= s.T), reverse=True):
        cand = dataclasses.replace(s, T=T)
        if estimate_call_s(cand) <= CALL_BUDGET_S:
            return cand
    return None


def _draw(rng: random.Random, seen: set, B=None, cell=None, mode=None) -> Shape:
    """A random shape within the budget, not in ``seen``; B, cell and mode are drawn unless given."""
    while True:
        H = _pick(rng, HIDDEN)
        s = Shape(cell or _pick(rng, CELLS), B or _pick(rng, BATCHES), _pick(rng, STEPS), _draw_input(rng, H), H,
                  layers=2 if rng.random() < 0.3 else 1, bidirectional=rng.random() < 0.3,
                  mode=mode or _pick(rng, MODES))
        s = _fit_steps(s)
        if s is not None and s not in seen:
            seen.add(s)
            return s


def grid_points(seed: int = SEED) -> list[Point]:
    """The grid, always the same list: the issue's shapes, tiny models, a sweep over B x cell, random draws.

    ``--quick`` runs the issue's shapes, every other tiny one and every fourth of the rest. Another ``seed``
    (``--seed``) draws the sweep and the random points afresh: shapes the planner was never tuned on.
    """
    rng = random.Random(seed)
    points = [Point(s, "issue", quick=True) for s in ISSUE_SHAPES]
    points += [Point(s, "tiny", quick=k % 2 == 0) for k, s in enumerate(TINY_SHAPES)]
    seen = {p.shape for p in points}
    k = 0
    for i, B in enumerate(BATCHES):
        for j, cell in enumerate(CELLS):
            points.append(Point(_draw(rng, seen, B=B, cell=cell, mode=MODES[(i + j) % 2]), "sweep", k % 4 == 0))
            k += 1
    for _ in range(N_RANDOM):
        points.append(Point(_draw(rng, seen), "random", k % 4 == 0))
        k += 1
    return points


def select_points(points: list[Point], quick: bool = False, only: str | None = None,
                  infer_only: bool = False) -> list[Point]:
    """The points a run takes: the quick subset with ``quick``, those whose "name tag" matches ``only``, and
    with ``infer_only`` (``--precision``: quantized models do no training) the inference points alone."""
    if quick:
        points = [p for p in points if p.quick]
    if infer_only:
        points = [p for p in points if p.shape.mode == "infer"]
    if only:
        pat = re.compile(only)
        points = [p for p in points if pat.search(f"{p.name} {p.tag}")]
    return points


def estimate_wall_s(points: list[Point], rounds: int, min_round: float, warmup: int, n_frameworks: int) -> float:
    """A rough wall time of a run (every framework taken as slow as :func:`estimate_call_s`'s PyTorch;
    ``n_frameworks``: the implementations timed per point)."""
    total = 0.0
    for p in points:
        c = estimate_call_s(p.shape)
        n_fw = n_frameworks - (1 if p.shape.mode == "train" and n_frameworks > 2 else 0)  # no ORT training
        per_fw = 0.3 + (2 + warmup) * c + max(c, 0.025) + rounds * (max(c, min_round) + 0.02)
        total += n_fw * per_fw
    return total


# ----------------------------------------------------------------------------------------------- results


def _rate(impls: dict, ours: str, peer_names) -> dict:
    """rnnfast's implementation ``ours`` against the peers ``peer_names`` in a record's ``impls``: its time
    (None unless timed), status, GFLOP/s and plan, each peer's time (or status), the fastest peer and the
    ratio fastest peer / ours (None without both)."""
    rf = impls.get(ours, {})
    peers = {n: impls[n].get("median_s") if impls[n].get("status") == "ok" else impls[n].get("status")
             for n in peer_names if n in impls}
    timed = {n: t for n, t in peers.items() if isinstance(t, float)}
    fastest = min(timed, key=timed.get) if timed else None
    base = rf.get("median_s") if rf.get("status") == "ok" else None
    return {"rnnfast_s": base, "rnnfast_status": rf.get("status"), "peers": peers, "fastest_peer": fastest,
            "ratio": timed[fastest] / base if fastest and base else None,
            "gflops": rf.get("gflops") if base else None, "plan": rf.get("info", {}).get("plan", "-"),
            "interference": interference(rf)}


def point_result(point: Point, rec: dict, precisions=()) -> dict:
    """Times, ratio, GFLOP/s and plan of one point from :func:`_runner.run_case`'s record; with
    ``precisions`` (``--precision``), under ``"precisions"`` the same for each precision's rnnfast
    implementation against that precision's peers, and its speed-up over rnnfast float32 (``vs_float32``)."""
    impls = rec["impls"]
    res = {"name": point.name, "tag": point.tag, "shape": dataclasses.asdict(point.shape),
           "flop": point.shape.flop, **_rate(impls, "rnnfast", [n for n in impls if n != "rnnfast" and
                                                                not _is_lowp(n)]),
           "wall_s": rec.get("wall_s"), "record": rec}
    if precisions:
        res["precisions"] = {}
        for p in precisions:
            ours, *peers = [name for name, _, _ in LOWP_IMPLS[p]]
            r = res["precisions"][p] = _rate(impls, ours, peers)
            r["vs_float32"] = res["rnnfast_s"] / r["rnnfast_s"] if res["rnnfast_s"] and r["rnnfast_s"] else None
    return res


def _is_lowp(name: str) -> bool:
    return any(name == n for impls in LOWP_IMPLS.values() for n, _, _ in impls)


def summarize(ratios) -> dict:
    """Worst ratio, geometric mean and share of ratios >= 1.0 of the rated points (None ratios are left out).

    Returns ``{"n", "unrated", "worst", "geomean", "share_ge_1"}``; the last three are None when no point
    is rated.
    """
    ratios = list(ratios)
    rated = [r for r in ratios if r is not None]
    out = {"n": len(rated), "unrated": len(ratios) - len(rated), "worst": None, "geomean": None,
           "share_ge_1": None}
    if rated:
        out["worst"] = min(rated)
        out["geomean"] = math.exp(sum(math.log(r) for r in rated) / len(rated))
        out["share_ge_1"] = sum(r >= 1.0 for r in rated) / len(rated)
    return out


def summary_by_mode(results: list[dict]) -> dict:
    """:func:`summarize` for infer, train and all points."""
    out = {m: summarize(r["ratio"] for r in results if r["shape"]["mode"] == m) for m in MODES}
    out["all"] = summarize(r["ratio"] for r in results)
    return out


def _fmt_peer(t) -> str:
    if isinstance(t, float):
        return fmt_ms(t)
    return {"skipped": "-", "disagrees": "DIFF", "error": "ERR", "unchecked": "-", None: "-"}.get(t, str(t))


def format_header(peers) -> str:
    return (f"{'point':<40} {'tag':<6} {'rnnfast ms':>10} " + " ".join(f"{p[:11] + ' ms':>14}" for p in peers)
            + f" {'ratio':>6} {'GFLOP/s':>8}  plan")


def format_row(res: dict, peers) -> str:
    """One point's line: times, ratio (fastest peer / rnnfast), rnnfast's GFLOP/s, its plan."""
    rf = fmt_ms(res["rnnfast_s"]) if res["rnnfast_s"] else _fmt_peer(res["rnnfast_status"])
    ratio = f"{res['ratio']:.2f}" if res["ratio"] is not None else "-"
    gf = f"{res['gflops']:.1f}" if res["gflops"] is not None else "-"
    return (f"{res['name']:<40} {res['tag']:<6} {rf:>10} "
            + " ".join(f"{_fmt_peer(res['peers'].get(p)):>14}" for p in peers)
            + f" {ratio:>6} {gf:>8}  {' '.join(str(res['plan']).split())}"  # the plan on one line
            + format_interference(res.get("interference")))


def disturbed_note(results: list[dict]) -> str:
    """A line naming the points whose rnnfast rounds were disturbed (busy barriers, the back-off, the other
    workers running), or empty: their ratios are worth measuring again on a quiet machine."""
    names = [r["name"] for r in results if format_interference(r.get("interference"))]
    if not names:
        return ""
    return (f"\n{len(names)} of {len(results)} points had rnnfast's rounds disturbed (see the brackets): "
            + ", ".join(names))


def format_interference(f) -> str:
    """The end of a point's line when something disturbed rnnfast's rounds (:func:`_runner.interference`):
    its calls that found the cores busy and that the back-off ran on one thread, the most of a core the other
    workers used during one of its rounds, the median other programs used. Empty when nothing did."""
    if not f:
        return ""
    parts = []
    if f["busy"] or f["serial"]:
        parts.append(f"busy {f['busy']}/{f['calls']} calls, {f['serial']} on one thread")
    if f["others"] >= 0.05:
        parts.append(f"peers {f['others']:.2f} core")
    if f["machine"] >= 0.1:
        parts.append(f"machine {f['machine']:.2f} core")
    return f"  [{'; '.join(parts)}]" if parts else ""


def summary_by_precision(results: list[dict], precisions) -> dict:
    """:func:`summarize` of each precision's ratios (fastest peer of that precision / rnnfast's), and under
    ``"<precision> vs float32"`` of rnnfast's speed-ups over its own float32."""
    out = {p: summarize(r["precisions"][p]["ratio"] for r in results) for p in precisions}
    out.update({f"{p} vs float32": summarize(r["precisions"][p]["vs_float32"] for r in results)
                for p in precisions})
    return out


LOWP_HEADER = (f"{'point':<40} {'tag':<6} {'prec':<5} {'ms':>9} {'f32 ms':>9} {'x f32':>6} {'ratio':>6}  "
               "peers (ms)  |  path")


def format_lowp_rows(res: dict) -> list[str]:
    """A ``--precision`` point's lines, one per precision: rnnfast's ms in it, its float32 ms and speed-up,
    the ratio (fastest peer of the precision / rnnfast's), each peer's ms and rnnfast's instruction path."""
    rows = []
    f32 = fmt_ms(res["rnnfast_s"]) if res["rnnfast_s"] else _fmt_peer(res["rnnfast_status"])
    for p, r in res["precisions"].items():
        ms = fmt_ms(r["rnnfast_s"]) if r["rnnfast_s"] else _fmt_peer(r["rnnfast_status"])
        x32 = f"{r['vs_float32']:.2f}" if r["vs_float32"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        peers = ", ".join(f"{n} {_fmt_peer(t)}" for n, t in r["peers"].items()) or "-"
        rows.append(f"{res['name']:<40} {res['tag']:<6} {p:<5} {ms:>9} {f32:>9} {x32:>6} {ratio:>6}  {peers}  |  "
                    + " ".join(str(r["plan"]).split()))
    return rows


def format_summary(summary: dict) -> str:
    keys = [k for k in (*MODES, "all") if k in summary] or list(summary)
    what = ("fastest peer ms / rnnfast ms" if "all" in summary else
            "fastest peer ms of the precision / rnnfast's ms of it; 'vs float32': rnnfast float32 ms / its ms")
    width = max(6, *(len(k) for k in keys))
    lines = ["", f"ratio = {what} (above 1: rnnfast is faster)",
             f"{'':<{width}} {'points':>6} {'worst':>7} {'geomean':>8} {'>= 1.0':>7}"]
    for key in keys:
        s = summary[key]
        unrated = f"   ({s['unrated']} unrated)" if s["unrated"] else ""
        if s["n"]:
            lines.append(f"{key:<{width}} {s['n']:>6} {s['worst']:>7.2f} {s['geomean']:>8.2f} "
                         f"{100 * s['share_ge_1']:>6.0f}%" + unrated)
        else:
            lines.append(f"{key:<{width}} {0:>6} {'-':>7} {'-':>8} {'-':>7}" + unrated)
    return "\n".join(lines)


def _plot_columns(precisions=()) -> list:
    """The plot's panel columns: (label, ratio of a result or None) per mode, or per precision."""
    if precisions:
        return [(p, lambda r, p=p: r["precisions"][p]["ratio"]) for p in precisions]
    return [(m, lambda r, m=m: r["ratio"] if r["shape"]["mode"] == m else None) for m in MODES]


def plot(results: list[dict], path: str, title: str, precisions=()) -> bool:
    """Ratio against B and against H, one panel per cell and mode (with ``precisions``: per cell and
    precision), log axes, a line at 1.0, to PNG.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    columns = _plot_columns(precisions)
    fig, axes = plt.subplots(len(CELLS), 2 * len(columns), figsize=(8 * len(columns), 3.2 * len(CELLS)),
                             squeeze=False)
    for i, cell in enumerate(CELLS):
        for j, (mode, ratio) in enumerate(columns):
            pts = [r for r in results if r["shape"]["cell"] == cell and ratio(r)]
            for k, key in enumerate(("B", "H")):
                ax = axes[i][2 * j + k]
                for tag, marker in (("issue", "s"), ("tiny", "^"), ("sweep", "o"), ("random", "o")):
                    sel = [r for r in pts if r["tag"] == tag]
                    ax.scatter([r["shape"][key] for r in sel], [ratio(r) for r in sel], marker=marker, s=18,
                               label=tag, alpha=0.8)
                ax.axhline(1.0, color="k", lw=0.8)
                if not pts:
                    ax.text(0.5, 0.5, "no points", transform=ax.transAxes, ha="center", color="0.5")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ticks = AXIS_TICKS[key]
                ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.5)
                ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
                ax.xaxis.set_minor_locator(ticker.NullLocator())
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
                ax.tick_params(axis="y", which="both", labelsize=7)
                ax.set_xlabel(key)
                ax.set_title(f"{cell} {mode}: ratio vs {key}", fontsize=9)
                if k == 0:
                    ax.set_ylabel("fastest peer / rnnfast")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------- the run


def _case(point: Point, precisions=()) -> dict:
    """The point as a case of :func:`_runner.run_case`; with ``precisions``, rnnfast float32 (the reference)
    and each precision's implementations (inference points only)."""
    s = point.shape
    if precisions and s.mode != "infer":
        raise ValueError(f"{s.name}: quantized models are inference only")
    impls = [impl("rnnfast")] + lowp_impls(precisions) if precisions else seq_impls(s.mode)
    return dict(name=s.name, kind="seq", cell=s.cell, shape="grid", mode=s.mode, B=s.B, T=s.T, I=s.I, H=s.H,
                layers=s.layers, bidirectional=s.bidirectional, flop=s.flop, impls=impls)


def frameworks_of(peers, precisions=()) -> list[str]:
    """The frameworks whose workers a run starts: rnnfast and the selected peers (with ``precisions``,
    those of the precisions' implementations)."""
    if not precisions:
        return ["rnnfast", *peers]
    needed = {spec["fw"] for spec in lowp_impls(precisions)}
    return ["rnnfast", *(p for p in peers if p in needed)]


def _revive(workers: dict, threads: int, tmp: str, timeout: float, log) -> None:
    """Start again the workers that died on an earlier point (a crash there must not end the run)."""
    for fw, w in list(workers.items()):
        if w.dead:
            w.close()
            nw = WorkerProc(fw, threads, tmp, timeout)
            try:
                if nw.recv().get("ok"):
                    workers[fw] = nw
                    log(f"{fw}: worker restarted")
                    continue
            except RuntimeError:
                pass
            nw.close()
            del workers[fw]
            log(f"{fw}: could not restart its worker; skipped from here on")


def run_points(points, workers, args, tmp, log, peers) -> list[dict]:
    """Run every point, printing its line as it finishes; returns the per-point results."""
    results = []
    precisions = args.precision
    print(LOWP_HEADER if precisions else format_header(peers), flush=True)
    for point in points:
        _revive(workers, args.threads, tmp, args.timeout, log)
        if "rnnfast" not in workers:
            sys.exit("rnnfast's worker died and could not be restarted; see " + tmp)
        t0 = time.perf_counter()
        rec = run_case(_case(point, precisions), workers, tmp, args, log)
        rec["wall_s"] = time.perf_counter() - t0
        res = point_result(point, rec, precisions)
        results.append(res)
        print("\n".join(format_lowp_rows(res)) if precisions else format_row(res, peers), flush=True)
        log(f"  {point.name}: {rec['wall_s']:.1f} s")
    return results


def _default_json_path(precisions=()) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M")
    return os.path.join(RESULTS_DIR, f"grid-{'-'.join(precisions) + '-' if precisions else ''}{stamp}.json")


def _peers_arg(text: str) -> list[str]:
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        raise SystemExit(f"--peers: unknown {bad}; known: {', '.join(PEERS)}")
    return peers


def write_json(path, args, points, results, summary, versions, machine, env_warn, wall) -> None:
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv,
           "threads": args.threads, "rounds": args.rounds, "min_round_s": args.min_round, "warmup": args.warmup,
           "gap_s": args.gap, "rtol": args.rtol, "quick": args.quick, "only": args.only, "peers": args.peers,
           "precision": args.precision,
           "seed": args.seed, "n_points": len(points), "wall_s": wall, "machine": machine, "env_warnings": env_warn,
           "versions": versions, "summary": summary, "points": results}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=float)


def _run_points_of(args, log) -> list[Point]:
    """The points of a run (exits when none is selected); says how many train points --precision leaves out."""
    points = select_points(grid_points(args.seed), args.quick, args.only, infer_only=bool(args.precision))
    if not points:
        sys.exit(f"--only {args.only!r}: no point matches (see --list)")
    if args.precision:
        n_train = len(select_points(grid_points(args.seed), args.quick, args.only)) - len(points)
        log(f"--precision {','.join(args.precision)}: {n_train} train points left out (quantized models are "
            "inference only: rnnfast.quantize refuses training)")
    return points


def impls_per_point(args) -> int:
    """How many implementations a run times at an (inference) point."""
    if args.precision:
        return 1 + len(lowp_impls(args.precision))
    return len(frameworks_of(_peers_arg(args.peers)))


def _plot_run(args, results, path, machine, log) -> None:
    if args.no_plot:
        return
    png = args.plot or os.path.splitext(path)[0] + ".png"
    p = args.precision
    title = (f"rnnfast {'/'.join(p)} vs the fastest peer of that precision" if p else "rnnfast vs fastest peer")
    if plot(results, png, title + f", {args.threads} threads ({machine.get('git', '?')})", p):
        log(f"wrote {png}")


def driver(args) -> None:
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    timing_defaults(args, ROUNDS)
    peers, precisions = _peers_arg(args.peers), args.precision
    points = _run_points_of(args, log)
    frameworks = frameworks_of(peers, precisions)
    env_warn = slow_blas_warning()
    if env_warn:
        log("note: " + ", ".join(env_warn) + " set here; removed from the workers' environment")
    machine = machine_info()
    est = estimate_wall_s(points, args.rounds, args.min_round, args.warmup, impls_per_point(args))
    log(f"machine: {machine.get('lscpu Model name', '?')}, {machine.get('affinity_cpus', '?')} CPUs; threads = "
        f"{args.threads}; {len(points)} points, {args.rounds} rounds; rough estimate {est / 60:.0f} min")
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="rnnfast-grid-")
    workers, versions = start_workers(frameworks, args.threads, tmp, args.timeout, log)
    try:
        if "rnnfast" not in workers:
            sys.exit("rnnfast itself could not start; see " + tmp)
        results = run_points(points, workers, args, tmp, log, peers)
    finally:
        for w in workers.values():
            w.close()
    wall = time.perf_counter() - t_start
    summary = summary_by_precision(results, precisions) if precisions else summary_by_mode(results)
    print(format_summary(summary))
    print(f"\n{len(points)} points, {args.threads} threads, median of {args.rounds} interleaved rounds; "
          f"run took {wall:.0f} s ({wall / len(points):.1f} s a point)" + disturbed_note(results))
    path = args.json or _default_json_path(precisions)
    write_json(path, args, points, results, summary, versions, machine, env_warn, wall)
    log(f"wrote {path}")
    _plot_run(args, results, path, machine, log)
    if args.keep_logs:
        log(f"worker logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def list_points(points: list[Point], args) -> None:
    print(f"{'point':<40} {'tag':<6} {'quick':<5} {'GFLOP':>8} {'est. ms':>8}")
    for p in points:
        print(f"{p.name:<40} {p.tag:<6} {'yes' if p.quick else '':<5} {p.shape.flop / 1e9:>8.3f} "
              f"{1e3 * estimate_call_s(p.shape):>8.1f}")
    est = estimate_wall_s(points, args.rounds, args.min_round, args.warmup, impls_per_point(args))
    print(f"{len(points)} points; rough estimate of a run: {est / 60:.1f} min (pessimistic PyTorch model, "
          f"{args.rounds} rounds)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    p.add_argument("--quick", action="store_true", help="the fixed quick subset, 5 rounds of >= 20 ms (about "
                   "5 minutes)")
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"draw the sweep and random points from this seed instead of {SEED} (the pinned grid): "
                        "an out-of-sample set of shapes")
    p.add_argument("--only", default=None, help="regular expression: run the points whose 'name tag' it "
                   "matches (re.search), e.g. 'lstm-B2-' or 'issue|tiny'")
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers (default %(default)s); "
                   "one that is not installed is reported and skipped")
    p.add_argument("--list", action="store_true", help="print the points (with --quick/--only: those selected) "
                   "and exit")
    p.add_argument("--json", default=None, help="where to write the results (default "
                   "bench/results/grid-<UTC date and time>.json)")
    p.add_argument("--plot", default=None, help="PNG of the ratios (default: the JSON path with .png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--precision", type=parse_precisions, default=[], help="low-precision inference instead: "
                   "rnnfast.quantize beside the peers' own paths, comma-separated (bf16: PyTorch bfloat16 weights "
                   "and autocast; int8: ONNX Runtime quantize_dynamic, LSTM only); the train points are left out")
    add_timing_options(p, ROUNDS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.only is not None:
        try:
            re.compile(args.only)
        except re.error as e:
            p.error(f"--only: not a regular expression: {e}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.list:
        timing_defaults(args, ROUNDS)
        points = select_points(grid_points(args.seed), args.quick, args.only, infer_only=bool(args.precision))
        list_points(points, args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
