"""Metrics: hand-computed values (scikit-learn's definitions) and bad input."""
import math

import numpy as np
import pytest

from rnnfast.train import accuracy, f1, mae, metrics, perplexity, r2, rmse


def test_accuracy():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert accuracy(["a", "b"], ["a", "a"]) == 0.5
    assert accuracy([1, 0, 1], [1, 1, 0], sample_weight=[2, 1, 1]) == 0.5
    assert accuracy([[1, 2], [3, 4]], [[1, 2], [3, 0]]) == 0.75  # per time step


def test_f1():
    y, p = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # tp 2, fp 1, fn 1
    assert f1(y, p) == pytest.approx(4 / 6)
    assert f1(y, p, pos_label=0) == pytest.approx(2 / 4)  # tp 1, fp 1, fn 1
    assert f1(y, p, average="macro") == pytest.approx((4 / 6 + 2 / 4) / 2)
    yt, yp = ["a", "b", "c", "c"], ["a", "c", "c", "b"]  # a: 1; b: 0; c: tp 1 fp 1 fn 1
    assert f1(yt, yp, average="macro") == pytest.approx((1 + 0 + 0.5) / 3)
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0, as scikit-learn
    assert f1(y, p, sample_weight=[1, 1, 1, 1, 2]) == pytest.approx(6 / 8)  # tp 3, fp 1, fn 1


def test_regression_metrics():
    assert mae([1.0, 2.0], [2.0, 4.0]) == 1.5
    assert rmse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(math.sqrt(2.5))
    assert mae([[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 3.0]], sample_weight=[1, 3]) == pytest.approx(1.0)
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50)) == pytest.approx(50)
    assert perplexity(1e6) == math.inf


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        mae([], [])
    with pytest.raises(ValueError, match="macro"):
        f1([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="average"):
        f1([0, 1], [0, 1], average="weighted")
    with pytest.raises(ValueError, match="pos_label"):
        f1(["a", "b"], ["a", "b"])
    with pytest.raises(TypeError, match="real numbers"):
        rmse(["a"], ["b"])
    with pytest.raises(ValueError, match="non-negative"):
        accuracy([1], [1], sample_weight=[-1])
    with pytest.raises(ValueError, match=">= 0"):
        perplexity(-1.0)
    with pytest.raises(TypeError, match="number"):
        perplexity("2")


# ---------------------------------------------------------------------------------------- streaming objects
def test_r2_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for shape in [(20,), (20, 3), (20, 7)]:
        yt = rng.standard_normal(shape)
        yp = yt + 0.5 * rng.standard_normal(shape)
        sw = rng.uniform(0.1, 2.0, 20)
        assert r2(yt, yp) == pytest.approx(sklearn_metrics.r2_score(yt, yp), rel=1e-12)
        assert r2(yt, yp, sample_weight=sw) == pytest.approx(
            sklearn_metrics.r2_score(yt, yp, sample_weight=sw), rel=1e-12)
    yt = np.c_[np.ones(5), np.arange(5.0)]  # a constant output: 1.0 when exact, 0.0 otherwise
    assert r2(yt, yt) == 1.0
    yp = yt.copy()
    yp[0, 0] = 2.0
    assert r2(yt, yp) == pytest.approx(sklearn_metrics.r2_score(yt, yp))
    assert math.isnan(r2([1.0], [1.0]))


@pytest.mark.parametrize("name", ["accuracy", "mae", "mse", "r2"])
def test_streaming_equals_one_shot(name):
    rng = np.random.default_rng(1)
    if name == "accuracy":
        yt, yp = rng.integers(0, 3, (30, 4)), rng.integers(0, 3, (30, 4))
    else:
        yt, yp = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    sw = rng.uniform(0.5, 1.5, 30)
    m = metrics.get(name)
    for i in range(0, 30, 7):  # uneven batches
        m.update(yt[i:i + 7], yp[i:i + 7], sample_weight=sw[i:i + 7])
    assert m.result() == pytest.approx(getattr(metrics, name)(yt, yp, sample_weight=sw), rel=1e-12)
    m.reset()
    assert math.isnan(m.result())


def test_accuracy_from_logits_and_masks():
    scores = np.array([[[0.1, 0.9], [2.0, -1.0]], [[0.0, 1.0], [0.3, 0.2]]])  # (B=2, T=2, C=2)
    labels = np.array([[1, 1], [1, 1]])
    m = metrics.get("accuracy", from_logits=True)
    m.update_masked(labels, scores, np.array([[True, True], [True, False]]), None)
    assert m.result() == pytest.approx(2 / 3)
    one = metrics.Accuracy(from_logits=True).update(np.array([1, 0]), np.array([[0.5], [-0.5]]))
    assert one.result() == 1.0


def test_get_and_resolve():
    assert isinstance(metrics.get("r2"), metrics.R2)
    m = metrics.MeanAbsoluteError(name="err")
    assert metrics.get(m) is m
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get("nope")
    with pytest.raises(TypeError, match="name or a Metric"):
        metrics.get(3)

    def user(out, target, mask, sw):
        return float(out.sum()), 2.0

    got = metrics.resolve(["accuracy", m, user, ])
    assert list(got) == ["accuracy", "err", "user"]
    assert isinstance(got["user"], metrics.FunctionMetric)
    got["user"].update(np.zeros(2), np.ones(2))
    assert got["user"].result() == 1.0
    assert list(metrics.resolve({"a": "mse"})) == ["a"]
    assert metrics.resolve(None) == {}
