"""A small HTTP prediction service around a saved rnnfast model, with or without request batching.

    python examples/serve.py model.rnnfast --port 8000            # batching on (rnnfast.serving.Batcher)
    python examples/serve.py model.rnnfast --no-batching          # predict per request, on a thread pool
    python examples/serve.py model.rnnfast --server threading     # the standard library's ThreadingHTTPServer

    curl -s localhost:8000/predict -d '{"sequence": [[0.1, 0.2], [0.3, 0.4]]}'
    {"prediction": "up"}
    python -c "import numpy as np; np.ones((2, 2), '<f4').tofile('x.f32')"
    curl -s localhost:8000/predict -H 'Content-Type: application/octet-stream' -H 'X-Shape: 2,2' --data-binary @x.f32

POST /predict takes one sequence, as JSON ``{"sequence": [...]}`` (a list of time steps, each a list of
features, or a list of token ids for token models) or, with ``Content-Type: application/octet-stream``,
as raw little-endian numbers in C order with its shape in ``X-Shape: T,F`` (``T`` for token ids) and
their type in ``X-Dtype`` (float32 by default; float64, int32, int64): no JSON to parse, about 100 times
cheaper for the server than the same sequence as JSON. It answers ``{"prediction": ...}``: what
``model.predict`` (or ``predict_proba`` with ``--method predict_proba``) gives for that sequence alone. A
bad request gets 400 and ``{"error": "..."}``; a full queue 503. GET /health answers ``{"status":
"ok"}``, GET /stats the batcher's counts. The server binds 127.0.0.1 only (put a real front end before
exposing it).

Two front ends, the same interface:

- ``--server asyncio`` (default): one event loop thread parses HTTP/1.1 (request line, headers,
  ``Content-Length`` body; keep-alive; no chunked bodies: 411) and the body. With batching it hands each
  sequence to one Batcher and awaits its future; without, it runs ``predict`` on a pool of ``--workers``
  threads (default 32), so the predictions still run concurrently.
- ``--server threading``: the standard library's ThreadingHTTPServer, one thread per connection, which
  calls ``predict`` itself (without batching) or waits on the Batcher's future. Simple, but its header
  parsing (``email.parser``) and per-request thread switches cost several times the asyncio server's CPU
  per request, under the GIL.

rnnfast's ``predict`` is thread-safe and releases the GIL in its kernels.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

import rnnfast as rf
from rnnfast.serving import Batcher, QueueFullError

_MAX_BODY = 8 * 2**20  # bytes: a larger request body is refused (413)
_MAX_HEAD = 64 * 2**10  # bytes of request line + headers (asyncio server; more: 400)


def _jsonable(value):
    """A prediction as JSON: numpy arrays become lists, numpy scalars Python numbers or strings."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


_DTYPES = {"float32": "<f4", "float64": "<f8", "int32": "<i4", "int64": "<i8"}


def binary_sequence(body, headers):
    """The sequence of a binary request body: raw little-endian numbers, C order, the shape in the
    ``X-Shape`` header (``T,F``, or ``T`` for token ids), the type in ``X-Dtype`` (float32 by default,
    float64, int32 or int64). About 100 times cheaper to read than the same sequence as JSON."""
    text = headers.get("x-shape")
    if text is None:
        raise ValueError("a binary body (application/octet-stream) needs an X-Shape header: T,F (or T for token ids)")
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not 1 <= len(shape) <= 2 or min(shape) < 0:
        raise ValueError(f"bad X-Shape {text[:40]!r}: give T,F (or T for token ids), non-negative integers")
    name = headers.get("x-dtype") or "float32"
    if name not in _DTYPES:
        raise ValueError(f"bad X-Dtype {name[:40]!r}: one of {', '.join(_DTYPES)}")
    dtype = np.dtype(_DTYPES[name])
    if math.prod(shape) * dtype.itemsize != len(body):
        raise ValueError(f"the body holds {len(body)} bytes; X-Shape {shape} of {name} needs "
                         f"{math.prod(shape) * dtype.itemsize}")
    return np.frombuffer(body, dtype).reshape(shape)


