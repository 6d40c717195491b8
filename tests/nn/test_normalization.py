"""BatchNorm and LayerNorm: against PyTorch (float32 1e-5, float64 1e-10) on the packed valid steps, finite
differences, lengths and padding, train vs eval, running statistics, state dicts, Sequential, bad input."""
import pickle
import threading

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import LSTM, BatchNorm, LastStep, LayerNorm, Linear, MeanPool, Sequential

from gradcheck import assert_close, check_params, numeric_grad

torch = pytest.importorskip("torch")

LENGTHS = np.array([5, 2, 4, 1])  # ragged, unsorted, includes 1 and T
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
TDT = {np.float32: torch.float32, np.float64: torch.float64}


def rng(seed=0):
    return np.random.default_rng(seed)


def valid(lengths, T=5):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def padded(dtype, F=3, lengths=LENGTHS, seed=0):
    """A (B, T, F) batch whose padded steps hold large values (they must change nothing)."""
    x = rng(seed).standard_normal((len(lengths), 5, F)).astype(dtype) * 2 + 0.5
    x[~valid(lengths)] = 1e3
    return x


def compare_with_torch(layer, mod, x, lengths, mask, dtype):
    """``layer`` (rnnfast) against ``mod`` (torch) over the packed valid rows of ``x``: output, input gradient
    and parameter gradients; padded steps zero in both directions."""
    xt = torch.tensor(x[mask], requires_grad=True)
    yt = mod(xt)
    y = layer(x, lengths=lengths)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y[mask], yt.detach().numpy(), "y", **TOL[dtype])
    assert not np.any(y[~mask])
    dout = rng(3).standard_normal(x.shape).astype(dtype)
    dx = layer.backward(dout)
    yt.backward(torch.from_numpy(dout[mask]))
    assert_close(dx[mask], xt.grad.numpy(), "dx", **TOL[dtype])
    assert not np.any(dx[~mask])
    for name, p in mod.named_parameters():
        assert_close(layer.grads[name], p.grad.numpy(), "d" + name, **TOL[dtype])


# ---------------------------------------------------------------------------------------- BatchNorm vs torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [LENGTHS, None])
def test_batchnorm_matches_torch_on_packed_valid_steps(dtype, lengths):
    F = 3
    bn = BatchNorm(F, dtype=dtype)
    tb = torch.nn.BatchNorm1d(F).to(TDT[dtype])
    w, b = rng(1).standard_normal(F).astype(dtype), rng(2).standard_normal(F).astype(dtype)
    bn.load_state_dict({**bn.state_dict(), "weight": w, "bias": b})
    tb.load_state_dict({k: torch.from_numpy(v) for k, v in bn.state_dict().items()})
    x = padded(dtype, F, LENGTHS if lengths is not None else np.full(4, 5))
    mask = valid(LENGTHS) if lengths is not None else np.ones((4, 5), bool)
    compare_with_torch(bn, tb, x, lengths, mask, dtype)
    for k, v in tb.state_dict().items():  # running statistics after one training step
        assert_close(bn.state_dict()[k], v.numpy(), k, **TOL[dtype])


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_running_statistics_and_eval_match_torch(momentum):
    bn = BatchNorm(3, momentum=momentum, dtype=np.float64)
    tb = torch.nn.BatchNorm1d(3, momentum=momentum).double()
    for step in range(4):
        lengths = np.array([5, 3 + step % 2, 1, 4])
        x = padded(np.float64, lengths=lengths, seed=step)
        bn(x, lengths=lengths)
        tb(torch.from_numpy(x[valid(lengths)]))
    sd = bn.state_dict()
    assert int(sd["num_batches_tracked"]) == 4 and sd["num_batches_tracked"].dtype == np.int64
    for k, v in tb.state_dict().items():
        assert_close(sd[k], v.numpy(), k, **TOL[np.float64])
    bn.eval(), tb.eval()
    x = padded(np.float64, seed=9)
    y = bn(x, lengths=LENGTHS)
    assert_close(y[valid(LENGTHS)], tb(torch.from_numpy(x[valid(LENGTHS)])).detach().numpy(), "eval",
                 **TOL[np.float64])
    assert not np.any(y[~valid(LENGTHS)])
    before = bn.state_dict()
    bn(x, lengths=LENGTHS)  # eval: the running statistics stay
    assert all(np.array_equal(before[k], v) for k, v in bn.state_dict().items())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_two_d_rows_affine_off_and_no_running_stats(dtype):
    x = rng(4).standard_normal((6, 3)).astype(dtype)
    for kw in (dict(affine=False), dict(track_running_stats=False), dict(affine=False, track_running_stats=False)):
        bn, tb = BatchNorm(3, dtype=dtype, **kw), torch.nn.BatchNorm1d(3, **kw).to(TDT[dtype])
        assert sorted(bn.state_dict()) == sorted(tb.state_dict())
        for mode in (True, False):  # without running statistics eval uses the batch's own, as torch
            bn.train(mode), tb.train(mode)
            assert_close(bn(x, lengths=[1] * 6), tb(torch.from_numpy(x)).detach().numpy(), str(kw), **TOL[dtype])


