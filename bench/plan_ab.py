"""Time every candidate plan of a shape side by side in one process: the planner's choice against the others.

For each shape (a grid point's name, e.g. ``lstm-B2-T10-I1024-H1024-L2-bi-infer``), the candidates of
``rnnfast._planner.candidates`` on ``--threads`` threads and on one (as ``rnnfast.tune`` times them) run
interleaved, one call each a round, for ``--rounds`` rounds after a warm-up; it prints each plan's min and
median ms, the cost model's estimate, and marks the plan the planner picks (``*``). With ``--batch-ratio``
it also times the same call at batch 1 and prints B / batch-1 (the issue's "batch 2-3 within 1.3x").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/plan_ab.py --threads 2 \\
        lstm-B2-T10-I1024-H1024-L2-bi-infer gru-B2-T50-I256-H256-L1-uni-infer

``--print-plans`` prints the planner's plan of every point and stops; ``--old-plans FILE`` (those lines from
another build, e.g. a worktree of the last commit) races only the points whose plan changed and ends with
old plan / new plan per point: a planner change judged on every point it moves.

``--calls N`` runs a plan N calls in a row each round and times all but the first: the steady state of a
service that keeps one plan (with kept weight packs, one call after another plan's ranks plans differently).
``--kept-rule N --calls 5`` races N seeded few-rows shapes' plans for kept packs against their plans for
packing at every call (the rule of session 26, ``units_kept_panels_min_t``).

``--grid REGEX`` takes the names from ``bench/grid.py``'s points instead (``--grid .`` every one, ``--grid
'infer' --quick`` the quick subset's inference points) and ends with the planner's misses: the points where
another plan's median and fastest round both beat the chosen plan's by ``--margin``, worst first (what
``rnnfast.tune`` would change on this machine, and where the cost model needs a look).
"""
from __future__ import annotations

import argparse
import contextlib
import random
import re
import time
from dataclasses import replace

import numpy as np

import rnnfast as rf
from rnnfast import _planner, _tune
from rnnfast._planner import Plan
from rnnfast.nn import _packs

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
    """[(label, times)] of the entries ((label, layer, x, training, plan)), interleaved, one warm-up round; each
    layer keeps every plan's weight packs meanwhile (as rnnfast.tune: each plan timed as its calls run)."""
    times: dict = {e[0]: [] for e in entries}
    with contextlib.ExitStack() as stack:
        for layer in {id(e[1]): e[1] for e in entries}.values():
            stack.enter_context(_packs.room(layer, len(entries)))
        _race(entries, rounds, times)
    return [(e[0], times[e[0]]) for e in entries]


# Calls of a plan in a row each round (--calls): above 1, a round's time is the mean of all but the first, the
# steady state of a service that keeps one plan (its weights or packs where the last call left them in the
# caches); 1 times single calls, each after another plan's.
CALLS = 1


def _race(entries, rounds: int, times: dict) -> None:
    for rnd in range(rounds + 1):
        order = entries if rnd % 2 else entries[::-1]  # alternate the order: neither runs always first
        for label, layer, x, training, plan in order:
            ts = [once(layer, x, training, plan) for _ in range(CALLS)]
            if rnd:
                times[label].append(sum(ts[1:]) / (CALLS - 1) if CALLS > 1 else ts[0])


def parse_plan(text: str) -> Plan:
    """The Plan that ``str(plan)`` printed (e.g. "units+panels proj=gemm split=unitsx2")."""
    kernel, proj, split = text.split()
    split, n = split.split("=", 1)[1].rsplit("x", 1)
    return Plan(kernel.replace("+panels", ""), proj.split("=", 1)[1], split, int(n), kernel.endswith("+panels"))


def run(name: str, threads: int, rounds: int, batch_ratio: bool, flip_panels: bool = False,
        times: dict | None = None, extra: list = ()) -> tuple:
    """Race a point's candidates and print them; returns (chosen plan's times, the fastest other's label and
    times) for the summary, and fills ``times`` (when given) with {label: times} of every candidate (labels
    as printed: "* " marks the chosen plan); ``extra``: plans to race too when they are not candidates (an
    old build's plan that this planner no longer offers)."""
    layer, x, training = make(name)
    layer.train(training)
    call = layer._describe(x, None, training)
    chosen = _planner.plan_call(call, threads)
    m = _planner.model_machine(call)
    entries, model = [], {}
    plans = list(_tune._candidates(call, threads))
    if flip_panels:  # also the other weight layout of every batch-1 / few-rows plan
        plans += [q for q in (replace(p, panels=not p.panels) for p in plans if p.kernel in ("latency", "units"))
                  if q not in plans]
    plans += [p for p in extra if p not in plans]
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
    mine = dict(res)["* " + str(chosen)]
    if times is not None:
        times.update((label, t) for label, t in res if not label.startswith("  B=1"))
    others = [(float(np.median(t)), label, t) for label, t in res if not label.startswith(("*", "  B=1"))]
    rival = min(others, default=None, key=lambda o: o[0])
    return mine, (rival[1].strip(), rival[2]) if rival else None


