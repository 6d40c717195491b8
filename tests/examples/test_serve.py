"""examples/serve.py and examples/load_test.py: the HTTP service on 127.0.0.1 with a tiny model answers
concurrent requests with what predict gives for each sequence alone, with and without batching, with both
front ends (asyncio, threading); keep-alive, pipelining and the requests the asyncio server refuses (a few
seconds, every wait bounded)."""
import contextlib
import http.client
import json
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast as rf
from tests.examples.test_examples import _load  # the example scripts, imported from the source tree


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 8, 3)).astype(np.float32)
    y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    path = tmp_path_factory.mktemp("serve") / "tiny.rnnfast"
    rf.LSTMClassifier(hidden_size=8, epochs=1, random_state=0).fit(X, y).save(path)
    return path


@contextlib.contextmanager
def serving(model, **kwargs):
    """A server of serve.py in a thread of this process; yields (port, server); stopped after."""
    serve = _load("serve")
    server = serve.make_server(model, port=0, **kwargs)
    thread = serve.start_in_thread(server)
    try:
        yield server.server_address[1], server
    finally:
        server.shutdown()
        server.server_close()
        server.service.close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _request(port, method, path, body=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        if own:
            conn.close()


def _raw(port, data):
    """Send raw bytes, read until the server closes the connection (or 10 s); returns what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _seqs(n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 12)), 3)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("server", ["asyncio", "threading"])
@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_service_answers_concurrent_requests_as_predict(model_file, server, batching, method):
    model = rf.load(model_file)
    seqs = _seqs(12)
    with serving(model, batching=batching, max_delay_ms=5, method=method, server=server, workers=4) as (port, srv):
        assert srv.server_address[0] == "127.0.0.1"
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda s: _request(port, "POST", "/predict",
                                                       json.dumps({"sequence": s.tolist()})), seqs))
        for s, (status, body) in zip(seqs, answers):
            assert status == 200, body
            ref = getattr(model, method)(s.astype(np.float64)[None])[0]
            if method == "predict":
                assert body["prediction"] == ref
            else:
                np.testing.assert_allclose(body["prediction"], ref, atol=1e-6)
        status, body = _request(port, "POST", "/predict", json.dumps({"sequence": [[1.0, 2.0]]}))
        assert status == 400 and "features" in body["error"]
        assert _request(port, "POST", "/predict", b"not json")[0] == 400
        assert _request(port, "POST", "/predict", b'{"sequence": [[1, 2, 3], [1]]}')[0] == 400
        assert _request(port, "POST", "/predict", b'{"seq": [[1, 2, 3]]}')[0] == 400
        assert _request(port, "POST", "/nowhere", b"{}")[0] == 404
        assert _request(port, "GET", "/health") == (200, {"status": "ok"})
        stats = _request(port, "GET", "/stats")[1]
        assert stats.get("requests", 12) >= 12 if batching else stats == {}


def _binary(seq, dtype="float32", shape=None):
    """A binary /predict request's body and headers."""
    arr = np.ascontiguousarray(seq, np.dtype(dtype).newbyteorder("<"))
    headers = {"Content-Type": "application/octet-stream", "X-Shape": shape or ",".join(map(str, arr.shape))}
    if dtype != "float32":
        headers["X-Dtype"] = dtype
    return arr.tobytes(), headers


@pytest.mark.parametrize("server", ["asyncio", "threading"])
@pytest.mark.parametrize("batching", [True, False])
def test_binary_bodies_are_answered_as_predict(model_file, server, batching):
    """Raw little-endian numbers with an X-Shape header (float32 by default, X-Dtype float64), on one
    keep-alive connection; a body that does not match its headers gets 400 and the connection goes on."""
    model = rf.load(model_file)
    seqs = _seqs(6, seed=4)
    with serving(model, batching=batching, server=server, workers=2, batch_workers=2) as (port, srv):
        assert not batching or srv.service.batcher.workers == 2
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i, s in enumerate(seqs):
                body, headers = _binary(s, "float64" if i % 2 else "float32")
                conn.request("POST", "/predict", body, headers)
                resp = conn.getresponse()
                assert resp.status == 200 and json.loads(resp.read())["prediction"] == model.predict(s[None])[0]
            bad = [_binary(seqs[0], shape="5,3,1"), _binary(seqs[0], shape="2,x"), _binary(seqs[0], shape="-1,3"),
                   _binary(seqs[0], shape="1000,3"), _binary(seqs[0], "float16"),
                   (b"\0" * 12, {"Content-Type": "application/octet-stream"}),
                   _binary(np.ones((2, 2)))]  # well formed, but 2 features for a 3-feature model
            for body, headers in bad:
                conn.request("POST", "/predict", body, headers)
                resp = conn.getresponse()
                assert resp.status == 400 and json.loads(resp.read())["error"]
        finally:
            conn.close()


def test_binary_sequence_reads_shape_and_dtype():
    serve = _load("serve")
    x = np.arange(6, dtype="<i8").reshape(3, 2)
    got = serve.binary_sequence(x.tobytes(), {"x-shape": "3,2", "x-dtype": "int64"})
    assert got.dtype == np.int64 and np.array_equal(got, x)
    assert serve.binary_sequence(b"", {"x-shape": "0,8"}).shape == (0, 8)
    with pytest.raises(ValueError, match="X-Shape header"):
        serve.binary_sequence(b"", {})
    with pytest.raises(ValueError, match="needs 24"):
        serve.binary_sequence(b"\0" * 20, {"x-shape": "3,2"})
    with pytest.raises(ValueError, match="X-Dtype"):
        serve.binary_sequence(b"\0" * 24, {"x-shape": "3,2", "x-dtype": "object"})


@pytest.mark.parametrize("server", ["asyncio", "threading"])
def test_keep_alive_serves_several_requests_on_one_connection(model_file, server):
    """One connection: good requests, a bad one (400, the connection stays open), good ones again."""
    model = rf.load(model_file)
    seqs = _seqs(6, seed=2)
    with serving(model, batching=True, server=server) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i, s in enumerate(seqs):
                if i == 3:
                    assert _request(port, "POST", "/predict", b"[", conn=conn)[0] == 400
                status, body = _request(port, "POST", "/predict", json.dumps({"sequence": s.tolist()}), conn=conn)
                assert status == 200 and body["prediction"] == model.predict(s[None])[0]
            assert conn.sock is not None  # never reconnected: http.client closes it when the server says so
        finally:
            conn.close()


@pytest.mark.parametrize("server", ["asyncio", "threading"])
def test_a_full_queue_answers_503_and_the_connection_goes_on(model_file, server):
    with serving(rf.load(model_file), batching=True, server=server) as (port, srv):
        srv.service.batcher.max_queue = 0  # every submit finds the queue full
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            status, body = _request(port, "POST", "/predict", b'{"sequence": [[1, 2, 3]]}', conn=conn)
            assert status == 503 and "max_queue" in body["error"]
            assert _request(port, "GET", "/health", conn=conn) == (200, {"status": "ok"})
        finally:
            conn.close()


def test_asyncio_server_answers_pipelined_requests_in_order(model_file):
    model = rf.load(model_file)
    seqs = _seqs(5, seed=3)
    bodies = [json.dumps({"sequence": s.tolist()}).encode() for s in seqs]
    data = b"".join(b"POST /predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies)
    data += b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    with serving(model, batching=True) as (port, _):
        out = _raw(port, data)
    parts = out.split(b"HTTP/1.1 ")[1:]
    assert len(parts) == 6 and all(p.startswith(b"200 OK") for p in parts)
    got = [json.loads(p.split(b"\r\n\r\n", 1)[1]) for p in parts]
    assert [g["prediction"] for g in got[:5]] == [model.predict(s[None])[0] for s in seqs]
    assert got[5] == {"status": "ok"} and b"Connection: close" in parts[5]


@pytest.mark.parametrize("data, status", [
    (b"POST /predict HTTP/2.0\r\nContent-Length: 2\r\n\r\n{}", 505),
    (b"POST /predict HTTP/1.1\r\n\r\n", 411),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
    (b"POST /predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (2**30), 413),
    (b"POST /predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /predict\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nno colon here\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", None),  # body never completes: closed, no answer
    (b"GET /predict HTTP/1.1\r\n\r\n", 405),
    (b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n", 400),
])
def test_asyncio_server_refuses_what_it_does_not_support(model_file, data, status):
    """Each with a JSON error body; the refusals of the request itself close the connection."""
    with serving(rf.load(model_file), batching=True) as (port, _):
        out = _raw(port, data)
        assert _request(port, "GET", "/health")[0] == 200  # the server lives on
    if status is None:
        assert out == b""
        return
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    assert "error" in json.loads(out.split(b"\r\n\r\n", 1)[1])


def test_make_server_rejects_an_unknown_front_end(model_file):
    with pytest.raises(ValueError, match="asyncio"):
        _load("serve").make_server(rf.load(model_file), server="twisted")


@pytest.mark.parametrize("body", ["json", "binary"])
def test_load_test_runs_briefly(model_file, capsys, body):
    """The load test end to end on the tiny model: both front ends, both modes, closed and open loop, a table,
    the latency bound with its verdicts, the answers checked."""
    lt = _load("load_test")
    workers = ["1", "2"] if body == "binary" else ["1"]  # binary: a batching server with 2 workers too
    assert lt.main(["--model", str(model_file), "--clients", "4", "--requests", "40", "--single", "10",
                    "--seconds", "10", "--rounds", "1", "--rate", "200", "--body", body,
                    "--batch-workers", *workers]) == 0
    out = capsys.readouterr().out
    assert "no batching" in out and "batching" in out and "closed p99" in out and "open p99" in out
    assert "asyncio" in out and "threading" in out and f"{body} bodies" in out
    assert "answers checked against predict" in out and "in process, no HTTP" in out
    n = 2 * len(workers)  # front ends x batching servers
    assert out.count("latency bound 2 x") == n and out.count("Little's law") == n
    assert ("batching x2" in out) == (body == "binary")
    verdicts = [line for line in out.splitlines() if "p99 with batching" in line]
    assert len(verdicts) == 2 * n and all(("PASS" in v) != ("FAIL" in v) for v in verdicts)
    assert sum("open loop, 200 req/s" in v for v in verdicts) == n


def test_drive_closed_and_open_loop(model_file):
    """The load generator alone: every request answered once, the open loop paced at its rate."""
    lt = _load("load_test")
    requests = lt.encode(_seqs(5, seed=6), "binary")
    with serving(rf.load(model_file), batching=True) as (port, _):
        lat, answers, wall = lt.drive(port, requests, 3, 30, 10)
        assert len(lat) == 30 and (lat > 0).all() and sorted(answers) == list(range(5))
        lat, _, wall = lt.drive(port, requests, 3, 20, 10, rate=100)
        assert len(lat) == 20 and wall >= 0.19  # request 19 is due at 0.19 s


def test_asyncio_batching_settles_on_the_loop_and_caches_label_answers(model_file):
    """The asyncio server's Batcher settles each batch's futures on the event loop's thread (one callback a
    batch); a label's 200 response is the same bytes as one encoded afresh, made once per label and
    keep-alive setting; a non-scalar prediction (probabilities) is encoded each time."""
    serve = _load("serve")
    settled_on = []
    with serving(rf.load(model_file), batching=True) as (port, server):
        assert server.service.settles_in_loop
        hold = threading.Event()  # the loop waits on it: the future cannot be settled before its callback is added
        server._loop.call_soon_threadsafe(lambda: (settled_on.append(("loop", threading.get_ident())), hold.wait(10)))
        future = server.service.submit(_seqs(1)[0])
        time.sleep(0.05)  # the batch has run
        assert not future.done()
        future.add_done_callback(lambda f: settled_on.append(("future", threading.get_ident())))
        hold.set()
        future.result(timeout=10)
        assert _request(port, "POST", "/predict", json.dumps({"sequence": _seqs(1)[0].tolist()}))[0] == 200
    threads = dict(settled_on)
    assert threads["future"] == threads["loop"] != threading.get_ident()
    with serving(rf.load(model_file), batching=False) as (_, server):
        assert not server.service.settles_in_loop
    for keep_alive in (True, False):
        first = serve._prediction_response(np.str_("up"), keep_alive)
        assert first == serve._response(200, {"prediction": "up"}, keep_alive)
        assert serve._prediction_response("up", keep_alive) is first  # made once
    cancelled = Future()
    cancelled.cancel()  # (what the Batcher's closing does to requests still queued)
    assert serve._outcome(cancelled, True).startswith(b"HTTP/1.1 503 ")
    probs = np.array([0.25, 0.75], np.float32)
    assert serve._prediction_response(probs, True) == serve._response(200, {"prediction": [0.25, 0.75]})


def test_cpu_budget_lines():
    """The load test's CPU budget of a batching asyncio server: main thread (front end) and the other
    threads (the batch worker), and the latency floor the worker sets; none for the threading server."""
    lt = _load("load_test")
    row = {"server": "asyncio", "mode": "batching", "closed_cpu": 0.110, "closed_main_cpu": 0.030,
           "closed_client_cpu": 0.012}
    lines = lt.cpu_budget(row, 32, 0.00224)
    assert "main thread 0.030 (front end) + other threads 0.080" in lines[0] and "0.070 ms a sequence" in lines[0]
    assert "12500 req/s" in lines[1] and "32 x 0.080 = 2.56 ms" in lines[1]
    assert lt.cpu_budget(dict(row, server="threading"), 32, 0.00224) == []
    assert lt.cpu_budget(dict(row, closed_main_cpu=0.110), 32, 0.00224) == []
