#!/usr/bin/env python3
"""rnnfast against its peers (PyTorch, ONNX Runtime, TensorFlow/Keras) on the same shapes, weights and threads.

Run from the repository root::

    python bench/compare.py                      # every case, every installed peer (several minutes)
    python bench/compare.py --quick              # fewer rounds, no large shapes (about a minute)
    python bench/compare.py --cases 'lstm-medium-*,gru-step' --frameworks rnnfast,torch --json out.json

How it works
------------
The driver (this process) starts one worker subprocess per framework (``python bench/_peers.py NAME
THREADS``, without ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` in its environment) and talks to each over its
stdin/stdout, one JSON object per line; a worker's own stdout and stderr (library logs) go to a log file. The
workers live in ``_peers.py``, the rounds and the machine's facts in ``_runner.py``, shapes and FLOP formulas
in ``_cases.py`` (``grid.py`` shares all three). For every case the driver:

1. draws the weights (PyTorch's layout and keys, uniform(-1/sqrt(H), 1/sqrt(H))) and the inputs with numpy
   from fixed seeds, writes them to an .npz in a temporary folder, and has each worker build its model from
   that file (converting the weights to its own gate order and layout);
2. has each worker run the case once on those inputs and return its outputs (for training also the input
   gradient and the gradient of ``weight_hh_l0``); they must agree with rnnfast's within ``--rtol``
   (max |peer - rnnfast| / max |rnnfast|, per array). A framework that disagrees is reported, not timed;
3. warms each framework up, sizes its rounds (``iters`` calls per round, at least ``--min-round`` seconds),
   then runs the rounds interleaved: round 1 of every framework, round 2 of every framework, ... (the order
   rotates from round to round; only one worker runs at a time, and after each round the driver pauses for
   the worker's spin-waiting pool threads to go to sleep: ``HANDOVER_GAP``, or ``--gap``, and then until
   the other workers and the driver itself use under a tenth of a core and none of their threads is running
   or waiting for a core, up to 1 s: ``wait_quiet``; each round's record says who else ran during it,
   ``rounds_others``, and rnnfast's rounds count its calls whose barriers found the cores busy,
   ``rounds_counters``). The garbage
   collector is off while a round runs (as in timeit). The figure is the median over rounds of the time
   per call; 11 rounds, or with ``--quick`` 5 (3 for cases with a call over 0.25 s).

The machine's large-SGEMM rate (numpy float32 2048x2048 @ 2048x2048, limited to the same thread count with
threadpoolctl when installed) is measured by the driver, while the workers are idle: 5 times at the start,
once after every case and 5 times at the end; "% SGEMM" divides each case's GFLOP/s by the median of all
of them (the range is printed: a wide one means the machine was busy).

FLOPs: 2*G*H*(I+H) per time step and sequence forward (G = 4 LSTM, 3 GRU), per layer and direction (the
second layer of a bidirectional stack reads 2H features); training (forward + backward) = 3x forward.
Variable-length cases count only the valid steps.

Threads: one count for all (default ``rnnfast.get_num_threads()``): rnnfast ``n_threads``,
``torch.set_num_threads`` (inter-op 1), ONNX Runtime ``intra_op_num_threads`` (inter-op 1, sequential
execution), TensorFlow ``tf.config.threading.set_intra_op_parallelism_threads`` (inter-op 1).

Cases (``--cases`` takes comma-separated names or shell patterns):

- ``{lstm,gru}-{small,medium,large,latency}-{infer,train}``: one layer, one direction, batch-first input of
  shape (B, T, I). ``infer``: eval-mode forward. ``train``: forward + backward with loss = sum of outputs,
  computing the input gradient and every weight and bias gradient. ONNX Runtime: inference only.
- ``lstm2bi-medium-{infer,train}``: LSTM, 2 layers, bidirectional, medium shape.
- ``{lstm,gru}-step``: streaming latency of one ``step`` call at B=1, I=128, H=256, the state carried from
  call to call. PyTorch: ``nn.LSTMCell`` / ``nn.GRUCell`` (its per-step API) under ``inference_mode``; ONNX
  Runtime: a T=1 graph with the state as inputs and outputs; TensorFlow: a Keras ``LSTMCell`` / ``GRUCell``
  in a ``tf.function``.
- ``--precision bf16`` adds to every inference case (whole sequence and step) ``rnnfast-bf16``
  (``rnnfast.quantize(layer, "bf16")``), ``torch-bf16`` (``module.to(torch.bfloat16)``, bfloat16 input) and
  ``torch-autocast`` (float32 weights under ``torch.autocast("cpu", dtype=torch.bfloat16)``); they are
  checked against rnnfast's float32 outputs within 5e-2, and a second table gives rnnfast-bf16's ratios
  (float32 rnnfast / bf16, peer / bf16) and the instruction path it ran. ``--precision int8`` adds
  ``rnnfast-int8`` (``rnnfast.quantize(layer, "int8")``) and ``ort-int8`` (ONNX Runtime on the exported graph
  through ``onnxruntime.quantization.quantize_dynamic``: DynamicQuantizeLSTM; skipped for GRU, which it
  leaves float32), checked within 5e-2 too;
  ``--precision bf16,int8`` adds both sets. ``--precision f32-frozen`` (not a precision) adds
  ``rnnfast-frozen`` (float32 on ``rnnfast.nn.freeze(layer)``: its weight packs kept from call to call, as an
  ONNX Runtime session keeps its own) with ``ort-f32`` and ``torch-f32`` as its peers.
- ``{lstm,gru}-varlen-{infer,train}``: medium shape, lengths uniform in [T/4, T] (adjusted so that the
  total is a multiple of T). ``rnnfast``: ``forward(x, lengths=...)``; ``rnnfast-dense``: the same tokens
  packed densely into sum(lengths)/T full-length sequences (the cost of variable lengths is the ratio);
  ``torch-packed``: ``pack_padded_sequence(enforce_sorted=False)`` -> module -> ``pad_packed_sequence``;
  ``onnxruntime`` (infer): the ``sequence_lens`` input.

Layouts: every framework takes the batch-first (B, T, I) input and returns the batch-first (B, T, D*H)
output inside the timed call. ONNX's recurrent ops are time-major (ONNX Runtime does not implement
``layout=1``), so its graphs begin and end with Transpose nodes (timed, like rnnfast's own packing).
Keras layers are batch-first already.

Output: a markdown table on stdout, and with ``--json`` every raw round, the machine (lscpu model name,
cores), versions and the date.
"""
import argparse
import datetime
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import _cases
from _cases import SHAPES, STEP_SHAPE
from _peers import FRAMEWORKS, worker_main
from _runner import (LOWP_IMPLS, LOWP_RTOL, SLOW_CALL, add_timing_options, fmt_ms, impl, lowp_impls,  # noqa: F401
                     machine_info, parse_precisions, run_case, seq_impls, sgemm_rate, slow_blas_warning,
                     start_workers, timing_defaults)

