"""Estimators rnnfast.LSTM / GRU / RNN: learning quality, tasks chosen from y, input forms, scikit-learn
conventions, reproducibility, save/load round trips, resumed training, Ctrl-C and bad input."""
import zipfile

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.io import FormatError, save_archive
from rnnfast.models import NotFittedError
from rnnfast.train import Callback

FAST = dict(n_threads=1, random_state=0)


def sign_task(n, rng, variable=False):
    """Is the sum of feature 0 over the sequence positive? (needs the whole sequence)"""
    if variable:
        X = [rng.standard_normal((t, 2)).astype(np.float32) for t in rng.integers(4, 16, n)]
        y = np.array(["pos" if x[:, 0].sum() > 0 else "neg" for x in X])
    else:
        X = rng.standard_normal((n, 12, 2)).astype(np.float32)
        y = np.where(X[:, :, 0].sum(axis=1) > 0, "pos", "neg")
    return X, y


def regression_task(n, rng):
    X = rng.standard_normal((n, 10, 2)).astype(np.float32)
    y = 2.0 * X[:, -5:, 0].mean(axis=1) + 0.5 * X[:, 0, 1] + 3.0
    return X, y


def copy_task(n, rng, T=15, delay=2):
    """Token ids 1..5; the target at step t is the input at step t - delay (0 before)."""
    X = rng.integers(1, 6, (n, T))
    y = np.zeros_like(X)
    y[:, delay:] = X[:, :-delay]
    return X, y


def same_state(a, b):
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def clf_data():
    rng = np.random.default_rng(0)
    return sign_task(300, rng)


@pytest.fixture(scope="module")
def fitted(clf_data):
    X, y = clf_data
    return rf.LSTM(hidden_size=12, epochs=3, lr=0.02, **FAST).fit(X, y)


# ---------------------------------------------------------------------------------------- learning
def test_classification_reaches_95_percent():
    rng = np.random.default_rng(0)
    X, y = sign_task(600, rng)
    Xt, yt = sign_task(300, rng)
    model = rf.LSTM(hidden_size=16, epochs=15, lr=0.02, **FAST).fit(X, y)
    assert model.task_ == "classification" and list(model.classes_) == ["neg", "pos"]
    assert model.score(Xt, yt) >= 0.95
    assert set(model.predict(Xt)) <= {"neg", "pos"}
    assert model.history_["accuracy"][-1] >= 0.95


def test_variable_length_classification_learns():
    rng = np.random.default_rng(1)
    X, y = sign_task(600, rng, variable=True)
    Xt, yt = sign_task(300, rng, variable=True)
    model = rf.GRU(hidden_size=16, epochs=15, lr=0.02, **FAST).fit(X, y)
    assert model.score(Xt, yt) >= 0.92


def test_regression_beats_the_mean_predictor():
    rng = np.random.default_rng(2)
    X, y = regression_task(600, rng)
    Xt, yt = regression_task(300, rng)
    model = rf.GRU(hidden_size=16, epochs=15, lr=0.02, **FAST).fit(X, y)
    assert model.task_ == "regression" and model.predict(Xt).shape == (300,)
    mse = np.mean((model.predict(Xt) - yt) ** 2)
    assert mse < 0.2 * np.var(yt)  # the mean predictor's MSE is var(y)
    assert model.score(Xt, yt) > 0.8


def test_per_step_task_with_tokens():
    rng = np.random.default_rng(3)
    X, y = copy_task(400, rng)
    Xt, yt = copy_task(200, rng)
    model = rf.LSTM(hidden_size=24, embedding_dim=8, epochs=15, lr=0.02, **FAST).fit(X, y)
    assert model.per_step_ and model.input_kind_ == "tokens" and model.vocab_size_ == 6
    assert model.predict(Xt).shape == yt.shape
    assert model.score(Xt, yt) >= 0.95


def test_tbptt_estimator_learns_the_copy_task():
    rng = np.random.default_rng(4)
    X, y = copy_task(200, rng, T=24)
    model = rf.LSTM(hidden_size=24, embedding_dim=8, epochs=12, lr=0.02, tbptt=4, **FAST).fit(X, y)
    assert model.score(X, y) >= 0.95