def test_batchnorm_loads_a_torch_state_dict():
    tb = torch.nn.BatchNorm1d(4)
    tb(torch.randn(10, 4) * 3 + 1)
    bn = BatchNorm(4)
    bn.load_state_dict(tb.state_dict())
    bn.eval(), tb.eval()
    x = rng(5).standard_normal((7, 4)).astype(np.float32)
    assert_close(bn(x), tb(torch.from_numpy(x)).detach().numpy(), **TOL[np.float32])
    assert list(bn.state_dict()) == list(tb.state_dict())


# ---------------------------------------------------------------------------------------- LayerNorm vs torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, dict(elementwise_affine=False), dict(bias=False)])
def test_layernorm_matches_torch(dtype, kw):
    ln = LayerNorm(3, dtype=dtype, **kw)
    tl = torch.nn.LayerNorm(3, **kw).to(TDT[dtype])
    if ln.state_dict():
        sd = {k: rng(i).standard_normal(v.shape).astype(dtype) for i, (k, v) in enumerate(ln.state_dict().items())}
        ln.load_state_dict(sd)
        tl.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert sorted(ln.state_dict()) == sorted(tl.state_dict())
    compare_with_torch(ln, tl, padded(dtype), LENGTHS, valid(LENGTHS), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_several_axes_and_no_lengths_match_torch(dtype):
    ln, tl = LayerNorm((2, 3), dtype=dtype), torch.nn.LayerNorm((2, 3)).to(TDT[dtype])
    sd = {"weight": rng(1).standard_normal((2, 3)).astype(dtype), "bias": rng(2).standard_normal((2, 3)).astype(dtype)}
    ln.load_state_dict(sd), tl.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    x = rng(3).standard_normal((4, 5, 2, 3)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tl(xt)
    assert_close(ln(x), yt.detach().numpy(), **TOL[dtype])
    dout = rng(4).standard_normal(x.shape).astype(dtype)
    yt.backward(torch.from_numpy(dout))
    assert_close(ln.backward(dout), xt.grad.numpy(), "dx", **TOL[dtype])
    assert_close(ln.grads["weight"], tl.weight.grad.numpy(), "dweight", **TOL[dtype])
    assert ln.eval()(x[0, 0]).shape == (2, 3)  # unbatched, in eval mode too


# ---------------------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("make", [lambda: BatchNorm(3, dtype=np.float64), lambda: LayerNorm(3, dtype=np.float64),
                                  lambda: BatchNorm(3, affine=False, dtype=np.float64)])
