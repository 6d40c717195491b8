"""rf.Seq2Seq: fit / predict / score on token sequences, beam search, early stopping, saving, bad input."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast.estimators import NotFittedError
from rnnfast.io import FormatError, save_archive
from rnnfast.nn.seq2seq import beam_decode, greedy_decode, sequence_log_prob

LETTERS = list("abcdefg")


def reverse_task(n, seed=0):
    rng = np.random.default_rng(seed)
    X = [list(rng.choice(LETTERS, rng.integers(2, 7))) for _ in range(n)]
    return X, [x[::-1] for x in X]


def small(**kw):
    params = dict(hidden_size=48, embedding_dim=16, epochs=6, batch_size=32, lr=8e-3, random_state=0)
    params.update(kw)
    return rf.Seq2Seq(**params)


@pytest.fixture(scope="module")
def reverser():
    X, Y = reverse_task(1200)
    return small().fit(X, Y)


def test_learns_to_reverse_quickly(reverser):
    X, Y = reverse_task(200, seed=1)
    assert reverser.score(X, Y) > 90
    pred = reverser.predict(X[:5])
    assert all(isinstance(p, list) and set(p) <= set(LETTERS) for p in pred)
    assert reverser.history_["loss"][-1] < 0.2 * reverser.history_["loss"][0]
    assert reverser.n_epochs_ == 6 and set(reverser.source_tokens_) == set(LETTERS)


def test_any_hashable_tokens_and_strings():
    X = ["abcde", "bagfe", "cabbage", "cadge"] * 40
    Y = [[ord(c) for c in x] for x in X]  # int tokens
    m = small(epochs=8, attention="bahdanau", cell="gru").fit(X, Y)
    assert m.predict(["abcde"])[0] == [97, 98, 99, 100, 101]
    assert m.score(X[:4], Y[:4]) > 99
    m.predict([["z", "a"]])  # an unseen token is unknown, not an error


def test_beam_size_one_equals_greedy_and_beam_is_no_worse(reverser):
    X, _ = reverse_task(60, seed=2)
    assert reverser.predict(X, beam_size=1) == reverser.predict(X)
    m = reverser.model_
    index = {t: i + 4 for i, t in enumerate(reverser.source_tokens_)}
    src, lengths = rf.train.pad_sequences([np.array([index[t] for t in x]) for x in X])
    g, glp = greedy_decode(m, src, lengths, max_length=12)
    b, blp = beam_decode(m, src, lengths, beam_size=4, max_length=12)
    assert np.all(blp >= glp - 1e-6)
    np.testing.assert_allclose(blp, sequence_log_prob(m, src, lengths, b), rtol=1e-4, atol=1e-4)
    assert len(reverser.predict(X, beam_size=3)) == len(X)


def test_ensemble_decodes_with_every_member(reverser):
    X, Y = reverse_task(80, seed=4)
    assert rf.Seq2SeqEnsemble([reverser]).predict(X) == reverser.predict(X)
    assert rf.Seq2SeqEnsemble([reverser]).predict(X, beam_size=3) == reverser.predict(X, beam_size=3)
    other = small(cell="gru", attention="bahdanau", hidden_size=32, epochs=3, random_state=1).fit(*reverse_task(1200))
    ens = rf.Seq2SeqEnsemble([reverser, other])
    index = {t: i + 4 for i, t in enumerate(reverser.source_tokens_)}
    src, lengths = rf.train.pad_sequences([np.array([index[t] for t in x]) for x in X])
    for beam in (1, 3):
        if beam == 1:
            ids, _ = greedy_decode([reverser.model_, other.model_], src, lengths, max_length=17)
        else:
            ids, _ = beam_decode([reverser.model_, other.model_], src, lengths, beam_size=3, max_length=17)
        want = [[reverser.target_tokens_[i - 4] for i in seq] for seq in ids]
        assert ens.predict(X, beam_size=beam) == want
    assert ens.score(X, Y) > 80 and "2 estimators" in repr(ens)


def test_ensemble_bad_members(reverser):
    with pytest.raises(ValueError, match="non-empty"):
        rf.Seq2SeqEnsemble([])
    with pytest.raises(TypeError, match=r"estimators\[1\]"):
        rf.Seq2SeqEnsemble([reverser, rf.LSTM()])
    with pytest.raises(NotFittedError):
        rf.Seq2SeqEnsemble([reverser, small()])
    X, Y = reverse_task(100, seed=5)
    other = small(epochs=1).fit([x + ["z"] for x in X], Y)
    with pytest.raises(ValueError, match="other tokens"):
        rf.Seq2SeqEnsemble([reverser, other])


def test_ensemble_renumbers_a_member_that_met_the_tokens_in_another_order(reverser):
    """The same model with its vocabularies (and weight rows) permuted decodes as the original."""
    X, _ = reverse_task(60, seed=6)
    twin = small(epochs=0).fit(*reverse_task(1200))
    perm_s, perm_t = np.random.default_rng(0).permutation(len(LETTERS)), np.random.default_rng(1).permutation(len(LETTERS))
    twin.source_tokens_ = [reverser.source_tokens_[k] for k in perm_s]
    twin.target_tokens_ = [reverser.target_tokens_[k] for k in perm_t]
    src_rows, tgt_rows = np.r_[0:4, perm_s + 4], np.r_[0:4, perm_t + 4]
    state = reverser.model_.state_dict()
    twin.model_.load_state_dict({k: v[src_rows] if k == "encoder.embedding.weight" else
                                 v[tgt_rows] if k in ("decoder.embedding.weight", "decoder.out.weight", "decoder.out.bias")
                                 else v for k, v in state.items()})
    assert twin.predict(X) == reverser.predict(X)  # (the twin alone is the same model)
    for beam in (1, 3):
        assert rf.Seq2SeqEnsemble([reverser, twin]).predict(X, beam_size=beam) == reverser.predict(X, beam_size=beam)
        assert rf.Seq2SeqEnsemble([twin, reverser]).predict(X, beam_size=beam) == reverser.predict(X, beam_size=beam)


def test_save_load_round_trip(reverser, tmp_path):
    X, _ = reverse_task(50, seed=3)
    path = tmp_path / "s2s.rnnfast"
    reverser.save(path)
    back = rf.load(path)
    assert isinstance(back, rf.Seq2Seq) and back.get_params() == reverser.get_params()
    assert back.predict(X) == reverser.predict(X)
    assert back.predict(X, beam_size=3) == reverser.predict(X, beam_size=3)
    assert back.history_ == reverser.history_


def test_save_refuses_unsavable_tokens(tmp_path):
    m = small(epochs=1).fit([[(1, 2)], [(3, 4)]], [["a"], ["b"]])  # tuples are hashable tokens
    with pytest.raises(TypeError, match="cannot save"):
        m.save(tmp_path / "x.rnnfast")


def test_load_refuses_damaged_vocabulary(reverser, tmp_path):
    path = tmp_path / "bad.rnnfast"
    arrays = {f"model/{k}": v for k, v in reverser.model_.state_dict().items()}
    extra = {"source_tokens": [["s", 1]], "target_tokens": [], "max_target_length": 3}
    save_archive(path, "estimator.Seq2Seq", reverser.get_params(), arrays, extra)
    with pytest.raises(FormatError, match="vocabulary"):
        rf.load(path)


def test_early_stopping_on_validation_bleu():
    X, Y = reverse_task(400)
    m = small(epochs=30, validation_split=0.2, early_stopping=True, patience=1, monitor="bleu").fit(X, Y)
    h = m.history_
    assert "val_bleu" in h and "val_loss" in h and len(h["val_bleu"]) == m.n_epochs_
    assert m.n_epochs_ < 30  # stopped early
    m2 = small(epochs=2).fit(X, Y, validation_data=(X[:50], Y[:50]))
    assert len(m2.history_["val_bleu"]) == 2


def test_early_stopping_on_exact_match_keeps_the_best_epoch(tmp_path):
    X, Y = reverse_task(300)
    Xv, Yv = reverse_task(60, seed=3)
    m = small(epochs=8, lr=2e-2, early_stopping=True, patience=8, monitor="exact").fit(X, Y, validation_data=(Xv, Yv))
    h = m.history_
    assert len(h["val_exact"]) == m.n_epochs_ == 8 and all(0.0 <= v <= 1.0 for v in h["val_exact"])
    # the weights kept are those of the best epoch (here not the last: 0.68 at epoch 7, 0.63 at epoch 8 measured):
    # its exact-match rate is what predict gives now
    assert h["val_exact"][-1] < max(h["val_exact"])
    exact = np.mean([p == y for p, y in zip(m.predict(Xv), Yv)])
    assert exact == max(h["val_exact"]) > 0.2, h["val_exact"]
    m.save(tmp_path / "m.rfz")
    assert rf.load(tmp_path / "m.rfz").history_["val_exact"] == h["val_exact"]


def test_same_random_state_same_model():
    X, Y = reverse_task(150)
    a, b = small(epochs=2).fit(X, Y), small(epochs=2).fit(X, Y)
    for k, v in a.model_.state_dict().items():
        np.testing.assert_array_equal(v, b.model_.state_dict()[k])


def test_params_and_clone():
    m = rf.Seq2Seq(hidden_size=32, attention=None)
    assert m.get_params()["attention"] is None and m.set_params(beam_size=3).beam_size == 3
    with pytest.raises(ValueError, match="Invalid parameter"):
        m.set_params(foo=1)
    assert "hidden_size=32" in repr(m)
    from rnnfast import models
    assert models.Seq2Seq is rf.Seq2Seq
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    assert clone(m).get_params() == m.get_params()


@pytest.mark.parametrize("kw,error", [({"cell": "rnn"}, ValueError), ({"attention": "cosine"}, ValueError),
                                      ({"hidden_size": 0}, ValueError), ({"lr": "x"}, TypeError),
                                      ({"beam_size": 0}, ValueError), ({"monitor": "acc"}, ValueError), ({"monitor": "wer"}, ValueError)])
def test_bad_parameters(kw, error):
    with pytest.raises(error):
        rf.Seq2Seq(**kw).fit([["a"]], [["b"]])


def test_bad_input(reverser):
    with pytest.raises(NotFittedError):
        rf.Seq2Seq().predict([["a"]])
    with pytest.raises(TypeError, match="list of token sequences"):
        small().fit("abc", "cba")
    with pytest.raises(ValueError, match="2 sequences"):
        small().fit([["a"], ["b"]], [["c"]])
    with pytest.raises(ValueError, match="empty"):
        small().fit([["a"], []], [["c"], ["d"]])
    with pytest.raises(TypeError, match="hashable"):
        small().fit([[["a"]]], [["c"]])
    with pytest.raises(TypeError, match="sequence of tokens"):
        small().fit([1, 2], [["c"], ["d"]])
    with pytest.raises(ValueError, match="early_stopping"):
        small(early_stopping=True).fit([["a"]], [["b"]])
    with pytest.raises(ValueError, match="beam_size"):
        reverser.predict([["a"]], beam_size=0)
    with pytest.raises(ValueError):
        reverser.score([["a"]], [["a"], ["b"]])
