"""generate() on language-model estimators: the streamed distributions equal whole-sequence predictions,
greedy decoding equals re-running the growing sequence, sampling (temperature, top-k, seeds), threads,
refusals."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.estimators.generation import TokenStream, generate

V = 7  # token ids 1..6


def lm_data(n=30, T=20, seed=0):
    rng = np.random.default_rng(seed)
    # a noisy cycle 1 2 3 4 5 6 1 ..., so the model has something to learn
    text = (np.arange(n * T + 1) % (V - 1)) + 1
    noise = rng.random(text.size) < 0.2
    text[noise] = rng.integers(1, V, noise.sum())
    return text[:-1].reshape(n, T), text[1:].reshape(n, T)


@pytest.fixture(scope="module", params=[rf.LSTM, rf.GRU, rf.RNN])
def lm(request):
    X, y = lm_data()
    return request.param(hidden_size=12, num_layers=2, epochs=3, batch_size=10, lr=0.02, dtype="float64",
                         random_state=0).fit(X, y)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_streamed_distributions_equal_predict_proba(lm):
    prompt = np.array([1, 2, 3, 4, 2])
    stream = TokenStream(lm)
    probs = softmax(stream.prime(prompt))
    np.testing.assert_allclose(probs, lm.predict_proba(prompt[None])[0, -1], rtol=1e-10, atol=1e-12)
    seq = list(prompt)
    for token in (5, 6, 1, 1):  # every step after the prompt, against the whole growing sequence
        seq.append(token)
        probs = softmax(stream.advance(token))
        np.testing.assert_allclose(probs, lm.predict_proba(np.array([seq]))[0, -1], rtol=1e-10, atol=1e-12)


def test_greedy_equals_rerunning_the_whole_sequence(lm):
    prompt = [3, 1, 4]
    seq = list(prompt)
    for _ in range(12):
        seq.append(int(lm.predict(np.array([seq]))[0, -1]))
    expected = seq[len(prompt):]
    assert lm.generate(prompt, 12, temperature=1e-9).tolist() == expected
    assert lm.generate(prompt, 12, top_k=1, random_state=5).tolist() == expected


def test_float32_model_first_step():
    X, y = lm_data(seed=1)
    model = rf.LSTM(hidden_size=8, epochs=1, random_state=1).fit(X, y)
    prompt = np.array([2, 3, 4])
    np.testing.assert_allclose(softmax(TokenStream(model).prime(prompt)), model.predict_proba(prompt[None])[0, -1],
                               rtol=1e-5, atol=1e-6)


def test_sampling_is_reproducible_and_follows_top_k():
    X, y = lm_data(seed=2)
    model = rf.GRU(hidden_size=8, epochs=1, random_state=2).fit(X, y)
    a = model.generate([1, 2], 30, random_state=7)
    assert np.array_equal(a, model.generate([1, 2], 30, random_state=7))
    assert a.dtype == model.classes_.dtype and a.shape == (30,)
    draws = {int(model.generate([1, 2], 1, temperature=5.0, random_state=s)[0]) for s in range(60)}
    assert len(draws) > 2  # a flat distribution: several tokens come up
    top2 = set(model.classes_[np.argsort(TokenStream(model).prime(np.array([1, 2])))[-2:]].tolist())
    draws = {int(model.generate([1, 2], 1, temperature=5.0, top_k=2, random_state=s)[0]) for s in range(60)}
    assert draws <= top2
    rng = np.random.default_rng(3)
    assert model.generate([1], 5, random_state=rng).shape == (5,)
    assert model.generate([1], 0).shape == (0,)


def test_generation_from_threads_and_after_loading(tmp_path):
    X, y = lm_data(seed=3)
    model = rf.LSTM(hidden_size=8, epochs=1, random_state=3).fit(X, y)
    expected = [model.generate([1, 2, 3], 25, random_state=s).tolist() for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda s: model.generate([1, 2, 3], 25, random_state=s).tolist(), range(4)))
    assert got == expected
    model.save(tmp_path / "lm.rnnfast")
    assert rf.load(tmp_path / "lm.rnnfast").generate([1, 2, 3], 25, random_state=0).tolist() == expected[0]


def test_refuses_models_that_are_not_language_models():
    X, y = lm_data(n=10, T=6)
    rng = np.random.default_rng(4)
    cases = [
        rf.LSTM(hidden_size=4, epochs=1).fit(rng.standard_normal((10, 6, 2)), y),           # features
        rf.LSTM(hidden_size=4, epochs=1).fit(X, y[:, -1]),                                   # per sequence
        rf.LSTM(hidden_size=4, epochs=1).fit(X, rng.standard_normal((10, 6))),              # regression
        rf.LSTM(hidden_size=4, epochs=1).fit(X, np.where(y > 3, "hi", "lo")),                # labels, not ids
        rf.LSTM(hidden_size=4, epochs=1, bidirectional=True).fit(X, y),                      # reads the future
    ]
    for model in cases:
        with pytest.raises(ValueError, match="language model|token ids|bidirectional"):
            model.generate([1, 2], 3)
    with pytest.raises(ValueError):  # not fitted
        rf.LSTM().generate([1], 1)


@pytest.mark.parametrize("kw, exc", [
    (dict(temperature=0.0), ValueError),
    (dict(temperature=-1.0), ValueError),
    (dict(temperature="hot"), TypeError),
    (dict(top_k=0), ValueError),
    (dict(top_k=1.5), TypeError),
    (dict(n_tokens=-1), ValueError),
    (dict(prompt=[0, 1]), ValueError),
    (dict(prompt=[1, V + 3]), ValueError),
    (dict(prompt=[]), ValueError),
    (dict(prompt=[[1, 2]]), ValueError),
    (dict(prompt=["a"]), TypeError),
    (dict(random_state=-2), ValueError),
])
def test_bad_arguments(kw, exc):
    X, y = lm_data(n=10, T=6)
    model = rf.RNN(hidden_size=4, epochs=1, random_state=0).fit(X, y)
    args = dict(prompt=[1, 2], n_tokens=3)
    args.update(kw)
    with pytest.raises(exc):
        generate(model, **args)