ROUNDS = 11  # timed rounds per framework and case (--quick: 5)
def build_cases(quick, precisions=()):
    """Every case, in run order: dicts with the shape, mode, FLOPs and the implementations to time;
    ``precisions`` (--precision) add their implementations to the inference cases."""
    cases = []
    for cell in ("lstm", "gru"):
        for shape, (B, T, I, H) in SHAPES.items():
            if quick and shape == "large":
                continue
            for mode in ("infer", "train"):
                f = _cases.flop(cell, I, H, 1, 1, B * T, mode)
                lowp = lowp_impls(precisions) if mode == "infer" else []
                cases.append(dict(name=f"{cell}-{shape}-{mode}", kind="seq", cell=cell, shape=shape, mode=mode,
                                  B=B, T=T, I=I, H=H, layers=1, bidirectional=False, flop=f,
                                  impls=seq_impls(mode) + lowp))
    B, T, I, H = SHAPES["medium"]
    for mode in ("infer", "train"):
        f = _cases.flop("lstm", I, H, 2, 2, B * T, mode)
        cases.append(dict(name=f"lstm2bi-medium-{mode}", kind="seq", cell="lstm", shape="medium", mode=mode,
                          B=B, T=T, I=I, H=H, layers=2, bidirectional=True, flop=f, impls=seq_impls(mode)))
    Bs, Is, Hs = STEP_SHAPE
    for cell in ("lstm", "gru"):
        cases.append(dict(name=f"{cell}-step", kind="step", cell=cell, shape="step", mode="infer", B=Bs, T=1,
                          I=Is, H=Hs, layers=1, bidirectional=False,
                          flop=_cases.flop(cell, Is, Hs, 1, 1, Bs),
                          impls=[impl("rnnfast"), impl("torch"), impl("onnxruntime"), impl("tensorflow")]
                          + lowp_impls(precisions)))
    for cell in ("lstm", "gru"):
        for mode in ("infer", "train"):
            impls = [impl("rnnfast"), impl("rnnfast-dense", "rnnfast", "dense"),
                     impl("torch-packed", "torch", "packed")]
            if mode == "infer":
                impls.append(impl("onnxruntime"))
            cases.append(dict(name=f"{cell}-varlen-{mode}", kind="varlen", cell=cell, shape="medium", mode=mode,
                              B=B, T=T, I=I, H=H, layers=1, bidirectional=False, flop=None, impls=impls))
    return cases


