"""bench/_cases.py: the FLOP formulas, the Shape record and the reference weights."""
import numpy as np
import pytest

import _cases  # bench/, put on sys.path by this folder's conftest.py
from _cases import Shape


def test_flop_one_layer():
    # 2*G*H*(I+H) per step and sequence: LSTM G=4, GRU 3, RNN 1
    assert _cases.flop_forward("lstm", 64, 128, tokens=32 * 50) == 2 * 4 * 128 * (64 + 128) * 32 * 50
    assert _cases.flop_forward("gru", 64, 128, tokens=10) == 2 * 3 * 128 * 192 * 10
    assert _cases.flop_forward("rnn", 1, 16, tokens=1) == 2 * 16 * 17


def test_flop_stack_and_training():
    # a bidirectional second layer reads 2H features; training counts 3x the forward
    I, H, n = 128, 256, 64 * 100
    fwd = 2 * (2 * 4 * H * (I + H) * n) + 2 * (2 * 4 * H * (2 * H + H) * n)
    assert _cases.flop_forward("lstm", I, H, layers=2, D=2, tokens=n) == fwd
    assert _cases.flop("lstm", I, H, 2, 2, n, "train") == 3 * fwd
    assert _cases.flop("lstm", I, H, 2, 2, n) == fwd
    with pytest.raises(ValueError):
        _cases.flop("lstm", I, H, mode="fit")


def test_shape():
    s = Shape("gru", 4, 50, 256, 256, layers=2, bidirectional=True, mode="train")
    assert s.D == 2
    assert s.name == "gru-B4-T50-I256-H256-L2-bi-train"
    assert s.flop == _cases.flop("gru", 256, 256, 2, 2, 4 * 50, "train")
    same = Shape("gru", 4, 50, 256, 256, 2, True, "train")
    assert s == same and hash(s) == hash(same)
    ok = dict(cell="lstm", B=1, T=1, I=1, H=1)
    for bad in (dict(cell="lstmx"), dict(mode="fit"), dict(B=0), dict(layers=-1)):
        with pytest.raises(ValueError):
            Shape(**{**ok, **bad})
    for bad in (dict(H=2.0), dict(T="8"), dict(B=True)):
        with pytest.raises(TypeError):
            Shape(**{**ok, **bad})


def test_state_dict_keys_shapes_and_seed():
    sd = _cases.state_dict("lstm", 8, 16, layers=2, bidirectional=True)
    assert sorted(sd) == sorted(f"{w}{sfx}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"))
    assert sd["weight_ih_l0"].shape == (64, 8) and sd["weight_ih_l1"].shape == (64, 32)
    assert sd["weight_hh_l1_reverse"].shape == (64, 16) and sd["bias_hh_l0"].shape == (64,)
    assert all(v.dtype == np.float32 and np.abs(v).max() <= 0.25 for v in sd.values())
    again = _cases.state_dict("lstm", 8, 16, layers=2, bidirectional=True)
    assert all(np.array_equal(sd[k], again[k]) for k in sd)
    # the first layer's draws do not depend on the stack's depth (the suites rely on one seed, one order)
    one = _cases.state_dict("lstm", 8, 16)
    assert np.array_equal(one["weight_ih_l0"], sd["weight_ih_l0"])
    assert _cases.state_dict("rnn", 3, 5)["weight_hh_l0"].shape == (5, 5)
