"""Losses: finite-difference gradients with masks and sample weights, PyTorch values, masking semantics,
stability, bad input."""
import numpy as np
import pytest

from rnnfast.train import (MAE, MSE, BinaryCrossEntropyWithLogits, CrossEntropy, Huber, lengths_to_mask)

from gradcheck import assert_close, numeric_grad

B, T, C = 3, 4, 3
LENGTHS = np.array([2, 4, 1])
MASK = lengths_to_mask(LENGTHS, T)
SW = np.array([0.5, 2.0, 1.0])


def regression_problem(seed=0, shape=(B, T, 2)):
    r = np.random.default_rng(seed)
    return r.standard_normal(shape), r.standard_normal(shape)


def classification_problem(seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((B, T, C)) * 2, r.integers(0, C, (B, T))


ELEMENTWISE = [MSE(), MAE(), Huber(0.7), BinaryCrossEntropyWithLogits()]


def targets_for(loss, target):
    return 1 / (1 + np.exp(-target)) if isinstance(loss, BinaryCrossEntropyWithLogits) else target


@pytest.mark.parametrize("loss", ELEMENTWISE + [MSE(reduction="sum")], ids=repr)
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
@pytest.mark.parametrize("sw", [None, SW], ids=["nosw", "sw"])
def test_elementwise_gradients(loss, mask, sw):
    pred, target = regression_problem()
    target = targets_for(loss, target)
    value, grad = loss(pred, target, mask=mask, sample_weight=sw)
    assert grad.shape == pred.shape and grad.dtype == np.float64
    assert_close(grad, numeric_grad(lambda: loss(pred, target, mask=mask, sample_weight=sw)[0], pred))
    if mask is not None:
        assert not np.any(grad[~MASK])


@pytest.mark.parametrize("weight", [None, np.array([0.2, 1.0, 3.0])], ids=["noweight", "classweight"])
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
@pytest.mark.parametrize("sw", [None, SW], ids=["nosw", "sw"])
def test_cross_entropy_gradients(weight, mask, sw):
    logits, target = classification_problem()
    loss = CrossEntropy(weight=weight)
    value, grad = loss(logits, target, mask=mask, sample_weight=sw)
    assert_close(grad, numeric_grad(lambda: loss(logits, target, mask=mask, sample_weight=sw)[0], logits))
    if mask is not None:
        assert not np.any(grad[~MASK])


def test_mask_means_mean_over_valid_elements():
    pred, target = regression_problem()
    value, _ = MSE()(pred, target, mask=MASK)
    np.testing.assert_allclose(value, np.mean((pred - target)[MASK] ** 2))
    # padded values are ignored, whatever they are
    pred2 = pred.copy()
    pred2[~MASK] = 1e9
    assert MSE()(pred2, target, mask=MASK)[0] == pytest.approx(value, rel=1e-14)
    logits, y = classification_problem()
    v, _ = CrossEntropy()(logits, y, mask=MASK)
    v_valid, _ = CrossEntropy()(logits[MASK], y[MASK])
    assert v == pytest.approx(v_valid, rel=1e-14)
    # sample weights: a weighted mean over the valid elements
    v, _ = MAE()(pred, target, mask=MASK, sample_weight=SW)
    w = (MASK * SW[:, None])[..., None] * np.ones(2)
    assert v == pytest.approx(np.sum(w * np.abs(pred - target)) / np.sum(w), rel=1e-14)


def test_all_masked_gives_zero():
    pred, target = regression_problem()
    value, grad = MSE()(pred, target, mask=np.zeros((B, T), bool))
    assert value == 0.0 and not np.any(grad)


def test_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pred, target = regression_problem(1)
    pt = torch.from_numpy(pred).requires_grad_()
    tt = torch.from_numpy(target)
    prob = 1 / (1 + np.exp(-target))
    for ours, theirs, tgt in [(MSE(), F.mse_loss, target), (MAE(), F.l1_loss, target),
                              (Huber(0.7), lambda a, b: F.huber_loss(a, b, delta=0.7), target),
                              (BinaryCrossEntropyWithLogits(), F.binary_cross_entropy_with_logits, prob)]:
        pt.grad = None
        ref = theirs(pt, torch.from_numpy(tgt) if tgt is not target else tt)
        ref.backward()
        value, grad = ours(pred, tgt)
        assert value == pytest.approx(ref.item(), rel=1e-12), repr(ours)
        np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=repr(ours))
    logits, y = classification_problem(1)
    weight = np.array([0.2, 1.0, 3.0])
    y = y.copy()
    y[0, 1] = -100
    lt = torch.from_numpy(logits).requires_grad_()
    ref = F.cross_entropy(lt.permute(0, 2, 1), torch.from_numpy(y), weight=torch.from_numpy(weight),
                          ignore_index=-100)
    ref.backward()
    value, grad = CrossEntropy(weight=weight, ignore_index=-100)(logits, y)
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_float32_and_stability():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], np.float32)
    value, grad = CrossEntropy()(logits, np.array([0, 0]))
    assert np.isfinite(value) and value == pytest.approx(1e4, rel=1e-6)
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad))
    x = np.array([1e4, -1e4, 0.0], np.float32)
    value, grad = BinaryCrossEntropyWithLogits()(x, np.array([0.0, 1.0, 1.0]))
    assert value == pytest.approx((2e4 + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(grad, np.array([1, -1, -0.5]) / 3, rtol=1e-6)
    assert MSE()(np.ones(3, np.float32), np.zeros(3))[1].dtype == np.float32


def test_huber_pieces():
    value, grad = Huber(delta=1.0, reduction="sum")(np.array([0.5, 3.0, -3.0]), np.zeros(3))
    assert value == pytest.approx(0.125 + 2.5 + 2.5)
    np.testing.assert_array_equal(grad, [0.5, 1.0, -1.0])


def test_lengths_to_mask():
    np.testing.assert_array_equal(lengths_to_mask([2, 1], 3), [[True, True, False], [True, False, False]])
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        lengths_to_mask([4], 3)
    with pytest.raises(ValueError, match="1-D"):
        lengths_to_mask(2, 3)


def test_bad_input():
    pred, target = regression_problem()
    with pytest.raises(ValueError, match="prediction's shape"):
        MSE()(pred, target[:, :2])
    with pytest.raises(ValueError, match="leading part"):
        MSE()(pred, target, mask=np.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="boolean"):
        MSE()(pred, target, mask=np.full((B, T), 0.5))
    with pytest.raises(ValueError, match="non-negative"):
        MSE()(pred, target, sample_weight=[1, -1, 1])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        MSE()(pred, target, sample_weight=[1, 1])
    with pytest.raises(TypeError, match="real numbers"):
        MSE()(pred.astype(str), target)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BinaryCrossEntropyWithLogits()(pred, target)
    with pytest.raises(ValueError, match="delta"):
        Huber(delta=0)
    with pytest.raises(ValueError, match="reduction"):
        MSE(reduction="none")
    logits, y = classification_problem()
    with pytest.raises(TypeError, match="integer class indices"):
        CrossEntropy()(logits, y.astype(float))
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 3"):
        CrossEntropy()(logits, np.full((B, T), 3))
    with pytest.raises(ValueError, match="shape"):
        CrossEntropy()(logits, y[:, :2])
    with pytest.raises(ValueError, match="2 classes"):
        CrossEntropy(weight=[1.0, 2.0])(logits, y)
    with pytest.raises(ValueError, match="2-D"):
        CrossEntropy()(np.zeros(3), np.array(0))


@pytest.mark.parametrize("eps", [0.1, 0.6, 1.0])
@pytest.mark.parametrize("weight", [None, np.array([0.2, 1.0, 3.0])], ids=["noweight", "classweight"])
@pytest.mark.parametrize("mask,sw", [(None, None), (MASK, SW)], ids=["plain", "mask-sw"])
def test_label_smoothing_gradients(eps, weight, mask, sw):
    logits, target = classification_problem(3)
    loss = CrossEntropy(weight=weight, label_smoothing=eps)
    _, grad = loss(logits, target, mask=mask, sample_weight=sw)
    assert_close(grad, numeric_grad(lambda: loss(logits, target, mask=mask, sample_weight=sw)[0], logits))
    if mask is not None:
        assert not np.any(grad[~MASK])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.1, 0.45])
