"""Data-parallel training over MPI: 2 (and 3) local ranks started with ``mpiexec`` as subprocesses (shared
memory only, bounded by a timeout) against one process on the same global batches."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.distributed import mpi
from rnnfast.train import Adam, CrossEntropy, MSE, Trainer

HERE = Path(__file__).parent
SCRIPT = str(HERE / "_mpi_train.py")
# the folder of the rnnfast these tests import (installed, or a checkout on PYTHONPATH), first for the children
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rf.__file__)))
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")

try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="needs mpi4py and an mpiexec (pip install \"rnnfast[mpi]\")")


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PKG_PARENT, os.environ.get("PYTHONPATH")])),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,sm",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    for var in mpi.SIZE_VARIABLES:  # a test run itself under mpiexec must not leak its job into the children
        env.pop(var, None)
    env.update(extra)
    return env


def run(args, ranks=None, timeout=90, **env):
    """Run ``_mpi_train.py args`` (or ``-m rnnfast`` args when args[0] == "-m") on ``ranks`` MPI ranks (None:
    a plain process), from a folder outside the source tree."""
    cmd = [sys.executable] + (list(args) if args[0] == "-m" else [SCRIPT] + list(args))
    if ranks is not None:
        cmd = [MPIEXEC, "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] + cmd
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout,
                          cwd=tempfile.gettempdir())


def check(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_same_run(a_path, b_path, tol=1e-5):
    a, b = np.load(a_path), np.load(b_path)
    assert int(a["steps"]) == int(b["steps"]) > 0
    for k in a.files:
        if k == "size":
            continue
        np.testing.assert_allclose(b[k], a[k], rtol=tol, atol=tol, err_msg=k)


# ---------------------------------------------------------------------------------------- equivalence
def alone(args):
    """``_mpi_train.py args`` in this process, without MPI."""
    sys.path.insert(0, str(HERE))
    try:
        import _mpi_train
    finally:
        sys.path.remove(str(HERE))
    assert _mpi_train.main([str(x) for x in args] + ["--distributed", "none"]) == 0


@needs_mpi
def test_two_ranks_give_the_weights_of_one_process(tmp_path):
    # 4 epochs of 40 sequences in batches of 8: 20 optimizer steps; the history (loss, metrics) must agree too.
    # plain: classification; varlen: per-step regression with padded steps masked; weighted: variable
    # lengths, sample weights and class weights
    cases = "plain,varlen,weighted"
    alone([tmp_path / "one_{case}.npz", "--case", cases])
    check(run([str(tmp_path / "two_{case}.npz"), "--case", cases], ranks=2))
    for case in cases.split(","):
        one, two = tmp_path / f"one_{case}.npz", tmp_path / f"two_{case}.npz"
        assert int(np.load(two)["size"]) == 2 and int(np.load(one)["steps"]) == 20
        assert_same_run(one, two)


@needs_mpi
def test_more_ranks_than_rows_of_the_last_batch(tmp_path):
    # batches of 3 over 40 sequences: the last batch has 1 row, so two of the 3 ranks hold none
    one, three = tmp_path / "one.npz", tmp_path / "three.npz"
    alone([one, "--case", "weighted", "--batch-size", "3", "--epochs", "1"])
    check(run([str(three), "--case", "weighted", "--batch-size", "3", "--epochs", "1"], ranks=3))
    assert_same_run(one, three)


@needs_mpi
def test_resume_from_a_checkpoint_with_another_number_of_ranks(tmp_path):
    # 2 epochs on 2 ranks, then 2 more in one process from that state = 4 epochs in one process
    full, half, rest = tmp_path / "full.npz", tmp_path / "half.npz", tmp_path / "rest.npz"
    alone([full, "--epochs", "4"])
    check(run([str(half), "--epochs", "2"], ranks=2))
    alone([rest, "--epochs", "2", "--initial-epoch", "2", "--resume", half])
    a, b = np.load(full), np.load(rest)
    for k in a.files:
        if k.startswith(("w_", "s_")):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)


# ---------------------------------------------------------------------------------------- failures
@needs_mpi
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_rank_ends_the_job_on_every_rank(tmp_path, how):
    proc = run([str(tmp_path / "x.npz"), "--fail-rank", "1", "--fail-how", how, "--epochs", "50"], ranks=2,
               timeout=60)
    assert proc.returncode != 0
    if how == "raise":
        assert "rank 1/2: RuntimeError: injected failure at step 3; aborting the MPI job" in proc.stderr
    assert not (tmp_path / "x.npz").exists()


@needs_mpi
def test_a_hanging_rank_times_out_with_a_clear_error(tmp_path):
    proc = run([str(tmp_path / "x.npz"), "--fail-rank", "1", "--fail-how", "hang"], ranks=2, timeout=60,
               RNNFAST_MPI_TIMEOUT="2")
    assert proc.returncode != 0
    assert "rank 0/2: no answer from the other ranks for 2 s" in proc.stderr


# ---------------------------------------------------------------------------------------- the CLI and estimators
def cli_train(tmp_path, n, steps, features, *options):
    """``rnnfast train`` arguments (``-m rnnfast train X y ...``) on n random sequences saved in ``tmp_path``."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((n, steps, features)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, n))
    return ["-m", "rnnfast", "train", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "--epochs", "2",
            "--threads", "1", *options]


