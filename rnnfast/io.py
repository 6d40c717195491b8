"""Saving and loading without pickle: a versioned, documented file format, written atomically.

Format (version 1). A ZIP archive, stored uncompressed, holding:

* ``rnnfast.json`` -- UTF-8 JSON object: ``{"format": "rnnfast", "version": 1, "kind": str,
  "config": {...}, "extra": {...}, "arrays": {name: {"file": str, "dtype": str, "shape": [int]}}}``;
  ``kind`` names what was saved (e.g. ``"estimator.LSTM"``), ``config`` its constructor arguments,
  ``extra`` any other JSON-able state (fitted attributes, optimizer scalars, history).
* ``arrays/<i>.npy`` -- one array each, NumPy's ``.npy`` format, numeric dtypes only.

Loading parses JSON and ``.npy`` with ``allow_pickle=False`` and checks every entry against the
index: nothing in a file is ever executed, and a damaged, truncated or foreign file raises
:class:`FormatError` naming the problem. Saving writes a temporary file beside the target, flushes it
to disk and renames it over the target, so a crash mid-save leaves the old file intact.
"""
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rnnfast._typing import ArrayLike, PathLike
from rnnfast._validation import InstanceOf

__all__ = ["FormatError", "save_archive", "load_archive", "FORMAT_VERSION"]

FORMAT_NAME = "rnnfast"
FORMAT_VERSION = 1
_INDEX = "rnnfast.json"
_MAX_INDEX_BYTES = 16 * 1024 * 1024
_ALLOWED_KINDS = "biuf"  # bool, ints, floats: never object arrays


class FormatError(ValueError):
    """A file that is not a valid rnnfast save file (damaged, truncated, foreign or too new)."""


def _jsonable(obj: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be JSON-serialisable: {e}") from None


def save_archive(path: PathLike, kind: str, config: Mapping[str, Any], arrays: Mapping[str, ArrayLike],
                 extra: Mapping[str, Any] | None = None) -> None:
    """Write ``config``, ``arrays`` and ``extra`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; replaced only once the new file is complete on disk.
    kind : str
        What is being saved; checked by the loader.
    config : dict
        JSON-serialisable constructor arguments.
    arrays : dict of str to numpy.ndarray
        Numeric arrays (bool, integer or floating point).
    extra : dict, optional
        Further JSON-serialisable state.

    Raises
    ------
    TypeError
        ``kind`` is not a string; ``config`` or ``extra`` is not JSON-serialisable; an array is not numeric.
    ValueError
        ``kind`` is empty.
    """
    path = os.fspath(path)
    if not InstanceOf(str, description="a non-empty string").check(kind, "kind"):
        raise ValueError("kind must be a non-empty string, got ''")
    index: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind,
             "config": _jsonable(config, "config"), "extra": _jsonable(extra or {}, "extra"), "arrays": {}}
    blobs = []
    for i, (name, arr) in enumerate(arrays.items()):
        if not isinstance(name, str):
            raise TypeError(f"array names must be strings, got {name!r}")
        a = np.asarray(arr)
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {a.dtype}; only numeric arrays can be saved")
        fname = f"arrays/{i}.npy"
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        blobs.append((fname, buf.getvalue()))
        index["arrays"][name] = {"file": fname, "dtype": a.dtype.str, "shape": list(a.shape)}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnnfast-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr(_INDEX, json.dumps(index, indent=1))
                for fname, data in blobs:
                    z.writestr(fname, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_archive(path: PathLike, kind: str | Callable[[str], bool] | None = None
                 ) -> tuple[str, dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_archive`.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str or callable, optional
        The expected kind, or a predicate on it; anything else raises :class:`FormatError`.

    Returns
    -------
    kind : str
    config : dict
    arrays : dict of str to numpy.ndarray
    extra : dict

    Raises
    ------
    FormatError
        If the file is not a complete, valid rnnfast file of a supported version (and kind).
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        z = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(f"{path}: not an rnnfast file (not a readable archive: {e})") from None
    with z:
        names = set(z.namelist())
        if _INDEX not in names:
            raise FormatError(f"{path}: not an rnnfast file (no {_INDEX})")
        info = z.getinfo(_INDEX)
        if info.file_size > _MAX_INDEX_BYTES:
            raise FormatError(f"{path}: index too large ({info.file_size} bytes)")
        try:
            index = json.loads(z.read(_INDEX).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as e:
            raise FormatError(f"{path}: damaged index: {e}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            raise FormatError(f"{path}: not an rnnfast file (format {index.get('format') if isinstance(index, dict) else None!r})")
        version = index.get("version")
        if not isinstance(version, int) or version < 1:
            raise FormatError(f"{path}: bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise FormatError(f"{path}: format version {version} is newer than this rnnfast reads "
                              f"({FORMAT_VERSION}); upgrade rnnfast")
        got_kind = index.get("kind")
        if not isinstance(got_kind, str):
            raise FormatError(f"{path}: missing kind")
        if kind is not None and not (kind(got_kind) if callable(kind) else got_kind == kind):
            raise FormatError(f"{path}: holds a {got_kind!r}, expected {kind!r}")
        config, extra, entries = index.get("config"), index.get("extra", {}), index.get("arrays")
        if not isinstance(config, dict) or not isinstance(extra, dict) or not isinstance(entries, dict):
            raise FormatError(f"{path}: damaged index (config, extra and arrays must be objects)")
        arrays: dict[str, np.ndarray] = {}
        for name, ent in entries.items():
            if (not isinstance(ent, dict) or not isinstance(ent.get("file"), str) or ent["file"] not in names
                    or not isinstance(ent.get("shape"), list) or not isinstance(ent.get("dtype"), str)):
                raise FormatError(f"{path}: array {name!r} is missing or its entry is damaged")
            try:
                with z.open(ent["file"]) as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise FormatError(f"{path}: array {name!r} is damaged: {e}") from None
            if a.dtype.kind not in _ALLOWED_KINDS or a.dtype.str != ent["dtype"] or list(a.shape) != ent["shape"]:
                raise FormatError(f"{path}: array {name!r} does not match its index "
                                  f"({a.dtype.str} {list(a.shape)} vs {ent['dtype']} {ent['shape']})")
            arrays[name] = a
    return got_kind, config, arrays, extra