def select_cases(cases, patterns):
    if not patterns:
        return cases
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c["name"], p) for p in pats)]
    unknown = [p for p in pats if not any(fnmatch.fnmatchcase(c["name"], p) for c in cases)]
    if unknown:
        sys.exit(f"--cases: no case matches {unknown}; cases are: {', '.join(c['name'] for c in cases)}")
    return chosen



def markdown(results, sgemm_gflops, sgemm_note):
    lines = ["| case | framework | ms (median) | ratio peer/rnnfast | GFLOP/s | % of SGEMM | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for rec in results:
        for name, r in rec["impls"].items():
            st = r.get("status")
            if st == "ok":
                ratio = r.get("ratio_vs_rnnfast")
                note = ""
                if isinstance(r.get("check"), dict):
                    note = f"agrees ({r['check']['max']:.0e})"
                if r["iqr_s"] > 0.25 * r["median_s"]:
                    note += (", " if note else "") + f"noisy: IQR {100 * r['iqr_s'] / r['median_s']:.0f}%"
                lines.append(
                    f"| {rec['name']} | {name} | {fmt_ms(r['median_s'])} | "
                    f"{'' if name == 'rnnfast' or ratio is None else f'{ratio:.2f}'} | {r['gflops']:.1f} | "
                    f"{100 * r['gflops'] / sgemm_gflops:.0f}% | {note} |")
            elif st in ("disagrees", "error", "unchecked"):
                reason = str(r.get("reason", "")).splitlines()[0][:120]
                lines.append(f"| {rec['name']} | {name} | {st.upper()} |  |  |  | {reason} |")
            # skipped cases are listed in the JSON only
    lines.append("")
    lines.append(f"SGEMM: {sgemm_gflops:.0f} GFLOP/s ({sgemm_note}). Ratio above 1: rnnfast is faster.")
    return "\n".join(lines)


def lowp_table(results, precisions):
    """For --precision: each rnnfast low-precision figure beside rnnfast float32 and the peers' same
    precision (ratio above 1: rnnfast's low precision is faster), with its instruction path."""
    if not precisions:
        return ""
    lines = ["", "", "| case | impl | path | ms | vs rnnfast float32 | vs " + " | vs ".join(
        n for p in precisions for n, _, _ in LOWP_IMPLS[p][1:]) + " |", "|---|---|---|---:|---:|" +
        "---:|" * sum(len(LOWP_IMPLS[p]) - 1 for p in precisions)]
    for rec in results:
        ok = {n: r["median_s"] for n, r in rec["impls"].items() if r.get("status") == "ok"}
        for p in precisions:
            name = LOWP_IMPLS[p][0][0]
            if name not in ok:
                continue
            ours = ok[name]
            cells = [f"{ok[n] / ours:.2f}" if n in ok else "-" for q in precisions for n, _, _ in LOWP_IMPLS[q][1:]]
            path = rec["impls"][name].get("info", {}).get("plan", "?")
            lines.append(f"| {rec['name']} | {name} | {path} | {fmt_ms(ours)} | "
                         f"{ok['rnnfast'] / ours if 'rnnfast' in ok else float('nan'):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def driver(args):
    t_start = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    threads = args.threads
    if threads is None:
        try:
            import rnnfast

            threads = rnnfast.get_num_threads()
        except ImportError:
            threads = len(os.sched_getaffinity(0))
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        sys.exit(f"--frameworks: unknown {bad}; known: {', '.join(FRAMEWORKS)}")
    if "rnnfast" not in frameworks:
        frameworks.insert(0, "rnnfast")  # the reference for the checks and the ratios
    cases = select_cases(build_cases(args.quick, args.precision), args.cases)
    timing_defaults(args, ROUNDS)
    env_warn = slow_blas_warning()
    if env_warn:
        log("WARNING: " + ", ".join(env_warn) + " set: numpy's OpenBLAS (the SGEMM rate, measured here) may run "
            "slower; see bench/README.md (env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py)")
    machine = machine_info()
    log(f"machine: {machine.get('lscpu Model name', '?')}, {machine.get('affinity_cpus', '?')} CPUs; "
        f"threads = {threads}; {len(cases)} cases, {args.rounds} rounds")
    sg0 = sgemm_rate(threads)
    log(f"SGEMM 2048^3: {np.median(sg0['gflops']):.0f} GFLOP/s ({sg0['limited_by']})")

    tmp = tempfile.mkdtemp(prefix="rnnfast-compare-")
    workers, versions = start_workers(frameworks, threads, tmp, args.timeout, log)
    try:
        if "rnnfast" not in workers:
            sys.exit("rnnfast itself could not start; see " + tmp)
        results, sg_mid = run_cases(cases, workers, threads, tmp, args, log)
    finally:
        for w in workers.values():
            w.close()
    sg1 = sgemm_rate(threads)
    all_g = sg0["gflops"] + sg_mid + sg1["gflops"]
    sgemm = float(np.median(all_g))
    note = (f"numpy float32 2048x2048 @ 2048x2048, median of {len(all_g)}: 5 at the start, one after each case, "
            f"5 at the end (range {min(all_g):.0f}-{max(all_g):.0f}); "
            + (f"{threads} threads via threadpoolctl" if sg0["limited_by"] == "threadpoolctl"
               else "threads NOT limited (threadpoolctl not installed)"))
    wall = time.perf_counter() - t_start
    table = markdown(results, sgemm, note) + lowp_table(results, args.precision)
    report(args, results, table, threads, versions, machine, env_warn, wall)
    if args.json:
        out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "argv": sys.argv, "threads": threads, "rounds": args.rounds, "min_round_s": args.min_round,
               "warmup": args.warmup, "gap_s": args.gap, "rtol": args.rtol, "quick": args.quick,
               "wall_s": wall, "machine": machine, "env_warnings": env_warn, "versions": versions,
               "sgemm": {"start": sg0, "between_cases_gflops": sg_mid, "end": sg1, "gflops_median": sgemm,
                         "note": note},
               "cases": results, "table_markdown": table}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
        log(f"wrote {args.json}")
    if args.keep_logs:
        log(f"worker logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run_cases(cases, workers, threads, tmp, args, log):
    """Every case in turn, the SGEMM rate measured after each. Returns (records, SGEMM GFLOP/s between cases)."""
    results, sg_mid = [], []
    for case in cases:
        t0 = time.perf_counter()
        rec = run_case(case, workers, tmp, args, log)
        rec["wall_s"] = time.perf_counter() - t0
        results.append(rec)
        time.sleep(0.03)  # spinning pool threads of the last round stop
        sg_mid.append(sgemm_rate(threads, reps=1)["gflops"][0])  # the SGEMM rate through the run
        summary = ", ".join(f"{n} {fmt_ms(r['median_s'])} ms" if r.get("status") == "ok" else f"{n} {r.get('status')}"
                            for n, r in rec["impls"].items())
        log(f"{case['name']} ({rec['wall_s']:.1f} s): {summary}")
    return results, sg_mid


def report(args, results, table, threads, versions, machine, env_warn, wall):
    """Print the run's header, the versions and the table (and with --verbose the skipped pairs)."""
    header = (f"rnnfast {versions.get('rnnfast', {}).get('rnnfast', '?')} ({machine.get('git', '?')}) vs peers; "
              f"{machine.get('lscpu Model name', '?')} ({machine.get('affinity_cpus', '?')} CPUs), {threads} threads, "
              f"float32, batch-first; "
              f"median of {args.rounds} interleaved rounds"
              + (f" (3 for calls over {SLOW_CALL} s)" if args.quick and not args.rounds_given else "")
              + f"; run took {wall:.0f} s")
    vers = "; ".join(f"{k} " + (", ".join(f"{a}={b}" for a, b in v.items() if a in (k, 'onnx', 'keras'))
                               if "unavailable" not in v else f"unavailable ({v['unavailable']})")
                     for k, v in versions.items())
    print(header)
    print(f"Versions: {vers}")
    if env_warn:
        print("WARNING: " + ", ".join(env_warn) + " were set (slower numpy BLAS)")
    print()
    print(table)
    skipped = [(rec["name"], n, r.get("reason")) for rec in results for n, r in rec["impls"].items()
               if r.get("status") == "skipped" and r.get("reason") != "framework not selected or not available"]
    if skipped and args.verbose:
        print("\nSkipped: " + "; ".join(f"{c} {n}: {why}" for c, n, why in skipped))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 rounds of >= 20 ms (3 for calls over 0.25 s), no "
                   "large shapes (about a minute)")
    p.add_argument("--threads", type=int, default=None, help="threads for every framework "
                   "(default rnnfast.get_num_threads())")
    p.add_argument("--json", default=None, help="write every raw round, versions and the machine here")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of %(default)s (rnnfast always runs: it is the reference)")
    p.add_argument("--cases", default=None, help="comma-separated case names or shell patterns, e.g. "
                   "'lstm-*-infer,gru-step' (default: all)")
    p.add_argument("--precision", type=parse_precisions, default=[], help="also time low-precision inference: "
                   "rnnfast.quantize beside the peers' own, comma-separated (bf16: PyTorch bfloat16 weights and "
                   "autocast; int8: ONNX Runtime quantize_dynamic)")
    add_timing_options(p, ROUNDS)
    p.add_argument("--verbose", action="store_true", help="also list the skipped framework/case pairs")
    p.add_argument("--list", action="store_true", help="list the cases (with --quick: those of a quick run)")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        for c in select_cases(build_cases(args.quick, args.precision), args.cases):
            print(f"{c['name']:<22} B={c['B']} T={c['T']} I={c['I']} H={c['H']} layers={c['layers']} "
                  f"bidirectional={c['bidirectional']}: {', '.join(i['impl'] for i in c['impls'])}")
    elif args.worker:
        worker_main(args.worker, args.threads or 1)
    else:
        driver(args)


if __name__ == "__main__":
    main()