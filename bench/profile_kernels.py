"""Where the time goes: profile one rnnfast case with ``perf`` and sum the samples by kind of work.

Usage: ``python bench/profile_kernels.py lstm medium train [--threads 1]`` (needs Linux ``perf``; the samples
are taken only once the imports and a warm-up call are done). Kinds: GEMM (OpenBLAS and rnnfast's
packed per-step kernels, packing included), the fused cell pass, copies and sums (packing of the
batch, gathers, bias sums, H_prev), Python/numpy overhead, thread waiting, the OS kernel.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

import _cases
from _cases import SHAPES

DELAY_S = 1.5


def _run(cell, shape, mode, threads):
    import numpy as np

    import rnnfast as rf

    B, T, I, H = SHAPES[shape]
    m = (rf.nn.LSTM if cell == "lstm" else rf.nn.GRU)(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    if mode == "infer":
        m.eval()
    d = np.ones((B, T, H), np.float32)

    def f():
        m(x, n_threads=threads)
        if mode == "train":
            m.backward(d, n_threads=threads)

    f()
    time.sleep(DELAY_S)  # perf starts sampling after this
    flops = _cases.flop(cell, I, H, tokens=B * T, mode=mode)
    reps = max(5, int(2.0 / (flops / 80e9)))
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    print(f"{(time.perf_counter() - t0) / reps * 1e3:.3f} ms per call")


def _kind(dso, sym):
    if "gemm" in sym or "gemv" in sym or "copy_" in sym.lower() or sym.startswith("rf_pack"):
        return "GEMM"
    if sym.startswith(("rf_latency", "rf_colsum", "rf_mul")):  # packing, barrier; bias sums; dropout
        return "copies and sums"
    if sym.startswith("rf_"):
        return "fused cell pass"
    if any(k in sym for k in ("memmove", "memset", "memcpy", "net_backward", "net_forward", "gather",
                              "scatter", "colsum")):
        return "copies and sums"
    if "blas_thread_server" in sym or "gomp" in dso.lower():
        return "thread waiting"
    if "python" in dso or "numpy" in dso or "multiarray" in dso or sym.startswith(("_Py", "Py")):
        return "Python / numpy"
    if "kernel" in dso:
        return "OS kernel"
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=["lstm", "gru"])
    ap.add_argument("shape", choices=list(SHAPES))
    ap.add_argument("mode", choices=["infer", "train"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        _run(a.cell, a.shape, a.mode, a.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.run(["perf", "record", "-q", "-D", str(int(DELAY_S * 1000) + 200), "-o", data,
                              sys.executable, __file__, a.cell, a.shape, a.mode, "--threads", str(a.threads),
                              "--run"], capture_output=True, text=True)
        if rec.returncode != 0:
            sys.exit(f"perf record failed: {rec.stderr.strip()}")
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso,symbol"],
                             capture_output=True, text=True).stdout
    kinds = collections.Counter()
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", line)
        if m:
            kinds[_kind(m.group(2), m.group(3))] += float(m.group(1))
    total = sum(kinds.values()) or 1.0
    print(f"{a.cell} {a.shape} {a.mode}, {a.threads} thread(s): {rec.stdout.strip()}")
    print(" | ".join(f"{k} {v / total * 100:.0f}%" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main()