def gap(mine: list, rival: tuple) -> float:
    """The chosen plan's median over the fastest candidate's (itself when no other is faster)."""
    return max(1.0, float(np.median(mine)) / float(np.median(rival[1])))


def misses(results: dict, margin: float) -> list:
    """[(median ratio chosen / rival, name, rival)] where the rival's median and fastest round both beat the
    chosen plan's by ``margin``, worst first."""
    out = []
    for name, (mine, rival) in results.items():
        if rival is None:
            continue
        label, t = rival
        ratio = float(np.median(mine)) / float(np.median(t))
        if ratio > 1 + margin and min(mine) > (1 + margin) * min(t):
            out.append((ratio, name, label))
    return sorted(out, reverse=True)


def grid_names(pattern: str, quick: bool) -> list:
    """The names of bench/grid.py's points that ``pattern`` selects (as its --only and --quick do)."""
    import grid  # bench/ is this script's folder, so on sys.path
    return [p.name for p in grid.select_points(grid.grid_points(), quick=quick, only=pattern)]


def random_names(n: int, seed: int = 5) -> list:
    """``n`` seeded shapes of the few-rows regime the grid samples thinly (B 2-12; H 16-512, many not a
    multiple of 32; I 1-512; T 8-200; 1-2 layers; uni- and bidirectional; inference and training)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cell, B = rng.choice(["lstm", "gru", "rnn"]), rng.choice([2, 3, 4, 5, 6, 8, 12])
        H = rng.choice([16, 24, 40, 48, 56, 64, 80, 96, 100, 112, 128, 160, 200, 256, 300, 384, 512])
        I, T = rng.choice([1, 8, 32, 64, 128, 256, 512]), rng.choice([8, 20, 50, 100, 200])
        L, d, mode = rng.choice([1, 2]), rng.choice(["uni", "bi"]), rng.choice(["infer", "train"])
        out.append(f"{cell}-B{B}-T{T}-I{I}-H{H}-L{L}-{d}-{mode}")
    return out


def plans_of(names: list, threads: int) -> list:
    """["name threads plan"] lines: the planner's plan of every point on ``threads`` threads (--print-plans;
    another build's lines are --old-plans' input)."""
    out = []
    for name in names:
        layer, x, training = make(name)
        layer.train(training)
        out.append(f"{name} {threads} {_planner.plan_call(layer._describe(x, None, training), threads)}")
    return out


def against_old(old_lines: list, times: dict, threads: int) -> list:
    """[(name, old plan, new plan, old median / new median)] for the points whose plan another build's
    planner (``old_lines``, from --print-plans) chose differently; ``times``: {name: {plan: times}}."""
    out = []
    for line in old_lines:
        name, th, old = line.split(" ", 2)
        if int(th) != threads or name not in times:
            continue
        cands = times[name]
        new = next((p for p in cands if p.startswith("* ")), None)
        plans = {p[2:]: t for p, t in cands.items()}
        if new is None or new[2:] == old.strip() or old.strip() not in plans:
            continue
        out.append((name, old.strip(), new[2:], float(np.median(plans[old.strip()])) / float(np.median(cands[new]))))
    return out


def kept_rule(n: int, seed: int, threads: int, rounds: int) -> None:
    """Race, over seeded few-rows inference shapes where they differ, the planner's plan for a call whose
    weight packs are kept (``Call.kept``, the default) against its plan for a call packing at every call,
    both run on kept packs; prints A (packing's plan) / B (kept plan) per shape and their geometric mean."""
    import dataclasses
    import math
    import random as _random

    rng = _random.Random(seed)
    ratios = []
    while len(ratios) < n:
        cell = rng.choice(["lstm", "gru", "rnn"])
        B, T = rng.choice([2, 2, 3, 3, 4, 5, 6, 8]), rng.choice([2, 4, 6, 8, 12, 16, 24, 40, 64, 100])
        H = rng.choice([128, 192, 256, 320, 384, 512, 640, 768, 1024])
        I, bi, L = rng.choice([H // 4, H // 2, H, 2 * H]), rng.random() < 0.25, rng.choice([1, 1, 2])
        name = f"{cell}-B{B}-T{T}-I{I}-H{H}-L{L}-{'bi' if bi else 'uni'}-infer"
        layer, x, _ = make(name)
        layer.eval()
        layer.thread_policy.threads = lambda k: k
        c = layer._describe(x, None, False)
        pa, pb = _planner.plan_call(dataclasses.replace(c, kept=False), threads), _planner.plan_call(c, threads)
        if not c.kept or pa == pb:
            continue
        (_, ta), (_, tb) = race([("A", layer, x, False, pa), ("B", layer, x, False, pb)], rounds)
        ma, mb = float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3
        ratios.append(ma / mb)
        print(f"{name:40s} A {str(pa):36s} {ma:8.3f}  B {str(pb):36s} {mb:8.3f}  A/B {ma / mb:.2f}", flush=True)
    print(f"geometric mean A/B {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}, "
          f"{min(ratios):.2f}-{max(ratios):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="grid point names")
    ap.add_argument("--grid", metavar="REGEX", help="also every bench/grid.py point whose 'name tag' matches")
    ap.add_argument("--quick", action="store_true", help="with --grid: only grid.py's quick subset")
    ap.add_argument("--margin", type=float, default=0.05, help="a miss: another plan faster by this (0.05)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=1,
                    help="calls of a plan in a row each round, timing all but the first (a service's steady state)")
    ap.add_argument("--batch-ratio", action="store_true", help="also time batch 1 and print B / batch-1")
    ap.add_argument("--flip-panels", action="store_true",
                    help="also time every batch-1 / few-rows plan with its weights packed or in place the other way")
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="also N seeded few-rows shapes (random_names: B 2-12, H 16-512)")
    ap.add_argument("--kept-rule", type=int, default=0, metavar="N",
                    help="race N seeded few-rows shapes' plans for kept packs against for packing at every call "
                         "(both on kept packs; use with --calls 5) and stop")
    ap.add_argument("--seed", type=int, default=7, help="with --kept-rule: the shapes' seed")
    ap.add_argument("--print-plans", action="store_true",
                    help="print the planner's plan of every point ('name threads plan' lines) and stop")
    ap.add_argument("--old-plans", metavar="FILE",
                    help="--print-plans lines of another build: race the points whose plan changed, old against new")
    a = ap.parse_args(argv)
    global CALLS
    CALLS = max(1, a.calls)
    if a.kept_rule:
        kept_rule(a.kept_rule, a.seed, a.threads, a.rounds)
        return
    names = list(a.names) + (grid_names(a.grid, a.quick) if a.grid else []) + random_names(a.random)
    old_lines = open(a.old_plans).read().split("\n") if a.old_plans else []
    if a.old_plans:
        now = set(plans_of(names, a.threads))
        names = [n for n in names if any(ln.startswith(n + f" {a.threads} ") and ln not in now for ln in old_lines)]
    if not names:
        ap.error("give point names or --grid" if not a.old_plans else "no point's plan changed")
    if a.print_plans:
        print("\n".join(plans_of(names, a.threads)))
        return
    times: dict = {name: {} for name in names}
    olds = {}
    for ln in old_lines:
        if ln.strip() and int(ln.split(" ", 2)[1]) == a.threads:
            olds[ln.split(" ", 1)[0]] = [parse_plan(ln.split(" ", 2)[2])]
    results = {name: run(name, a.threads, a.rounds, a.batch_ratio, a.flip_panels, times[name], olds.get(name, []))
               for name in names}
    found = misses(results, a.margin)
    for mode in ("infer", "train"):
        gaps = [gap(*results[n]) for n in results if n.endswith(mode) and results[n][1] is not None]
        if gaps:
            print(f"{mode}: chosen plan / fastest candidate (medians) over {len(gaps)} points: geometric mean "
                  f"{float(np.exp(np.mean(np.log(gaps)))):.3f}, worst {max(gaps):.2f}")
    print(f"\nplanner's misses (another plan faster by > {a.margin:.0%}, median and min): {len(found)} of "
          f"{len(results)}")
    for ratio, name, label in found:
        print(f"  {name:<42} {ratio:5.2f}x  {label}")
    if a.old_plans:
        rows = against_old([ln for ln in old_lines if ln.strip()], times, a.threads)
        print(f"\nplans changed since --old-plans: {len(rows)}; old plan / new plan, medians")
        for name, old, new, r in rows:
            print(f"  {name:<42} {r:5.2f}x  {old} -> {new}")
        for mode in ("infer", "train"):
            rs = [r for name, _, _, r in rows if name.endswith(mode)]
            if rs:
                print(f"{mode}: {len(rs)} points, geometric mean {float(np.exp(np.mean(np.log(rs)))):.3f}, "
                      f"range {min(rs):.2f}-{max(rs):.2f}")


if __name__ == "__main__":
    main()
