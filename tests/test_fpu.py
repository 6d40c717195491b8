"""rnnfast._fpu.flush_denormals: denormal floats count as zero on the calling thread inside the block, the
thread's own state comes back after it (also on error), and Trainer.fit runs its loop inside it (denormal
inputs slow OpenBLAS's sgemm about 90-fold)."""
import threading

import numpy as np
import pytest

from rnnfast import nn
from rnnfast._fpu import flush_denormals
from rnnfast.train import SGD, Callback, CrossEntropy, Trainer

TINY = np.float32(1e-40)  # below float32's smallest normal (1.2e-38): a denormal


def _flushes() -> bool:
    """Whether this thread now treats a denormal as zero (DAZ: the product of one and a denormal)."""
    return float(np.array([TINY], np.float32)[0] * np.float32(1.0)) == 0.0


def test_inside_the_block_denormals_are_zero_and_the_state_comes_back():
    assert not _flushes()
    a = np.full((8, 8), TINY, np.float32)
    with flush_denormals():
        assert _flushes()
        assert np.all(a @ np.ones((8, 8), np.float32) == 0.0)
        with flush_denormals():  # nested: the inner block restores the outer one's state
            assert _flushes()
        assert _flushes()
    assert not _flushes()
    assert np.all(a @ np.ones((8, 8), np.float32) > 0.0)


def test_state_comes_back_after_an_error_and_running_threads_keep_theirs():
    seen, go = [], threading.Event()

    def other():
        go.wait()
        seen.append(_flushes())

    t = threading.Thread(target=other)  # (a thread started inside the block inherits it, as POSIX says)
    t.start()
    with pytest.raises(RuntimeError):
        with flush_denormals():
            go.set()
            t.join()
            raise RuntimeError("boom")
    assert seen == [False] and not _flushes()


def test_trainer_fit_runs_its_steps_with_denormals_flushed():
    class Probe(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_begin(self, batch, logs=None):
            self.seen.append(_flushes())

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 5, 3)).astype(np.float32), rng.integers(0, 2, 12)
    m = nn.Sequential(nn.GRU(3, 4, seed=0), nn.LastStep(), nn.Linear(4, 2, seed=1))
    probe = Probe()
    Trainer(m, CrossEntropy(), SGD(m, lr=0.1), callbacks=[probe]).fit(X, y, epochs=2, batch_size=4)
    assert probe.seen and all(probe.seen)
    assert not _flushes()
