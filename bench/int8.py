"""rnnfast int8 inference beside ONNX Runtime int8 (``quantize_dynamic``) and both float32 paths.

One process, the same weights, the same thread count; the contenders run by turns in every round, so a
noisy machine slows them alike, and each round gives a ratio; the report shows the median time of each
and the median (and range) of the per-round ratios. Also printed: the relative L2 and max error of each
int8 output against rnnfast's float32 output, and the int8 instruction path used.

    python bench/int8.py                       # batch 1 and medium (B=64), LSTM I=128 H=256 T=100
    python bench/int8.py --cell gru --shapes 1x100,64x100 --threads 2 --rounds 15
    RNNFAST_INT8_ISA=vnni python bench/int8.py # a forced path (amx, vnni, avx2, scalar)
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    p.add_argument("--shapes", default="1x100,64x100", help="BxT,... (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--budget", type=float, default=0.05, help="seconds per contender per round")
    p.add_argument("--no-float", action="store_true", help="leave out the float32 contenders")
    return p.parse_args(argv)


def ort_sessions(layer, threads):
    """ONNX Runtime sessions of the layer: float32, and int8 from ``quantize_dynamic``."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rnnfast.interop import to_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        f32, q8 = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        to_onnx(layer, f32, lengths=False)
        quantize_dynamic(f32, q8, weight_type=QuantType.QInt8)
        prov = ["CPUExecutionProvider"]
        return (ort.InferenceSession(f32, sess_options=so, providers=prov),
                ort.InferenceSession(q8, sess_options=so, providers=prov))


def int8_runner(layer, threads):
    """rnnfast int8: ``rf.quantize(layer, "int8")``."""
    import rnnfast as rf

    q = rf.quantize(layer, "int8")
    return lambda x: q.forward(x, n_threads=threads)[0]


def timed(fn, x, budget):
    """(wall, CPU) seconds a call: the median wall time of calls made within ``budget`` (at least 3), and
    the process's CPU time over them per call (all threads; less sensitive to other programs taking
    the cores, but it counts a thread's spinning at a barrier)."""
    ts = []
    c0 = time.process_time()
    t_end = time.perf_counter() + budget
    while len(ts) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), (time.process_time() - c0) / len(ts)


def errors(out, ref):
    """(relative L2, max absolute) error of out against ref."""
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), float(np.abs(out - ref).max())


def run_shape(args, B, T):
    import rnnfast as rf
    from rnnfast._kernels import _int8

    cls = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[args.cell]
    layer = cls(args.input_size, args.hidden_size, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((B, T, args.input_size)).astype(np.float32)
    ort_f32, ort_q8 = ort_sessions(layer, args.threads)
    fns = {"rnnfast int8": int8_runner(layer, args.threads),
           "ORT int8": lambda a: ort_q8.run(["y"], {"x": a})[0]}
    if not args.no_float:
        fns["rnnfast f32"] = lambda a: layer.forward(a, n_threads=args.threads)[0]
        fns["ORT f32"] = lambda a: ort_f32.run(["y"], {"x": a})[0]
    ref = layer.forward(x, n_threads=args.threads)[0]
    for name in ("rnnfast int8", "ORT int8"):
        rel, mx = errors(np.asarray(fns[name](x)).reshape(ref.shape), ref)
        print(f"  {name:13s} error vs float32: relative L2 {rel:.2e}, max abs {mx:.2e}")
    for fn in fns.values():  # warm-up
        timed(fn, x, args.budget / 2)
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, x, args.budget))
    base = np.array(times["rnnfast int8"])
    print(f"  B={B} T={T} I={args.input_size} H={args.hidden_size} {args.cell}, {args.threads} threads, "
          f"int8 path {_int8.current_isa()}, {args.rounds} rounds (ratio: its time / rnnfast int8's):")
    for name, ts in times.items():
        ts = np.array(ts)
        r, rc = ts[:, 0] / base[:, 0], ts[:, 1] / base[:, 1]
        print(f"    {name:13s} wall {np.median(ts[:, 0]) * 1e3:8.3f} ms  x{np.median(r):5.2f} "
              f"(rounds {r.min():.2f}-{r.max():.2f})   CPU {np.median(ts[:, 1]) * 1e3:8.3f} ms  x{np.median(rc):5.2f}")


def main(argv=None):
    args = parse_args(argv)
    import rnnfast as rf

    rf.set_num_threads(args.threads)
    for shape in args.shapes.split(","):
        B, T = (int(v) for v in shape.lower().split("x"))
        run_shape(args, B, T)


if __name__ == "__main__":
    main()
