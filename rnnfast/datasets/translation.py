"""German -> English sentence pairs: the example sentences of the Ding dictionary, as shipped by Debian's
``trans-de-en`` package (``/usr/share/trans/de-en``)."""
from __future__ import annotations

import functools
import os
import re

from rnnfast._validation import check_bool
from rnnfast.datasets._base import DatasetNotAvailable, no_gc, seeded_split

__all__ = ["load_trans_de_en", "tokenize_sentence", "strip_alternatives", "TRANS_DE_EN_PATH", "TEST_FRACTION"]

#: Where Debian's ``trans-de-en`` package installs the dictionary.
TRANS_DE_EN_PATH = "/usr/share/trans/de-en"

#: The share of the dictionary's sentence groups that :func:`load_trans_de_en` holds out as ``"test"``.
TEST_FRACTION = 0.1

_INSTALL = ("the German-English sentence pairs need Debian's trans-de-en package (the Ding dictionary, "
            "GPL-2+), which is not installed at {path}: install it with `apt-get install trans-de-en` "
            "(or pass the path of a copy of the file)")
_ANNOTATION = re.compile(r"\s*(\{[^{}]*\}|\[[^\[\]]*\]|\([^()]*\))")  # {n} [Br.] (optional words)
_ALTERNATIVES = re.compile(r"(\S+?)(?:\s*/\s*[^\s/.,;:!?]+)+")      # law/statute, He / It
_TOKEN = re.compile(r"[^\W_]+(?:['][^\W_]+)*|[^\w\s]", re.UNICODE)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'})


def strip_alternatives(text: str) -> str:
    """``text`` with the dictionary's annotations removed and every slash alternative cut to its first choice.

    ``{n}``, ``[Br.]`` and parenthesised optional words go; ``law/statute`` becomes ``law`` and
    ``He / It is`` becomes ``He is``. Whitespace is collapsed.

    Examples
    --------
    >>> strip_alternatives("British schools are required by law/statute to publish (all) their results.")
    'British schools are required by law to publish their results.'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = _ANNOTATION.sub("", text)
    text = _ALTERNATIVES.sub(r"\1", text)
    return " ".join(text.split())


def tokenize_sentence(text: str, lowercase: bool = True) -> list[str]:
    """Word and punctuation tokens of a sentence: runs of letters and digits (with inner apostrophes, as in
    ``it's``) and single punctuation marks; typographic quotes are made plain first.

    Examples
    --------
    >>> tokenize_sentence("It’s not over until it’s over.")
    ["it's", 'not', 'over', 'until', "it's", 'over', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.translate(_QUOTES)
    return _TOKEN.findall(text.lower() if check_bool(lowercase, "lowercase") else text)


def _is_sentence(text: str) -> bool:
    return len(text.split()) >= 3 and text[-1:] in ".?!"


def _sentences(side: str) -> list[str]:
    """The sentences among one side's synonyms (``; ``-separated), annotations and alternatives stripped."""
    out = []
    for s in side.split("; "):
        s = s.strip()
        if _is_sentence(s):
            s = strip_alternatives(s)
            if _is_sentence(s):
                out.append(s)
    return out


@functools.lru_cache(maxsize=2)
def _groups(path: str, mtime: float) -> tuple:
    """(German sentences, English sentences) per aligned sub-entry holding a sentence on both sides."""
    groups = []
    with open(path, encoding="utf-8") as f, no_gc():
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            de, en = line.rstrip("\n").split("::", 1)
            de_parts, en_parts = de.split(" | "), en.split(" | ")
            if len(de_parts) != len(en_parts):  # a malformed entry: its sub-entries cannot be aligned
                continue
            for d, e in zip(de_parts, en_parts):
                ds, es = _sentences(d), _sentences(e)
                if ds and es:
                    groups.append((tuple(ds), tuple(es)))
    return tuple(groups)


def load_trans_de_en(split: str | None = None, test_fraction: float = TEST_FRACTION, random_state: int = 0,
                     lowercase: bool = True, path: str = TRANS_DE_EN_PATH) -> tuple[list[list[str]], list[list[str]]]:
    """German -> English sentence pairs from the example sentences of the Ding dictionary (Debian ``trans-de-en``).

    The file has one entry per line, ``German :: English``; `` | `` separates aligned sub-entries (a
    headword, its inflections, then example phrases and sentences) and ``; `` synonyms. A sub-entry is kept
    when both sides hold a *sentence*: a synonym of at least three words ending in ``.``, ``?`` or ``!``
    (checked again after stripping, :func:`strip_alternatives`). Its German and English sentences are paired
    every way (most sub-entries have one each): with the 2023-01-30 dictionary, 19,027 sub-entries and
    20,827 pairs (18,770 train / 2,057 test with the defaults), median 8 tokens a side, e.g. ``Noch ist nicht aller Tage Abend.`` -> ``It's not over until it's
    over.``. Then :func:`tokenize_sentence`.

    Parameters
    ----------
    split : {None, "train", "test"}
        None: every pair, in file order. Otherwise a seeded random split by sub-entry (so a sentence and its
        variants stay on one side): ``round(test_fraction * n_subentries)`` sub-entries drawn with
        ``numpy.random.default_rng(random_state).permutation`` are ``"test"`` (about 10 %), the others
        ``"train"``; file order within each.
    test_fraction : float in (0, 1), default 0.1
    random_state : int >= 0, default 0
    lowercase : bool, default True
    path : str, default ``/usr/share/trans/de-en``

    Returns
    -------
    german, english : list of list of str
        Token lists, ``german[i]`` translated by ``english[i]``.

    Raises
    ------
    DatasetNotAvailable
        If the file is absent (``apt-get install trans-de-en``).
    TypeError, ValueError
        For bad arguments.
    """
    seeded_split(0, split, test_fraction, random_state)  # checks the arguments before reading the file
    lowercase = check_bool(lowercase, "lowercase")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetNotAvailable(_INSTALL.format(path=path), package="trans-de-en", path=path)
    groups = _groups(path, os.path.getmtime(path))
    src: list[list[str]] = []
    tgt: list[list[str]] = []
    with no_gc():
        for i in seeded_split(len(groups), split, test_fraction, random_state):
            ds, es = groups[i]
            for d in ds:
                for e in es:
                    src.append(tokenize_sentence(d, lowercase))
                    tgt.append(tokenize_sentence(e, lowercase))
    return src, tgt