def assert_same_models(path_a, path_b, **tol):
    a, b = rf.load(path_a), rf.load(path_b)
    for (k, x), y in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        np.testing.assert_allclose(y, x, err_msg=k, **tol)
    return a, b


@needs_mpi
def test_cli_train_under_mpiexec_matches_one_process(tmp_path):
    args = cli_train(tmp_path, 48, 6, 3, "--random-state", "3", "--hidden-size", "8", "--validation-split", "0.25")
    from rnnfast.__main__ import main
    assert main(args[2:] + ["-o", str(tmp_path / "one.rnnfast"), "--distributed", "none"]) == 0
    out = check(run(args + ["-o", str(tmp_path / "two.rnnfast")], ranks=2)).stdout
    assert out.count("saved ") == 1  # rank 0 alone writes
    a, b = assert_same_models(tmp_path / "one.rnnfast", tmp_path / "two.rnnfast", rtol=1e-5, atol=1e-6)
    assert a.history_["val_loss"] == pytest.approx(b.history_["val_loss"], rel=1e-5)


@needs_mpi
def test_dropout_runs_are_reproducible_on_a_number_of_ranks(tmp_path):
    # dropout masks come from each rank's own stream: the same seed and rank count give the same model
    args = cli_train(tmp_path, 24, 5, 2, "--random-state", "1", "--hidden-size", "6", "--num-layers", "2",
                     "--set", "dropout=0.3")
    for name in ("a", "b"):
        check(run(args + ["-o", str(tmp_path / f"{name}.rnnfast")], ranks=2))
    assert_same_models(tmp_path / "a.rnnfast", tmp_path / "b.rnnfast", rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- in this process
def test_resolve_and_launch_detection(monkeypatch):
    assert mpi.resolve(None) is None and mpi.resolve(False) is None
    for var in mpi.SIZE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert not mpi.mpi_launched() and mpi.resolve("auto") is None
    monkeypatch.setenv("PMI_SIZE", "1")
    assert not mpi.mpi_launched()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert mpi.mpi_launched()
    with pytest.raises(ValueError, match="'auto' or 'mpi'"):
        mpi.resolve("horovod")
    with pytest.raises(TypeError, match="distributed must be"):
        mpi.resolve(2)
    with pytest.raises(ValueError, match="distributed"):
        rf.LSTM(distributed="gloo").fit(np.zeros((4, 3, 1)), np.arange(4) % 2)


def test_loss_weight_follows_each_loss_normalisation():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((5, 4, 3))
    y = rng.integers(0, 3, (5, 4))
    mask = np.arange(4)[None, :] < np.array([4, 2, 3, 1, 4])[:, None]
    sw = rng.uniform(0.5, 2.0, 5)
    ce = CrossEntropy(weight=[1.0, 3.0, 0.5], ignore_index=2)
    w = mask * sw[:, None] * np.array([1.0, 3.0, 0.0])[y]
    assert mpi.loss_weight(ce, out, y, mask, sw, (5, 4)) == pytest.approx(w.sum())
    assert mpi.loss_weight(CrossEntropy(), out, y, mask, None, (5, 4)) == mask.sum()
    assert mpi.loss_weight(MSE(), out, out, None, sw, (5,)) == pytest.approx(sw.sum())
    assert mpi.loss_weight(MSE(), out, out, None, None, (5, 4)) == 20

    class Custom:
        def total_weight(self, out, y, mask, sample_weight):
            return 7.0

    assert mpi.loss_weight(Custom(), out, y, None, None, (5,)) == 7.0


@needs_mpi
def test_one_rank_job_trains_as_one_process():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((12, 5, 2)).astype(np.float32), rng.integers(0, 2, 12)
    results = []
    for dist in (None, "mpi"):
        model = rf.nn.Sequential(rf.nn.LSTM(2, 4, seed=0), rf.nn.LastStep(), rf.nn.Linear(4, 2, seed=1))
        Trainer(model, CrossEntropy(), Adam(model, lr=0.01), distributed=dist).fit(X, y, batch_size=4, seed=0)
        results.append(model.state_dict())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])


@needs_mpi
def test_truncated_bptt_is_refused():
    model = rf.nn.Sequential(rf.train.Stateful(rf.nn.LSTM(2, 4, seed=0)), rf.nn.LastStep(), rf.nn.Linear(4, 2))
    X, y = np.zeros((4, 6, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="does not support it"):
        rf.train.fit(model, CrossEntropy(), Adam(model), X, y, tbptt=3, distributed="mpi")
