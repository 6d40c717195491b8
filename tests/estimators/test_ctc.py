"""The estimators' ``loss="ctc"``: label sequences of another length than X (rnnfast.estimators.ctc)."""
import numpy as np
import pytest

import rnnfast as rf


def _bursts(n, seed=0, labels="abcd"):
    """Each label shown as a noisy one-hot burst of 2-3 steps, bursts apart by 0-1 silent steps: X a list
    of (T_i, 5) arrays, y the strings of labels (1-4 of them)."""
    rng = np.random.default_rng(seed)
    X, Y = [], []
    for _ in range(n):
        labs = rng.integers(0, len(labels), rng.integers(1, 5))
        steps = []
        for k in labs:
            steps += [np.zeros(5)] * int(rng.integers(0, 2))
            v = np.zeros(5)
            v[k] = 1.0
            steps += [v + 0.1 * rng.standard_normal(5) for _ in range(int(rng.integers(2, 4)))]
        steps.append(np.zeros(5))
        X.append(np.array(steps, np.float32))
        Y.append("".join(labels[k] for k in labs))
    return X, Y


@pytest.fixture(scope="module")
def fitted():
    X, Y = _bursts(300)
    return rf.LSTM(hidden_size=32, bidirectional=True, loss="ctc", epochs=15, lr=0.01, random_state=0).fit(X, Y)


def test_learns_strings(fitted):
    X, Y = _bursts(100, seed=1)
    pred = fitted.predict(X)
    assert all(isinstance(p, str) for p in pred)
    assert fitted.score(X, Y) > 0.9
    assert rf.train.metrics.cer(Y, pred) == pytest.approx(1 - fitted.score(X, Y))
    assert fitted.task_ == "ctc" and fitted.classes_.tolist() == list("abcd") and fitted.per_step_
    beam = fitted.predict(X, beam_size=4)
    assert rf.train.metrics.cer(Y, beam) <= rf.train.metrics.cer(Y, pred) + 0.02
    assert fitted.history_["loss"][-1] < 0.2 * fitted.history_["loss"][0]


def test_label_lists_and_padded_arrays():
    X, Y = _bursts(120, seed=2)
    words = [[{"a": "one", "b": "two", "c": "three", "d": "four"}[c] for c in y] for y in Y]
    Xp = rf.train.pad_sequences(X)[0]  # zero padding: an (N, T, F) array runs all T steps
    m = rf.GRU(hidden_size=24, bidirectional=True, loss="ctc", epochs=3, lr=0.01, random_state=0).fit(Xp, words)
    pred = m.predict(Xp[:4])
    assert isinstance(pred[0], list) and all(isinstance(w, str) for p in pred for w in p)
    ids = [[1 + "abcd".index(c) for c in y] for y in Y]
    m = rf.RNN(hidden_size=8, loss="ctc", epochs=1, random_state=0).fit(X, ids)
    assert m.classes_.tolist() == [1, 2, 3, 4] and all(isinstance(v, int) for p in m.predict(X) for v in p)


def test_save_load_round_trip(fitted, tmp_path):
    X, _ = _bursts(20, seed=3)
    fitted.save(tmp_path / "ctc.rnnfast")
    back = rf.load(tmp_path / "ctc.rnnfast")
    assert back.predict(X) == fitted.predict(X)
    assert back.predict(X, beam_size=3) == fitted.predict(X, beam_size=3)
    assert back.task_ == "ctc" and back.classes_.tolist() == fitted.classes_.tolist()


def test_warm_start_keeps_the_labels():
    X, Y = _bursts(60, seed=4)
    m = rf.LSTM(hidden_size=8, loss="ctc", epochs=1, random_state=0, warm_start=True).fit(X, Y)
    m.fit(X, Y)
    assert m.n_epochs_ == 2
    with pytest.raises(ValueError, match="not among the labels"):
        m.fit(X[:1], ["z"])


@pytest.mark.parametrize("y, exc, match", [
    ("abc", TypeError, "list of label sequences"),
    (["ab"] * 3, ValueError, "label sequences"),          # 3 targets for 4 inputs
    ([[1.5], [1], [2], [1]], TypeError, "ints or strings"),
    ([["a"], [1], [2], [1]], ValueError, "mix ints and strings"),
    (["", "", "", ""], ValueError, "no labels"),
    (["aaaaaaa", "a", "b", "a"], ValueError, "needs at least 13 time steps"),
    ([None, "a", "b", "a"], TypeError, "y\\[0\\]"),
])
def test_bad_targets(y, exc, match):
    X = [np.zeros((6, 2), np.float32)] * 4
    with pytest.raises(exc, match=match):
        rf.LSTM(hidden_size=4, loss="ctc", epochs=1).fit(X, y)


def test_refusals(fitted):
    X, Y = _bursts(8, seed=5)
    with pytest.raises(ValueError, match="ctc"):
        rf.LSTMClassifier(hidden_size=4, loss="ctc", epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="class_weight"):
        rf.LSTM(hidden_size=4, loss="ctc", epochs=1).fit(X, Y, class_weight="balanced")
    with pytest.raises(AttributeError, match="ctc"):
        fitted.predict_proba(X)
    with pytest.raises(ValueError):
        fitted.predict(X, beam_size=0)
    with pytest.raises(ValueError, match="loss='ctc'"):
        rf.LSTM(hidden_size=4, loss="ctc", epochs=1).fit(X, Y).set_params(loss="auto", warm_start=True).fit(
            X, np.arange(8) % 2)
