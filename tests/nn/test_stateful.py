"""StateCarry: rows of a batch's state taken and put back; Stateful helpers."""
import numpy as np
import pytest

from rnnfast import nn


def test_carry_takes_and_puts_rows():
    m = nn.Sequential(nn.Stateful(nn.LSTM(2, 3, seed=0, dtype=np.float64)), nn.Linear(3, 1, dtype=np.float64))
    carry = nn.StateCarry(m)
    assert carry and carry.layers == [m.layers[0]] and nn.stateful_layers(m) == [m.layers[0]]
    x = np.random.default_rng(0).standard_normal((4, 5, 2))
    carry.load(None)
    m(x[:, :2])
    carry.store(None, 4)
    full = carry.states[0]
    rows = np.array([0, 2])
    carry.load(rows)
    np.testing.assert_array_equal(m.layers[0].hx[0], full[0][:, rows])
    m(x[rows, 2:])
    carry.store(rows, 4)
    h_rows = carry.states[0][0]
    ref = m.layers[0].layer(x[rows], None)[1][0]  # the whole sequences, uncut
    np.testing.assert_allclose(h_rows[:, rows], ref, rtol=1e-12)
    np.testing.assert_array_equal(h_rows[:, [1, 3]], full[0][:, [1, 3]])  # other rows kept
    carry.reset()
    assert carry.states == [None] and m.layers[0].hx is None and m.layers[0].last_state is None


def test_unwrap_and_no_stateful_layers():
    lstm = nn.LSTM(2, 3)
    assert nn.unwrap(nn.Stateful(lstm)) is lstm and nn.unwrap(lstm) is lstm
    assert not nn.StateCarry(nn.Sequential(lstm))


def test_pickle_keeps_the_wrapper_and_its_layer():
    """A pickled Stateful is a Stateful around its layer: its attribute forwarding never answers for the
    pickle protocol's dunders, which the wrapped recurrent layer defines (on Python 3.10 the wrapper
    pickled as the layer's state)."""
    import pickle

    from rnnfast.nn.stateful import Stateful

    s = Stateful(nn.LSTM(3, 4, seed=0)).eval()
    copy = pickle.loads(pickle.dumps(s))
    assert type(copy) is Stateful and type(copy.layer) is nn.LSTM
    x = np.ones((2, 5, 3), np.float32)
    np.testing.assert_array_equal(copy.layer(x)[0], s.layer(x)[0])
    with pytest.raises(AttributeError):
        copy.__no_such_dunder__  # noqa: B018
