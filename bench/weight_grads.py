"""Training steps with LSTM / RNN weight gradients on rf's kernel against BLAS's product, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/weight_grads.py [--threads 2] [--rounds 9]
        [--seeded N] [--seed 1] [names ...]

Float32 training of LSTM and RNN makes ``[dW_ih, dW_hh]^T = [X, H_prev]^T dG`` on rf's packed kernel where
``_recurrent``'s rule says (TN_MIN_ROWS rows, up to TN_MAX_OUT outputs: ``par_gemm_tn``), else with
OpenBLAS. Each shape (a grid point's name, ``lstm-B512-T25-I12-H200-L1-uni-train``) runs a training step
(forward and backward of a fixed output gradient) on two copies of one layer, one under the rule and one
with BLAS always (``set_tn_rule``), alternating, two steps a round after one untimed; it prints the median
step of each and BLAS / rule (above 1: the rule is faster), then the geometric mean. ``--seeded N`` adds N
training points of ``bench/grid.py``'s seeds 11-24 where the rule takes rf's kernel (session 27's
validation set, ``--seed`` shuffling them).
"""
from __future__ import annotations

import argparse
import copy
import random
import time

import numpy as np

import plan_ab
from rnnfast._kernels import _recurrent as _k

BLAS = (1 << 30, 0)  # (set_tn_rule: no call has that many rows)


def uses_rf(name: str, rule: tuple) -> bool:
    """Whether a training point's widest-taking layer makes its weight gradients on rf's kernel under
    ``rule`` (min rows, max outputs): LSTM / RNN, N = B T rows, some layer's (F + H) G H outputs."""
    m = plan_ab._NAME.match(name)
    cell, B, T, I, H, L, d = m.group(1), *map(int, m.group(2, 3, 4, 5, 6)), m.group(7)
    if cell == "gru":
        return False
    G, D = {"lstm": 4, "rnn": 1}[cell], 2 if d == "bi" else 1
    ins = [I] + [D * H] * (L - 1)
    return B * T >= rule[0] and any((F + H) * G * H <= rule[1] for F in ins)


def seeded(n: int, seed: int = 1, rule: tuple | None = None) -> list:
    """``n`` training points of grid seeds 11-24 whose weight gradients the rule puts on rf's kernel (under
    3e10 flops a step), shuffled by ``seed``."""
    import grid

    rule = rule or current_rule()
    names = set()
    for s in range(11, 25):
        for p in grid.grid_points(seed=s):
            sh = p.shape
            if sh.mode != "train" or not uses_rf(p.name, rule):
                continue
            G, D = {"lstm": 4, "rnn": 1, "gru": 3}[sh.cell], 2 if sh.bidirectional else 1
            F = max(sh.I, D * sh.H) if sh.layers > 1 else sh.I
            if 6.0 * sh.B * sh.T * G * sh.H * (F + sh.H) * sh.layers * D < 3e10:
                names.add(p.name)
    out = sorted(names)
    random.Random(seed).shuffle(out)
    return out[:n]


def current_rule() -> tuple:
    rule = _k.set_tn_rule(0, 0)
    _k.set_tn_rule(*rule)
    return rule


def race(name: str, threads: int, rounds: int) -> tuple:
    """(rule ms, BLAS ms): median training step of each, alternating; the two copies' gradients are checked
    close first."""
    rule = current_rule()
    a, x, _ = plan_ab.make(name)
    a.train(True)
    b = copy.deepcopy(a)
    dout = None

    def step(layer, r):
        nonlocal dout
        old = _k.set_tn_rule(*r)
        try:
            out = layer(x, n_threads=threads)[0]
            if dout is None:
                dout = np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype)
            layer.backward(dout, n_threads=threads)
        finally:
            _k.set_tn_rule(*old)

    for layer, r in ((a, rule), (b, BLAS)):
        layer.zero_grad()
        step(layer, r)
    for k, g in a.grads.items():
        np.testing.assert_allclose(g, b.grads[k], rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(g).max())))
    ta, tb = [], []
    for rnd in range(rounds):
        order = ((a, rule, ta), (b, BLAS, tb))
        for layer, r, acc in (order if rnd % 2 else order[::-1]):
            step(layer, r)
            t0 = time.perf_counter()
            step(layer, r)
            step(layer, r)
            acc.append((time.perf_counter() - t0) / 2)
    return float(np.median(ta)), float(np.median(tb))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seeded", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    names = list(a.names) + seeded(a.seeded, a.seed)
    if not names:
        ap.error("give training point names or --seeded N")
    ratios = []
    for name in names:
        rule_ms, blas_ms = race(name, a.threads, a.rounds)
        ratios.append(blas_ms / rule_ms)
        tag = "" if uses_rf(name, current_rule()) else "  (rule: BLAS here too)"
        print(f"{name:42s} rule {rule_ms * 1e3:9.3f} ms  BLAS {blas_ms * 1e3:9.3f} ms  BLAS / rule "
              f"{ratios[-1]:.3f}{tag}", flush=True)
    print(f"{len(ratios)} points, {a.threads} threads: BLAS / rule geometric mean "
          f"{float(np.exp(np.mean(np.log(ratios)))):.3f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
