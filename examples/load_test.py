"""Load test of examples/serve.py on loopback: latency and throughput with and without request batching,
against the latency bound p99 <= 2 x the unbatched single-request latency + max_delay_ms.

    python examples/load_test.py                       # fits a small LSTM classifier (H=128, T~50) first
    python examples/load_test.py --model m.rnnfast --servers asyncio --body binary --rate 500

It starts the server as child processes on 127.0.0.1 (any free port), each front end of ``--servers``
(asyncio, threading) without batching and with it (one batching server per ``--batch-workers`` value,
the Batcher's threads), and measures them in turn (``--rounds`` times each,
interleaved), each round in three phases: the single-request latency (one client, p50), ``--clients``
connections in a closed loop (each sends its next request as soon as its answer came), then the same
connections in an open loop at ``--rate`` requests/s (request i scheduled at i / rate s), each phase
``--requests`` requests or ``--seconds``. It checks every answer against ``predict`` and prints p50 / p99
latency, throughput, mean batch and the server's CPU time per request, per round and the medians, the
targets with PASS / FAIL (throughput with batching >= 3x without in the closed loop; p99 with batching
under the bound, closed and open loop, the bound taken from the same run's unbatched single-request p50),
and last the same comparison without HTTP (threads of this process calling ``predict``, or submitting to
a Batcher).

The load generator is one thread of this process multiplexing every connection (``selectors``, keep-alive,
requests encoded beforehand, ``perf_counter`` timestamps): about 20 µs of CPU a request, no client
threads competing for the cores the server runs on (on a small machine they share them all the same).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _rnnfast_parent():
    """The folder holding the rnnfast this script would import (found, not imported)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(importlib.util.find_spec("rnnfast").origin)))


def fit_model(path, hidden_size=128, T=50, F=8, seed=0):
    """Fit (briefly) and save an LSTM classifier of the size a service might run: H=128, 8 features, three
    classes, sequences of 35-65 steps."""
    import rnnfast as rf
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((int(rng.integers(T - 15, T + 16)), F)).astype(np.float32) for _ in range(256)]
    y = np.array([int(np.sign(x[:, 0].sum()) + 1) for x in X])
    rf.LSTMClassifier(hidden_size=hidden_size, epochs=1, batch_size=32, random_state=seed).fit(X, y).save(path)


def requests_for(n, T=50, F=8, seed=1):
    """``n`` sequences of 35-65 steps, values with three decimals (as a sensor would send them: a float32's
    every digit would make the JSON three times longer, and parsing it the server's largest cost)."""
    rng = np.random.default_rng(seed)
    return [np.round(rng.standard_normal((int(rng.integers(T - 15, T + 16)), F)), 3) for _ in range(n)]


