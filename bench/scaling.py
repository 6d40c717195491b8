"""Scaling out: measure what data-parallel training and batch inference cost here, and model larger jobs.

    python bench/scaling.py model [--quick] [--net-gbs 1.25]   # allreduce per MB (2 local ranks), step times,
                                                               # then the speedup table at 2, 8, 32, 64 ranks
    mpiexec --bind-to core -n 2 python bench/scaling.py train  # the medium shape's training steps on 2 ranks
    python bench/scaling.py train                              # ... and on 1 rank (same global batch)
    python bench/scaling.py infer --backend ray --workers 2    # 64 files on 2 workers x 1 thread vs 1 process
                                                               # (--rounds 5 interleaved; --chunk-size N;
                                                               # --with-processes: local processes too)

Batch inference (``infer``): every round times, in turns reversed every other round, one process x 1 thread
(``rf.load`` and the files, the model load included: "serial"), a ``predict`` call on the Ray actors started
once before the rounds ("warm": what a service or a nightly job that keeps its pool pays per batch) and a call
that starts and ends its own actors ("cold": actor start-up and model load included; Ray itself already
running, its start printed apart). It prints each round, the per-file times, the speedups per round (min /
median / max) and the CPU each part used: one process's per file, Ray's workers' per file, the driver's and
Ray's services' (GCS, raylet, agents; psutil). The CPU figures barely move with the machine's load, so the
speedup they bound ("at most ... on 2 idle cores") is the number to trust on a shared machine.

The model (``model``). One step on P ranks with a global batch B costs ``t(B/P) + c(P)``: ``t(b) = t0 + b*ts`` is
the measured one-thread training step (forward, backward, optimizer) at per-rank batch ``b`` (fitted through two
batch sizes of the shape), and ``c(P) = a*ceil(log2 P) + 2(P-1)/P * M / bw`` a ring allreduce of the model's M
gradient bytes, with the latency ``a`` and bandwidth ``bw`` fitted to the 2-rank shared-memory Allreduce measured
here (``--net-gbs`` replaces ``bw`` by a network's, e.g. 1.25 GB/s for 10 GbE, for ranks on several machines).
Speedup at a fixed global batch: ``t(B) / (t(B/P) + c(P))``. "Batch for comm < 10%": the smallest global batch at
which ``c(P)`` is under a tenth of the step. Measuring the step needs a quiet machine: other processes on the
cores inflate ``t`` (and the table's speedups) without changing the communication.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _cases import SHAPES  # noqa: E402

SIZES_MB = (0.25, 1.0, 4.0, 16.0)
RANKS = (2, 8, 32, 64)
CLASSES = 10


def _uptime() -> str:
    load = os.getloadavg()
    return time.strftime("%H:%M UTC", time.gmtime()) + f", load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def _time(fn, rounds: int, stat=np.median) -> float:
    """``stat`` (median; min for the allreduce, which other processes on the cores only slow down) of
    ``rounds`` timed calls after a warm-up."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(stat(times))


