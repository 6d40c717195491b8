"""Linear.cross_entropy: the output layer fused with a softmax cross-entropy and both gradients, block by block;
against Linear + CrossEntropy + backward, finite differences (float64), PyTorch, and bad input."""
import numpy as np
import pytest

import rnnfast.nn.layers as layers
from rnnfast.nn import Linear
from rnnfast.train import CrossEntropy

from gradcheck import check_params, numeric_grad


def pair(dtype=np.float64, bias=True, F=6, C=11):
    return Linear(F, C, bias=bias, dtype=dtype, seed=0), Linear(F, C, bias=bias, dtype=dtype, seed=0)


def unfused(lin, x, t, reduction="mean"):
    value, d = CrossEntropy(reduction=reduction)(lin(x), t)
    return value, lin.backward(d)


@pytest.mark.parametrize("block", [1, 4, 7, 256])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])  # the bias gradient: numpy's sum on one thread, a product on two
def test_matches_linear_then_cross_entropy(block, reduction, bias, threads, monkeypatch):
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", block)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((23, 6)) * 3, rng.integers(0, 11, 23)
    fused, ref = pair(bias=bias)
    fused.grads["weight"] += 0.5  # gradients are added to
    ref.grads["weight"] += 0.5
    v, dx = fused.cross_entropy(x, t, reduction=reduction, n_threads=threads)
    v_ref, dx_ref = unfused(ref, x, t, reduction)
    assert v == pytest.approx(v_ref, rel=1e-13)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-15)
    for k in ref.grads:
        np.testing.assert_allclose(fused.grads[k], ref.grads[k], rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("block", [3, 256])
def test_float64_gradients_match_finite_differences(block, monkeypatch):
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", block)
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((10, 4)), rng.integers(0, 5, 10)
    lin = Linear(4, 5, dtype=np.float64, seed=1)
    _, dx = lin.cross_entropy(x, t)
    objective = lambda: CrossEntropy()(lin(x), t)[0]  # noqa: E731
    check_params(lin, objective, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dx, numeric_grad(objective, x), rtol=1e-6, atol=1e-9)


def test_float32_close_to_float64_and_to_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((300, 16)).astype(np.float32), rng.integers(0, 700, 300)  # two blocks of 256
    lin = Linear(16, 700, seed=4)
    v, dx = lin.cross_entropy(x, t)
    assert v.__class__ is float and dx.dtype == np.float32
    tl = torch.nn.Linear(16, 700)
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    tx = torch.from_numpy(x).requires_grad_()
    loss = torch.nn.functional.cross_entropy(tl(tx), torch.from_numpy(t))
    loss.backward()
    assert v == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(lin.grads["weight"], tl.weight.grad.numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(lin.grads["bias"], tl.bias.grad.numpy(), rtol=1e-4, atol=1e-8)


def test_extreme_logits_stay_finite():
    lin = Linear(2, 3, dtype=np.float32, seed=0)
    x = np.array([[1e4, -1e4], [-1e4, 1e4]], np.float32)
    v, dx = lin.cross_entropy(x, np.array([0, 2]))
    assert np.isfinite(v) and np.all(np.isfinite(dx)) and np.all(np.isfinite(lin.grads["weight"]))


def test_no_rows_and_scratch_reuse():
    lin = Linear(3, 5, dtype=np.float64, seed=0)
    v, dx = lin.cross_entropy(np.zeros((0, 3)), np.zeros(0, int))
    assert v == 0.0 and dx.shape == (0, 3) and not lin.grads["weight"].any()
    x, t = np.ones((4, 3)), np.array([0, 1, 2, 3])
    lin.cross_entropy(x, t)
    scratch = lin._scratch
    lin.cross_entropy(x[:2], t[:2])
    assert lin._scratch is scratch  # kept between calls
    lin.release_memory()
    assert lin._scratch is None


def test_bad_input():
    lin = Linear(3, 5, dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="integer class"):
        lin.cross_entropy(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        lin.cross_entropy(x, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        lin.cross_entropy(x, np.array([0, -1, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        lin.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="in_features"):
        lin.cross_entropy(np.ones((4, 2)), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="reduction"):
        lin.cross_entropy(x, np.array([0, 1, 2, 3]), reduction="none")


def test_float32_compiled_softmax_pass_matches_numpy_passes():
    """float32 blocks go through one compiled pass per row (vectorized exp of about one ulp, rows on
    threads): equal to the numpy passes to float32 rounding, the same for any thread count; a logit spread
    beyond 87 gives exact zeros (no subnormal probabilities), a NaN logit a NaN loss."""
    rng = np.random.default_rng(5)
    block = (rng.standard_normal((300, 997)) * 4).astype(np.float32)
    block[3, :500] -= 200  # far below the row's max
    t = rng.integers(0, 997, 300).astype(np.intp)
    t[3] = 900  # the target of row 3 is not among its far-below logits
    scale = np.float32(1 / 300)
    ref = block.copy()
    v_ref = layers._softmax_minus_onehot_np(ref, t, scale)
    outs = []
    for n in (1, 2):
        b = block.copy()
        outs.append((layers._softmax_minus_onehot_(b, t, scale, n), b))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    v, b = outs[0]
    assert v == pytest.approx(v_ref, rel=1e-6)
    np.testing.assert_allclose(b, ref, rtol=2e-6, atol=1e-12)
    assert np.all(b[3, :500] == 0)
    assert np.allclose(b.sum(axis=1), 0, atol=1e-7)  # softmax sums to one, minus the one-hot
    bad = block[:2].copy()
    bad[1, 7] = np.nan
    assert np.isnan(layers._softmax_minus_onehot_(bad, t[:2], scale, 1))


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("block", [4, 256])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("threads", [1, 2])
def test_label_smoothing_matches_unfused(eps, block, reduction, threads, monkeypatch):
    """The smoothed loss from the plain pass (CE + eps (z_t - mean z), softmax - onehot + eps onehot -
    eps / C) equals Linear + CrossEntropy(label_smoothing=eps) + backward, block by block."""
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", block)
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((23, 6)) * 3, rng.integers(0, 11, 23)
    fused, ref = pair()
    v, dx = fused.cross_entropy(x, t, reduction=reduction, label_smoothing=eps, n_threads=threads)
    v_ref, d = CrossEntropy(reduction=reduction, label_smoothing=eps)(ref(x), t)
    dx_ref = ref.backward(d)
    assert v == pytest.approx(v_ref, rel=1e-13)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-15)
    for k in ref.grads:
        np.testing.assert_allclose(fused.grads[k], ref.grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_label_smoothing_finite_differences_float32_and_torch():
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((10, 4)), rng.integers(0, 5, 10)
    lin = Linear(4, 5, dtype=np.float64, seed=1)
    _, dx = lin.cross_entropy(x, t, label_smoothing=0.2)
    objective = lambda: CrossEntropy(label_smoothing=0.2)(lin(x), t)[0]  # noqa: E731
    check_params(lin, objective, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dx, numeric_grad(objective, x), rtol=1e-6, atol=1e-9)
    torch = pytest.importorskip("torch")
    x32, t = rng.standard_normal((300, 16)).astype(np.float32), rng.integers(0, 40, 300)
    lin = Linear(16, 40, seed=4)
    v, dx = lin.cross_entropy(x32, t, label_smoothing=0.1)
    tl = torch.nn.Linear(16, 40)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin.named_parameters()[0][1]))
        tl.bias.copy_(torch.from_numpy(lin.named_parameters()[1][1]))
    xt = torch.from_numpy(x32).requires_grad_()
    ref = torch.nn.functional.cross_entropy(tl(xt), torch.from_numpy(t), label_smoothing=0.1)
    ref.backward()
    assert v == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(lin.grads["weight"], tl.weight.grad.numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="label_smoothing"):
        lin.cross_entropy(x32, t, label_smoothing=1.2)
