"""The estimators' ``normalization`` ("batch" | "layer" | None): the network it builds, fit / predict on
features, tokens and per-step targets, save / load / pickle (running statistics kept; files written before
the parameter load as None), warm start, streaming, generation and truncated BPTT."""
import pickle

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import io as rio
from rnnfast.estimators.generation import TokenStream

NORMS = {"batch": rf.nn.BatchNorm, "layer": rf.nn.LayerNorm}


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((int(rng.integers(2, 9)), 3)).astype(np.float32) for _ in range(n)]
    y = np.array(["up" if x[:, 0].sum() > 0 else "down" for x in X])
    return X, y


def kinds(est):
    return [type(rf.nn.unwrap(layer)).__name__ for layer in est.model_.layers]


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_network_has_a_norm_after_every_recurrent_layer(norm):
    X, y = data()
    est = rf.LSTM(hidden_size=6, num_layers=3, dropout=0.2, bidirectional=True, epochs=1, random_state=0,
                  normalization=norm).fit(X, y)
    name = NORMS[norm].__name__
    assert kinds(est) == ["LSTM", name, "Dropout", "LSTM", name, "Dropout", "LSTM", name, "LastStep", "Dropout",
                          "Linear"]
    lstms = [rf.nn.unwrap(layer) for layer in est.model_.layers if isinstance(rf.nn.unwrap(layer), rf.nn.LSTM)]
    assert [(m.input_size, m.num_layers, m.bidirectional) for m in lstms] == [(3, 1, True), (12, 1, True),
                                                                                (12, 1, True)]
    assert kinds(rf.LSTM(hidden_size=6, num_layers=3, epochs=1, random_state=0).fit(X, y)) == [
        "LSTM", "LastStep", "Linear"]  # None: as before


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("cls", [rf.LSTM, rf.GRU, rf.RNN])
def test_fit_predict_save_load_and_pickle(cls, norm, tmp_path):
    X, y = data()
    est = cls(hidden_size=8, num_layers=2, epochs=4, lr=0.02, random_state=0, normalization=norm).fit(X, y)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.all(np.isfinite(proba)) and est.score(X, y) > 0.5
    est.save(tmp_path / "m.rnnfast")
    loaded = rf.load(tmp_path / "m.rnnfast")
    assert loaded.normalization == norm and kinds(loaded) == kinds(est)
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)
    for k, v in est.model_.state_dict().items():  # the running statistics too
        np.testing.assert_array_equal(loaded.model_.state_dict()[k], v)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict_proba(X), proba)
    est.save(tmp_path / "small.rnnfast", include_optimizer=False)
    np.testing.assert_array_equal(rf.load(tmp_path / "small.rnnfast").predict_proba(X), proba)


def test_batchnorm_statistics_are_learnt_and_used_at_inference():
    X, y = data()
    est = rf.GRU(hidden_size=8, epochs=2, random_state=0, normalization="batch").fit(X, y)
    sd = est.model_.state_dict()
    assert int(sd["1.num_batches_tracked"]) == 4  # 48 sequences in batches of 32, two epochs
    assert not np.allclose(sd["1.running_mean"], 0) and not np.allclose(sd["1.running_var"], 1)
    # inference uses the running statistics: a sequence's prediction does not depend on its batch
    np.testing.assert_allclose(est.predict_proba(X[:1]), est.predict_proba(X)[:1], rtol=1e-5)


def test_loaded_and_continued_training_equals_uninterrupted(tmp_path):
    X, y = data()
    kw = dict(hidden_size=6, epochs=2, random_state=0, normalization="batch", dtype="float64")
    a = rf.LSTM(**kw).fit(X, y)
    a.save(tmp_path / "a.rnnfast")
    b = rf.load(tmp_path / "a.rnnfast").set_params(warm_start=True).fit(X, y)
    c = rf.LSTM(**dict(kw, epochs=4)).fit(X, y)
    np.testing.assert_allclose(b.predict_proba(X), c.predict_proba(X), rtol=1e-10)
    with pytest.raises(ValueError, match="normalization changed"):
        b.set_params(normalization="layer").fit(X, y)


def test_files_written_before_the_parameter_load_as_none(tmp_path):
    X, y = data()
    est = rf.RNN(hidden_size=5, epochs=1, random_state=0).fit(X, y)
    est.save(tmp_path / "new.rnnfast")
    kind, config, arrays, extra = rio.load_archive(tmp_path / "new.rnnfast")
    del config["normalization"], extra["fitted"]["arch"]["normalization"]
    rio.save_archive(tmp_path / "old.rnnfast", kind, config, arrays, extra)
    old = rf.load(tmp_path / "old.rnnfast")
    assert old.normalization is None
    np.testing.assert_array_equal(old.predict(X), est.predict(X))


def test_a_file_whose_arrays_do_not_fit_its_normalization_is_refused(tmp_path):
    X, y = data()
    rf.LSTM(hidden_size=5, epochs=1, random_state=0, normalization="layer").fit(X, y).save(tmp_path / "m.rnnfast")
    kind, config, arrays, extra = rio.load_archive(tmp_path / "m.rnnfast")
    for norm in ("batch", None):
        config["normalization"] = extra["fitted"]["arch"]["normalization"] = norm
        rio.save_archive(tmp_path / "bad.rnnfast", kind, config, arrays, extra)
        with pytest.raises(rio.FormatError, match="do not match the configuration"):
            rf.load(tmp_path / "bad.rnnfast")


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_per_step_tokens_streaming_and_generation(norm):
    text = (np.arange(30 * 12 + 1) % 5) + 1
    X, y = text[:-1].reshape(30, 12), text[1:].reshape(30, 12)
    est = rf.GRU(hidden_size=10, num_layers=2, embedding_dim=6, epochs=3, lr=0.03, batch_size=10, random_state=0,
                 normalization=norm, dtype="float64").fit(X, y)
    assert kinds(est)[:5] == ["Embedding", "GRU", NORMS[norm].__name__, "GRU", NORMS[norm].__name__]
    proba = est.predict_proba(X[:3])
    state = None
    for t in range(X.shape[1]):
        step, state = est.predict_proba_step(X[:3, t], state)
        np.testing.assert_allclose(step, proba[:, t], rtol=1e-10, atol=1e-12)
    assert isinstance(state.recurrent, list) and len(state.recurrent) == 2
    stream = TokenStream(est)
    first = stream.prime(np.array([1, 2, 3]))
    np.testing.assert_allclose(np.exp(first) / np.exp(first).sum(), est.predict_proba(np.array([[1, 2, 3]]))[0, -1],
                               rtol=1e-10)
    tokens = est.generate([1, 2], 5, random_state=0)
    assert len(tokens) == 5 and set(tokens) <= set(range(1, 6))


def test_truncated_bptt_and_regression():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 16, 2)).astype(np.float32)
    y = X[:, :, 0].cumsum(axis=1)
    for norm in ("batch", "layer"):
        est = rf.LSTMRegressor(hidden_size=8, epochs=3, tbptt=4, random_state=0, normalization=norm).fit(X, y)
        assert est.predict(X).shape == (40, 16) and np.isfinite(est.history_["loss"]).all()
