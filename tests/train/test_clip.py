"""Gradient clipping by global norm and by value, against hand values and torch.nn.utils."""
import math

import numpy as np
import pytest

from rnnfast.nn import Linear
from rnnfast.train import clip_grad_norm, clip_grad_value


def test_clip_norm_by_hand():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 0])
    np.testing.assert_allclose(grads["b"], [[4 / (5 + 1e-6)]])
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])  # under the limit: untouched
    g = np.array([-3.0, 2.0], np.float32)
    assert clip_grad_norm([g], 1.5, norm_type=math.inf) == 3.0
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.array([-3.0, 2.0]) * 1.5 / (3 + 1e-6), rtol=1e-6)


def test_clip_accepts_models_and_triples():
    lin = Linear(2, 2)
    lin.grads["weight"][...] = 10
    assert clip_grad_norm(lin, 1.0) == pytest.approx(20.0)
    assert np.sqrt(sum(np.sum(g.astype(float) ** 2) for g in lin.grads.values())) == pytest.approx(1.0, rel=1e-5)
    triples = [("w", np.zeros(2), np.array([5.0, -5.0]))]
    clip_grad_value(triples, 2.0)
    np.testing.assert_array_equal(triples[0][2], [2.0, -2.0])


def test_against_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    for norm_type in (2.0, 1.0, math.inf):
        grads = [r.standard_normal((3, 4)), r.standard_normal(5)]
        tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for t, g in zip(tps, grads):
            t.grad = torch.from_numpy(g.copy())
        ref = torch.nn.utils.clip_grad_norm_(tps, 0.7, norm_type=norm_type)
        norm = clip_grad_norm(grads, 0.7, norm_type=norm_type)
        assert norm == pytest.approx(ref.item(), rel=1e-12)
        for t, g in zip(tps, grads):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    g = r.standard_normal((3, 4)) * 3
    t = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_([t], 1.1)
    clip_grad_value({"g": g}, 1.1)
    np.testing.assert_array_equal(g, t.grad.numpy())


def test_bad_input_and_nonfinite():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([np.ones(2)], 0.0)
    with pytest.raises(TypeError, match="float numpy arrays"):
        clip_grad_norm([[1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match="clip_value"):
        clip_grad_value([np.ones(2)], "1")
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm([np.array([np.inf, 1.0])], 1.0, error_if_nonfinite=True)
    assert clip_grad_norm([], 1.0) == 0.0


def test_float32_norm_is_summed_in_float64():
    """float32 squares of 1e20 overflow float32 (3.4e38): the norm must still be finite and exact."""
    g = np.full(100_000, 1e20, np.float32)  # spans several of clip's float64 chunks
    h = np.full((3, 5), -2e19, np.float32)
    want = math.sqrt(100_000 * float(np.float32(1e20)) ** 2 + 15 * float(np.float32(-2e19)) ** 2)
    norm = clip_grad_norm([g, h], 1.0)
    assert norm == pytest.approx(want, rel=1e-12)
    assert np.all(np.isfinite(g)) and g.dtype == np.float32
    total = math.sqrt(float(np.sum(g.astype(np.float64) ** 2)) + float(np.sum(h.astype(np.float64) ** 2)))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_fit_with_a_float32_norm_past_float32_range_still_learns():
    """fit(clip_norm=...) stopped with "the loss became nan" when the float32 sum of squares overflowed."""
    from rnnfast.train import SGD, Trainer

    lin = Linear(4, 3, seed=0)
    w0 = lin.state_dict()["weight"]

    def huge_loss(out, y, mask=None, sample_weight=None):
        return 1.0, np.full(out.shape, 1e19, out.dtype)

    trainer = Trainer(lin, huge_loss, SGD(lin, lr=0.1), clip_norm=1.0)
    trainer.fit(np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32), batch_size=8, epochs=2)
    assert trainer.stop_reason is None, trainer.stop_message
    step = lin.state_dict()["weight"] - w0
    assert np.all(np.isfinite(step)) and 0 < np.linalg.norm(step.astype(np.float64)) <= 2 * 0.1 * (1 + 1e-5)


def test_global_norm_of_large_arrays_compiled_pass():
    """The sum of squares (float32: the compiled pass, threads over large arrays; float64: numpy's dot)
    equals the exact float64 sum to rounding and gives the same value for any thread count."""
    import math

    import rnnfast as rf
    from rnnfast.train.clip import _sum_squares
    r = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a = (r.standard_normal((700, 301)) * 1e-3).astype(dtype)
        exact = math.fsum(float(x) ** 2 for x in a.ravel().astype(np.float64))
        old = rf.get_num_threads()
        try:
            got = []
            for n in (1, 2):
                rf.set_num_threads(n)
                got.append(_sum_squares(a))
        finally:
            rf.set_num_threads(old)
        assert got[0] == got[1]
        assert abs(got[0] - exact) <= 1e-12 * exact
        assert abs(_sum_squares(a[:, ::2]) - math.fsum(float(x) ** 2 for x in a[:, ::2].ravel())) <= 1e-12 * exact
        from rnnfast._kernels import _optim
        assert _optim.sum_squares(a, 1) == _optim.sum_squares(a, 2) == pytest.approx(exact, rel=1e-12)