# ---------------------------------------------------------------------------------------- tasks and inputs
def test_binary_proba_has_two_columns_following_classes(fitted, clf_data):
    X, _ = clf_data
    proba = fitted.predict_proba(X[:7])
    assert proba.shape == (7, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(axis=1)], fitted.predict(X[:7]))


@pytest.mark.parametrize("labels", [np.array([3, 7, 11]), np.array(["a", "bb", "c"]), np.array([True, False, True])])
def test_labels_of_any_type(labels):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5, 2)).astype(np.float32)
    y = labels[rng.integers(0, labels.size, 30)] if labels.dtype != bool else rng.integers(0, 2, 30).astype(bool)
    m = rf.RNN(hidden_size=4, epochs=1, **FAST).fit(X, y)
    np.testing.assert_array_equal(m.classes_, np.unique(y))
    assert m.predict(X).dtype == y.dtype
    assert m.predict_proba(X).shape == (30, np.unique(y).size)


def test_multi_output_regression_and_proba_refused():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3)).astype(np.float32)
    y = np.stack([X[:, :, 0].sum(1), X[:, :, 1].mean(1)], axis=1)
    m = rf.LSTM(hidden_size=6, epochs=2, return_sequences=False, **FAST).fit(X, y)
    assert m.n_outputs_ == 2 and m.predict(X).shape == (40, 2)
    with pytest.raises(AttributeError, match="classification"):
        m.predict_proba(X)


def test_per_step_variable_length_lists():
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((t, 2)).astype(np.float32) for t in (3, 7, 5, 1, 6)] * 4
    y = [np.cumsum(x[:, 0]) for x in X]
    m = rf.LSTM(hidden_size=6, epochs=2, **FAST).fit(X, y)
    assert m.per_step_ and m.task_ == "regression"
    pred = m.predict(X)
    assert isinstance(pred, list) and [p.shape for p in pred[:5]] == [(3,), (7,), (5,), (1,), (6,)]
    assert np.isfinite(m.score(X, y))
    ylab = [(x[:, 0] > 0).astype(int) for x in X]
    c = rf.GRU(hidden_size=6, epochs=1, **FAST).fit(X, ylab)
    proba = c.predict_proba(X)
    assert [p.shape for p in proba[:2]] == [(3, 2), (7, 2)]


def test_token_lists_and_padded_token_arrays_agree():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 9, t)) for t in (4, 2, 6, 3)] * 5
    y = np.array([0, 1, 1, 0] * 5)
    padded = np.zeros((len(seqs), 6), np.int64)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    a = rf.LSTM(hidden_size=6, epochs=2, **FAST).fit(seqs, y)
    b = rf.LSTM(hidden_size=6, epochs=2, **FAST).fit(padded, y)
    assert same_state(a, b)
    np.testing.assert_array_equal(a.predict_proba(seqs), b.predict_proba(padded))
    assert a.n_features_in_ == 1 and a.vocab_size_ == 9


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_bidirectional_stacked_pooling(pooling, clf_data):
    X, y = clf_data
    m = rf.GRU(hidden_size=4, num_layers=2, bidirectional=True, dropout=0.1, pooling=pooling, epochs=1,
               **FAST).fit(X[:64], y[:64])
    assert m.predict(X[:5]).shape == (5,)


def test_sample_and_class_weights(clf_data):
    X, y = clf_data
    a = rf.LSTM(hidden_size=4, epochs=1, **FAST).fit(X, y)
    b = rf.LSTM(hidden_size=4, epochs=1, **FAST).fit(X, y, sample_weight=np.full(len(y), 2.0))
    assert same_state(a, b)  # a constant weight changes nothing (a power of two: exactly)
    c = rf.LSTM(hidden_size=4, epochs=1, **FAST).fit(X, y, class_weight={"pos": 5.0})
    assert not same_state(a, c)
    rf.LSTM(hidden_size=4, epochs=1, **FAST).fit(X, y, class_weight="balanced")
    with pytest.raises(ValueError, match="not among the classes"):
        rf.LSTM(hidden_size=4, epochs=1, **FAST).fit(X, y, class_weight={"zero": 2.0})


