"""examples/serve.py and examples/load_test.py: the HTTP service on 127.0.0.1 with a tiny model answers
concurrent requests with what predict gives for each sequence alone, with and without batching (a few
seconds, every wait bounded)."""
import http.client
import json
from concurrent.futures import ThreadPoolExecutor

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


def _request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_service_answers_concurrent_requests_as_predict(model_file, batching, method):
    serve = _load("serve")
    model = rf.load(model_file)
    server = serve.make_server(model, port=0, batching=batching, max_delay_ms=5, method=method)
    thread = serve.start_in_thread(server)
    port = server.server_address[1]
    assert server.server_address[0] == "127.0.0.1"
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((int(rng.integers(1, 12)), 3)).astype(np.float32) for _ in range(12)]
    try:
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
        assert _request(port, "GET", "/health") == (200, {"status": "ok"})
        stats = _request(port, "GET", "/stats")[1]
        assert stats.get("requests", 12) >= 12 if batching else stats == {}
    finally:
        server.shutdown()
        server.server_close()
        server.service.close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_load_test_runs_briefly(model_file, capsys):
    """The load test end to end on the tiny model: both modes, a table, the answers checked."""
    lt = _load("load_test")
    assert lt.main(["--model", str(model_file), "--clients", "4", "--requests", "40", "--single", "10",
                    "--seconds", "10", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "no batching" in out and "batching" in out and "p99 ms" in out and "throughput ratio" in out
    assert "answers checked against predict" in out and "in process, no HTTP" in out