def test_gradients_by_finite_differences_with_lengths(make):
    layer = make()
    if layer.grads:
        layer.load_state_dict({**layer.state_dict(), "weight": rng(1).standard_normal(3) + 1.0,
                               "bias": rng(2).standard_normal(3)})
    x = padded(np.float64)
    R = rng(3).standard_normal(x.shape)
    layer.training = True

    def objective():
        return float(np.sum(layer(x, lengths=LENGTHS) * R))

    objective()
    dx = layer.backward(R)
    num = numeric_grad(objective, x)
    assert_close(dx, num, "dx", rtol=1e-6, atol=1e-7)
    assert not np.any(num[~valid(LENGTHS)])  # padded steps change nothing
    check_params(layer, objective, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------- behaviour
def test_padded_values_change_nothing_and_statistics_count_valid_steps_only():
    x = padded(np.float64)
    x2 = x.copy()
    x2[~valid(LENGTHS)] = -7.0
    for layer in (BatchNorm(3, dtype=np.float64), LayerNorm(3, dtype=np.float64)):
        np.testing.assert_array_equal(layer(x, lengths=LENGTHS), layer(x2, lengths=LENGTHS))
    bn = BatchNorm(3, momentum=1.0, dtype=np.float64)
    bn(x, lengths=LENGTHS)
    rows = x[valid(LENGTHS)]
    assert_close(bn.state_dict()["running_mean"], rows.mean(0))
    assert_close(bn.state_dict()["running_var"], rows.var(0, ddof=1))


def test_train_and_eval_modes():
    bn = BatchNorm(3, dtype=np.float64)
    x = padded(np.float64) * 3 + 2
    y_train = bn(x, lengths=LENGTHS)
    rows = y_train[valid(LENGTHS)]
    assert_close(rows.mean(0), np.zeros(3), atol=1e-12)
    assert_close(rows.std(0), np.ones(3), rtol=1e-4)
    bn.eval()
    y_eval = bn(x, lengths=LENGTHS)  # running statistics after one step: far from the batch's own
    assert not np.allclose(y_eval, y_train)
    with pytest.raises(rf.nn.BackwardStateError):
        bn.backward(y_eval)
    ln = LayerNorm(3)
    np.testing.assert_array_equal(ln(x[0]), ln.eval()(x[0]))


def test_running_statistics_from_several_threads():
    bn = BatchNorm(4, momentum=None, dtype=np.float64)  # the cumulative average: every update counts
    x = rng(6).standard_normal((8, 5, 4))

    def work():
        for _ in range(50):
            bn(x)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sd, rows = bn.state_dict(), x.reshape(-1, 4)
    assert int(sd["num_batches_tracked"]) == 200
    assert_close(sd["running_mean"], rows.mean(0), atol=1e-12)
    assert_close(sd["running_var"], rows.var(0, ddof=1), atol=1e-12)


def test_pickle_copy_and_repr():
    bn = BatchNorm(3, momentum=None)
    bn(padded(np.float32), lengths=LENGTHS)
    bn2 = pickle.loads(pickle.dumps(bn))
    assert all(np.array_equal(v, bn2.state_dict()[k]) for k, v in bn.state_dict().items())
    assert "momentum=None" in repr(bn) and "LayerNorm((2, 3)" in repr(LayerNorm([2, 3]))
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"] and set(bn.grads) == {"weight", "bias"}


def test_in_a_sequential_with_lengths_and_an_optimizer():
    model = Sequential(LSTM(3, 8, seed=0), LayerNorm(8), BatchNorm(8), MeanPool(), BatchNorm(8), Linear(8, 2, seed=1))
    x, y = padded(np.float32), np.array([0, 1, 1, 0])
    loss = rf.train.CrossEntropy()
    opt = rf.train.Adam(model, lr=1e-2)
    first = None
    for _ in range(20):
        model.zero_grad()
        out = model(x, lengths=LENGTHS)
        value, dlogits = loss(out, y)  # noqa: F841  (loss and its gradient)
        first = value if first is None else first
        model.backward(dlogits)
        opt.step()
    assert value < first
    assert "2.running_mean" in model.state_dict() and "2.running_mean" not in model.grads


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, exc", [
    (lambda: BatchNorm(0), ValueError),
    (lambda: BatchNorm(3.0), TypeError),
    (lambda: BatchNorm(3, momentum=2), ValueError),
    (lambda: BatchNorm(3, eps=0), ValueError),
    (lambda: BatchNorm(3, affine="yes"), TypeError),
    (lambda: BatchNorm(3, dtype=np.int32), TypeError),
    (lambda: LayerNorm(()), ValueError),
    (lambda: LayerNorm("3"), TypeError),
    (lambda: LayerNorm([3, 0]), ValueError),
    (lambda: LayerNorm(True), TypeError),
    (lambda: BatchNorm(3)(np.zeros((2, 5, 4))), ValueError),
    (lambda: BatchNorm(3)(np.zeros(3)), ValueError),
    (lambda: BatchNorm(3)(np.zeros((2, 5, 3)), lengths=[0, 5]), ValueError),
    (lambda: BatchNorm(3)(np.zeros((2, 5, 3)), lengths=[1, 2, 3]), ValueError),
    (lambda: BatchNorm(3)(np.zeros((2, 5, 3)), lengths=[1.5, 2]), TypeError),
    (lambda: BatchNorm(3)(np.zeros((2, 5, 3)), lengths=[1, 6]), ValueError),
    (lambda: BatchNorm(3)(np.zeros((1, 3))), ValueError),
    (lambda: BatchNorm(3)(np.array([["a", "b", "c"]])), TypeError),
    (lambda: LayerNorm(3)(np.zeros((2, 4))), ValueError),
    (lambda: LayerNorm((2, 3))(np.zeros((4, 3, 2))), ValueError),
    (lambda: BatchNorm(3).load_state_dict({"weight": np.ones(3)}), ValueError),
    (lambda: BatchNorm(3).load_state_dict({**BatchNorm(3).state_dict(), "num_batches_tracked": -1}), ValueError),
    (lambda: BatchNorm(3).load_state_dict({**BatchNorm(3).state_dict(), "running_var": np.ones(4)}), ValueError),
])
def test_bad_input_is_refused_clearly(call, exc):
    with pytest.raises(exc):
        call()


