"""bench/_peers.py and _runner.py without timing: every installed framework builds a tiny case of each cell
from the same weights and agrees with rnnfast; the plan hook; the workers' environment."""
import importlib.util
import os

import numpy as np
import pytest

import _peers  # bench/, put on sys.path by this folder's conftest.py
import _runner
import rnnfast
from _runner import impl, make_data, rel_err


@pytest.fixture
def restore_threads():
    """The workers set their library's thread count for the whole process: put rnnfast's (and torch's) back."""
    n = rnnfast.get_num_threads()
    try:
        import torch
    except ImportError:
        torch = None
    nt = torch.get_num_threads() if torch is not None else None
    yield
    rnnfast.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(nt)


def _case(cell, mode, bidirectional=False, layers=1):
    B, T, I, H = 3, 5, 4, 6
    return dict(name="t", kind="seq", cell=cell, shape="grid", mode=mode, B=B, T=T, I=I, H=H, layers=layers,
                bidirectional=bidirectional, flop=1.0, impls=_runner.seq_impls(mode))


def _check(worker, case, tmp_path):
    path = tmp_path / "data.npz"
    make_data(case, str(path))
    sd, data = _peers.load_data(str(path))
    return worker.build(case, sd, data, None)


CASES = [(c, m, bi, L) for c in ("lstm", "gru", "rnn") for m in ("infer", "train") for bi, L in ((False, 1), (True, 2))]


@pytest.mark.parametrize("framework", ["torch", "onnxruntime"])
@pytest.mark.parametrize("cell,mode,bidirectional,layers", CASES)
def test_peer_agrees_with_rnnfast(framework, cell, mode, bidirectional, layers, tmp_path, restore_threads):
    pytest.importorskip(framework)
    case = _case(cell, mode, bidirectional, layers)
    ref = _check(_peers.RnnfastWorker(1), case, tmp_path)
    peer = _peers.WORKERS[framework](1)
    if framework == "onnxruntime" and mode == "train":
        with pytest.raises(_peers.Skip):
            _check(peer, case, tmp_path)
        return
    want, got = ref.check(), _check(peer, case, tmp_path).check()
    assert set(want) == set(got)
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-5, k


def test_rnnfast_reports_its_plan(tmp_path, restore_threads):
    bench = _check(_peers.RnnfastWorker(1), _case("gru", "infer"), tmp_path)
    assert isinstance(bench.info["plan"], str) and bench.info["plan"]


class _Layer:
    def __init__(self, plan_for=None):
        if plan_for is not None:
            self.plan_for = plan_for


def test_plan_hook():
    x = np.zeros((1, 2, 3), np.float32)
    assert _peers._plan(_Layer(), x, None, False, 2) == "-"
    seen = {}

    def plan_for(x, lengths=None, training=False, n_threads=None):
        seen.update(lengths=lengths, training=training, n_threads=n_threads)
        return "packed, 2 threads"

    assert _peers._plan(_Layer(plan_for), x, None, True, 2) == "packed, 2 threads"
    assert seen == {"lengths": None, "training": True, "n_threads": 2}

    def broken(x, **kw):
        raise ValueError("no")

    assert _peers._plan(_Layer(broken), x, None, True, 2) == "plan_for failed: ValueError: no"


def test_workers_env_drops_slow_blas(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1")
    monkeypatch.setenv("RNNFAST_TEST_KEEP", "1")
    env = _runner.worker_env()
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env and env["RNNFAST_TEST_KEEP"] == "1"
    assert sorted(_runner.slow_blas_warning()) == ["OPENBLAS_CORETYPE=Haswell", "OPENBLAS_L2_SIZE=1"]
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # this process's own environment is untouched


def test_impls():
    assert [i["impl"] for i in _runner.seq_impls("infer")] == ["rnnfast", "torch", "onnxruntime", "tensorflow"]
    assert [i["impl"] for i in _runner.seq_impls("train")] == ["rnnfast", "torch", "tensorflow"]
    assert impl("rnnfast-dense", "rnnfast", "dense") == {"impl": "rnnfast-dense", "fw": "rnnfast", "variant": "dense"}


LOWP_NAMES = {"bf16": ["rnnfast-bf16", "torch-bf16", "torch-autocast"], "int8": ["rnnfast-int8", "ort-int8"]}


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("kind", ["seq", "step"])
def test_low_precision_variants_agree_within_their_rtol(precision, kind, tmp_path, restore_threads):
    """compare.py --precision bf16,int8: rnnfast.quantize, PyTorch's bfloat16 weights and autocast, ONNX
    Runtime's quantize_dynamic, checked against rnnfast float32 within compare.LOWP_RTOL."""
    import compare
    case = _case("lstm", "infer")
    if kind == "step":
        case.update(kind="step", T=1)
    path = tmp_path / "data.npz"
    make_data(case, str(path))
    sd, data = _peers.load_data(str(path))
    want = _peers.RnnfastWorker(1).build(case, sd, data, None).check()
    specs = compare.lowp_impls([precision])
    assert [s["impl"] for s in specs] == LOWP_NAMES[precision]
    for spec in specs:
        if spec["fw"] != "rnnfast" and importlib.util.find_spec(spec["fw"]) is None:
            continue
        bench = _peers.WORKERS[spec["fw"]](1).build(case, sd, data, spec["variant"])
        got = bench.check()
        errs = [rel_err(got[k], want[k]) for k in want]
        assert 1e-6 < max(errs) < spec["rtol"], (spec, errs)
        if spec["fw"] == "rnnfast":
            assert bench.info["plan"].startswith(precision + " ")


def test_bench_int8_uses_the_shared_ort_session():
    """bench/int8.py times ONNX Runtime int8 through _peers.ort_session (one piece of code for both)."""
    pytest.importorskip("onnxruntime")
    import int8

    assert int8.ort_session is _peers.ort_session


def test_a_worker_keeps_each_implementations_case(tmp_path):
    """Two implementations on one worker (rnnfast and rnnfast-bf16): each round runs its own build."""
    case = _case("gru", "infer")
    path = tmp_path / "data.npz"
    make_data(case, str(path))
    w = _runner.WorkerProc("rnnfast", 1, str(tmp_path), 120)
    try:
        assert w.recv()["ok"]
        for name, variant in (("rnnfast", None), ("rnnfast-bf16", "bf16")):
            ans = w.call(cmd="setup", impl=name, case=case, data=str(path), variant=variant,
                         check_out=str(tmp_path / f"{name}.npz"))
            assert ans["ok"], ans
        assert w.call(cmd="round", impl="rnnfast", iters=1)["ok"]
        assert w.call(cmd="warmup", impl="rnnfast-bf16", n=1)["ok"]
        assert not w.call(cmd="round", impl="torch", iters=1)["ok"]  # never set up on this worker
    finally:
        w.close()
