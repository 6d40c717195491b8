"""The *Classifier / *Regressor estimators, the task chosen from y by LSTM / GRU / RNN, and the
re-exports of rnnfast.models."""
import warnings

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.estimators import FloatLabelsWarning

FAST = dict(hidden_size=4, epochs=1, n_threads=1, random_state=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 2)).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(np.float64)  # 0.0 / 1.0


def test_float_whole_number_labels_warn_and_mean_regression(data):
    X, y = data
    with pytest.warns(FloatLabelsWarning, match="LSTM takes as regression"):
        m = rf.LSTM(**FAST).fit(X, y)
    assert m.task_ == "regression"
    assert issubclass(FloatLabelsWarning, UserWarning)


def test_real_floats_and_fixed_tasks_do_not_warn(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatLabelsWarning)
        rf.GRU(**FAST).fit(X, y + 0.5)
        rf.GRURegressor(**FAST).fit(X, y)
        rf.RNN(**FAST).fit(X, y.astype(int))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_classifier_takes_float_labels_as_classes(name, data):
    X, y = data
    clf = getattr(rf, name + "Classifier")(**FAST).fit(X, y)
    assert clf.task_ == "classification" and clf.classes_.tolist() == [0.0, 1.0]
    assert clf.predict(X).dtype == np.float64 and clf.predict_proba(X).shape == (40, 2)
    assert isinstance(clf, getattr(rf, name))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_regressor_takes_integers_as_numbers(name, data):
    X, y = data
    reg = getattr(rf, name + "Regressor")(**FAST).fit(X, y.astype(int) * 3)
    assert reg.task_ == "regression" and reg.predict(X).shape == (40,)
    assert not hasattr(reg, "predict_proba")
    with pytest.raises(ValueError, match="must be numbers"):
        getattr(rf, name + "Regressor")(**FAST).fit(X, np.array(["a", "b"] * 20))


def test_classifier_refuses_continuous_targets(data):
    X, y = data
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        rf.LSTMClassifier(**FAST).fit(X, y + 0.25)


def test_two_d_float_X_is_univariate_for_the_task_classes_only(data):
    X, y = data
    X2 = X[:, :, 0]
    a = rf.LSTMClassifier(**FAST).fit(X2, y)
    b = rf.LSTMClassifier(**FAST).fit(X2[..., None], y)
    np.testing.assert_array_equal(a.predict_proba(X2), b.predict_proba(X2[..., None]))
    assert a.n_features_in_ == 1
    ragged = [x[: 3 + i % 3] for i, x in enumerate(X2)]
    assert a.predict(ragged).shape == (40,)
    with pytest.raises(ValueError, match="X has shape"):
        rf.LSTM(**FAST).fit(X2, y.astype(int))


def test_column_labels_warn_and_are_read_as_1d(data):
    X, y = data
    from rnnfast.estimators import DataConversionWarning
    with pytest.warns(DataConversionWarning, match="column-vector"):
        m = rf.GRUClassifier(**FAST).fit(X, y[:, None])
    assert m.predict(X).shape == (40,)


def test_save_load_keeps_the_class(data, tmp_path):
    X, y = data
    clf = rf.RNNClassifier(nonlinearity="relu", **FAST).fit(X, y)
    clf.save(tmp_path / "c.rnnfast")
    back = rf.load(tmp_path / "c.rnnfast")
    assert type(back) is rf.RNNClassifier and back.get_params() == clf.get_params()
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_models_module_re_exports_the_old_names():
    from rnnfast import models
    for name in ("LSTM", "GRU", "RNN", "load", "NotFittedError", "LSTMClassifier", "GRURegressor"):
        assert getattr(models, name) is getattr(rf.estimators, name)
    assert models._RecurrentEstimator is rf.estimators.recurrent._RecurrentEstimator


def test_scikit_learn_stays_optional(data, tmp_path):
    """The estimators work with scikit-learn unimportable (tags are only read by scikit-learn)."""
    from _child import run_python  # (a child outside the checkout imports the rnnfast under test)

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import numpy as np, rnnfast as rf\n"
            "X = np.random.default_rng(0).standard_normal((20, 4, 2))\n"
            "m = rf.LSTMClassifier(hidden_size=3, epochs=1, random_state=0).fit(X, np.arange(20) % 2)\n"
            "assert m.predict(X).shape == (20,)\n"
            "try:\n    rf.LSTM().predict(X)\nexcept rf.estimators.NotFittedError:\n    print('ok')\n")
    out = run_python(["-c", code], cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