# ---------------------------------------------------------------------------------------- pieces
def allreduce_times(rounds: int = 20) -> dict:
    """Under mpiexec: the least seconds of an in-place float32 Allreduce per size in MB (every rank returns them)."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    out = {}
    for mb in SIZES_MB:
        buf = np.ones(int(mb * 2 ** 20 / 4), np.float32)

        def once():
            comm.Barrier()
            comm.Allreduce(MPI.IN_PLACE, buf, MPI.SUM)

        barrier = _time(comm.Barrier, rounds, np.min)
        out[mb] = max(_time(once, rounds, np.min) - barrier, 1e-7)
    return out


def _model(shape: str, threads: int = 1):
    import rnnfast as rf
    from rnnfast.train import Adam, CrossEntropy, Trainer
    B, T, I, H = SHAPES[shape]
    model = rf.nn.Sequential(rf.nn.LSTM(I, H, seed=0), rf.nn.LastStep(), rf.nn.Linear(H, CLASSES, seed=1))
    return model, CrossEntropy(), Adam(model, lr=1e-3), Trainer, (B, T, I, H)


def step_time(shape: str, batch: int, rounds: int) -> float:
    """The least seconds of one one-thread training step (Trainer.train_step) at ``batch`` rows of ``shape``."""
    from rnnfast.train.trainer import Batch
    model, loss, opt, Trainer, (_, T, I, H) = _model(shape)
    trainer = Trainer(model, loss, opt, n_threads=1)
    trainer._grads = list(model.grads.values())
    rng = np.random.default_rng(0)
    b = Batch(rng.standard_normal((batch, T, I)).astype(np.float32), None, rng.integers(0, CLASSES, batch), None,
              n_rows=batch)
    model.train()
    return _time(lambda: trainer.train_step(b), rounds, np.min)  # the least: other processes only add


def param_bytes(shape: str) -> int:
    model = _model(shape)[0]
    return sum(p.nbytes for _, p in model.named_parameters())


# ---------------------------------------------------------------------------------------- the model
def fit_allreduce(times: dict) -> tuple:
    """Latency a (s) and bandwidth bw (bytes/s) of a 2-rank allreduce, c = a + M/bw, least squares."""
    mb = np.array(list(times))
    t = np.array([times[m] for m in mb])
    slope, a = np.polyfit(mb * 2 ** 20, t, 1, w=1 / t)  # relative errors: every size counts
    return max(float(a), 0.0), 1.0 / max(float(slope), 1e-15)


def comm_time(P: int, nbytes: float, a: float, bw: float) -> float:
    """Ring allreduce of ``nbytes`` over ``P`` ranks (2 ranks: ``a + nbytes / bw``)."""
    if P == 1:
        return 0.0
    return a * math.ceil(math.log2(P)) + 2 * (P - 1) / P * nbytes / bw


def table(shape: str, t0: float, ts: float, nbytes: float, a: float, bw: float) -> list:
    """Rows (P, speedup at the shape's batch, comm share there, smallest global batch for comm < 10%)."""
    B = SHAPES[shape][0]
    rows = []
    for P in RANKS:
        c = comm_time(P, nbytes, a, bw)
        step = t0 + ts * B / P + c
        speedup = (t0 + ts * B) / step
        b_min = max(1, math.ceil((9 * c - t0) / ts))  # t(b) >= 9 c
        rows.append((P, speedup, c / step, P * b_min))
    return rows


def cmd_model(args) -> int:
    print(f"# scaling model, measured {_uptime()}")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ar.npy")
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,sm")
        subprocess.run([mpiexec, "--bind-to", "core", "-n", "2", sys.executable, __file__,
                        "_allreduce", out], check=True, env=env, timeout=300)
        ar = dict(np.load(out))
    times = {float(k): float(v) for k, v in ar.items()}
    a, bw = fit_allreduce(times)
    print("allreduce, 2 local ranks (Open MPI, shared memory): " + ", ".join(
        f"{mb:g} MB {t * 1e3:.3f} ms" for mb, t in times.items()) + f"  -> latency {a * 1e6:.0f} us, "
        f"{bw / 1e9:.2f} GB/s ({1e3 / bw * 2 ** 20:.3f} ms per MB)")
    if args.net_gbs:
        bw = args.net_gbs * 1e9
        print(f"model with a network of {args.net_gbs} GB/s instead")
    rounds = 2 if args.quick else 5
    for shape in args.shapes:
        B = SHAPES[shape][0]
        tb, th = step_time(shape, B, rounds), step_time(shape, B // 2, rounds)
        ts = (tb - th) / (B - B // 2)
        t0 = max(tb - ts * B, 0.0)
        nbytes = param_bytes(shape)
        print(f"\n{shape} {SHAPES[shape]} (B, T, I, H), LSTM + Linear({CLASSES}): {nbytes / 2 ** 20:.2f} MB of "
              f"gradients; one-thread step {tb * 1e3:.0f} ms at B={B}, {th * 1e3:.0f} ms at B={B // 2} "
              f"({_uptime()})")
        print(f"{'ranks':>6} {'speedup at B=' + str(B):>16} {'comm share':>11} {'global batch for comm<10%':>26}")
        for P, s, share, bmin in table(shape, t0, ts, nbytes, a, bw):
            print(f"{P:>6} {s:>16.2f} {share * 100:>10.1f}% {bmin:>26d}")
    return 0


# ---------------------------------------------------------------------------------------- targets
def cmd_train(args) -> int:
    """Time ``--steps`` steps of fit at the medium shape, on this job's ranks, 1 thread each."""
    from rnnfast.train.callbacks import Callback
    model, loss, opt, Trainer, (B, T, I, H) = _model(args.shape)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B * (args.steps + 1), T, I)).astype(np.float32)
    y = rng.integers(0, CLASSES, len(X))
    trainer = Trainer(model, loss, opt, n_threads=1, distributed="auto")
    dp = trainer.distributed

    class Clock(Callback):  # times every step after the first
        def on_batch_begin(self, batch, logs=None):
            if batch == 1:
                self.t, self.cpu = time.perf_counter(), time.process_time()
                self.c = dp.comm_seconds if dp else 0.0

    clock = Clock()
    trainer.callbacks.append(clock)
    trainer.fit(X, y, batch_size=B, epochs=1, shuffle=False, seed=0)
    step = (time.perf_counter() - clock.t) / args.steps
    cpu = (time.process_time() - clock.cpu) / args.steps
    comm = ((dp.comm_seconds - clock.c) / args.steps) if dp else 0.0
    if dp is None or dp.is_root:
        ranks = dp.size if dp else 1
        print(f"train {args.shape} B={B} on {ranks} rank(s) x 1 thread: {step * 1e3:.1f} ms per step (rank 0's CPU "
              f"{cpu * 1e3:.1f} ms), reduction {comm * 1e3:.2f} ms ({comm / step * 100:.1f}% of the step, waits "
              f"included) [{_uptime()}]")
    return 0


# ---------------------------------------------------------------------------------------- batch inference
def _infer_data(d: str, shape: str, n_files: int) -> tuple:
    """A fitted LSTM classifier saved in ``d`` and ``n_files`` .npy files of ``shape``'s (B, T, I)."""
    import rnnfast as rf
    B, T, I, H = SHAPES[shape]
    rng = np.random.default_rng(0)
    est = rf.LSTM(hidden_size=H, epochs=1, random_state=0, n_threads=1)
    est.fit(rng.standard_normal((16, T, I)).astype(np.float32), rng.integers(0, CLASSES, 16))
    path = os.path.join(d, "m.rnnfast")
    est.save(path)
    files = [os.path.join(d, f"x{i}.npy") for i in range(n_files)]
    for f in files:
        np.save(f, rng.standard_normal((B, T, I)).astype(np.float32))
    return path, files


def _ray_cpu() -> dict:
    """CPU seconds so far of this process's descendants (Ray's actors and services when this process started
    Ray), by kind: "workers" (actors) and "services" (GCS, raylet, agents, monitors); {} without psutil."""
    try:
        import psutil
    except ImportError:
        return {}
    out = {"workers": 0.0, "services": 0.0}
    for p in psutil.Process().children(recursive=True):
        try:
            cpu = p.cpu_times()
            out["workers" if p.name().startswith("ray::_Actor") else "services"] += cpu.user + cpu.system
        except psutil.Error:
            pass
    return out


def _timed(fn) -> tuple:
    """(result, wall s, {"driver": this process's CPU s, "workers", "services": its descendants'}) of fn()."""
    c0, p0, t0 = _ray_cpu(), time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, {"driver": time.process_time() - p0}
    cpu.update({k: v - c0.get(k, 0.0) for k, v in _ray_cpu().items()})
    return out, wall, cpu


def _infer_round(runs: dict, r: int) -> dict:
    """One round of every run in ``runs`` (name -> (untimed setup, timed fn)), in turns reversed every other
    round: name -> _timed(fn)."""
    out = {}
    for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
        runs[name][0]()
        out[name] = _timed(runs[name][1])
    return out


def _infer_report(args, rounds: list, t_init: float, t_pool: list, idle: dict) -> None:
    med = {k: float(np.median([rd[k][1] for rd in rounds])) for k in rounds[0]}
    best = {k: min(rd[k][1] for rd in rounds) for k in rounds[0]}
    n, w = args.files, args.workers
    print(f"\nper file (median wall / {n}): 1 process {med['serial'] / n * 1e3:.1f} ms" + "".join(
        f", {k} {med[k] / n * 1e3:.1f} ms" for k in med if k != "serial"))
    for k in (k for k in med if k != "serial"):
        ratios = sorted(rd["serial"][1] / rd[k][1] for rd in rounds)
        print(f"speedup {k:<9} per round min {ratios[0]:.2f}x median {np.median(ratios):.2f}x max {ratios[-1]:.2f}x;"
              f" best vs best {best['serial'] / best[k]:.2f}x")
    cpu = {k: {c: float(np.median([rd[k][2].get(c, np.nan) for rd in rounds])) for c in rounds[0][k][2]}
           for k in rounds[0]}
    if "warm" in cpu and "workers" in cpu["warm"] and idle:
        s, c = cpu["serial"]["driver"], cpu["warm"]
        # Ray's processes burn CPU per second whatever the work (idle rates measured before the rounds): the
        # work is what the workers used beyond theirs; on w cores of its own the warm run would last `ideal`
        work = c["workers"] - idle["workers"] * med["warm"]
        ideal = (work + c["driver"]) / (w - idle["workers"] - idle["services"])
        print(f"CPU (median, warm pool): 1 process {s / n * 1e3:.1f} ms per file; Ray's workers {work / n * 1e3:.1f}"
              f" ms per file beyond their idle {idle['workers'] * 1e3:.0f} ms per second, driver "
              f"{c['driver'] / n * 1e3:.2f} ms per file, Ray's services {idle['services'] * 1e3:.0f} ms per second "
              f"idle ({c['services'] / med['warm'] * 1e3:.0f} in the warm runs): on {w} idle cores at most "
              f"{s / ideal:.2f}x (these CPU figures hardly depend on the load; the wall times above do)")
    if t_pool:
        print(f"start-up (not in 'warm'): ray.init {t_init:.2f} s, {w} actors loading the model "
              f"{np.median(t_pool):.2f} s (median of {len(t_pool)}); 'cold' = a call that starts and ends its own "
              f"actors (what a one-off job pays; Ray already running)")


def _idle_cpu(start_pool, seconds: float = 3.0) -> dict:
    """CPU seconds per second of Ray's actors ("workers") and services, idle, with the pool started."""
    start_pool()
    time.sleep(1.0)
    c0 = _ray_cpu()
    time.sleep(seconds)
    return {k: (v - c0[k]) / seconds for k, v in _ray_cpu().items()}


def _release() -> None:
    """End the Ray actors kept by predict, if Ray runs."""
    if "ray" in sys.modules:
        from rnnfast.distributed.inference import release
        release()


def cmd_infer(args) -> int:
    """``--files`` files through predict on ``--workers`` workers x 1 thread against one process x 1 thread,
    ``--rounds`` interleaved rounds; on Ray with the pool started once ("warm") and per call ("cold")."""
    import rnnfast as rf
    from rnnfast.distributed import predict
    print(f"# {' '.join(sys.argv)}  [{_uptime()}]")
    with tempfile.TemporaryDirectory() as d:
        path, files = _infer_data(d, args.shape, args.files)
        kw = dict(num_workers=args.workers, backend=args.backend, threads=1, method="predict_proba",
                  chunk_size=args.chunk_size)
        t_init, t_pool = 0.0, []
        if args.backend == "ray":
            import ray
            t_init = _timed(lambda: ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                                             logging_level=logging.WARNING))[1]

        def serial():
            rf.set_num_threads(1)
            model = rf.load(path)
            return [model.predict_proba(np.load(f)) for f in files]

        def start_pool():  # untimed in the round; its time kept apart
            t_pool.append(_timed(lambda: predict(path, [], keep_workers=True, **kw))[1])

        runs = {"serial": (lambda: None, serial), "cold": (_release, lambda: predict(path, files, **kw))}
        if args.backend == "ray":  # "cold" ends the pool kept for "warm" first, so that it starts its own
            runs["warm"] = (start_pool, lambda: predict(path, files, keep_workers=True, **kw))
        if args.with_processes and args.backend != "processes":  # a control: plain local processes, same load
            runs["processes"] = (lambda: None, lambda: predict(path, files, **dict(kw, backend="processes")))
        idle = _idle_cpu(start_pool) if args.backend == "ray" else {}
        rounds = []
        for r in range(args.rounds):
            rounds.append(_infer_round(runs, r))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[1]:.2f} s" for k, v in rounds[-1].items()) +
                  f" [{_uptime()}]", flush=True)
        same = all(np.array_equal(a, b) for rd in rounds for k in rd for a, b in zip(rd["serial"][0], rd[k][0]))
    print(f"infer {args.shape} {SHAPES[args.shape]} x {args.files} files, {args.rounds} rounds: 1 process x 1 thread "
          f"(model load included) vs {args.backend} {args.workers} workers x 1 thread; identical outputs: {same}")
    _infer_report(args, rounds, t_init, t_pool, idle)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("--quick", action="store_true")
    m.add_argument("--shapes", nargs="+", default=["medium", "large"], choices=sorted(SHAPES))
    m.add_argument("--net-gbs", type=float, default=None, help="network bandwidth in GB/s for the model")
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--shape", default="medium", choices=sorted(SHAPES))
    i = sub.add_parser("infer")
    i.add_argument("--backend", default="ray", choices=("ray", "dask", "processes"))
    i.add_argument("--workers", type=int, default=2)
    i.add_argument("--files", type=int, default=64)
    i.add_argument("--shape", default="medium", choices=sorted(SHAPES))
    i.add_argument("--rounds", type=int, default=5)
    i.add_argument("--chunk-size", type=int, default=None, help="inputs per task (default: shrinking chunks)")
    i.add_argument("--with-processes", action="store_true",
                   help="also time backend='processes' in every round (what the load leaves to any 2 processes)")
    r = sub.add_parser("_allreduce")
    r.add_argument("out")
    args = ap.parse_args(argv)
    if args.cmd == "_allreduce":
        times = allreduce_times()
        from mpi4py import MPI
        if MPI.COMM_WORLD.Get_rank() == 0:
            np.savez(args.out, **{str(k): v for k, v in times.items()})
            os.replace(args.out + ".npz", args.out)
        return 0
    return {"model": cmd_model, "train": cmd_train, "infer": cmd_infer}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
