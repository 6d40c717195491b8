"""The driver side of the peer benchmarks: worker processes, the interleaved rounds, the machine's facts.

Shared by ``compare.py`` and ``grid.py``. A case is a dict (name, kind "seq" / "step" / "varlen", cell, mode,
B, T, I, H, layers, bidirectional, flop and ``impls``, the implementations to time, each
``{"impl": name, "fw": framework, "variant": None or a framework's variant}``); :func:`run_case` checks every
implementation against rnnfast, sizes and runs the rounds and returns the case's JSON record.

The workers (``_peers.py``) run with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from their
environment (they make numpy's and scipy's OpenBLAS pick slower kernels); the caller's own environment is
left alone.
"""
import argparse
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time

import numpy as np

import _cases

SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Pause after a framework's round before the next framework's: its pool threads spin-wait that long after a
# call before they sleep (measured: ONNX Runtime ~25 ms of one core, PyTorch's OpenMP a few ms).
HANDOVER_GAP = {"onnxruntime": 0.03, "torch": 0.01, "rnnfast": 0.003, "tensorflow": 0.003}
SLOW_CALL = 0.25  # with --quick, cases with a call slower than this (s) get 3 rounds
STEP_CHECK_STEPS = 16
PEERS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peers.py")


def add_timing_options(parser, rounds):
    """The options of the rounds and the checks, shared by compare.py and grid.py (``rounds``: the default
    number of rounds of a full run; ``--quick`` runs 5). :func:`timing_defaults` fills in what is left None."""
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"timed rounds per framework (default {rounds}, quick 5)")
    parser.add_argument("--min-round", type=float, default=None,
                        help="seconds a round lasts at least, by repeating the call (default 0.05, quick 0.02)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after the check call and before "
                        "the rounds; the fastest sizes the rounds (default 2, quick 1)")
    parser.add_argument("--gap", type=float, default=None, help="pause in s between two rounds, for the previous "
                        "worker's threads to stop spinning (default per framework: 30 ms after ONNX Runtime, 10 ms "
                        "after PyTorch, 3 ms after the others)")
    parser.add_argument("--settle", choices=("threads", "cpu"), default="threads", help="before a round, wait "
                        "until the other workers' threads are all asleep and use under a tenth of a core "
                        "(threads, the default), or only the latter (cpu: the old rule, for comparison)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="max |peer - rnnfast| / max |rnnfast| (1e-4)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a worker's answer")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the worker logs")


def timing_defaults(args, rounds):
    """Fill in the options of :func:`add_timing_options` left None; with ``args.quick`` fewer, shorter rounds."""
    args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = 5 if args.quick else rounds
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.min_round is None:
        args.min_round = 0.02 if args.quick else 0.05


def make_data(case, path):
    """Weights (PyTorch keys and layout) and inputs of one case, from fixed seeds, saved to ``path``.

    Fills in the token count and FLOPs of variable-length cases.
    """
    cell, I, H, L = case["cell"], case["I"], case["H"], case["layers"]
    arrays = {"w:" + k: v for k, v in _cases.state_dict(cell, I, H, L, case["bidirectional"]).items()}
    D = 2 if case["bidirectional"] else 1
    xr = np.random.default_rng(1234)
    if case["kind"] == "step":
        arrays["x_t"] = xr.standard_normal((case["B"], I)).astype(np.float32)
        arrays["x_steps"] = xr.standard_normal((STEP_CHECK_STEPS, case["B"], I)).astype(np.float32)
    else:
        B, T = case["B"], case["T"]
        x = xr.standard_normal((B, T, I)).astype(np.float32)
        arrays["x"] = x
        if case["kind"] == "varlen":
            lengths = xr.integers(T // 4, T, endpoint=True, size=B)
            while lengths.sum() % T:  # make the total a multiple of T: exactly the same tokens, dense
                lengths[np.argmax(lengths)] -= 1
            assert lengths.sum() % T == 0 and lengths.min() >= T // 4
            tokens = np.concatenate([x[b, :lengths[b]] for b in range(B)])
            arrays["lengths"] = lengths.astype(np.int64)
            arrays["x_dense"] = np.ascontiguousarray(tokens.reshape(-1, T, I))
            case["tokens"] = int(lengths.sum())
            case["dense_batch"] = int(lengths.sum()) // T
            case["flop"] = _cases.flop(cell, I, H, L, D, case["tokens"], case["mode"])
    np.savez(path, **arrays)


def _threads_of(pids):
    """(pid, /proc/<pid>/task/<tid>) of every thread of ``pids`` (this process's calling thread left out)."""
    me, mine = threading.get_native_id(), os.getpid()
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            if not (pid == mine and int(tid) == me):
                yield pid, f"/proc/{pid}/task/{tid}"


def _cpu_by_pid(pids):
    """{pid: CPU time (ns) used so far by every thread of it} (Linux /proc/<pid>/task/<tid>/schedstat), this
    process's calling thread left out; a pid that cannot be read is left out."""
    out = {pid: 0 for pid in pids if os.path.isdir(f"/proc/{pid}/task")}
    for pid, task in _threads_of(out):
        try:
            with open(f"{task}/schedstat") as f:
                out[pid] += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _cpu_ns(pids):
    """CPU time (ns) used so far by every thread of ``pids`` and of this process but the calling thread;
    None where that is not available."""
    by_pid = _cpu_by_pid(list(pids) + [os.getpid()])
    return sum(by_pid.values()) if os.getpid() in by_pid else None


def _machine_busy_ns():
    """CPU time (ns) every core of the machine has been busy so far (/proc/stat: all but idle and iowait),
    or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy * 1e9 / os.sysconf("SC_CLK_TCK")


class RoundWatch:
    """Who else ran during a round: each other worker's and the driver's CPU time, and the rest of the machine
    (other programs; /proc/stat, in 10 ms ticks), each as a share of one core over the round's wall time.

    ``start()`` before the round, ``stop()`` after it returns ``{"driver": ..., "<framework>": ..., "machine":
    ...}`` (the timed worker's own CPU is taken out of "machine"), empty where /proc cannot be read."""

    def __init__(self, timed, others):
        self.timed, self.pids = timed, {"driver": os.getpid(), **others}

    def start(self):
        self.t0 = time.perf_counter()
        self.cpu0 = _cpu_by_pid(list(self.pids.values()) + [self.timed])
        self.busy0 = _machine_busy_ns()

    def stop(self):
        wall = max(time.perf_counter() - self.t0, 1e-9)
        cpu = _cpu_by_pid(list(self.pids.values()) + [self.timed])
        busy = _machine_busy_ns()
        used = {pid: cpu[pid] - self.cpu0[pid] for pid in cpu if pid in self.cpu0}
        out = {name: round(used[pid] / 1e9 / wall, 3) for name, pid in self.pids.items() if pid in used}
        if busy is not None and self.busy0 is not None:
            rest = busy - self.busy0 - sum(used.values())
            out["machine"] = round(max(0.0, rest) / 1e9 / wall, 3)
        return out


def _runnable(pids):
    """Threads of ``pids`` that are running or waiting for a core (state R in /proc/<pid>/task/<tid>/stat),
    this process's calling thread left out."""
    n = 0
    for _, task in _threads_of(pids):
        try:
            with open(f"{task}/stat") as f:
                n += f.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return n


def wait_quiet(other_pids, window=0.002, busy=0.1, limit=1.0, threads=True):
    """Before a round: wait (up to ``limit`` s) until the other workers and the driver use under ``busy`` of
    one core over ``window`` s and none of their threads is running or waiting for a core; returns the seconds
    waited. A framework's pool threads spin for a while after its calls (ONNX Runtime's two for some 40 ms of
    CPU each here, PyTorch's OpenMP ones for under 2 ms, numpy's OpenBLAS after the SGEMM probe for longer),
    and a round that starts beside them measures that contention, not the framework. The CPU test alone let
    rounds start beside a spinner that was waiting for a core (another program held it): ONNX Runtime then
    used 7-16% of a core during rnnfast's rounds (``RoundWatch``), and each of rnnfast's barriers it delayed
    past 200 us sent the rest of that call to one thread. ``threads=False``: the CPU test alone."""
    t0 = time.perf_counter()
    t_end = t0 + limit
    pids = list(other_pids) + [os.getpid()]
    last = _cpu_ns(other_pids)
    if last is None:
        return 0.0
    while time.perf_counter() < t_end:
        time.sleep(window)
        now = _cpu_ns(other_pids)
        if now - last < busy * window * 1e9 and not (threads and _runnable(pids)):
            break
        last = now
    return time.perf_counter() - t0


def interference(r):
    """What disturbed an implementation's rounds (its record ``r`` from :func:`run_case`): ``others``, the
    largest share of a core the other workers and the driver used during one of its rounds; ``machine``, the
    median share other programs used; ``settle_s``, the longest wait for quiet before one; and, from the
    worker's counters (rnnfast), ``calls`` on several threads, ``busy`` ones (a barrier waited past its
    limit: the rest of the call ran on one thread) and ``serial`` (calls the back-off sent to one thread)."""
    rounds = r.get("rounds_others") or []
    out = {"others": max((sum(v for k, v in o.items() if k not in ("machine", "settle_s")) for o in rounds),
                         default=0.0),
           "machine": float(np.median([o.get("machine", 0.0) for o in rounds])) if rounds else 0.0,
           "settle_s": max((o.get("settle_s", 0.0) for o in rounds), default=0.0)}
    for key in ("calls", "busy", "serial"):
        out[key] = sum(c.get(key, 0) for c in r.get("rounds_counters") or [])
    return out


def worker_env():
    """This process's environment without :data:`SLOW_BLAS_ENV` (for the workers only)."""
    return {k: v for k, v in os.environ.items() if k not in SLOW_BLAS_ENV}


def slow_blas_warning():
    """The :data:`SLOW_BLAS_ENV` settings of this process as ``["NAME=value", ...]`` (empty when unset)."""
    return [f"{k}={os.environ[k]}" for k in SLOW_BLAS_ENV if k in os.environ]


def start_workers(frameworks, threads, tmp, timeout, log):
    """One :class:`WorkerProc` per framework; those that fail to start are logged and left out.

    Returns ``(workers, versions)``: name -> WorkerProc of the live ones, and name -> the versions each
    reported (``{"unavailable": reason}`` for the others).
    """
    workers, versions = {}, {}
    try:
        for fw in frameworks:
            w = WorkerProc(fw, threads, tmp, timeout)
            try:
                hello = w.recv()
            except WorkerDied as e:
                hello = {"ok": False, "error": str(e)}
            if hello.get("ok"):
                workers[fw] = w
                versions[fw] = hello["versions"]
                log(f"{fw}: {hello['versions']}")
            else:
                versions[fw] = {"unavailable": hello.get("error")}
                log(f"{fw}: UNAVAILABLE, skipped: {hello.get('error')}")
                w.close()
    except BaseException:
        for w in workers.values():
            w.close()
        raise
    return workers, versions


def impl(name, fw=None, variant=None, rtol=None):
    """One implementation of a case: ``name`` in the tables, its framework (default ``name``) and variant;
    ``rtol``: its own agreement bound with rnnfast's float32 results (low precision), else ``--rtol``."""
    spec = {"impl": name, "fw": fw or name, "variant": variant}
    if rtol is not None:
        spec["rtol"] = rtol
    return spec


def seq_impls(mode):
    """The implementations of a whole-sequence case: every framework for inference; no ONNX Runtime for
    training (it has none)."""
    if mode == "infer":
        return [impl("rnnfast"), impl("torch"), impl("onnxruntime"), impl("tensorflow")]
    return [impl("rnnfast"), impl("torch"), impl("tensorflow")]


#: --precision (compare.py, grid.py): the low-precision implementations of an inference case, rnnfast's first,
#: and how far their outputs may be from rnnfast's float32 ones (max |peer - rnnfast| / max |rnnfast|;
#: bfloat16 keeps 8 bits; int8, per-channel or per-tensor weights and per-step activation scales, measured
#: 1e-2 to 2e-2)
LOWP_IMPLS = {"bf16": [("rnnfast-bf16", "rnnfast", "bf16"), ("torch-bf16", "torch", "bf16"),
                       ("torch-autocast", "torch", "autocast")],
              "int8": [("rnnfast-int8", "rnnfast", "int8"), ("ort-int8", "onnxruntime", "int8")],
              # (not a precision: float32 on rf.nn.freeze's read-only copy, its weight packs kept from call
              # to call, against the float32 peers, ONNX Runtime's session packing its own once likewise)
              "f32-frozen": [("rnnfast-frozen", "rnnfast", "frozen"), ("ort-f32", "onnxruntime", None),
                             ("torch-f32", "torch", None)]}
LOWP_RTOL = {"bf16": 5e-2, "int8": 5e-2, "f32-frozen": 1e-4}


def lowp_impls(precisions):
    """The implementations --precision adds to an inference case."""
    return [impl(name, fw, variant, LOWP_RTOL[p]) for p in precisions for name, fw, variant in LOWP_IMPLS[p]]


def parse_precisions(text):
    """--precision's comma-separated names, checked (an argparse ``type``)."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in LOWP_IMPLS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown precision {bad}; known: {', '.join(LOWP_IMPLS)}")
    return list(dict.fromkeys(names))


class WorkerProc:
    """A worker subprocess and a reader thread that queues its answers."""

    def __init__(self, name, threads, logdir, timeout):
        self.name, self.timeout = name, timeout
        self.log_path = os.path.join(logdir, f"worker-{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, PEERS_SCRIPT, name, str(threads)], env=worker_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.q = queue.Queue()
        self.dead = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line)
        self.q.put(None)

    def log_tail(self, n=15):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def recv(self):
        try:
            line = self.q.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise WorkerDied(f"no answer in {self.timeout} s (killed)")
        if line is None:
            rc = self.proc.wait()
            raise WorkerDied(f"worker exited with code {rc}; log tail:\n{self.log_tail()}")
        return json.loads(line)

    def call(self, **req):
        if self.dead:
            raise WorkerDied(self.dead)
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return self.recv()
        except (BrokenPipeError, WorkerDied) as e:
            if not isinstance(e, WorkerDied):
                time.sleep(0.1)
                e = f"worker gone (exit code {self.proc.poll()}); log tail:\n{self.log_tail()}"
            self.dead = str(e)
            raise WorkerDied(self.dead) from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc.poll() is None and not self.dead:
            try:
                self.call(cmd="quit")
            except WorkerDied:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


class WorkerDied(RuntimeError):
    pass


_SGEMM_MATS = {}


def sgemm_rate(threads, reps=5, n=2048):
    """GFLOP/s of numpy float32 n x n @ n x n (median of ``reps``), limited to ``threads`` when possible."""
    if n not in _SGEMM_MATS:
        rng = np.random.default_rng(0)
        _SGEMM_MATS[n] = (rng.standard_normal((n, n), dtype=np.float32),
                          rng.standard_normal((n, n), dtype=np.float32), np.empty((n, n), np.float32))
    a, b, c = _SGEMM_MATS[n]
    info = {"n": n, "reps": reps}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        ctx = threadpool_limits(limits=threads, user_api="blas")
        info["threads"] = threads
        info["limited_by"] = "threadpoolctl"
    except ImportError:
        import contextlib

        ctx = contextlib.nullcontext()
        threadpool_info = None
        info["threads"] = None
        info["limited_by"] = "none (threadpoolctl not installed: numpy's BLAS ran with its own thread count)"
    with ctx:
        if threadpool_info is not None:
            blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
            info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                   "filepath")} for d in blas]
        np.matmul(a, b, out=c)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    info["times"] = times
    info["gflops"] = [2.0 * n ** 3 / t / 1e9 for t in times]
    return info


def machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "numpy": np.__version__,
            "os_cpu_count": os.cpu_count()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                     "L2 cache", "L3 cache", "Hypervisor vendor"):
                info["lscpu " + k] = v
        info["avx512"] = " avx512f " in f" {out} "
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return math.inf
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    d = np.max(np.abs(a - ref)) if ref.size else 0.0
    if not np.isfinite(d):
        return math.inf
    return float(d / scale) if scale > 0 else float(d)


def fmt_ms(s):
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"



def run_case(case, workers, tmp, args, log):
    """Check, calibrate and time one case. Returns its JSON record."""
    data_path = os.path.join(tmp, "data.npz")
    make_data(case, data_path)
    rec = {k: v for k, v in case.items() if k != "impls"}
    rec["impls"] = {}
    live = _set_up(case, workers, tmp, data_path, args, log, rec)
    _warm_up(live, args)
    n_rounds = args.rounds
    if args.quick and not args.rounds_given and any(min(r["warmup_s"]) > SLOW_CALL for _, _, r in live):
        n_rounds = 3
    rec["rounds"] = n_rounds
    _interleave(live, n_rounds, args)
    _finish(live, rec, case["flop"])  # rnnfast-dense runs exactly the same number of tokens
    return rec


def _set_up(case, workers, tmp, data_path, args, log, rec):
    """Build every implementation of ``case`` and check it against rnnfast; returns the (name, worker, record)
    of those to time. ``rec["impls"]`` gets a record for each, saying why where it is not timed."""
    ref, live = None, []
    for spec in case["impls"]:
        name, fw = spec["impl"], spec["fw"]
        r = rec["impls"][name] = {"framework": fw, "variant": spec["variant"]}
        arrays = _setup_one(name, spec, workers.get(fw), case, data_path, tmp, r, log)
        if arrays is None:
            continue
        if name == "rnnfast":
            ref = arrays
            r["check"] = "reference"
        elif not _agrees(name, spec, arrays, ref, r, args.rtol, log):
            continue
        live.append((name, workers[fw], r))
    return live


def _setup_one(name, spec, w, case, data_path, tmp, r, log):
    """Build one implementation in its worker and run its check call: its arrays, or None (``r`` says why)."""
    if w is None:
        r.update(status="skipped", reason="framework not selected or not available")
        return None
    if w.dead:
        r.update(status="error", reason=f"worker died earlier: {w.dead}")
        return None
    check_path = os.path.join(tmp, f"check-{name}.npz")
    t_setup = time.perf_counter()
    try:
        ans = w.call(cmd="setup", impl=name, case={k: v for k, v in case.items() if k != "impls"}, data=data_path,
                     variant=spec["variant"], check_out=check_path)
    except WorkerDied as e:
        r.update(status="error", reason=str(e))
        log(f"  {name}: worker died: {e}")
        return None
    r["setup_s"] = time.perf_counter() - t_setup  # build + the check call (the first call)
    if not ans.get("ok"):
        r.update(status="error", reason=ans.get("error"))
        log(f"  {name}: error: {ans.get('error')}")
        return None
    if "skip" in ans:
        r.update(status="skipped", reason=ans["skip"])
        return None
    if ans.get("info"):
        r["info"] = ans["info"]
    with np.load(check_path) as z:
        arrays = {k: z[k] for k in z.files}
    os.remove(check_path)
    return arrays


def _agrees(name, spec, arrays, ref, r, rtol, log):
    """Whether a peer's check arrays agree with rnnfast's ``ref`` within ``rtol`` (recorded in ``r``)."""
    if spec["variant"] == "dense":
        r["check"] = "reference (rnnfast on other inputs)"
        return True
    if ref is None:
        r.update(status="unchecked", reason="no rnnfast reference to compare with")
        log(f"  {name}: not timed: no rnnfast reference")
        return False
    rtol = spec.get("rtol") or rtol
    errs = {k: rel_err(arrays.get(k, np.empty(0)), v) for k, v in ref.items()}
    worst = max(errs.values()) if errs else math.inf
    r["check"] = {"rel_err": errs, "max": worst, "rtol": rtol}
    if not worst <= rtol:
        r.update(status="disagrees", reason=f"max rel. error {worst:.2e} > {rtol:g} ({errs})")
        log(f"  {name}: DISAGREES with rnnfast: {errs}")
        return False
    return True


def _warm_up(live, args):
    """Warm every live implementation up and size its rounds (``iters`` calls of at least ``--min-round``);
    one whose worker fails leaves ``live``."""
    for name, w, r in list(live):
        try:
            ans = w.call(cmd="warmup", impl=name, n=max(1, args.warmup), batch_s=min(0.2, args.min_round / 2))
            if not ans.get("ok"):
                raise WorkerDied(ans.get("error"))
        except WorkerDied as e:
            r.update(status="error", reason=str(e))
            live.remove((name, w, r))
            continue
        # the check call before was the first (tracing, allocating) call
        t = min(min(ans["times"]), ans.get("batch", float("inf")))
        r["warmup_s"] = ans["times"]
        r["iters"] = max(1, math.ceil(args.min_round / max(t, 1e-7)))
        r["rounds_s"] = []


def _interleave(live, n_rounds, args):
    """Round 1 of every implementation, round 2 of every one, ... (the order rotating), one at a time, each
    after the previous worker's threads have gone quiet."""
    prev = None
    for k in range(n_rounds):
        order = live[k % len(live):] + live[:k % len(live)] if live else []
        for name, w, r in order:
            if r.get("status") == "error":
                continue
            if prev is not None:
                time.sleep(args.gap if args.gap is not None else HANDOVER_GAP.get(prev, 0.01))
            others = {x.name: x.proc.pid for _, x, _ in live if x is not w}
            settle = wait_quiet(list(others.values()), threads=getattr(args, "settle", "threads") == "threads")
            prev = w.name
            watch = RoundWatch(w.proc.pid, others)
            try:
                watch.start()
                ans = w.call(cmd="round", impl=name, iters=r["iters"])
                if not ans.get("ok"):
                    raise WorkerDied(ans.get("error"))
            except WorkerDied as e:
                r.update(status="error", reason=str(e))
                continue
            r["rounds_s"].append(ans["t"])
            r.setdefault("rounds_others", []).append({**watch.stop(), "settle_s": round(settle, 4)})
            if "counters" in ans:
                r.setdefault("rounds_counters", []).append(ans["counters"])


def _finish(live, rec, flop):
    """Medians, spread and GFLOP/s of the timed implementations, their workers' memory released, and each
    implementation's time over rnnfast's."""
    for name, w, r in live:
        if r.get("status") == "error":
            continue
        rounds = r["rounds_s"]
        r["status"] = "ok"
        r["median_s"] = float(np.median(rounds))
        r["min_s"] = float(np.min(rounds))
        r["iqr_s"] = float(np.subtract(*np.percentile(rounds, [75, 25])))
        r["flop"] = flop
        r["gflops"] = flop / r["median_s"] / 1e9
    for name, w, r in live:
        try:
            w.call(cmd="release")
        except WorkerDied:
            pass
    base = rec["impls"].get("rnnfast", {}).get("median_s")
    for name, r in rec["impls"].items():
        if base and r.get("median_s"):
            r["ratio_vs_rnnfast"] = r["median_s"] / base