def test_validation_and_early_stopping(clf_data):
    X, y = clf_data
    m = rf.LSTM(hidden_size=6, epochs=30, lr=0.05, validation_split=0.2, early_stopping=True, patience=1,
                **FAST).fit(X, y)
    assert {"val_loss", "val_accuracy"} <= set(m.history_)
    assert m.n_epochs_ == len(m.history_["loss"]) < 30
    m2 = rf.LSTM(hidden_size=6, epochs=2, **FAST).fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert len(m2.history_["val_accuracy"]) == 2


# ---------------------------------------------------------------------------------------- scikit-learn
def test_get_set_params_round_trip():
    m = rf.LSTM(hidden_size=7, lr=np.float64(0.01), random_state=3)
    params = m.get_params()
    assert params["hidden_size"] == 7 and params["lr"] is m.lr and "n_threads" in params
    assert set(params) - {"proj_size"} | {"reset_after"} == set(rf.GRU().get_params())
    assert set(rf.RNN().get_params()) == set(params) - {"proj_size"} | {"nonlinearity"}
    assert m.set_params(epochs=3, optimizer="sgd") is m and m.epochs == 3
    with pytest.raises(ValueError, match="Invalid parameter 'hiden_size'"):
        m.set_params(hiden_size=3)
    with pytest.raises(TypeError):
        rf.LSTM(hiden_size=3)
    assert repr(m) == "LSTM(epochs=3, hidden_size=7, lr=0.01, optimizer='sgd', random_state=3)"


def test_clone_like_reconstruction_gives_identical_fits(clf_data):
    X, y = clf_data
    m = rf.LSTM(hidden_size=5, epochs=1, **FAST)
    clone = type(m)(**m.get_params())
    assert clone.get_params() == m.get_params()
    m.fit(X, y)
    clone.fit(X, y)
    assert same_state(m, clone)
    assert not hasattr(type(m)(**m.get_params()), "model_")  # parameters only, nothing fitted


def test_random_state_gives_bit_identical_runs(clf_data):
    X, y = clf_data
    kw = dict(hidden_size=6, epochs=2, dropout=0.2, num_layers=2, validation_split=0.2, n_threads=1)
    a = rf.LSTM(random_state=11, **kw).fit(X, y)
    b = rf.LSTM(random_state=11, **kw).fit(X, y)
    c = rf.LSTM(random_state=12, **kw).fit(X, y)
    assert same_state(a, b) and a.history_ == b.history_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not same_state(a, c)


def test_partial_fit_equals_fit(clf_data):
    X, y = clf_data
    a = rf.GRU(hidden_size=6, epochs=3, **FAST).fit(X, y)
    b = rf.GRU(hidden_size=6, **FAST)
    for _ in range(3):
        b.partial_fit(X, y)
    assert same_state(a, b) and a.history_ == b.history_
    c = rf.GRU(hidden_size=6, **FAST).partial_fit(X[:5], y[:5], classes=["neg", "pos", "zero"])
    assert list(c.classes_) == ["neg", "pos", "zero"]
    with pytest.raises(ValueError, match="classes differs"):
        c.partial_fit(X, y, classes=["a", "b"])


def test_warm_start_refuses_architecture_change(clf_data):
    X, y = clf_data
    m = rf.LSTM(hidden_size=4, epochs=1, warm_start=True, **FAST).fit(X, y)
    m.set_params(hidden_size=5)
    with pytest.raises(ValueError, match="hidden_size changed"):
        m.fit(X, y)
    m.set_params(warm_start=False).fit(X, y)  # a fresh fit is fine
    assert m.model_.layers[0].hidden_size == 5


def test_with_scikit_learn(clf_data):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    X, y = clf_data
    m = rf.LSTM(hidden_size=4, epochs=1, **FAST)
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a * 0.5)),
                     ("rnn", rf.GRU(hidden_size=4, epochs=1, **FAST))])
    pipe.fit(X, y)
    assert pipe.predict(X[:3]).shape == (3,) and 0 <= pipe.score(X, y) <= 1
    gs = GridSearchCV(rf.LSTM(epochs=1, **FAST), {"hidden_size": [2, 4]}, cv=2).fit(X, y)
    assert gs.best_params_["hidden_size"] in (2, 4) and hasattr(gs.best_estimator_, "model_")
    del sklearn


