"""rnnfast int8 inference beside ONNX Runtime int8 (``quantize_dynamic``) and both float32 paths.

The same weights, input and thread count for every contender, each in its own worker process (so one's
idle threads, e.g. ONNX Runtime's spinning pool, do not take the cores from another's), the rounds
interleaved so a noisy machine slows them alike; each round gives a ratio. The report shows each one's
median wall time and CPU time a call, and the median (and range) of the per-round ratios to rnnfast
int8; also the relative L2 and max error of each int8 output against rnnfast's float32 output, and the
int8 instruction path used.

    python bench/int8.py                       # batch 1 and medium (B=64), LSTM I=128 H=256 T=100
    python bench/int8.py --cell gru --shapes 1x100,64x100 --threads 2 --rounds 15
    RNNFAST_INT8_ISA=vnni python bench/int8.py # a forced path (amx, vnni, avx2, scalar)
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

# bench/ only: the checkout's root would shadow an installed rnnfast with its unbuilt source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _peers import ort_session  # noqa: E402  (bench/ on the path first)

CONTENDERS = ("rnnfast int8", "ORT int8", "rnnfast f32", "ORT f32")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--shapes", default="1x100,64x100", help="BxT,... (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--budget", type=float, default=0.1, help="seconds per contender per round")
    p.add_argument("--no-float", action="store_true", help="leave out the float32 contenders")
    return p.parse_args(argv)


def contender(name, layer, threads):
    """The call to time: ``fn(x) -> out`` of one contender."""
    import rnnfast as rf

    if name == "rnnfast int8":
        q = rf.quantize(layer, "int8")
        return lambda x: q.forward(x, n_threads=threads)[0]
    if name == "rnnfast f32":
        return lambda x: layer.forward(x, n_threads=threads)[0]
    sess = ort_session(layer, threads, int8=name == "ORT int8", lengths=False)
    return lambda x: sess.run(["y"], {"x": x})[0]


def timed(fn, x, budget):
    """(wall, CPU) seconds a call: the median wall time of calls made within ``budget`` (at least 3), and
    the process's CPU time over them per call (all its threads: less sensitive to other programs taking
    the cores, but it counts a thread's spinning at a barrier)."""
    ts = []
    c0 = time.process_time()
    t_end = time.perf_counter() + budget
    while len(ts) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), (time.process_time() - c0) / len(ts)


def worker(conn, name, args, B, T):
    """A contender's process: builds it, then answers ("out",) with its output, ("time", budget) with
    :func:`timed`, ("path",) with the int8 path, until ("quit",)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import rnnfast as rf
    from rnnfast._kernels import _int8

    rf.set_num_threads(args.threads)
    cls = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[args.cell]
    layer = cls(args.input_size, args.hidden_size, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((B, T, args.input_size)).astype(np.float32)
    fn = contender(name, layer, args.threads)
    timed(fn, x, args.budget)  # warm-up
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "out":
            conn.send(np.asarray(fn(x)).reshape(B, T, -1))
        elif cmd[0] == "time":
            conn.send(timed(fn, x, cmd[1]))
        elif cmd[0] == "path":
            conn.send(_int8.current_isa())
        else:
            return


def errors(out, ref):
    """(relative L2, max absolute) error of out against ref."""
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), float(np.abs(out - ref).max())


def start_workers(args, B, T):
    ctx = mp.get_context("spawn")
    names = CONTENDERS[:2] if args.no_float else CONTENDERS
    if args.no_float:
        names = names + ("rnnfast f32",)  # the reference output; not timed
    workers = {}
    for name in names:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, name, args, B, T), daemon=True)
        proc.start()
        workers[name] = (proc, parent)
    for proc, conn in workers.values():
        conn.recv()  # ready
    return workers


def run_shape(args, B, T):
    workers = start_workers(args, B, T)
    try:
        ask = {name: conn for name, (_, conn) in workers.items()}
        outs = {}
        for name in ("rnnfast f32", "rnnfast int8", "ORT int8"):
            ask[name].send(("out",))
            outs[name] = ask[name].recv()
        for name in ("rnnfast int8", "ORT int8"):
            rel, mx = errors(outs[name], outs["rnnfast f32"])
            print(f"  {name:13s} error vs float32: relative L2 {rel:.2e}, max abs {mx:.2e}")
        ask["rnnfast int8"].send(("path",))
        path = ask["rnnfast int8"].recv()
        timed_names = [n for n in CONTENDERS if n in ask and not (args.no_float and "f32" in n)]
        times = {n: [] for n in timed_names}
        for _ in range(args.rounds):
            for name in timed_names:
                ask[name].send(("time", args.budget))
                times[name].append(ask[name].recv())
    finally:
        for proc, conn in workers.values():
            conn.send(("quit",))
            proc.join(timeout=30)
    base = np.array(times["rnnfast int8"])
    print(f"  B={B} T={T} I={args.input_size} H={args.hidden_size} {args.cell}, {args.threads} threads, "
          f"int8 path {path}, {args.rounds} rounds (ratio: its time / rnnfast int8's):")
    for name, ts in times.items():
        ts = np.array(ts)
        r, rc = ts[:, 0] / base[:, 0], ts[:, 1] / base[:, 1]
        print(f"    {name:13s} wall {np.median(ts[:, 0]) * 1e3:8.3f} ms  x{np.median(r):5.2f} "
              f"(rounds {r.min():.2f}-{r.max():.2f})   CPU {np.median(ts[:, 1]) * 1e3:8.3f} ms  x{np.median(rc):5.2f}")


def main(argv=None):
    args = parse_args(argv)
    for shape in args.shapes.split(","):
        B, T = (int(v) for v in shape.lower().split("x"))
        run_shape(args, B, T)


if __name__ == "__main__":
    main()
