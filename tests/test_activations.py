"""Error of the float32 kernels' fast activations against double-precision libm (see csrc/rf_math.h)."""
import numpy as np
import pytest

from rnnfast._kernels._recurrent import fast_activation

X = np.concatenate([np.linspace(-30, 30, 200001), np.linspace(-1e-3, 1e-3, 20001),
                    np.array([-1e30, -100.0, -88.5, -87.0, 0.0, 87.0, 88.5, 100.0, 1e30])]).astype(np.float32)
EXACT = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


@pytest.mark.parametrize("kind,abs_tol", [("sigmoid", 2e-7), ("tanh", 2e-7)])
def test_fast_activation_error(kind, abs_tol):
    got = fast_activation(kind, X).astype(np.float64)
    with np.errstate(over="ignore"):
        want = EXACT[kind](X.astype(np.float64))
    err = np.abs(got - want)
    assert np.all(np.isfinite(got))
    assert err.max() < abs_tol, (kind, err.max())
    big = np.abs(want) > 1e-30
    assert (err[big] / np.abs(want[big])).max() < 3e-7


def test_fast_exp_relative_error():
    x = np.linspace(-87, 88, 100001).astype(np.float32)
    got = fast_activation("exp", x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert (np.abs(got - want) / want).max() < 2e-7


def test_nan_propagates():
    x = np.array([np.nan], np.float32)
    for kind in ("exp", "sigmoid", "tanh"):
        assert np.isnan(fast_activation(kind, x)[0])


def test_ranges():
    s = fast_activation("sigmoid", X)
    t = fast_activation("tanh", X)
    assert s.min() >= 0 and s.max() <= 1
    assert t.min() >= -1 and t.max() <= 1
    assert np.all(np.sign(t[X != 0]) == np.sign(X[X != 0]))