# ---------------------------------------------------------------------------------------- save / load
def test_save_load_bit_identical(fitted, clf_data, tmp_path):
    X, _ = clf_data
    path = tmp_path / "model.rnnfast"
    fitted.save(path)
    loaded = rf.load(path)
    assert type(loaded) is rf.LSTM and loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.history_ == fitted.history_ and loaded.n_epochs_ == fitted.n_epochs_
    assert loaded.classes_.dtype == fitted.classes_.dtype


@pytest.mark.parametrize("make", [
    lambda rng: (rng.integers(1, 9, (30, 6)), rng.integers(0, 3, 30)),                      # tokens, int labels
    lambda rng: (rng.standard_normal((30, 6, 2)), rng.standard_normal((30, 2))),             # 2-output regression
    lambda rng: (rng.standard_normal((30, 6, 2)), rng.random(30) > 0.5),                     # bool labels
    lambda rng: (rng.standard_normal((30, 6, 2)), rng.choice(np.array(["x", "y"], dtype=object), 30)),
    lambda rng: (rng.integers(1, 5, (30, 6)), rng.integers(0, 4, (30, 6))),                 # per step
])
def test_round_trips_keep_types(make, tmp_path):
    rng = np.random.default_rng(0)
    X, y = make(rng)
    m = rf.RNN(hidden_size=4, epochs=1, nonlinearity="relu", **FAST).fit(X, y)
    m.save(tmp_path / "m.rnnfast")
    n = rf.load(tmp_path / "m.rnnfast")
    a, b = m.predict(X), n.predict(X)
    assert a.dtype == b.dtype and np.array_equal(a, b)
    if m.task_ == "classification":
        assert [type(v) for v in n.classes_.tolist()] == [type(v) for v in m.classes_.tolist()]


def test_resumed_training_equals_uninterrupted(clf_data, tmp_path):
    X, y = clf_data
    kw = dict(hidden_size=6, lr=0.01, dropout=0.2, num_layers=2, validation_split=0.2, **FAST)
    full = rf.LSTM(epochs=4, **kw).fit(X, y)
    half = rf.LSTM(epochs=2, **kw).fit(X, y)
    half.save(tmp_path / "half.rnnfast")
    resumed = rf.load(tmp_path / "half.rnnfast").set_params(warm_start=True).fit(X, y)
    assert same_state(full, resumed) and full.history_ == resumed.history_ and resumed.n_epochs_ == 4
    # partial_fit after a load continues the same way
    p = rf.LSTM(**dict(kw, validation_split=0.0))
    p.partial_fit(X, y)
    p.save(tmp_path / "p.rnnfast")
    q = rf.load(tmp_path / "p.rnnfast")
    q.partial_fit(X, y)
    ref = rf.LSTM(epochs=2, **dict(kw, validation_split=0.0)).fit(X, y)
    assert same_state(q, ref)
    np.testing.assert_array_equal(q.optimizer_.state["0.weight_hh_l0"]["exp_avg"],
                                  ref.optimizer_.state["0.weight_hh_l0"]["exp_avg"])


def test_damaged_and_foreign_files(fitted, tmp_path):
    good = tmp_path / "good.rnnfast"
    fitted.save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.rnnfast").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.rnnfast").write_bytes(b"\x00garbage" * 100)
    np.save(tmp_path / "array.npy", np.zeros(3))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    save_archive(tmp_path / "weights.rnnfast", "model.state_dict", {}, {"w": np.zeros(2)})
    for name in ("trunc.rnnfast", "junk.rnnfast", "array.npy", "other.zip", "weights.rnnfast"):
        with pytest.raises(FormatError):
            rf.load(tmp_path / name)
    # a well-formed file whose estimator state is inconsistent
    from rnnfast.io import load_archive
    kind, config, arrays, extra = load_archive(good)
    arrays.pop(next(iter(arrays)))
    save_archive(tmp_path / "bad.rnnfast", kind, config, arrays, extra)
    with pytest.raises(FormatError, match="do not match the configuration"):
        rf.load(tmp_path / "bad.rnnfast")
    config["no_such_param"] = 1
    save_archive(tmp_path / "bad2.rnnfast", kind, config, arrays, extra)
    with pytest.raises(FormatError, match="unexpected"):
        rf.load(tmp_path / "bad2.rnnfast")
    with pytest.raises(FileNotFoundError):
        rf.load(tmp_path / "missing.rnnfast")