def test_single_valid_row_cannot_train_and_bad_dout():
    bn = BatchNorm(3)
    with pytest.raises(ValueError, match="more than one"):
        bn(np.ones((1, 5, 3)), lengths=[1])
    ln = LayerNorm(3)
    ln(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        ln.backward(np.ones((3, 3)))
    assert bn.eval()(np.ones((1, 3))).shape == (1, 3)  # eval with running statistics: one row is fine


# ---------------------------------------------------------------------------------------- random shapes
from hypothesis import given, settings, strategies as st  # noqa: E402


def _reference(rows, axis, eps=1e-5):
    """x_hat of (N, F) rows by the textbook formula, in float64."""
    mean = rows.mean(axis=axis, keepdims=True)
    return (rows - mean) / np.sqrt(rows.var(axis=axis, keepdims=True) + eps)


@settings(max_examples=40)
@given(B=st.integers(1, 5), T=st.integers(1, 6), F=st.integers(1, 5), seed=st.integers(0, 2 ** 16),
       data=st.data())
def test_random_shapes_and_lengths_against_the_formula(B, T, F, seed, data):
    lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    r = np.random.default_rng(seed)
    x, dout = r.standard_normal((B, T, F)) * 3, r.standard_normal((B, T, F))
    mask = valid(lengths, T)
    for layer, axis in ((LayerNorm(F, dtype=np.float64), 1), (BatchNorm(F, dtype=np.float64), 0)):
        if axis == 0 and lengths.sum() < 2:
            with pytest.raises(ValueError, match="more than one"):
                layer(x, lengths=lengths)
            continue
        y = layer(x, lengths=lengths)
        assert_close(y[mask], _reference(x[mask], axis), rtol=1e-9, atol=1e-9)
        assert not np.any(y[~mask])
        dx = layer.backward(dout)
        assert not np.any(dx[~mask]) and np.all(np.isfinite(dx))
        # the input gradient is orthogonal to what normalization removes: the mean (and the x_hat direction)
        assert_close(dx[mask].sum(axis=axis), np.zeros(dx[mask].sum(axis=axis).shape), atol=1e-9)
