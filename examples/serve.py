"""A small HTTP prediction service around a saved rnnfast model, with or without request batching.

    python examples/serve.py model.rnnfast --port 8000            # batching on (rnnfast.serving.Batcher)
    python examples/serve.py model.rnnfast --no-batching          # each request thread calls predict

    curl -s localhost:8000/predict -d '{"sequence": [[0.1, 0.2], [0.3, 0.4]]}'
    {"prediction": "up"}

POST /predict takes ``{"sequence": [...]}``, one sequence: a list of time steps, each a list of features
(or a list of token ids for token models), and answers ``{"prediction": ...}``: what ``model.predict``
(or ``predict_proba`` with ``--method predict_proba``) gives for that sequence alone. A bad request gets
400 and ``{"error": "..."}``; a full queue 503. GET /health answers ``{"status": "ok"}``, GET /stats the
batcher's counts. The server binds 127.0.0.1 only (put a real front end before exposing it).

It is the standard library's ThreadingHTTPServer: one thread per connection. rnnfast's ``predict`` is
thread-safe and releases the GIL, so without batching the request threads run their predictions
concurrently; with batching they hand their sequences to one Batcher, whose worker runs the requests that
arrive within ``--max-delay-ms`` as one batched call.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

import rnnfast as rf
from rnnfast.serving import Batcher, QueueFullError

_MAX_BODY = 8 * 2**20  # bytes: a larger request body is refused (413)


def _jsonable(value):
    """A prediction as JSON: numpy arrays become lists, numpy scalars Python numbers or strings."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Service:
    """The model and how a request is answered: ``predict(sequence)`` -> the JSON-able prediction."""

    def __init__(self, model, batching=True, max_batch_size=32, max_delay_ms=2.0, method="predict"):
        self.model, self.method = model, method
        self.batcher = Batcher(model, max_batch_size, max_delay_ms, method=method) if batching else None
        self._call = getattr(model, method)

    def predict(self, sequence):
        if self.batcher is not None:
            return _jsonable(self.batcher.submit(sequence).result(timeout=60))
        return _jsonable(self._call(np.asarray(sequence)[None])[0])

    def stats(self):
        return self.batcher.stats if self.batcher is not None else {}

    def close(self):
        if self.batcher is not None:
            self.batcher.close()


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

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/stats":
            self._send(200, self.server.service.stats())
        else:
            self._send(404, {"error": f"no such path {self.path!r}"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > _MAX_BODY:
            self.close_connection = True
            self._send(413, {"error": f"request body over {_MAX_BODY} bytes"})
            return
        body = self.rfile.read(n)
        if self.path != "/predict":
            self._send(404, {"error": f"no such path {self.path!r}"})
            return
        try:
            sequence = json.loads(body)["sequence"]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": 'the body must be JSON {"sequence": [...]}'})
            return
        try:
            self._send(200, {"prediction": self.server.service.predict(sequence)})
        except QueueFullError as e:
            self._send(503, {"error": str(e)})
        except (ValueError, TypeError) as e:
            self._send(400, {"error": str(e)})

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per request would cost more than the prediction


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: the default 5 resets connections when many clients connect at once


def make_server(model, port=0, batching=True, max_batch_size=32, max_delay_ms=2.0, method="predict"):
    """A ThreadingHTTPServer on 127.0.0.1:``port`` (0: any free port) answering with ``model``; not yet
    serving (call ``serve_forever``, and ``shutdown`` / ``server_close`` / ``service.close()`` after)."""
    server = Server(("127.0.0.1", port), Handler)
    server.service = Service(model, batching, max_batch_size, max_delay_ms, method)
    return server


def start_in_thread(server):
    """Serve from a daemon thread; returns the thread."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model file written by an estimator's save()")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                        help="coalesce concurrent requests with rnnfast.serving.Batcher (default: on)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--method", choices=("predict", "predict_proba"), default="predict")
    parser.add_argument("--threads", type=int, default=None, help="rnnfast kernel threads per call")
    parser.add_argument("--workspace-limit-mb", type=float, default=None,
                        help="memory each recurrent layer keeps between calls (rnnfast.set_workspace_limit)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        rf.set_num_threads(args.threads)
    if args.workspace_limit_mb is not None:
        rf.set_workspace_limit(int(args.workspace_limit_mb * 2**20))
    model = rf.load(args.model)
    server = make_server(model, args.port, args.batching, args.max_batch_size, args.max_delay_ms, args.method)
    host, port = server.server_address[:2]
    print(f"serving {args.model} on http://{host}:{port} (batching {'on' if args.batching else 'off'})", flush=True)
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