# ---------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_leaves_a_usable_model(clf_data):
    X, y = clf_data

    class CtrlC(Callback):
        def on_batch_end(self, batch, logs=None):
            if self.trainer.history.optimizer_steps == 15:  # during the second epoch
                raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted"):
        m = rf.LSTM(hidden_size=6, epochs=5, **FAST).fit(X, y, callbacks=[CtrlC()])
    assert m.n_epochs_ == 1 and len(m.history_["loss"]) == 1
    assert m.predict(X).shape == (len(y),) and np.all(np.isfinite(m.predict_proba(X)))
    assert all(np.all(np.isfinite(v)) for v in m.model_.state_dict().values())


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("X, y, match", [
    (np.zeros((5, 4, 2)), np.zeros(4), "5 sequences but y has 4"),
    (np.zeros((0, 4, 2)), np.zeros(0), "X is empty"),
    ([], [], "X is empty"),
    (np.zeros((3, 4, 2)), [], "y is empty"),
    (np.full((3, 4, 2), np.nan), np.arange(3), "NaN or infinity"),
    (np.zeros((3, 4, 2)), np.array([0.0, np.nan, 1.0]), "y contains NaN"),
    (np.zeros((3, 4, 2)), np.array([0.0, np.inf, 1.0]), "y contains NaN"),
    (np.zeros((3, 4)), np.arange(3), "X has shape"),
    (np.zeros((3, 4, 2, 1)), np.arange(3), "must be 3-D"),
    (np.zeros((3, 4, 2)), np.zeros(3, int), "single class"),
    (np.array([[1, 2], [0, 3]]), np.arange(2), "before its end"),
    ([[1, 0, 2]], [1], "reserved for padding"),
    ([np.zeros((2, 2)), np.zeros((0, 2))], [0, 1], "empty"),
    (np.zeros((3, 4, 2)), np.array([None, "a", "b"], dtype=object), "NaN or None"),
])
def test_bad_input_errors(X, y, match):
    with pytest.raises(ValueError, match=match):
        rf.LSTM(epochs=1, **FAST).fit(X, y)


@pytest.mark.parametrize("params, match", [
    (dict(optimizer="adamm"), "optimizer must be one of"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(loss="mse"), "regression"),
    (dict(dtype="float16"), "dtype"),
    (dict(momentum=0.9), "momentum applies"),
    (dict(tbptt=5, bidirectional=True), "unidirectional"),
    (dict(validation_split=0.001), "validation_split"),
])
def test_bad_options(params, match, clf_data):
    X, y = clf_data
    with pytest.raises(ValueError, match=match):
        rf.LSTM(epochs=1, **dict(FAST, **params)).fit(X, y)


def test_use_before_fit_and_mismatched_input(fitted, clf_data):
    X, y = clf_data
    for method in ("predict", "predict_proba", "score", "save"):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(rf.GRU(), method)(*((X, y) if method == "score" else ("x",) if method == "save" else (X,)))
    with pytest.raises(ValueError, match="X has 3 features, but LSTM is expecting 2"):
        fitted.predict(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="fitted on features"):
        fitted.predict(np.ones((2, 5), np.int64))
    with pytest.raises(ValueError, match="fitted for classification"):
        fitted.set_params(warm_start=True).fit(X, np.zeros(len(X)))
    fitted.set_params(warm_start=False)
    with pytest.raises(ValueError, match="label 'maybe'"):
        fitted.partial_fit(X[:2], np.array(["pos", "maybe"]))
    tok = rf.LSTM(hidden_size=3, epochs=1, **FAST).fit(np.array([[1, 2], [3, 4]]), [0, 1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.predict(np.array([[1, 9]]))
    with pytest.raises(ValueError, match="sample_weight"):
        rf.LSTM(epochs=1, **FAST).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="class_weight is for classification"):
        rf.LSTM(epochs=1, **FAST).fit(X, np.zeros(len(X)) + np.arange(len(X)), class_weight={0: 1.0})


def test_y_as_python_lists(clf_data):
    X, y = clf_data
    a = rf.LSTM(hidden_size=3, epochs=1, **FAST).fit(X, list(y))            # list of numpy str scalars
    b = rf.LSTM(hidden_size=3, epochs=1, **FAST).fit(X, [str(v) for v in y])
    assert same_state(a, b) and list(a.classes_) == ["neg", "pos"]
