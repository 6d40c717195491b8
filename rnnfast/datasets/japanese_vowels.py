"""The Japanese Vowels speaker-classification data set (UCI), as shipped in sktime's ``.ts`` files."""
from __future__ import annotations

import functools
import math

import numpy as np

from rnnfast._typing import DTypeLike
from rnnfast.datasets._base import data_path

__all__ = ["load_japanese_vowels", "read_ts"]

PACKAGE = "sktime"
_DIR = "datasets/data/JapaneseVowels"


def _parse_bool(value: str, tag: str, path: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise ValueError(f"{path}: @{tag} must be true or false, got {value!r}")
    return v == "true"


def read_ts(path: str, dtype: DTypeLike = np.float64) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Read a multivariate ``.ts`` file (the sktime / UEA time-series text format) without timestamps.

    The format, as the files' headers document it: ``#`` comment lines; ``@tag value`` header lines
    (case-insensitive tags: ``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions``,
    ``@equalLength``, ``@seriesLength``, ``@classLabel true L1 L2 ...``); then ``@data`` and one case per
    line: the channels separated by ``:``, each a comma-separated list of values (``?`` = missing), and,
    when ``@classLabel`` is true, the case's label as the last ``:``-separated field.

    Parameters
    ----------
    path : str
        The ``.ts`` file.
    dtype : numpy dtype, default float64

    Returns
    -------
    X : list of ndarray
        One ``(T_i, C)`` array per case (time steps by channels); missing values are NaN.
    labels : list of str
        Each case's class label as written (empty list if the file has no labels).
    class_labels : list of str
        The label set in the order the ``@classLabel`` header lists it (empty if none).

    Raises
    ------
    ValueError
        On a malformed file: timestamped data (not supported), a case with the wrong number of channels,
        channels of unequal length within a case, a label outside the declared set, or no ``@data``.
    """
    header: dict = {}
    class_labels: list = []
    X: list = []
    labels: list = []
    in_data = False
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise ValueError(f"{path}:{lineno}: expected a @tag header line, got {line[:40]!r}")
                tag, _, value = line[1:].partition(" ")
                tag = tag.lower()
                if tag == "data":
                    in_data = True
                    if header.get("timestamps") and _parse_bool(header["timestamps"], "timeStamps", path):
                        raise ValueError(f"{path}: timestamped .ts data is not supported")
                    if "classlabel" in header:
                        parts = header["classlabel"].split()
                        if parts and _parse_bool(parts[0], "classLabel", path):
                            class_labels = parts[1:]
                    continue
                header[tag] = value.strip()
                continue
            fields = line.split(":")
            if class_labels:
                label = fields.pop().strip()
                if label not in class_labels:
                    raise ValueError(f"{path}:{lineno}: label {label!r} is not among {class_labels}")
                labels.append(label)
            n_dims = int(header.get("dimensions", len(fields)))
            if len(fields) != n_dims:
                raise ValueError(f"{path}:{lineno}: {len(fields)} channels, the header says {n_dims}")
            channels = [[math.nan if v.strip() == "?" else float(v) for v in fld.split(",")] for fld in fields]
            lengths = {len(c) for c in channels}
            if len(lengths) != 1:
                raise ValueError(f"{path}:{lineno}: channels of unequal lengths {sorted(lengths)}")
            X.append(np.asarray(channels, dtype=dtype).T.copy())
    if not in_data:
        raise ValueError(f"{path}: no @data section")
    return X, labels, class_labels


@functools.lru_cache(maxsize=4)
def _parsed(train_path: str, test_path: str) -> tuple[tuple[tuple[np.ndarray, ...], np.ndarray], ...]:
    out = []
    for p in (train_path, test_path):
        X, labels, classes = read_ts(p)
        code = {c: i for i, c in enumerate(classes)}
        y = np.asarray([code[lab] for lab in labels], dtype=np.int64)
        for x in X:
            x.setflags(write=False)
        y.setflags(write=False)
        out.append((tuple(X), y))
    return tuple(out)


def load_japanese_vowels(dtype: DTypeLike = np.float64) -> tuple[tuple[list[np.ndarray], np.ndarray], ...]:
    """The Japanese Vowels data set from the ``sktime`` package (offline, no sktime import).

    Nine male speakers uttering the vowels /ae/; each case is 12 LPC cepstrum coefficients over 7 to 29
    frames (sktime's ``datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts`` and ``_TEST.ts``, parsed by
    :func:`read_ts`). The task is to tell the speaker.

    Parameters
    ----------
    dtype : numpy dtype, default float64
        dtype of the returned series.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        ``X_*`` : list of ndarray, each ``(T_i, 12)`` with 7 <= T_i <= 29 (time steps by channels), in file
        order; ``y_*`` : int64 ndarray of speaker ids 0..8 (the files' labels 1..9 minus one). 270 training
        cases (30 per speaker) and 370 test cases (24 to 88 per speaker).

    Raises
    ------
    DatasetNotAvailable
        If ``sktime`` (or the two files) is not installed (``pip install --no-deps sktime``).

    Notes
    -----
    Parsed once per process (cached); each call returns fresh, writable copies. Deterministic.
    """
    train = data_path(PACKAGE, f"{_DIR}/JapaneseVowels_TRAIN.ts", "Japanese Vowels")
    test = data_path(PACKAGE, f"{_DIR}/JapaneseVowels_TEST.ts", "Japanese Vowels")
    return tuple(([np.array(x, dtype=dtype) for x in X], y.copy()) for X, y in _parsed(train, test))
