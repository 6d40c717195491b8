"""rnnfast.nn.Module: the parameter / gradient / mode protocol every layer shares."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import BackwardStateError, Linear


def test_state_dict_returns_copies_and_named_parameters_live_arrays():
    lin = Linear(3, 2, seed=0)
    sd = lin.state_dict()
    assert set(sd) == {"weight", "bias"}
    sd["weight"][...] = 7
    assert not np.any(lin.state_dict()["weight"] == 7)
    params = dict(lin.named_parameters())
    params["weight"][...] = 1.5
    assert np.all(lin.state_dict()["weight"] == 1.5)


def test_load_state_dict_copies_in_place_and_converts():
    lin = Linear(3, 2, seed=0)
    w_before = dict(lin.named_parameters())["weight"]
    new = {"weight": np.arange(6.0).reshape(2, 3), "bias": np.array([1, 2])}  # float64 and int
    lin.load_state_dict(new)
    w = dict(lin.named_parameters())["weight"]
    assert w is w_before  # identity kept: optimizers holding the array stay connected
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, new["weight"])
    np.testing.assert_array_equal(lin.state_dict()["bias"], [1, 2])


@pytest.mark.parametrize("bad, exc, match", [
    ({"weight": np.zeros((2, 3))}, ValueError, r"missing keys \['bias'\]"),
    ({"weight": np.zeros((2, 3)), "bias": np.zeros(2), "extra": np.zeros(1)}, ValueError, "unexpected keys"),
    ({"weight": np.zeros((3, 2)), "bias": np.zeros(2)}, ValueError, r"shape \(3, 2\), expected \(2, 3\)"),
    ({"weight": np.zeros((2, 3)), "bias": np.array(["a", "b"])}, TypeError, "real numbers"),
    ({"weight": np.zeros((2, 3)), "bias": np.zeros(2, complex)}, TypeError, "real numbers"),
    ([("weight", 1)], TypeError, "mapping"),
])
def test_load_state_dict_refuses_and_changes_nothing(bad, exc, match):
    lin = Linear(3, 2, seed=0)
    before = lin.state_dict()
    with pytest.raises(exc, match=match):
        lin.load_state_dict(bad)
    for k, v in lin.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_torch_tensors():
    torch = pytest.importorskip("torch")
    tl = torch.nn.Linear(3, 2)
    lin = Linear(3, 2, dtype=np.float64)
    lin.load_state_dict(tl.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(lin(x), tl(torch.from_numpy(x).float()).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_zero_grad_train_eval_and_backward_errors():
    lin = Linear(3, 2)
    assert lin.training
    assert lin.eval() is lin and not lin.training
    lin(np.ones((1, 3)))
    with pytest.raises(BackwardStateError, match="eval mode"):
        lin.backward(np.ones((1, 2)))
    assert lin.train() is lin and lin.training
    with pytest.raises(BackwardStateError, match="without a preceding"):
        lin.backward(np.ones((1, 2)))
    lin(np.ones((1, 3)))
    lin.backward(np.ones((1, 2)))
    with pytest.raises(BackwardStateError, match="twice"):
        lin.backward(np.ones((1, 2)))
    assert np.any(lin.grads["weight"] != 0)
    g = lin.grads["weight"]
    lin.zero_grad()
    assert lin.grads["weight"] is g and not np.any(g)
    assert isinstance(BackwardStateError("x"), RuntimeError)


def test_subclass_protocol():
    class Scale(rf.nn.Module):
        def __init__(self):
            super().__init__()
            self._add_param("s", np.array([2.0]))

        def forward(self, x):
            self._keep(x)
            return x * self._params["s"]

        def backward(self, d):
            x = self._take_cache()
            self.grads["s"] += (d * x).sum()
            return d * self._params["s"]

    m = Scale()
    assert m(np.array([1.0, 3.0])).tolist() == [2.0, 6.0]
    assert m.backward(np.ones(2)).tolist() == [2.0, 2.0]
    assert m.grads["s"].tolist() == [4.0]
    assert repr(m) == "Scale()"


def test_parameters_and_gradients_start_on_a_cache_line():
    """Layers' parameters (read in place by the batch-1 kernel) and gradients are 64-byte aligned, and
    stay so after loading a state dict."""
    import numpy as np

    import rnnfast as rf
    from rnnfast.nn.module import aligned_empty

    for shape, dt in (((3, 5), np.float32), ((7,), np.float64), ((0, 4), np.float32)):
        a = aligned_empty(shape, dt)
        assert a.shape == shape and a.dtype == dt and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % 64 == 0
    m = rf.nn.LSTM(5, 7, seed=0)
    m.load_state_dict(rf.nn.LSTM(5, 7, seed=1).state_dict())
    for name, p in m.named_parameters():
        assert p.ctypes.data % 64 == 0 and m.grads[name].ctypes.data % 64 == 0, name


def test_reseed_restarts_the_random_stream():
    drop = rf.nn.Dropout(0.5, seed=0)
    x = np.ones((4, 6))
    a = drop.reseed(7)(x)
    drop(x)
    b = drop.reseed(np.random.SeedSequence(7))(x)
    np.testing.assert_array_equal(a, b)
    assert drop.uses_rng and not rf.nn.Linear(2, 2).uses_rng
    lin = rf.nn.Linear(2, 2, seed=0)
    assert lin.reseed(3) is lin and not lin.uses_rng  # nothing random: ignored
    with pytest.raises(TypeError, match="seed"):
        drop.reseed("7")


def test_keyword_protocol_is_declared():
    from rnnfast.nn.module import call_backward, call_forward
    lin = rf.nn.Linear(3, 2, seed=0)
    assert rf.nn.Module.keyword_protocol and lin.keyword_protocol
    x = np.ones((2, 4, 3), np.float32)
    np.testing.assert_array_equal(call_forward(lin, x, lengths=np.array([2, 4])), lin(x))
    call_backward(lin, np.ones((2, 4, 2), np.float32), n_threads=1)

    class Plain:  # not declared: called forward(x) / backward(d)
        def forward(self, x):
            return x

        def backward(self, d):
            return d

    assert call_forward(Plain(), x) is x and call_backward(Plain(), x, n_threads=2) is x
    with pytest.raises(TypeError, match="layer protocol"):
        call_forward(Plain(), x, lengths=np.array([1, 2]))


@pytest.mark.parametrize("lengths,shown", [
    (np.array([2**64 - 1], np.uint64), "18446744073709551615"),   # was "got min -1": cast before the check
    (np.array([2**63], np.uint64), "9223372036854775808"),
    (np.array([-2**63], np.int64), "-9223372036854775808"),
    (np.array([1e30]), "1e+30"),
    (np.array([300], np.uint16), "300"),
    ([2**70], str(2**70)),   # a Python int past 64 bits (was "must be integers, got dtype object")
])
def test_lengths_out_of_range_report_the_real_value(lengths, shown):
    import re

    from rnnfast.nn.module import check_lengths
    shown = re.escape(shown)
    with pytest.raises(ValueError, match=rf"lengths must be in \[1, 4\].*got min {shown}, max {shown}"):
        check_lengths(lengths, 1, 4)
    with pytest.raises(ValueError, match=f"got min {shown}"):
        rf.nn.GRU(2, 3)(np.zeros((1, 4, 2), np.float32), lengths=lengths)


# ------------------------------------------------------------------ read-only constructor settings
# Setting layer.input_size or layer.bidirectional after construction ran silently with different results.
_READ_ONLY_CASES = [
    (lambda: rf.nn.LSTM(3, 4), {"input_size": 5, "hidden_size": 2, "num_layers": 2, "bias": False,
                                "bidirectional": True, "dtype": np.float64, "nonlinearity": "relu"}),
    (lambda: rf.nn.GRU(3, 4, bidirectional=True), {"bidirectional": False, "input_size": 7}),
    (lambda: rf.nn.RNN(3, 4), {"nonlinearity": "relu", "num_layers": 3}),
    (lambda: rf.nn.Linear(3, 4), {"in_features": 5, "out_features": 1, "bias": False, "dtype": np.float64}),
    (lambda: rf.nn.Embedding(10, 4), {"num_embeddings": 11, "embedding_dim": 2, "padding_idx": 0}),
    (lambda: rf.nn.Attention(4, 4, kind="general"), {"query_size": 3, "key_size": 2, "kind": "dot",
                                                     "hidden_size": 8}),
    (lambda: rf.nn.LastStep(), {"bidirectional": True}),
]


@pytest.mark.parametrize("make,changes", _READ_ONLY_CASES)
def test_shape_defining_settings_are_read_only(make, changes):
    layer = make()
    for name, value in changes.items():
        before = getattr(layer, name)
        with pytest.raises(AttributeError, match=rf"cannot set {type(layer).__name__}\.{name}: it is read-only"):
            setattr(layer, name, value)
        with pytest.raises(AttributeError, match="read-only"):
            delattr(layer, name)
        assert getattr(layer, name) == before


def test_harmless_settings_stay_writable_as_in_torch():
    m = rf.nn.LSTM(3, 4, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out = m(x)[0]
    m.batch_first = False
    np.testing.assert_array_equal(m(x.swapaxes(0, 1))[0].swapaxes(0, 1), out)
    m.dropout = 0.25
    assert m.dropout == 0.25


@pytest.mark.parametrize("make,changes", _READ_ONLY_CASES)
def test_read_only_layers_still_copy_pickle_and_load(make, changes):
    import copy
    import pickle

    layer = make()
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer), copy.copy(layer)):
        for name in changes:
            assert getattr(clone, name) == getattr(layer, name)
        clone.load_state_dict(layer.state_dict())
        with pytest.raises(AttributeError, match="read-only"):
            setattr(clone, next(iter(changes)), None)


def test_lengths_as_an_object_array_of_ints():
    from rnnfast.nn.module import check_lengths
    np.testing.assert_array_equal(check_lengths(np.array([1, 4], dtype=object), 2, 4), [1, 4])
