"""Batching of variable-length data: padding, bucketing, shuffling, SequenceDataset."""
import numpy as np
import pytest

from rnnfast.train import SequenceDataset, batch_indices, bucket_batches, pad_sequences


def test_pad_tokens_and_features():
    x, lengths = pad_sequences([[3, 1, 4], [1, 5]])
    np.testing.assert_array_equal(x, [[3, 1, 4], [1, 5, 0]])
    np.testing.assert_array_equal(lengths, [3, 2])
    assert x.dtype.kind == "i"
    seqs = [np.ones((2, 3), np.float32), np.full((4, 3), 2.0, np.float32)]
    x, lengths = pad_sequences(seqs, value=-1, max_length=5)
    assert x.shape == (2, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(lengths, [2, 4])
    np.testing.assert_array_equal(x[0, 2:], -1)
    np.testing.assert_array_equal(x[1, :4], 2)


@pytest.mark.parametrize("seqs, match", [
    ([], "empty list"),
    ([[1, 2], []], "sequence 1 is empty"),
    ([np.zeros((2, 3)), np.zeros((2, 4))], "per-step shape"),
])
def test_pad_errors(seqs, match):
    with pytest.raises(ValueError, match=match):
        pad_sequences(seqs)


def test_pad_too_long():
    with pytest.raises(ValueError, match="max_length"):
        pad_sequences([[1, 2, 3]], max_length=2)


def test_batch_indices_cover_all_and_are_seeded():
    b1 = batch_indices(10, 4, rng=0)
    b2 = batch_indices(10, 4, rng=0)
    assert [len(b) for b in b1] == [4, 4, 2]
    assert all(np.array_equal(a, b) for a, b in zip(b1, b2))
    np.testing.assert_array_equal(np.sort(np.concatenate(b1)), np.arange(10))
    np.testing.assert_array_equal(np.concatenate(batch_indices(10, 4, shuffle=False)), np.arange(10))


def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, 1000)
    buckets = bucket_batches(lengths, 16, rng=1)
    plain = batch_indices(1000, 16, rng=1)
    np.testing.assert_array_equal(np.sort(np.concatenate(buckets)), np.arange(1000))

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    assert padding(buckets) < 0.1 * padding(plain)
    # only the very last batch may be short
    assert sum(len(b) < 16 for b in buckets) <= 1
    again = bucket_batches(lengths, 16, rng=1)
    assert all(np.array_equal(a, b) for a, b in zip(buckets, again))
    other = bucket_batches(lengths, 16, rng=2)
    assert not all(np.array_equal(a, b) for a, b in zip(buckets, other))


def test_dataset_batch_trims_to_longest():
    X, lengths = pad_sequences([np.ones((5, 2)), np.ones((2, 2)), np.ones((3, 2))])
    ds = SequenceDataset(X, y=np.arange(3), lengths=lengths)
    x, l, y, sw = ds.batch(np.array([1, 2]))
    assert x.shape == (2, 3, 2)
    np.testing.assert_array_equal(l, [2, 3])
    np.testing.assert_array_equal(y, [1, 2])
    assert sw is None
    x, l, _, _ = ds.batch(np.array([2]))
    assert x.shape == (1, 3, 2) and l is None  # all full: no lengths to handle


def test_dataset_from_lists_with_per_step_targets():
    X = [np.zeros((3, 1)), np.zeros((1, 1))]
    ds = SequenceDataset(X, y=[[1, 2, 3], [4]], per_step=True, sample_weight=[1.0, 2.0])
    assert ds.X.shape == (2, 3, 1) and ds.y.shape == (2, 3)
    x, l, y, sw = ds.batch(np.array([1]))
    assert x.shape == (1, 1, 1) and y.shape == (1, 1) and y[0, 0] == 4 and sw[0] == 2.0
    with pytest.raises(ValueError, match=r"y\[1\] has 2 steps"):
        SequenceDataset(X, y=[[1, 2, 3], [4, 5]], per_step=True)


def test_dataset_split_and_errors():
    ds = SequenceDataset(np.zeros((10, 4, 2)), y=np.arange(10))
    tr, va = ds.split(0.3)
    np.testing.assert_array_equal(va.y, [7, 8, 9])
    assert len(tr) == 7
    with pytest.raises(ValueError, match="validation_split"):
        ds.split(1.5)
    with pytest.raises(ValueError, match="10 sequences, y has 9"):
        SequenceDataset(np.zeros((10, 4, 2)), y=np.arange(9))
    with pytest.raises(ValueError, match="lengths must be in"):
        SequenceDataset(np.zeros((2, 4, 2)), lengths=[0, 4])
    with pytest.raises(ValueError, match="sample_weight"):
        SequenceDataset(np.zeros((2, 4, 2)), sample_weight=[1.0, -1.0])
