"""Initialisers and init_recurrent."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast.train import glorot_uniform, init_recurrent, orthogonal, pytorch_default, zeros


def test_glorot_and_pytorch_default_bounds():
    w = glorot_uniform((40, 10), rng=0)
    a = np.sqrt(6 / 50)
    assert w.shape == (40, 10) and w.dtype == np.float32
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.9 * a
    w = pytorch_default((5, 16), rng=0, dtype=np.float64)
    assert w.dtype == np.float64 and np.abs(w).max() <= 0.25
    b = pytorch_default(5, fan_in=16, rng=0)
    assert np.abs(b).max() <= 0.25
    np.testing.assert_array_equal(glorot_uniform((3, 3), rng=4), glorot_uniform((3, 3), rng=4))
    assert not np.any(zeros((2, 3))) and zeros(4, np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="fan_in"):
        pytorch_default(5)
    with pytest.raises(ValueError, match="2 dimensions"):
        glorot_uniform((5,))


@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3), (2, 3, 2)])
def test_orthogonal(shape):
    w = orthogonal(shape, gain=2.0, rng=1, dtype=np.float64)
    assert w.shape == shape
    m = w.reshape(shape[0], -1) / 2.0
    small = min(m.shape)
    gram = m @ m.T if m.shape[0] == small else m.T @ m
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)


@pytest.mark.parametrize("cls, G", [(rf.nn.LSTM, 4), (rf.nn.GRU, 3), (rf.nn.RNN, 1)])
def test_init_recurrent(cls, G):
    H = 3
    layer = cls(5, H, num_layers=2, bidirectional=True, seed=0)
    arrays = dict(layer.named_parameters())
    assert init_recurrent(layer, seed=1) is layer
    sd = layer.state_dict()
    assert all(arrays[k] is p for k, p in layer.named_parameters())  # written in place
    for name, p in sd.items():
        if name.startswith("weight_hh"):
            for g in range(G):
                block = p[g * H:(g + 1) * H].astype(np.float64)
                np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-6)
        elif name.startswith("weight_ih"):
            bound = np.sqrt(6 / (p.shape[0] + p.shape[1]))
            assert np.abs(p).max() <= bound + 1e-7
        elif name.startswith("bias_ih") and cls is rf.nn.LSTM:
            np.testing.assert_array_equal(p, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
        else:
            assert not np.any(p), name
    again = init_recurrent(cls(5, H, num_layers=2, bidirectional=True), seed=1).state_dict()
    for k in sd:
        np.testing.assert_array_equal(sd[k], again[k])
    init_recurrent(layer, forget_bias=0.0)
    assert not any(np.any(p) for k, p in layer.state_dict().items() if k.startswith("bias"))


def test_init_recurrent_bad_input():
    with pytest.raises(TypeError, match="recurrent layer"):
        init_recurrent(rf.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="forget_bias"):
        init_recurrent(rf.nn.LSTM(2, 2), forget_bias="1")
