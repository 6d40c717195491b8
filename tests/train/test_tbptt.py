"""iter_chunks (pure chunking of a batch for truncated BPTT) and TruncatedBPTTTrainer."""
import numpy as np
import pytest

from rnnfast import nn
from rnnfast.train import SGD, Batch, Callback, CrossEntropy, Stateful, TruncatedBPTTTrainer, iter_chunks


def _batch(per_step, lengths=(7, 3, 5), T=7, B=3):
    x = np.arange(B * T, dtype=np.float64).reshape(B, T, 1)
    y = np.arange(B * T).reshape(B, T) if per_step else np.arange(B)
    return Batch(x, None if lengths is None else np.array(lengths), y, None, per_step, n_rows=B)


def test_chunks_cover_every_valid_step_once():
    b = _batch(True)
    chunks = list(iter_chunks(b, 3))
    assert [c.x.shape[1] for c in chunks] == [3, 3, 1]
    assert [c.done for c in chunks] == [False, False, True] and all(c.n_rows == 3 for c in chunks)
    assert chunks[0].rows is None and chunks[0].lengths is None  # every row runs all 3 steps
    np.testing.assert_array_equal(chunks[1].rows, [0, 2])  # row 1 (3 steps) has ended
    np.testing.assert_array_equal(chunks[1].lengths, [3, 2])
    np.testing.assert_array_equal(chunks[2].rows, [0])
    seen = sum(c.time_steps() for c in chunks)
    assert seen == 7 + 3 + 5
    np.testing.assert_array_equal(chunks[1].y, b.y[[0, 2], 3:6])
    assert all(c.learn for c in chunks)


def test_per_sequence_targets_learn_where_they_end():
    chunks = list(iter_chunks(_batch(False, lengths=(7, 6, 5)), 3))
    # chunk 0 (steps 0-2): no sequence ends -> forward only
    assert [c.learn for c in chunks] == [False, True, True]
    np.testing.assert_array_equal(chunks[1].sample_weight, [0.0, 1.0, 1.0])  # rows 1, 2 end in steps 3-5
    np.testing.assert_array_equal(chunks[2].rows, [0])
    full = list(iter_chunks(_batch(False, lengths=None), 3))
    assert [c.learn for c in full] == [False, False, True]


def test_one_chunk_when_k_covers_the_batch():
    b = _batch(True)
    for k in (None, 7, 10):
        (c,) = iter_chunks(b, k)
        assert c.x is b.x and c.lengths is b.lengths and c.done and c.rows is None


def test_trainer_needs_a_stateful_layer_and_equal_batches():
    m = nn.Sequential(nn.LSTM(1, 2), nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Stateful"):
        TruncatedBPTTTrainer(m, CrossEntropy(), SGD(m), tbptt=3)
    with pytest.raises(ValueError, match="tbptt"):
        TruncatedBPTTTrainer(m, CrossEntropy(), SGD(m), tbptt=0)
    ms = nn.Sequential(Stateful(nn.LSTM(1, 2, seed=0)), nn.Linear(2, 2, seed=0))
    t = TruncatedBPTTTrainer(ms, CrossEntropy(), SGD(ms), stateful=True)
    x, y = np.zeros((5, 4, 1)), np.zeros((5, 4), int)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        t.fit(x, y, per_step=True, batch_size=2, shuffle=False)


def test_params_count_one_step_per_chunk():
    ms = nn.Sequential(Stateful(nn.GRU(1, 2, seed=0)), nn.Linear(2, 2, seed=0))
    steps = []

    class Steps(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(self.trainer.params["steps"])

    t = TruncatedBPTTTrainer(ms, CrossEntropy(), SGD(ms, lr=0.0), tbptt=3, callbacks=[Steps()])
    h = t.fit(np.zeros((4, 7, 1)), np.zeros((4, 7), int), per_step=True, batch_size=2, seed=0)
    assert steps == [6] and h.optimizer_steps == 6
