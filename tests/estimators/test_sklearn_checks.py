"""scikit-learn's own estimator checks on the estimators it can check, and the tags it relies on.

``parametrize_with_checks`` runs on the six ``*Classifier`` / ``*Regressor`` classes: they take
scikit-learn's 2-D X (N univariate sequences). ``rnnfast.LSTM`` / ``GRU`` / ``RNN`` are not run:
their tags say ``two_d_array=False`` (they refuse a 2-D float X by design, asking for ``X[..., None]``),
and scikit-learn skips every check for such an estimator.

Checks expected to fail, each with its reason, are in :data:`EXPECTED_FAILURES` (they run, marked xfail).
"""
import warnings

import numpy as np
import pytest

import rnnfast as rf

sklearn = pytest.importorskip("sklearn", minversion="1.6")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

SMALL = dict(hidden_size=8, epochs=5, lr=0.05, random_state=0, n_threads=1)
CLASSES = (rf.LSTMClassifier, rf.LSTMRegressor, rf.GRUClassifier, rf.GRURegressor, rf.RNNClassifier,
           rf.RNNRegressor)

_TIME_AXIS = ("X's second axis is time here (a 2-D float X is N sequences of one feature per step): "
              "n_features_in_ is the features per step (1), not X.shape[1], and X with another number of "
              "columns is a valid input of another length, not an error")
_TOKENS = ("integer X is token ids, where 0 is padding and may only trail; the check's integer X holds 0 "
           "inside sequences, which is refused with a ValueError")

EXPECTED_FAILURES = {
    "check_n_features_in": _TIME_AXIS,
    "check_n_features_in_after_fitting": _TIME_AXIS,
    "check_estimators_partial_fit_n_features": _TIME_AXIS,
    "check_classifiers_train": _TIME_AXIS + " (it passes the accuracy > 0.83 part, then predicts on fewer "
                                            "columns and expects an error)",
    "check_estimators_dtypes": _TOKENS,
    "check_classifier_data_not_an_array": _TOKENS,
    "check_estimators_empty_data_messages": "X of shape (n, 0) is refused with a ValueError that names 0 time "
                                            "steps, not scikit-learn's '0 feature(s)' wording",
    "check_sample_weight_equivalence_on_dense_data": "a weight of 2 and a repeated sequence give the same loss "
                                                     "but not the same minibatches, shuffling and number of "
                                                     "optimizer steps, so not the same model",
    "check_regressors_train": "R^2 > 0.5 on make_regression's 10 features read as a 10-step sequence takes "
                              "about 50 epochs; this test affords 5",
}


def expected_failures(estimator):
    """The checks ``estimator`` is expected to fail (regressors skip the classifier-only ones)."""
    return dict(EXPECTED_FAILURES)


with warnings.catch_warnings():
    # "does not inherit from sklearn.base.BaseEstimator": by design (scikit-learn is optional)
    warnings.filterwarnings("ignore", message=".*does not inherit from", category=UserWarning)
    _checks = parametrize_with_checks([cls(**SMALL) for cls in CLASSES], expected_failed_checks=expected_failures)


@_checks
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------- tags
@pytest.mark.parametrize("cls", CLASSES)
def test_scikit_learn_sees_the_task(cls):
    from sklearn.base import is_classifier, is_regressor
    est = cls()
    assert is_classifier(est) == cls.__name__.endswith("Classifier")
    assert is_regressor(est) == cls.__name__.endswith("Regressor")


@pytest.mark.parametrize("cls", [rf.LSTM, rf.GRU, rf.RNN])
def test_task_from_y_estimators_are_neither(cls):
    from sklearn.base import is_classifier, is_regressor
    assert not is_classifier(cls()) and not is_regressor(cls())


def _sequences(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6, 2)).astype(np.float32)
    return X, np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")


def test_cross_val_score_stratifies_a_classifier():
    from sklearn.model_selection import StratifiedKFold, check_cv, cross_val_score
    X, y = _sequences()
    clf = rf.GRUClassifier(**SMALL)
    assert isinstance(check_cv(3, y, classifier=True), StratifiedKFold)
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_calibrated_classifier_cv_works():
    from sklearn.calibration import CalibratedClassifierCV
    X, y = _sequences(90)
    cal = CalibratedClassifierCV(rf.LSTMClassifier(**SMALL), cv=3).fit(X, y)
    proba = cal.predict_proba(X)
    assert proba.shape == (90, 2) and list(cal.classes_) == ["down", "up"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_unfitted_error_is_scikit_learns_too():
    from sklearn.exceptions import NotFittedError as SkNotFitted
    from rnnfast.estimators import NotFittedError
    with pytest.raises(SkNotFitted):
        rf.LSTMClassifier().predict(np.zeros((2, 3, 1)))
    with pytest.raises(NotFittedError):
        rf.LSTM().predict(np.zeros((2, 3, 1)))
