"""Metrics: hand-computed values (scikit-learn's definitions) and bad input."""
import math

import pytest

from rnnfast.train import accuracy, f1, mae, perplexity, rmse


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