class Service:
    """The model and how a request is answered, whatever the front end: :meth:`route` answers what needs
    no prediction and parses the sequence of what does; :meth:`predict` (blocking, the threading server)
    or :meth:`submit` (a future, the asyncio server) predicts; :meth:`failure` maps a prediction's error to
    its response."""

    def __init__(self, model, batching=True, max_batch_size=32, max_delay_ms=2.0, method="predict", workers=32,
                 batch_workers=1, settle_with=None):
        self.model, self.method = model, method
        # settle_with: the asyncio server's loop.call_soon_threadsafe (the Batcher settles each batch's
        # futures on the loop's thread, in one callback)
        self.batcher = (Batcher(model, max_batch_size, max_delay_ms, method=method, workers=batch_workers,
                                settle_with=settle_with) if batching else None)
        self.settles_in_loop = batching and settle_with is not None
        self._call = getattr(model, method)
        # without batching, the asyncio server's predictions run on these threads (the threading server
        # predicts on its connection threads: workers None)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="predict") if workers and not batching else None

    def route(self, method, path, body, headers=None):
        """``(status, obj)`` for a request that needs no prediction (or is bad), else ``(None, sequence)``.
        ``headers``: a mapping whose ``get`` takes lower-case names (the asyncio server's dict, or the
        threading server's ``email.message.Message``)."""
        if method == "GET" and path == "/health":
            return 200, {"status": "ok"}
        if method == "GET" and path == "/stats":
            return 200, self.stats()
        if path != "/predict":
            return 404, {"error": f"no such path {path[:200]!r}"}
        if method != "POST":
            return 405, {"error": "POST a JSON or binary body to /predict"}
        headers = headers or {}
        if (headers.get("content-type") or "").split(";")[0].strip().lower() == "application/octet-stream":
            try:
                return None, binary_sequence(body, headers)
            except ValueError as e:
                return 400, {"error": str(e)}
        try:
            sequence = np.asarray(json.loads(body)["sequence"])
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            return 400, {"error": 'the body must be JSON {"sequence": [...]}'}
        if sequence.dtype == object:
            return 400, {"error": "the sequence must be a list of steps of equal length (numbers or token ids)"}
        return None, sequence

    def _predict_one(self, sequence):
        return self._call(sequence[None])[0]

    def predict(self, sequence):
        """The JSON-able prediction, blocking the calling thread."""
        if self.batcher is not None:
            return _jsonable(self.batcher.submit(sequence).result(timeout=60))
        return _jsonable(self._predict_one(sequence))

    def submit(self, sequence):
        """A ``concurrent.futures.Future`` of the raw prediction: the Batcher's, or ``predict`` on the worker
        pool (the asyncio server's loop goes on parsing other requests meanwhile)."""
        if self.batcher is not None:
            return self.batcher.submit(sequence)
        return self._pool.submit(self._predict_one, sequence)

    @staticmethod
    def failure(exc):
        """``(status, obj)`` for an error a prediction raised: 503 for a full queue, 400 for a bad sequence,
        500 for anything else."""
        if isinstance(exc, QueueFullError):
            return 503, {"error": str(exc)}
        if isinstance(exc, (ValueError, TypeError)):
            return 400, {"error": str(exc)}
        return 500, {"error": f"{type(exc).__name__}: {exc}"}

    def stats(self):
        return self.batcher.stats if self.batcher is not None else {}

    def close(self):
        if self.batcher is not None:
            self.batcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------------ threading front end
class Handler(BaseHTTPRequestHandler):
    """JSON over HTTP/1.1 with keep-alive (a client may send many requests on one connection)."""

    protocol_version = "HTTP/1.1"
    # one packet per response, sent at once: with the socketserver default (unbuffered writes, Nagle on),
    # the body waits for the client's delayed ACK of the headers, 40 ms per request on Linux loopback
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, method):
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(411, {"error": "send the body with a Content-Length (no chunked encoding)"})
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 <= n <= _MAX_BODY:
            self.close_connection = True
            self._send(413 if n > _MAX_BODY else 400, {"error": f"Content-Length must be 0 to {_MAX_BODY}"})
            return
        service = self.server.service
        status, obj = service.route(method, self.path, self.rfile.read(n), self.headers)
        if status is None:
            try:
                status, obj = 200, {"prediction": service.predict(obj)}
            except Exception as e:  # noqa: BLE001 - mapped to 400 / 503 / 500
                status, obj = service.failure(e)
        self._send(status, obj)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per request would cost more than the prediction


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: the default 5 resets connections when many clients connect at once