class Server:
    """examples/serve.py as a child process on 127.0.0.1 (stopped on exit of the ``with`` block)."""

    def __init__(self, model, batching, max_delay_ms=2.0, threads=None, server="asyncio", batch_workers=1):
        cmd = [sys.executable, str(HERE / "serve.py"), str(model), "--port", "0", "--server", server,
               "--batching" if batching else "--no-batching", "--max-delay-ms", str(max_delay_ms),
               "--batch-workers", str(batch_workers)]
        if threads:
            cmd += ["--threads", str(threads)]
        # the rnnfast this script imported (installed, or a built checkout), from outside the checkout
        path = os.pathsep.join(filter(None, [_rnnfast_parent(),
                                             os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
        line = self.proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT (...)"
        if "http://" not in line:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])

    def cpu_seconds(self, main_thread=False):
        """CPU time the server has used (user + system, from /proc; None elsewhere): a figure that the load
        from other processes distorts far less than wall time. ``main_thread``: only its main thread's
        (the asyncio server's event loop: parsing, answering; the rest is the Batcher's worker running
        batches, or the threads predicting)."""
        stat = f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat" if main_thread else f"/proc/{self.proc.pid}/stat"
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def encode(seqs, body="json"):
    """The requests, made once (the clients share the machine's CPU with the server): the bytes of a POST
    /predict whose body is ``{"sequence": [...]}`` (``body`` "json") or the float32 values with an
    ``X-Shape`` header ("binary")."""
    out = []
    for s in seqs:
        if body == "json":
            data, head = json.dumps({"sequence": s.tolist()}).encode(), b"Content-Type: application/json\r\n"
        else:
            data = np.ascontiguousarray(s, "<f4").tobytes()
            head = b"Content-Type: application/octet-stream\r\nX-Shape: %s\r\n" % ",".join(map(str, s.shape)).encode()
        out.append(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d\r\n\r\n%s"
                   % (head, len(data), data))
    return out


_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Connection:
    """A minimal keep-alive HTTP/1.1 client on 127.0.0.1 for the responses of serve.py (Content-Length
    bodies)."""

    def __init__(self, port, timeout=60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def receive(self):
        """Read what the server sent (blocks until something came)."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def take(self):
        """``(status, body bytes)`` of the first response once it is buffered whole (removed from the
        buffer), else None."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        length = _LENGTH.search(buf, 0, end + 2)
        n = int(length.group(1)) if length else 0
        if len(buf) < end + 4 + n:
            return None
        self.buf = buf[end + 4 + n:]
        return int(buf[9:12]), buf[end + 4:end + 4 + n]

    def send(self, request):
        """Send one request's bytes; returns (status, the decoded JSON body)."""
        self.sock.sendall(request)
        while (answer := self.take()) is None:
            self.receive()
        return answer[0], json.loads(answer[1])

    def close(self):
        self.sock.close()


class _Pending:
    """A connection of the load generator, the request it waits for (number, start time) and when it became
    free."""

    __slots__ = ("conn", "k", "t0", "free")

    def __init__(self, conn):
        self.conn, self.k, self.t0, self.free = conn, None, 0.0, 0.0


def _answered(pending, now):
    """Read what came on a readable connection; the answer's body once it is whole (the connection is then
    free from ``now``), else None."""
    pending.conn.receive()
    answer = pending.conn.take()
    if answer is None:
        return None
    if answer[0] != 200:
        raise RuntimeError(f"HTTP {answer[0]}: {answer[1][:200]!r}")
    pending.free = now
    return answer[1]


def drive(port, requests, clients, max_requests, seconds, rate=None):
    """``clients`` keep-alive connections sending the prepared ``requests`` round-robin until
    ``max_requests`` were sent or ``seconds`` pass: each as soon as its previous answer came (a closed loop),
    or, with ``rate``, request ``i`` at ``i / rate`` s from the start on a free connection (an open loop at that
    offered load, as independent users arrive). In the open loop a request that found every connection
    busy at its scheduled time counts from that time, so a server that falls behind is not hidden; one
    sent late only because this process woke late (poll timeouts are whole milliseconds) counts from its
    send.

    One thread multiplexes every connection (``selectors``): no client threads competing for the GIL or
    the CPU, about 20 µs of this process's CPU a request. A request's latency ends at the ``perf_counter``
    read when the poll returned the last bytes of its answer.
    Returns (latencies in s, raw answer bodies by request index, wall time)."""
    sel = selectors.DefaultSelector()
    conns = [_Pending(Connection(port)) for _ in range(clients)]
    for p in conns:
        sel.register(p.conn.sock, selectors.EVENT_READ, p)
    idle = collections.deque(conns)
    latencies, answers = [], {}
    sent = done = 0
    start = time.perf_counter()
    deadline, last = start + seconds, start
    try:
        while True:
            now = time.perf_counter()
            while idle and sent < max_requests and now < deadline:
                due = start + sent / rate if rate else now
                if due > now:
                    break
                p = idle.popleft()  # the connection free the longest
                t0 = time.perf_counter()
                # open loop: from the scheduled time when every connection was busy then (the server was
                # late); from the send when one was free (only this process's timer was late: poll timeouts
                # are whole milliseconds)
                p.k, p.t0 = sent, (due if p.free > due else t0) if rate else t0
                p.conn.sock.sendall(requests[sent % len(requests)])
                sent += 1
            if done == sent and (sent >= max_requests or now >= deadline):
                break
            timeout = 1.0
            if rate and idle and sent < max_requests and now < deadline:
                timeout = max(0.0, min(start + sent / rate, deadline) - now)
            events = sel.select(timeout)
            t1 = time.perf_counter()
            if events:
                last = t1
            elif sent > done and t1 - last > 60:  # a server that stops answering fails the run, not hangs it
                raise TimeoutError(f"{sent - done} requests unanswered for 60 s")
            for key, _ in events:
                answer = _answered(key.data, t1)
                if answer is not None:
                    latencies.append(t1 - key.data.t0)
                    answers[key.data.k % len(requests)] = answer
                    done += 1
                    idle.append(key.data)
    finally:
        sel.close()
        for p in conns:
            p.conn.close()
    return np.array(latencies), answers, time.perf_counter() - start


def stats_of(port):
    conn = Connection(port, timeout=10)
    try:
        return conn.send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[1]
    finally:
        conn.close()


def _load_phase(srv, bodies, args, clients, rate=None):
    """Latency percentiles (ms), throughput, mean batch and server CPU per request of one loaded phase;
    also the answers seen."""
    before = stats_of(srv.port)
    cpu0, main0, own0 = srv.cpu_seconds(), srv.cpu_seconds(main_thread=True), time.process_time()
    lat, answers, wall = drive(srv.port, bodies, clients, args.requests, args.seconds, rate)
    cpu1, main1, own1 = srv.cpu_seconds(), srv.cpu_seconds(main_thread=True), time.process_time()
    after = stats_of(srv.port)
    batches = after.get("batches", 0) - before.get("batches", 0)
    served = after.get("requests", 0) - before.get("requests", 0)
    return {"p50": float(np.percentile(lat, 50)) * 1e3, "p99": float(np.percentile(lat, 99)) * 1e3,
            "rate": len(lat) / wall, "batch": served / batches if batches else 1.0,
            "cpu": (cpu1 - cpu0) * 1e3 / len(lat) if cpu0 is not None else float("nan"),
            "main_cpu": (main1 - main0) * 1e3 / len(lat) if main0 is not None else float("nan"),
            "client_cpu": (own1 - own0) * 1e3 / len(lat)}, answers


def mode_name(workers):
    """The mode of a server whose Batcher has ``workers`` threads (0: no batching)."""
    return "no batching" if not workers else "batching" if workers == 1 else f"batching x{workers}"


def measure(srv, server, workers, bodies, args):
    """One round on a running server: the single-request latency (one client, p50), ``args.clients``
    clients in a closed loop, then (``args.rate`` > 0) an open loop at ``args.rate`` requests/s."""
    single, _, _ = drive(srv.port, bodies, 1, args.single, args.seconds)
    row = {"server": server, "mode": mode_name(workers), "single_ms": float(np.median(single)) * 1e3}
    closed, answers = _load_phase(srv, bodies, args, args.clients)
    row.update({f"closed_{k}": v for k, v in closed.items()})
    if args.rate:
        opened, more = _load_phase(srv, bodies, args, args.clients, args.rate)
        row.update({f"open_{k}": v for k, v in opened.items()})
        answers.update(more)
    return row, answers


def run_rounds(model, bodies, args):
    """Every server up at once (each of ``args.servers`` without batching, and with a Batcher of each of
    ``args.batch_workers`` threads), measured in turn ``args.rounds`` times (the load from other processes
    then weighs on all alike). Returns the rows of every round and the answers seen, by server and mode."""
    rows, answers = [], {}
    with contextlib.ExitStack() as stack:
        servers = {(kind, workers): stack.enter_context(Server(model, bool(workers), args.max_delay_ms, args.threads,
                                                               kind, max(workers, 1)))
                   for kind in args.servers for workers in [0, *args.batch_workers]}
        for srv in servers.values():
            drive(srv.port, bodies, 4, 100, args.seconds)  # warm-up
        for _ in range(args.rounds):
            for (kind, workers), srv in servers.items():
                row, seen = measure(srv, kind, workers, bodies, args)
                rows.append(row)
                answers.setdefault((kind, workers), {}).update(seen)
    return rows, answers


def medians(rows, server, mode):
    picked = [r for r in rows if r["server"] == server and r["mode"] == mode]
    out = {k: float(np.median([r[k] for r in picked])) for k in picked[0] if k not in ("server", "mode")}
    out.update(server=server, mode=mode)
    return out


def in_process(model_path, seqs, clients, n_requests, threads=None):
    """The same comparison without HTTP: ``clients`` threads of this process calling ``predict`` on one
    shared model, against the same threads submitting to a Batcher (kernel ``threads`` per call, as the
    servers). Returns (plain, batched) requests/s and the time of one ``predict`` on ``clients``
    sequences at once (s, the fastest of 10): what one batch of the closed loop costs at the least."""
    import rnnfast as rf
    from rnnfast.serving import Batcher
    model = rf.load(model_path)
    if threads:
        model.set_params(n_threads=threads)
    xs = [s.astype(model._fitted_dtype()) for s in seqs]

    def rate(call):
        counter, lock = iter(range(n_requests)), threading.Lock()

        def client():
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                call(xs[i % len(xs)])

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return n_requests / (time.perf_counter() - t0)

    plain = rate(lambda x: model.predict(x[None]))
    with Batcher(model) as batcher:
        batched = rate(lambda x: batcher.submit(x).result(timeout=60))
    one_batch = []
    for _ in range(10):
        t0 = time.perf_counter()
        model.predict(xs[:clients])
        one_batch.append(time.perf_counter() - t0)
    return plain, batched, min(one_batch)


def check_answers(model_path, seqs, answers):
    """The served answers against predict on each sequence alone; returns the number checked."""
    import rnnfast as rf
    model = rf.load(model_path)
    for k, body in answers.items():
        ans = json.loads(body)["prediction"]
        ref = model.predict(seqs[k][None])[0]
        if ans != (ref.item() if hasattr(ref, "item") else ref):
            raise AssertionError(f"request {k}: served {ans!r}, predict gives {ref!r}")
    return len(answers)


_COLUMNS = [("server", "server", "{:<9}"), ("mode", "mode", "{:<12}"), ("single_ms", "1-client p50", "{:>12.2f}"),
            ("closed_p50", "closed p50", "{:>10.2f}"), ("closed_p99", "closed p99", "{:>10.2f}"),
            ("closed_rate", "req/s", "{:>6.0f}"), ("closed_batch", "batch", "{:>5.1f}"),
            ("closed_cpu", "CPU ms/req", "{:>10.3f}"), ("open_p50", "open p50", "{:>8.2f}"),
            ("open_p99", "open p99", "{:>8.2f}"), ("open_rate", "req/s", "{:>6.0f}"),
            ("open_batch", "batch", "{:>5.1f}"), ("open_cpu", "CPU ms/req", "{:>10.3f}")]


def print_table(rows):
    """Latencies in ms; CPU: the server's (all its threads) per request."""
    cols = [c for c in _COLUMNS if c[0] in rows[0]]
    print(" ".join(f"{title:>{len(fmt.format(rows[0][key]))}}" for key, title, fmt in cols))
    for r in rows:
        print(" ".join(fmt.format(r[key]) for key, _, fmt in cols))


def verdicts(pair, args):
    """The targets for one front end from its median rows (no batching, batching): lines of text, and
    whether every latency target was met."""
    nb, b = pair
    bound = 2 * nb["single_ms"] + args.max_delay_ms
    lines = [f"{b['server']}, {b['mode']}: throughput {b['closed_rate']:.0f} against {nb['closed_rate']:.0f} req/s "
             f"without, {b['closed_rate'] / nb['closed_rate']:.2f}x (target >= 3: "
             f"{'PASS' if b['closed_rate'] >= 3 * nb['closed_rate'] else 'FAIL'}); server CPU per request "
             f"{b['closed_cpu']:.3f} ms with batching, {nb['closed_cpu']:.3f} ms without",
             f"{b['server']}, {b['mode']}: latency bound 2 x {nb['single_ms']:.2f} ms (unbatched single-request p50) + "
             f"max_delay_ms {args.max_delay_ms:g} = {bound:.2f} ms"]
    ok = True
    for loop, label in (("closed", f"closed loop, {args.clients} clients"),
                        ("open", f"open loop, {args.rate:g} req/s on {args.clients} connections")):
        if f"{loop}_p99" not in b:
            continue
        passed = b[f"{loop}_p99"] <= bound
        ok &= passed
        lines.append(f"  {label}: p99 with batching {b[f'{loop}_p99']:.2f} ms ({'PASS' if passed else 'FAIL'}), "
                     f"without {nb[f'{loop}_p99']:.2f} ms")
    return lines, ok


def cpu_budget(row, clients, one_batch):
    """Lines on where a batching server's CPU goes in the closed loop (median row): its main thread (the
    asyncio front end: reading, parsing, answering), its other threads (the Batcher's worker: the model's
    calls and the Python around them), the load generator; and the latency floor the worker sets."""
    other = row["closed_cpu"] - row["closed_main_cpu"]
    if row["server"] != "asyncio" or not other > 0:  # (the threading server answers on many threads)
        return []
    return [f"{row['server']}, {row['mode']}, closed loop, CPU a request: server {row['closed_cpu']:.3f} ms = main thread "
            f"{row['closed_main_cpu']:.3f} (front end) + other threads {other:.3f} (batch worker: predict on {clients} "
            f"sequences alone takes {one_batch * 1e3 / clients:.3f} ms a sequence here); load generator "
            f"{row['closed_client_cpu']:.3f} ms",
            f"  the worker is one thread: at {other:.3f} ms a request the closed loop cannot pass "
            f"{1e3 / other:.0f} req/s, a mean latency of at least {clients} x {other:.3f} = {clients * other:.2f} ms"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved classifier (default: fit one: LSTM H=128 on 8 features, T~50)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--servers", nargs="+", choices=("asyncio", "threading"), default=["asyncio", "threading"],
                        help="front ends of serve.py to measure (default: both)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="after the closed loop, an open loop: requests/s offered at even intervals on the "
                             "--clients connections (latency under a load the server sustains; default: "
                             "%(default)s; 0: none)")
    parser.add_argument("--body", choices=("json", "binary"), default="json",
                        help="request bodies: JSON {\"sequence\": [...]} or raw float32 with an X-Shape header "
                             "(default: %(default)s)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per round (default: %(default)s)")
    parser.add_argument("--single", type=int, default=200, help="single-client requests per round")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="time limit per measurement (default: %(default)s)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--batch-workers", type=int, nargs="+", default=[1],
                        help="the batching servers' Batcher threads (serve.py --batch-workers), one batching "
                             "server for each number given, e.g. 1 2 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="the server's rnnfast threads per call (default: %(default)s: with 32 concurrent "
                             "requests the setting the README advises, and on a small machine it leaves a core "
                             "to the front end; 0: the server's default, every CPU)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per mode, interleaved (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = os.path.join(tmp, "lstm.rnnfast")
            fit_model(model)
        import rnnfast as rf
        loaded = rf.load(model)
        if loaded.input_kind_ != "features":
            parser.error("the load test sends float features; this model takes token ids")
        seqs = requests_for(500, F=loaded.n_features_in_)
        bodies = encode(seqs, args.body)
        rows, answers = run_rounds(model, bodies, args)
        checked = sum(check_answers(model, seqs, a) for a in answers.values())
        plain, batched, one_batch = in_process(model, seqs, args.clients, args.requests, args.threads)
    print(time.strftime("measured %Y-%m-%d %H:%M UTC", time.gmtime()), f"on {os.cpu_count()} CPUs,",
          f"kernel threads per call {args.threads or 'default'},",
          f"{args.rounds} rounds, {checked} distinct answers checked against predict")
    print_table(rows)
    pairs = [(medians(rows, kind, "no batching"), medians(rows, kind, mode_name(w)))
             for kind in args.servers for w in args.batch_workers]
    print("medians:")
    print_table([medians(rows, kind, mode_name(w)) for kind in args.servers for w in [0, *args.batch_workers]])
    print(f"p99: of every request's latency in a phase (client send, or its scheduled time in the open loop, "
          f"to the last byte of its answer), median over rounds; {args.body} bodies")
    for pair in pairs:
        print("\n".join(verdicts(pair, args)[0]))
    print(f"in process, no HTTP ({args.clients} threads, {args.requests} requests): predict {plain:.0f} req/s, "
          f"Batcher {batched:.0f} req/s ({batched / plain:.2f}x)")
    for nb, b in pairs:
        print(f"{b['server']}, {b['mode']}, closed loop: by Little's law the mean latency is {args.clients} clients / "
              f"{b['closed_rate']:.0f} req/s = {args.clients / b['closed_rate'] * 1e3:.2f} ms; predict on "
              f"{args.clients} sequences at once takes {one_batch * 1e3:.2f} ms in this process (fastest of 10), "
              f"a floor for the closed loop's latency with {args.threads or 'default'} kernel thread(s)")
        print("\n".join(cpu_budget(b, args.clients, one_batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
