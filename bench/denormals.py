"""What denormal floats cost the numpy work around the kernels, and what ``rnnfast._fpu.flush_denormals`` gives.

    python bench/denormals.py                      # sgemm with and without denormal inputs, flushed or not
    python bench/denormals.py --train 40000 6      # also: Seq2Seq on N CMUdict words for E epochs, two
                                                   # processes side by side, Trainer.fit flushing or not

The training A/B runs this script twice at once (``--run on|off``), one thread each, and prints pairs/s per
epoch: without the flush a model slows as it grows confident (its softmax probabilities and their gradients
fall below float32's smallest normal, 1.2e-38, and OpenBLAS's sgemm takes about 90 times longer on them).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

import numpy as np


def _sgemm_ms(a: np.ndarray, b: np.ndarray, reps: int = 10) -> float:
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return (time.perf_counter() - t0) / reps * 1e3


def sgemm() -> None:
    from threadpoolctl import threadpool_limits

    from rnnfast._fpu import flush_denormals

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1024, 512)).astype(np.float32), rng.standard_normal((512, 512)).astype(np.float32)
    d = a.copy()
    d[:, ::2] = 1e-40  # half the inputs denormal
    with threadpool_limits(1):
        print(f"sgemm 1024 x 512 x 512, one thread: normal {_sgemm_ms(a, b):.2f} ms, half denormal "
              f"{_sgemm_ms(d, b, 3):.2f} ms")
        with flush_denormals():
            print(f"  flushed: normal {_sgemm_ms(a, b):.2f} ms, half denormal {_sgemm_ms(d, b):.2f} ms")


def train_run(flush: bool, words: int, epochs: int) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from threadpoolctl import threadpool_limits

    import g2p  # examples/g2p.py: its data loading

    import rnnfast as rf
    import rnnfast.train.trainer as trainer

    if not flush:
        trainer.flush_denormals = contextlib.nullcontext
    data = g2p.load_data(words, 100, 0)["train"]
    X, Y = [w for w, prs in data for _ in prs], [pr for _, prs in data for pr in prs]
    rf.set_num_threads(1)
    label = "flushed" if flush else "not flushed"

    class Rate(rf.train.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(f"{label:>12} epoch {epoch + 1}: {len(X) / (time.perf_counter() - self.t):.0f} pairs/s", flush=True)

    with threadpool_limits(1):
        rf.Seq2Seq(hidden_size=256, embedding_dim=64, epochs=epochs, batch_size=128, dropout=0.3, lr=3e-3,
                   random_state=0).fit(X, Y, callbacks=[Rate()])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", nargs=2, type=int, metavar=("WORDS", "EPOCHS"))
    ap.add_argument("--run", choices=["on", "off"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.run:
        train_run(a.run == "on", *a.train)
        return
    sgemm()
    if a.train:
        procs = [subprocess.Popen([sys.executable, __file__, "--run", r, "--train", *map(str, a.train)])
                 for r in ("off", "on")]
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
