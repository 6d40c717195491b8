"""Bad input gets a clear ValueError / TypeError naming the problem, never a crash or a wrong answer."""
import numpy as np
import pytest

import rnnfast as rf


@pytest.fixture(params=["lstm", "gru", "rnn"])
def layer(request):
    cls = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}[request.param]
    return cls(3, 4, num_layers=2, bidirectional=True)


def _hx(layer, h):
    return (h, h) if layer._mode == "lstm" else h


def test_wrong_rank(layer):
    with pytest.raises(ValueError, match="3-D"):
        layer(np.zeros((2, 3, 4, 3)))
    with pytest.raises(ValueError, match="3-D"):
        layer(np.zeros(3))


def test_wrong_feature_size(layer):
    with pytest.raises(ValueError, match="input_size=3"):
        layer(np.zeros((2, 5, 4)))


def test_empty_input(layer):
    with pytest.raises(ValueError, match="at least one"):
        layer(np.zeros((0, 5, 3)))
    with pytest.raises(ValueError, match="at least one"):
        layer(np.zeros((2, 0, 3)))


@pytest.mark.parametrize("bad", [np.array([["a", "b", "c"]]), np.zeros((1, 2, 3), complex),
                                 np.zeros((1, 2, 3), bool), [[["x", 1, 2]]], object()])
def test_non_numeric_input(layer, bad):
    with pytest.raises(TypeError, match="x must"):
        layer(bad)


def test_state_of_wrong_shape(layer):
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"\(4, 2, 4\)"):
        layer(x, _hx(layer, np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match="shape"):
        layer(x, _hx(layer, np.zeros((4, 3, 4))))
    with pytest.raises(ValueError, match="shape"):
        layer(x, _hx(layer, np.zeros((4, 2, 5))))


def test_state_of_wrong_kind():
    x = np.zeros((2, 5, 3))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        rf.nn.LSTM(3, 4)(x, np.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match="not a tuple"):
        rf.nn.GRU(3, 4)(x, (np.zeros((1, 2, 4)), np.zeros((1, 2, 4))))
    with pytest.raises(TypeError, match="real numbers"):
        rf.nn.GRU(3, 4)(x, np.full((1, 2, 4), "a"))


@pytest.mark.parametrize("lengths,err,msg", [
    ([0, 5], ValueError, r"in \[1, 5\]"),
    ([6, 5], ValueError, r"in \[1, 5\]"),
    ([-1, 5], ValueError, r"in \[1, 5\]"),
    ([5, 5, 5], ValueError, r"shape \(2,\)"),
    ([[5, 5]], ValueError, r"shape \(2,\)"),
    ([2.5, 5], TypeError, "whole numbers"),
    ([np.nan, 5], TypeError, "whole numbers"),
    (["a", "b"], TypeError, "integers"),
    ([True, True], TypeError, "integers"),
])
def test_lengths_out_of_range_or_wrong_shape(layer, lengths, err, msg):
    with pytest.raises(err, match=msg):
        layer(np.zeros((2, 5, 3)), lengths=lengths)


def test_float_lengths_that_are_whole_are_accepted(layer):
    layer.eval()
    a = layer(np.ones((2, 5, 3)), lengths=[2.0, 5.0])[0]
    b = layer(np.ones((2, 5, 3)), lengths=np.array([2, 5]))[0]
    np.testing.assert_array_equal(a, b)


def test_bad_dout(layer):
    layer(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="output's shape"):
        layer.backward(np.zeros((2, 5, 4)))
    with pytest.raises(TypeError, match="dout must"):
        layer.backward(np.full((2, 5, 8), "a"))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.zeros((2, 5, 8)), _hx(layer, np.zeros((1, 2, 4))))
    layer.backward(np.zeros((2, 5, 8)))  # the cache survived the refused calls


def test_state_dict_missing_unexpected_or_wrong_shape(layer):
    sd = layer.state_dict()
    bad = dict(sd)
    del bad["weight_hh_l1_reverse"]
    with pytest.raises(ValueError, match="missing keys.*weight_hh_l1_reverse"):
        layer.load_state_dict(bad)
    bad = dict(sd, extra=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected keys.*extra"):
        layer.load_state_dict(bad)
    bad = dict(sd)
    bad["weight_ih_l0"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="weight_ih_l0.*shape"):
        layer.load_state_dict(bad)
    bad = dict(sd)
    bad["bias_hh_l0"] = np.full(sd["bias_hh_l0"].shape, "x")
    with pytest.raises(TypeError, match="bias_hh_l0"):
        layer.load_state_dict(bad)
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([1, 2])
    # nothing was changed by the refused loads
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


@pytest.mark.parametrize("kwargs,err", [
    (dict(input_size=0, hidden_size=3), ValueError),
    (dict(input_size=2, hidden_size=-1), ValueError),
    (dict(input_size=2.5, hidden_size=3), TypeError),
    (dict(input_size=2, hidden_size=3, num_layers=0), ValueError),
    (dict(input_size=2, hidden_size=3, dropout=1.5), ValueError),
    (dict(input_size=2, hidden_size=3, dropout="x"), TypeError),
    (dict(input_size=2, hidden_size=3, dtype=np.int32), TypeError),
    (dict(input_size=2, hidden_size=3, dtype="nonsense"), TypeError),
    (dict(input_size=2, hidden_size=3, bidirectional="yes"), TypeError),
])
def test_bad_constructor_arguments(kwargs, err):
    with pytest.raises(err):
        rf.nn.LSTM(**kwargs)


def test_bad_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity"):
        rf.nn.RNN(2, 3, nonlinearity="sigmoid")


@pytest.mark.parametrize("n", [0, -2, 1.5, "2", True])
def test_bad_thread_counts(layer, n):
    with pytest.raises((ValueError, TypeError), match="n_threads"):
        layer(np.zeros((1, 2, 3)), n_threads=n)


def test_bad_step_input():
    m = rf.nn.LSTM(3, 4)
    with pytest.raises(ValueError, match="features"):
        m.step(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="2-D"):
        m.step(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="shape"):
        m.step(np.zeros((2, 3)), (np.zeros((1, 3, 4)), np.zeros((1, 3, 4))))