# ------------------------------------------------------------------------------ asyncio front end
class _BadRequest(Exception):
    """A request the asyncio server does not take: answered with ``status`` and the connection closed."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _response(status, obj, keep_alive=True):
    """The bytes of one HTTP/1.1 response with a JSON body."""
    body = json.dumps(obj).encode()
    close = "" if keep_alive else "Connection: close\r\n"
    return (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{close}\r\n").encode() + body


_ANSWERS = {}  # (prediction, keep_alive) -> the response's bytes, for scalar predictions (class labels)
_MAX_ANSWERS = 4096


def _prediction_response(value, keep_alive):
    """The 200 response for a prediction: made once per distinct scalar value (a classifier has a few
    labels: no JSON encoding per request), else each time."""
    value = _jsonable(value)
    if not isinstance(value, (str, int, float, bool)):
        return _response(200, {"prediction": value}, keep_alive)
    key = (type(value), value, keep_alive)
    answer = _ANSWERS.get(key)
    if answer is None:
        answer = _response(200, {"prediction": value}, keep_alive)
        if len(_ANSWERS) < _MAX_ANSWERS:  # (a regressor's values: bounded)
            _ANSWERS[key] = answer
    return answer


def _parse_head(head):
    """``(method, path, keep_alive, body length, headers)`` from the request line and headers (the ``bytes`` before
    the blank line); raises :class:`_BadRequest` for what this server does not take."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(400, "malformed request line")
    method, path, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505, f"{version} is not supported: use HTTP/1.1")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, f"malformed header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(411, "send the body with a Content-Length (no chunked encoding)")
    length = headers.get("content-length")
    if length is None and method == "POST":
        raise _BadRequest(411, "a POST needs a Content-Length")
    if length is not None and not (length.isascii() and length.isdigit()):
        raise _BadRequest(400, f"bad Content-Length {length[:40]!r}")
    n = int(length or 0)
    if n > _MAX_BODY:
        raise _BadRequest(413, f"request body over {_MAX_BODY} bytes")
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return method, path, keep_alive, n, headers


class _Connection(asyncio.Protocol):
    """One keep-alive connection of the asyncio server: requests are parsed as their bytes arrive and
    answered in order, one at a time (a pipelining client's next request waits in the buffer)."""

    def __init__(self, server):
        self.server, self.transport = server, None
        self.buf = bytearray()
        self.busy = self.write_paused = self.read_paused = False  # a prediction is pending / the client does not read
        self.eof = False  # the client has sent all it will (its requests are still answered)
        self.keep_alive = True
        # a prediction's done-callback: settled on the loop's thread (the Batcher with settle_with) it
        # answers at once; settled on another thread, it hands the connection back to the loop
        self.done = self.finish if server.service.settles_in_loop else server.handback(self)

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc):
        self.transport = None
        self.server.connections.discard(self)

    def data_received(self, data):
        self.buf += data
        if len(self.buf) > _MAX_HEAD + _MAX_BODY:  # a whole request fits: more is a client not waiting
            self.transport.pause_reading()
            self.read_paused = True
        self.answer_buffered()

    def eof_received(self):
        self.eof = True
        self.answer_buffered()
        return True  # keep the transport open to answer what is buffered

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        self.answer_buffered()

    def answer_buffered(self):
        """Answer the whole requests in the buffer in turn, until one waits for its prediction."""
        while not (self.busy or self.write_paused) and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 and len(self.buf) <= _MAX_HEAD:
                return self.need_more()
            if not 0 <= end <= _MAX_HEAD:
                self.reply(400, {"error": f"request line and headers over {_MAX_HEAD} bytes"}, False)
                return
            try:
                method, path, keep_alive, n, headers = _parse_head(self.buf[:end])
            except _BadRequest as e:
                self.reply(e.status, {"error": str(e)}, False)
                return
            if len(self.buf) < end + 4 + n:
                return self.need_more()
            body = self.buf[end + 4:end + 4 + n]  # (a copy)
            del self.buf[:end + 4 + n]
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            self.keep_alive = keep_alive
            status, obj = self.server.service.route(method, path, body, headers)
            if status is None:
                try:
                    future = self.server.service.submit(obj)
                except Exception as e:  # noqa: BLE001 - a full queue (503), a closed Batcher (500)
                    status, obj = Service.failure(e)
                else:
                    if not future.done():  # (a bad sequence's future holds its error already)
                        self.busy = True
                        future.add_done_callback(self.done)
                        continue
                    self.write(_outcome(future, keep_alive), keep_alive)
                    continue
            self.reply(status, obj, keep_alive)

    def need_more(self):
        """No whole request is buffered: wait for more bytes, or close once the client sent its last."""
        if self.eof and not self.busy and self.transport is not None:
            self.transport.close()
            self.transport = None

    def finish(self, future):
        """In the loop: answer the pending request with its prediction, then the next buffered ones."""
        self.busy = False
        self.write(_outcome(future, self.keep_alive), self.keep_alive)
        if self.buf or self.eof:
            self.answer_buffered()

    def reply(self, status, obj, keep_alive):
        self.write(_response(status, obj, keep_alive), keep_alive)

    def write(self, response, keep_alive=True):
        """Send one response (one write); close after it unless ``keep_alive``."""
        if self.transport is None:
            return
        self.transport.write(response)
        if not keep_alive:
            self.transport.close()
            self.transport = None


