"""rnnfast._validation: one policy, TypeError for a wrong type and ValueError for a bad value."""
import math

import numpy as np
import pytest

from rnnfast import _validation as v
from rnnfast.nn import module


@pytest.mark.parametrize("value, minimum, maximum, expected", [(3, 1, None, 3), (np.int64(5), 0, 9, 5), (0, 0, 0, 0)])
def test_check_int_accepts(value, minimum, maximum, expected):
    out = v.check_int(value, "n", minimum, maximum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [1.0, "3", True, np.bool_(True), None, [1]])
def test_check_int_wrong_type_is_type_error(value):
    with pytest.raises(TypeError, match="n must be an int"):
        v.check_int(value, "n", 0)


@pytest.mark.parametrize("value, match", [(0, r"n must be >= 1, got 0"), (11, r"n must be in \[1, 10\]")])
def test_check_int_bad_value_is_value_error(value, match):
    with pytest.raises(ValueError, match=match):
        v.check_int(value, "n", 1, 10 if value > 10 else None)


def test_allow_none():
    assert v.check_int(None, "n", 1, allow_none=True) is None
    assert v.check_real(None, "x", allow_none=True) is None
    with pytest.raises(TypeError, match="or None"):
        v.check_int("a", "n", 1, allow_none=True)


@pytest.mark.parametrize("closed, ok, bad", [
    ("both", [0.0, 1.0], [-0.1, 1.1]), ("left", [0.0, 0.5], [1.0]), ("right", [1.0], [0.0]),
    ("neither", [0.5], [0.0, 1.0]),
])
def test_check_real_intervals(closed, ok, bad):
    for x in ok:
        assert v.check_real(x, "p", 0.0, 1.0, closed=closed) == x
    for x in bad:
        with pytest.raises(ValueError, match="p must be a number in"):
            v.check_real(x, "p", 0.0, 1.0, closed=closed)


def test_check_real_refuses_nan_and_bools_and_strings():
    with pytest.raises(ValueError):
        v.check_real(math.nan, "p")
    for bad in (True, "0.5", None):
        with pytest.raises(TypeError):
            v.check_real(bad, "p")
    assert v.check_real(2, "p") == 2.0 and type(v.check_real(np.float32(0.5), "p")) is float


def test_check_bool_and_option():
    assert v.check_bool(np.bool_(True), "b") is True
    with pytest.raises(TypeError, match=r"b must be a bool \(True or False\)"):
        v.check_bool(1, "b")
    assert v.check_option("mean", "pooling", ("last", "mean")) == "mean"
    with pytest.raises(ValueError, match=r"pooling must be one of \['last', 'mean'\]"):
        v.check_option("avg", "pooling", ("last", "mean"))
    with pytest.raises(TypeError, match="pooling must be one of"):
        v.check_option(3, "pooling", ("last", "mean"))


def test_float_dtype_policy():
    assert v.check_float_dtype("float32") == np.float32 and v.check_float_dtype(np.float64) == np.float64
    with pytest.raises(TypeError):
        v.check_float_dtype("nonsense")
    with pytest.raises(v.UnsupportedDtypeError) as info:
        v.check_float_dtype(np.int32)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_any_of_takes_the_first_constraint_of_the_right_type():
    c = v.AnyOf(v.Options("auto"), v.Boolean())
    assert c.check("auto", "r") == "auto" and c.check(np.bool_(False), "r") is False
    with pytest.raises(ValueError, match="r must be one of"):
        c.check("yes", "r")
    with pytest.raises(TypeError, match=r"r must be one of \['auto'\] or a bool \(True or False\)"):
        c.check(3, "r")


def test_validate_params_table():
    table = {"n": v.Integer(1), "p": v.Real(0, 1), "mode": v.Options("a", "b")}
    assert v.validate_params({"n": np.int8(2), "p": 1, "mode": "b"}, table) == {"n": 2, "p": 1.0, "mode": "b"}
    with pytest.raises(ValueError, match="unknown parameters \\['q'\\]"):
        v.validate_params({"q": 1}, table)
    with pytest.raises(TypeError, match="n must be an int"):
        v.validate_params({"n": 1.5}, table)


def test_nn_module_helpers_delegate():
    assert module.check_int(3, "x", 1) == 3
    with pytest.raises(TypeError):
        module.check_int(2.0, "x", 1)
    with pytest.raises(ValueError):
        module.check_int(0, "x", 1)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        module.check_float_dtype(np.int32)
