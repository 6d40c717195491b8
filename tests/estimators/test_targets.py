"""Encoding y (task, classes, scaling, per-step masks), class weights, predictions and scores."""
import numpy as np
import pytest

from rnnfast.estimators.targets import (TargetSpec, check_sample_weight, class_weights, encode_targets,
                                        predictions, probabilities, score_outputs)

F32 = np.dtype(np.float32)


def enc(y, n=None, t=3, lengths=None, **kw):
    kw.setdefault("return_sequences", "auto")
    return encode_targets(y, len(y) if n is None else n, t, lengths, dtype=F32, **kw)


def test_labels_become_sorted_class_indices():
    e = enc(np.array(["b", "a", "c", "a"]))
    assert e.spec.task == "classification" and e.spec.classes.tolist() == ["a", "b", "c"]
    assert e.y.tolist() == [1, 0, 2, 0] and e.spec.n_outputs == 3


def test_regression_targets_are_standardised():
    y = np.array([1.0, 3.5, 5.0, 7.0])
    e = enc(y)
    assert e.spec.task == "regression" and e.spec.y_1d and e.y.dtype == F32
    np.testing.assert_allclose(e.y[:, 0] * e.spec.y_scale + e.spec.y_mean, y, rtol=1e-6)
    out = e.y.astype(np.float64)
    np.testing.assert_allclose(predictions(out, e.spec), y, rtol=1e-6)


def test_per_step_targets_are_masked_past_each_end():
    y = [np.array([1, 2]), np.array([0, 1, 2])]
    e = enc(y, t=3, lengths=np.array([2, 3]))
    assert e.spec.per_step and e.mask.tolist() == [[True, True, False], [True, True, True]]
    assert e.valid().tolist() == [1, 2, 0, 1, 2]


def test_fixed_task_and_spec():
    assert enc(np.array([0.0, 1.0, 1.0]), task="classification").spec.classes.tolist() == [0.0, 1.0]
    assert enc(np.array([0, 1, 1]), task="regression").spec.task == "regression"
    spec = enc(np.array([0, 1, 1])).spec
    with pytest.raises(ValueError, match="fitted for classification"):
        enc(np.array([0.5, 1.5]), spec=spec, who="GRU")
    with pytest.raises(ValueError, match="label 3"):
        enc(np.array([0, 3]), spec=spec)


def test_y_none_and_lengths_mismatch():
    with pytest.raises(ValueError, match="requires y to be passed"):
        encode_targets(None, 2, 3, None, return_sequences="auto", dtype=F32)
    with pytest.raises(ValueError, match="3 sequences but y has 2"):
        enc(np.array([0, 1]), n=3)


def test_balanced_class_weights_come_from_the_targets():
    e = enc(np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(class_weights("balanced", e), [4 / 6, 2.0])
    np.testing.assert_array_equal(class_weights({1: 3.0}, e), [1.0, 3.0])
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        class_weights([1, 2], e)
    with pytest.raises(ValueError, match="regression"):
        class_weights("balanced", enc(np.array([0.5, 1.5])))


def test_sample_weight_checks():
    assert check_sample_weight(None, 3) is None
    assert check_sample_weight([1, 2, 3], 3).dtype == np.float64
    with pytest.raises(ValueError, match="shape"):
        check_sample_weight(np.ones(2), 3)
    with pytest.raises(ValueError, match="zero everywhere"):
        check_sample_weight(np.zeros(3), 3)
    with pytest.raises(TypeError, match="numeric"):
        check_sample_weight(np.array(["a", "b", "c"]), 3)


def test_probabilities_and_scores():
    out = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    p = probabilities(out.copy(), np.array([1, 1, 1]), per_step=False)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    spec = TargetSpec("classification", False, 2, classes=np.array(["a", "b"]))
    assert score_outputs(out, np.ones(3, int), ["a", "b", "b"], None, spec) == pytest.approx(2 / 3)
    assert score_outputs(out, np.ones(3, int), ["a", "b", "b"], [1, 1, 0], spec) == 1.0
    reg = TargetSpec("regression", False, 1, y_mean=np.array([0.0]), y_scale=np.array([1.0]))
    y = np.array([1.0, 2.0, 3.0])
    assert score_outputs(y[:, None], np.ones(3, int), y, None, reg) == 1.0
    assert score_outputs(np.full((3, 1), 2.0), np.ones(3, int), y, None, reg) == 0.0