def _outcome(future, keep_alive):
    """The response for a settled prediction future: 200 with the prediction, or its error's status (503
    for a request cancelled by the Batcher's closing)."""
    if future.cancelled():
        return _response(503, {"error": "the service is shutting down"}, keep_alive)
    if future.exception() is None:
        return _prediction_response(future.result(), keep_alive)
    status, obj = Service.failure(future.exception())
    return _response(status, obj, keep_alive)


class AsyncServer:
    """The asyncio front end (one event loop thread for every connection) with ThreadingHTTPServer's methods:
    ``serve_forever`` (blocks), ``shutdown`` (from another thread; returns once serving stopped),
    ``server_close``; ``server_address``; ``service``.

    Predictions finish on other threads. The Batcher made by :func:`make_server` settles each batch's
    futures on the loop's thread, in one callback (``settle_with=loop.call_soon_threadsafe``), and each
    future's done-callback writes its answer there; the pool's futures (no batching) are settled on its
    threads, their callbacks queue the connection and wake the loop once for all that finished meanwhile.
    ``loop``: the event loop to serve on (default a new one)."""

    def __init__(self, service, port=0, loop=None):
        self.service = service
        self.socket = socket.create_server(("127.0.0.1", port), backlog=256)
        self.server_address = self.socket.getsockname()
        self.connections = set()
        self._loop = asyncio.new_event_loop() if loop is None else loop
        self._stop = asyncio.Event()
        self._stopped = threading.Event()
        self._finished, self._lock = [], threading.Lock()

    def handback(self, connection):
        """A future's done-callback (run on the thread that settles it) that has the loop call
        ``connection.finish(future)``."""
        def done(future):
            with self._lock:
                self._finished.append((connection, future))
                wake = len(self._finished) == 1
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._finish_all)
                except RuntimeError:  # the loop is closed: the server stopped
                    pass
        return done

    def _finish_all(self):
        with self._lock:
            finished, self._finished = self._finished, []
        for connection, future in finished:
            connection.finish(future)

    def serve_forever(self):
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._stopped.set()

    async def _serve(self):
        server = await self._loop.create_server(lambda: _Connection(self), sock=self.socket)
        await self._stop.wait()
        server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        await server.wait_closed()

    def shutdown(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._stopped.wait()

    def server_close(self):
        self.socket.close()
        if not self._loop.is_running():
            self._loop.close()


def make_server(model, port=0, batching=True, max_batch_size=32, max_delay_ms=2.0, method="predict",
                server="asyncio", workers=32, batch_workers=1):
    """A server on 127.0.0.1:``port`` (0: any free port) answering with ``model``, ``server`` "asyncio" or
    "threading"; not yet serving (call ``serve_forever``, and ``shutdown`` / ``server_close`` /
    ``service.close()`` after). ``workers``: the asyncio server's predict threads without batching;
    ``batch_workers``: the Batcher's threads."""
    if server not in ("asyncio", "threading"):
        raise ValueError(f"server must be 'asyncio' or 'threading', got {server!r}")
    loop = asyncio.new_event_loop() if server == "asyncio" else None
    service = Service(model, batching, max_batch_size, max_delay_ms, method,
                      workers=workers if server == "asyncio" else None, batch_workers=batch_workers,
                      settle_with=loop.call_soon_threadsafe if loop is not None else None)
    if server == "asyncio":
        return AsyncServer(service, port, loop)
    httpd = Server(("127.0.0.1", port), Handler)
    httpd.service = service
    return httpd


def start_in_thread(server):
    """Serve from a daemon thread; returns the thread."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model file written by an estimator's save()")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--server", choices=("asyncio", "threading"), default="asyncio",
                        help="front end: one event loop (default), or a thread per connection")
    parser.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                        help="coalesce concurrent requests with rnnfast.serving.Batcher (default: on)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--batch-workers", type=int, default=1,
                        help="the Batcher's threads running batches side by side (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=32,
                        help="asyncio server without batching: threads running predict (default: %(default)s)")
    parser.add_argument("--method", choices=("predict", "predict_proba"), default="predict")
    parser.add_argument("--threads", type=int, default=None, help="rnnfast kernel threads per call")
    parser.add_argument("--workspace-limit-mb", type=float, default=None,
                        help="memory each recurrent layer keeps between calls (rnnfast.set_workspace_limit)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        rf.set_num_threads(args.threads)
    if args.workspace_limit_mb is not None:
        rf.set_workspace_limit(int(args.workspace_limit_mb * 2**20))
    model = rf.nn.freeze(rf.load(args.model))  # (a read-only copy: weight packs made once, not per request)
    server = make_server(model, args.port, args.batching, args.max_batch_size, args.max_delay_ms, args.method,
                         args.server, args.workers, args.batch_workers)
    host, port = server.server_address[:2]
    print(f"serving {args.model} on http://{host}:{port} ({args.server}, batching {'on' if args.batching else 'off'})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
