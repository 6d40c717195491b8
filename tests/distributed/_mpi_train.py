"""Run by tests/distributed/test_mpi.py, alone or under ``mpiexec -n N``: train a small model for a fixed
number of steps and (rank 0) write its weights, history and the rank count to an .npz file.

    python _mpi_train.py OUT.npz [--distributed mpi|none] [--steps 20] [--case plain|varlen|weighted]
                         [--epochs E] [--resume CKPT.npz] [--save CKPT.npz] [--fail-rank R --fail-step S]
"""
import argparse
import os
import sys
import time

import numpy as np

import rnnfast as rf
from rnnfast.train import Adam, CrossEntropy, MSE, fit
from rnnfast.train.callbacks import Callback


def data(case):
    rng = np.random.default_rng(0)
    N, T, F = 40, 7, 3
    X = rng.standard_normal((N, T, F)).astype(np.float32)
    if case == "plain":
        return X, rng.integers(0, 3, N), {}
    lengths = rng.integers(2, T + 1, N)
    if case == "varlen":  # per-step regression targets with padded steps masked
        return X, rng.standard_normal((N, T, 2)).astype(np.float32), dict(lengths=lengths, per_step=True)
    # classification with sample weights and class weights, variable lengths
    return X, rng.integers(0, 3, N), dict(lengths=lengths, sample_weight=rng.uniform(0.1, 2.0, N))


def model_for(case):
    per_step = case == "varlen"
    head = [rf.nn.Linear(8, 2, seed=2)] if per_step else [rf.nn.LastStep(), rf.nn.Linear(8, 3, seed=2)]
    model = rf.nn.Sequential(rf.nn.LSTM(3, 8, seed=1), *head)
    loss = MSE() if per_step else CrossEntropy(weight=[1.0, 2.0, 0.5] if case == "weighted" else None)
    return model, loss


class Fail(Callback):
    """Make one rank fail at one step: ``"raise"`` an exception, ``"exit"`` the process at once, ``"hang"``."""

    def __init__(self, rank, step, how):
        self.rank, self.step, self.how, self.n = rank, step, how, 0

    def on_batch_end(self, batch, logs=None):
        self.n += 1
        me = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
        if me == self.rank and self.n == self.step:
            if self.how == "exit":
                os._exit(3)
            if self.how == "hang":
                time.sleep(600)
            raise RuntimeError(f"injected failure at step {self.n}")


def train(a, case, out):
    X, y, kw = data(case)
    model, loss = model_for(case)
    opt = Adam(model, lr=0.01)
    if a.resume:
        f = np.load(a.resume.format(case=case), allow_pickle=False)
        for name, p in model.named_parameters():
            p[...] = f["w_" + name]
        osd = opt.state_dict()
        osd["steps"] = int(f["steps"])
        osd["state"] = {n: {k: f[f"s_{n}_{k}"] for k in st} for n, st in osd["state"].items()}
        opt.load_state_dict(osd)
    cbs = [] if a.fail_rank is None else [Fail(a.fail_rank, a.fail_step, a.fail_how)]
    dist = None if a.distributed == "none" else a.distributed
    metrics = ["accuracy"] if case != "varlen" else ["mae"]
    hist = fit(model, loss, opt, X, y, epochs=a.epochs, batch_size=a.batch_size, seed=5, metrics=metrics,
               callbacks=cbs, n_threads=1, distributed=dist, initial_epoch=a.initial_epoch, **kw)
    from rnnfast.distributed import mpi_launched
    rank = 0
    size = 1
    if mpi_launched():
        from mpi4py import MPI
        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    if rank == 0:
        arrays = {"w_" + n: p for n, p in model.named_parameters()}
        osd = opt.state_dict()
        arrays.update({f"s_{n}_{k}": v for n, st in osd["state"].items() for k, v in st.items()})
        arrays.update({"h_" + k: np.asarray(v) for k, v in hist.history.items()})
        np.savez(out, size=size, steps=osd["steps"], **arrays)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="output .npz; '{case}' in it is replaced by each case's name")
    ap.add_argument("--distributed", default="mpi")
    ap.add_argument("--case", default="plain", help="comma-separated cases: plain, varlen, weighted")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--initial-epoch", type=int, default=0)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--fail-rank", type=int, default=None)
    ap.add_argument("--fail-step", type=int, default=3)
    ap.add_argument("--fail-how", default="raise")
    a = ap.parse_args(argv)
    for case in a.case.split(","):
        train(a, case, a.out.format(case=case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