@pytest.mark.parametrize("weight", [None, np.array([0.2, 1.0, 3.0, 0.7, 1.5])], ids=["noweight", "classweight"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_label_smoothing_against_torch(dtype, eps, weight, reduction):
    """PyTorch's CrossEntropyLoss(label_smoothing=...), ignored targets and class weights included (with
    weights PyTorch smooths with -(eps / C) sum_c w_c log p_c and divides the mean by the targets' weights)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    logits, y = (rng.standard_normal((3, 6, 5)) * 2).astype(dtype), rng.integers(0, 5, (3, 6))
    y[0, 2] = y[2, 5] = -100
    lt = torch.from_numpy(logits).requires_grad_()
    ref = torch.nn.functional.cross_entropy(
        lt.permute(0, 2, 1), torch.from_numpy(y), ignore_index=-100, reduction=reduction, label_smoothing=eps,
        weight=None if weight is None else torch.from_numpy(weight.astype(dtype)))
    ref.backward()
    value, grad = CrossEntropy(weight=weight, ignore_index=-100, reduction=reduction, label_smoothing=eps)(logits, y)
    rtol, atol = (1e-5, 1e-7) if dtype == np.float32 else (1e-12, 1e-14)
    assert value == pytest.approx(ref.item(), rel=rtol) and grad.dtype == dtype
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=rtol, atol=atol)
    assert not np.any(grad[0, 2]) and not np.any(grad[2, 5])


def test_label_smoothing_zero_is_plain_cross_entropy_and_bad_values_refused():
    logits, target = classification_problem(5)
    a, ga = CrossEntropy()(logits, target, mask=MASK)
    b, gb = CrossEntropy(label_smoothing=0.0)(logits, target, mask=MASK)
    assert a == b and np.array_equal(ga, gb)
    # eps = 1: the uniform distribution, whatever the targets
    u1, _ = CrossEntropy(label_smoothing=1.0)(logits, target)
    u2, _ = CrossEntropy(label_smoothing=1.0)(logits, (target + 1) % C)
    assert u1 == pytest.approx(u2, rel=1e-14)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            CrossEntropy(label_smoothing=bad)
    assert "label_smoothing=0.2" in repr(CrossEntropy(label_smoothing=0.2))
