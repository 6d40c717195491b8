"""Command line: `rnnfast export` and `rnnfast import` round trips, and their one-line errors (exit code 2)."""
import os
import subprocess
import tempfile
import sys

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import nn
from rnnfast.__main__ import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from rnnfast.interop import to_onnx  # noqa: E402

_PYTHONPATH = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(rf.__file__))),
                                            os.environ.get("PYTHONPATH")]))


def run(*args):
    # from outside the checkout: its rnnfast/ is uncompiled unless built in place (tests/_source_tree.py)
    return subprocess.run([sys.executable, "-m", "rnnfast", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, RNNFAST_TEST="1", PYTHONPATH=_PYTHONPATH), cwd=tempfile.gettempdir())


def test_export_estimator_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 5, 2)).astype(np.float32)
    y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    est = rf.LSTMClassifier(hidden_size=3, bidirectional=True, num_layers=2, epochs=1, random_state=0).fit(X, y)
    est.save(tmp_path / "m.rnnfast")
    r = run("export", str(tmp_path / "m.rnnfast"), "-o", str(tmp_path / "m.onnx"), "--opset", "18")
    assert r.returncode == 0, r.stderr
    assert "inputs x, lengths" in r.stdout
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    lengths = np.array([5, 2] * 10, np.int32)
    X[lengths == 2, 2:] = 0
    (proba,) = sess.run(None, {"x": X, "lengths": lengths})
    want = est.predict_proba([X[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(proba, want, atol=1e-5)


def test_import_then_export_in_process(tmp_path, capsys):
    model = nn.Sequential(nn.Embedding(7, 3, seed=0), nn.GRU(3, 4, num_layers=2, batch_first=True, seed=0),
                          nn.MeanPool(), nn.Linear(4, 2, seed=0)).train(False)
    to_onnx(model, tmp_path / "in.onnx")
    assert main(["import", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "m.rnnfast")]) == 0
    assert "Embedding, GRU, MeanPool, Linear" in capsys.readouterr().out
    back = rf.load(tmp_path / "m.rnnfast")
    ids = np.array([[1, 2, 3], [4, 5, 0]])
    np.testing.assert_array_equal(back(ids, lengths=[3, 2]), model(ids, lengths=[3, 2]))
    assert main(["export", str(tmp_path / "m.rnnfast"), "-o", str(tmp_path / "out.onnx"), "--no-lengths"]) == 0
    assert [i.name for i in onnx.load(str(tmp_path / "out.onnx")).graph.input] == ["x"]


def test_import_a_bare_layer(tmp_path):
    layer = nn.LSTM(3, 4, bidirectional=True, batch_first=False, seed=0).eval()
    to_onnx(layer, tmp_path / "l.onnx")
    r = run("import", str(tmp_path / "l.onnx"), "-o", str(tmp_path / "l.rnnfast"))
    assert r.returncode == 0, r.stderr
    back = rf.load(tmp_path / "l.rnnfast")  # a Sequential of the one layer
    assert [repr(m) for m in back.layers] == [repr(layer)]
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.layers[0](x)[0], layer(x)[0])


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "bad.rnnfast").write_bytes(b"not a model")
    r = run("export", str(tmp_path / "bad.rnnfast"), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error:" in r.stderr and "not an rnnfast file" in r.stderr and r.stderr.count("\n") == 1
    r = run("import", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "m.rnnfast"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr
    nn.Sequential(nn.LSTM(3, 4), nn.LastStep(), nn.Linear(4, 2)).save(tmp_path / "ok.rnnfast")
    r = run("export", str(tmp_path / "ok.rnnfast"), "-o", str(tmp_path / "x.onnx"), "--opset", "5")
    assert r.returncode == 2 and "opset" in r.stderr and "Traceback" not in r.stderr
    # an ONNX graph with an operator rnnfast does not read
    proto = to_onnx(rf.LSTMClassifier(hidden_size=2, epochs=1, random_state=0).fit(
        np.zeros((4, 3, 1), np.float32), [0, 1, 0, 1]))
    onnx.save(proto, str(tmp_path / "clf.onnx"))
    r = run("import", str(tmp_path / "clf.onnx"), "-o", str(tmp_path / "m.rnnfast"))
    assert r.returncode == 2 and "Softmax" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.rnnfast").exists()
