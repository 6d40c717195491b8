"""Saving and loading without pickle: a versioned, documented file format, validated before anything is
allocated, written atomically.

Format (version 1). A ZIP archive, every member stored uncompressed, holding:

* ``rnnfast.json`` -- UTF-8 JSON object: ``{"format": "rnnfast", "version": 1, "kind": str,
  "config": {...}, "extra": {...}, "arrays": {name: {"file": str, "dtype": str, "shape": [int]}}}``;
  ``kind`` names what was saved (``"estimator.LSTM"``, ``"nn.Sequential"``...), ``config`` its constructor
  arguments, ``extra`` any other JSON-able state (fitted attributes, optimizer scalars, history).
* ``arrays/<i>.npy`` -- one array each, NumPy's ``.npy`` format, numeric dtypes only (bool, int, uint,
  float), C order. No other member.

A quantized model (:func:`rnnfast.quantize`) adds ``"precision": str`` to the index (a registered backend's
name, such as ``"bf16"``): its recurrent weights are stored in that backend's encoding (``bf16``: the
bfloat16 bits as uint16, in the weight's own shape; a format may add arrays ``<name>@<part>``). Loading
checks the name and the encoded arrays' dtypes and shapes, then shows every loader the float32 arrays they
decode to (:attr:`Archive.declared`, :meth:`Archive.read`), and :func:`load` quantizes what it built again
(a lossless round trip: the weights are already representable).

Loading (:func:`open_archive`, :func:`load_archive`, :func:`load`) never executes anything from the file and
checks it in this order, refusing it with :class:`FormatError` (one line naming the problem) at the first
fault, so that a damaged or hostile file costs little memory:

1. the path is a regular file no larger than the budget ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`,
   2 GiB; ``/dev/zero``, a pipe or a directory is refused before a byte is read);
2. the ZIP directory: at most :data:`MAX_MEMBERS` members, unique names, none compressed or encrypted, each
   inside the file, together no larger than the file (so every declared byte is really in the file);
3. the index: at most :data:`MAX_INDEX_BYTES`, nesting at most :data:`MAX_JSON_DEPTH`, integers of at most
   :data:`MAX_INT_DIGITS` digits, no duplicate keys; every array entry names one member, a dtype from the
   allow-list and a shape of at most :data:`MAX_NDIM` non-negative sizes;
4. each array's ``.npy`` header (only the header is read, at most 10,000 bytes): the dtype and shape the index
   declares, and exactly the member's size;
5. what was saved checks its configuration against the declared arrays (the estimator and
   :class:`rnnfast.nn.Sequential` loaders derive every parameter's shape from the configuration) before it
   builds anything; only then is array data read, in bounded chunks, into arrays of the declared size.

Saving writes a temporary file ``.<target>.<host>.<pid>.<random>.tmp`` beside the target, flushes it to disk
and renames it over the target, so a crash mid-save leaves the old file intact. The temporary file is removed
on any exception; one left by a killed process (SIGKILL, power loss) is removed by the next save to the same
target from the same host once no process with its pid is alive.
"""
import contextlib
import dataclasses
import importlib
import io
import json
import os
import re
import secrets
import socket
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

from rnnfast._typing import ArrayLike, PathLike
from rnnfast._validation import InstanceOf

__all__ = ["FormatError", "save_archive", "load_archive", "open_archive", "load", "Archive", "FORMAT_VERSION",
           "DEFAULT_MAX_BYTES", "remove_stale_temporaries", "parse_json"]

FORMAT_NAME = "rnnfast"
FORMAT_VERSION = 1
#: Default budget of :func:`load` / :func:`open_archive`: the largest file (hence arrays) read, in bytes.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
#: Largest index (``rnnfast.json``) read, in bytes.
MAX_INDEX_BYTES = 4 * 1024 ** 2
#: Deepest nesting of JSON arrays and objects in the index.
MAX_JSON_DEPTH = 32
#: Most digits of an integer in the index (a 64-bit seed has 20).
MAX_INT_DIGITS = 40
#: Most members of the archive.
MAX_MEMBERS = 65535
#: Most dimensions of a saved array.
MAX_NDIM = 32
#: Longest array name or kind, in characters.
MAX_NAME_CHARS = 1024

_INDEX = "rnnfast.json"
_ALLOWED_KINDS = "biuf"  # bool, ints, floats: never object arrays
#: The dtype strings an array may have (``numpy.dtype.str``), either byte order.
ALLOWED_DTYPES = frozenset({"|b1", "|i1", "|u1"} | {f"{o}{k}{n}" for o in "<>" for k, sizes in
                                                    (("i", "248"), ("u", "248"), ("f", "248")) for n in sizes})
_NPY_MAX_HEADER = 10000  # numpy's own limit on a .npy header
_CHUNK = 1 << 20  # bytes read from a member at a time
_FILE_NAME = re.compile(r"arrays/[0-9]{1,9}\.npy")
_FLAGS_OK = 0x08 | 0x800  # data descriptor, UTF-8 names; anything else (encryption, patches) is refused
# what reading a damaged file can raise, turned into FormatError (MemoryError is not: the checks prevent it)
_FILE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError, OverflowError, RecursionError, struct.error, zlib.error, KeyError, IndexError,
                TypeError, SyntaxError)


class FormatError(ValueError):
    """A file that is not a valid rnnfast save file (damaged, truncated, foreign, too new or too large)."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:500] or type(e).__name__


# ---------------------------------------------------------------------------------------- saving
def _jsonable(obj: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be JSON-serialisable: {e}") from None


def _npy_blobs(arrays: Mapping[str, ArrayLike]) -> tuple[dict, list]:
    entries, blobs = {}, []
    for i, (name, arr) in enumerate(arrays.items()):
        if not isinstance(name, str):
            raise TypeError(f"array names must be strings, got {name!r}")
        a = np.asarray(arr)
        if a.dtype.str not in ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has dtype {a.dtype}; only numeric arrays can be saved")
        fname = f"arrays/{i}.npy"
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        blobs.append((fname, buf.getvalue()))
        entries[name] = {"file": fname, "dtype": a.dtype.str, "shape": list(a.shape)}
    return entries, blobs


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send a Ctrl-C there: never remove another process's file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is another user's (EPERM), or cannot tell: keep its file
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> list[str]:
    """Remove the temporary files that saves of ``path`` by processes no longer alive left behind.

    A temporary file is ``.<target name>.<host>.<pid>.<random>.tmp`` beside the target; one is removed only
    when its host is this host and no process with its pid exists (a live pid, even a reused one, keeps it).

    Parameters
    ----------
    path : str or os.PathLike
        The target file.

    Returns
    -------
    list of str
        The files removed.
    """
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(f".{base}.{_host()}.") + r"([0-9]+)\.[0-9a-f]+\.tmp")
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def _fsync_directory(directory: str) -> None:
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_atomically(path: str, members: list[tuple[str, bytes]]) -> None:
    directory, base = os.path.split(os.path.abspath(path))
    remove_stale_temporaries(path)
    tmp = os.path.join(directory, f".{base}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                for fname, data in members:
                    z.writestr(fname, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def save_archive(path: PathLike, kind: str, config: Mapping[str, Any], arrays: Mapping[str, ArrayLike],
                 extra: Mapping[str, Any] | None = None, precision: str | None = None) -> None:
    """Write ``config``, ``arrays`` and ``extra`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; replaced only once the new file is complete on disk. Its directory must exist.
    kind : str
        What is being saved; checked by the loader.
    config : dict
        JSON-serialisable constructor arguments.
    arrays : dict of str to numpy.ndarray
        Numeric arrays (bool, integer or floating point).
    extra : dict, optional
        Further JSON-serialisable state.
    precision : str, optional
        The low-precision format of a quantized model's weights (see the module docstring); ``arrays``
        then hold them encoded.

    Raises
    ------
    TypeError
        ``kind`` is not a string; ``config`` or ``extra`` is not JSON-serialisable; an array is not numeric.
    ValueError
        ``kind`` is empty.
    FileNotFoundError
        The directory of ``path`` does not exist.
    """
    path = os.fspath(path)
    if not InstanceOf(str, description="a non-empty string").check(kind, "kind"):
        raise ValueError("kind must be a non-empty string, got ''")
    entries, blobs = _npy_blobs(arrays)
    index = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind, "config": _jsonable(config, "config"),
             "extra": _jsonable(extra or {}, "extra"), "arrays": entries}
    if precision is not None:
        _codec(precision)
        index["precision"] = precision
    _write_atomically(path, [(_INDEX, json.dumps(index, indent=1).encode())] + blobs)


# ---------------------------------------------------------------------------------------- the index
def _bounded_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(s.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(s)


def _unique_keys(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate keys in an object")
    return d


_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[`` and ``{`` outside strings (linear time, no recursion)."""
    b = np.frombuffer(_STRINGS.sub("", text).encode("utf-8", "replace"), np.uint8)
    step = (np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max()) if step.size else 0


def parse_json(data: bytes) -> Any:
    """JSON from untrusted bytes with limits: UTF-8, nesting <= :data:`MAX_JSON_DEPTH`, integers of at most
    :data:`MAX_INT_DIGITS` digits, no duplicate keys (ValueError otherwise, UnicodeDecodeError included)."""
    text = data.decode("utf-8")
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested {depth} deep (at most {MAX_JSON_DEPTH})")
    return json.loads(text, parse_int=_bounded_int, object_pairs_hook=_unique_keys)


@dataclasses.dataclass(frozen=True)
class Declared:
    """One array as the index declares it (checked against its ``.npy`` header and its ZIP member)."""

    file: str
    dtype: np.dtype
    shape: tuple[int, ...]
    header_bytes: int = 0

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def _declared_entry(name: Any, ent: Any) -> Declared:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise FormatError(f"bad array name {str(name)[:80]!r}")
    if (not isinstance(ent, dict) or set(ent) != {"file", "dtype", "shape"} or not isinstance(ent["file"], str)
            or not _FILE_NAME.fullmatch(ent["file"])):
        raise FormatError(f"array {name!r}: damaged entry in the index")
    dt, shape = ent["dtype"], ent["shape"]
    if not isinstance(dt, str) or dt not in ALLOWED_DTYPES:
        raise FormatError(f"array {name!r}: dtype {str(dt)[:40]!r} is not one of the numeric dtypes allowed")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d < 2 ** 48 for d in shape)):
        raise FormatError(f"array {name!r}: bad shape {str(shape)[:80]} (at most {MAX_NDIM} sizes >= 0)")
    return Declared(ent["file"], np.dtype(dt), tuple(shape))


def _check_index(index: Any) -> tuple[str, dict, dict, dict[str, Declared]]:
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        found = index.get("format") if isinstance(index, dict) else None
        raise FormatError(f"not an rnnfast file (format {str(found)[:40]!r})")
    version = index.get("version")
    if type(version) is not int or version < 1:
        raise FormatError(f"bad format version {str(version)[:40]!r}")
    if version > FORMAT_VERSION:
        raise FormatError(f"format version {version} is newer than this rnnfast reads ({FORMAT_VERSION}); "
                          "upgrade rnnfast")
    kind = index.get("kind")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_NAME_CHARS:
        raise FormatError("missing or bad kind")
    config, extra, entries = index.get("config"), index.get("extra", {}), index.get("arrays")
    if not isinstance(config, dict) or not isinstance(extra, dict) or not isinstance(entries, dict):
        raise FormatError("damaged index (config, extra and arrays must be objects)")
    declared = {name: _declared_entry(name, ent) for name, ent in entries.items()}
    files = [d.file for d in declared.values()]
    if len(set(files)) != len(files):
        raise FormatError("two arrays of the index name the same member")
    return kind, config, extra, declared


def _codec(precision: Any) -> Any:
    """The registered low-precision backend named ``precision`` (rnnfast.quantize; ValueError if unknown)."""
    from rnnfast.quantize import get_backend
    return get_backend(precision)


def _decoded_view(codec: Any, stored: dict[str, Declared]) -> tuple[dict[str, Declared], dict[str, list[str]]]:
    """What the loaders see of a quantized file's arrays: each ``name`` with its ``name@part`` arrays becomes
    one float32 array (the codec's :meth:`~rnnfast.quantize.Backend.decoded`); others stay as stored.
    Returns (declared view, parts of each decoded name)."""
    groups: dict[str, dict[str, Declared]] = {}
    for name, d in stored.items():
        base, sep, part = name.partition("@")
        groups.setdefault(base, {})[sep + part] = d
    view, parts = {}, {}
    for base, members in groups.items():
        if "" not in members:
            raise FormatError(f"array {base!r}: parts {sorted(members)[:3]} without the main array")
        try:
            dec = codec.decoded({p: (d.dtype, d.shape) for p, d in members.items()})
        except ValueError as e:
            raise FormatError(f"array {base!r}: {_one_line(e)}") from None
        if dec is None:
            view[base] = members[""]
        else:
            view[base] = dataclasses.replace(members[""], dtype=dec[0], shape=tuple(dec[1]))
            parts[base] = sorted(members)
    return view, parts


# ---------------------------------------------------------------------------------------- the archive
def _check_members(z: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FormatError(f"{len(infos)} members (at most {MAX_MEMBERS})")
    members = {i.filename: i for i in infos}
    if len(members) != len(infos):
        raise FormatError("duplicate member names")
    total = 0
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"member {i.filename[:80]!r} is compressed (method {i.compress_type}); rnnfast "
                              "files store their members uncompressed")
        if i.flag_bits & ~_FLAGS_OK:
            raise FormatError(f"member {i.filename[:80]!r} is encrypted or uses unsupported ZIP features "
                              f"(flags {i.flag_bits:#x})")
        if i.file_size != i.compress_size or i.header_offset < 0 or i.header_offset + i.file_size > size:
            raise FormatError(f"member {i.filename[:80]!r} declares {i.file_size} bytes that the file does not hold")
        total += i.file_size
    if total > size:
        raise FormatError(f"members declare {total} bytes, more than the file's {size}")
    return members


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"truncated: {len(data)} of {n} bytes")
    return data


def _npy_header(f: IO[bytes]) -> tuple[np.dtype, tuple, bool, int]:
    """(dtype, shape, fortran_order, header length) of the ``.npy`` stream ``f``; reads only the header."""
    start = _read_exact(f, 8)
    major = start[6]
    if start[:6] != b"\x93NUMPY" or major not in (1, 2, 3):
        raise ValueError("not a .npy array")
    size_bytes = 2 if major == 1 else 4
    raw_len = _read_exact(f, size_bytes)
    hlen = struct.unpack("<H" if major == 1 else "<I", raw_len)[0]
    if hlen > _NPY_MAX_HEADER:
        raise ValueError(f".npy header of {hlen} bytes (at most {_NPY_MAX_HEADER})")
    header = io.BytesIO(start + raw_len + _read_exact(f, hlen))
    version = np.lib.format.read_magic(header)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    if version == (3, 0):  # utf-8 header: numpy reads it with the private reader only; refuse (never written)
        raise ValueError(".npy format 3.0 is not used by rnnfast files")
    # (max_header_size: numpy >= 1.24; some numpy releases' stubs omit it)
    shape, fortran, dtype = reader(header, max_header_size=_NPY_MAX_HEADER)  # type: ignore[call-arg,unused-ignore]
    return dtype, tuple(shape), bool(fortran), len(start) + size_bytes + hlen


class Archive:
    """An open, checked rnnfast file: its index is read and every array's header checked; data is read on
    request (:meth:`read`). Use :func:`open_archive` to make one, as a context manager.

    Attributes
    ----------
    path : str
    kind : str
    config, extra : dict
        JSON values, parsed within the limits of :mod:`rnnfast.io`.
    declared : dict of str to Declared
        Each array's dtype and shape, checked against its ``.npy`` header and member size (no data read);
        in a quantized file, as the arrays decode (float32 weights).
    precision : str or None
        A quantized model's format (the index's ``"precision"``), else None.
    max_bytes : int
        The budget the file was opened with.
    """

    def __init__(self, path: str, fp: IO[bytes], size: int, max_bytes: int) -> None:
        self.path, self.max_bytes, self._fp = path, max_bytes, fp
        try:
            self._zip = zipfile.ZipFile(fp)
        except _FILE_ERRORS as e:
            raise self.fail(f"not an rnnfast file (not a readable ZIP archive: {_one_line(e)})") from None
        with self.reading("the archive"):
            self._members = _check_members(self._zip, size)
        self.kind, self.config, self.extra, declared, self.precision = self._read_index()
        with self.reading("the arrays"):
            unused = set(self._members) - {_INDEX} - {d.file for d in declared.values()}
            if unused:
                raise FormatError(f"members not in the index: {sorted(unused)[:3]}")
            self.stored = {name: self._check_header(name, d) for name, d in declared.items()}
            self._codec: Any = None  # the precision's backend (rnnfast.quantize.Backend)
            self._parts: dict[str, list[str]] = {}
            self.declared = self.stored
            if self.precision is not None:
                try:
                    self._codec = _codec(self.precision)
                except ValueError as e:
                    raise FormatError(f"precision: {_one_line(e)}") from None
                self.declared, self._parts = _decoded_view(self._codec, self.stored)

    def fail(self, message: str) -> FormatError:
        """A :class:`FormatError` for this file: ``"<path>: <message>"`` on one line."""
        return FormatError(f"{self.path}: {' '.join(message.split())}")

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Turn what reading a damaged file raises into :class:`FormatError` naming ``what``."""
        try:
            yield
        except FormatError as e:
            if str(e).startswith(self.path + ": "):
                raise
            raise self.fail(str(e)) from None
        except _FILE_ERRORS as e:
            raise self.fail(f"{what} is damaged ({type(e).__name__}: {_one_line(e)})") from None

    def _read_index(self) -> tuple[str, dict, dict, dict[str, Declared], str | None]:
        info = self._members.get(_INDEX)
        if info is None:
            raise self.fail(f"not an rnnfast file (no {_INDEX})")
        if info.file_size > MAX_INDEX_BYTES:
            raise self.fail(f"index too large ({info.file_size} bytes, at most {MAX_INDEX_BYTES})")
        with self.reading("the index"):
            with self._zip.open(info) as f:
                index = parse_json(_read_exact(f, info.file_size))
            precision = index.get("precision") if isinstance(index, dict) else None
            if precision is not None and (not isinstance(precision, str) or not 0 < len(precision) <= 32):
                raise FormatError(f"bad precision {str(precision)[:40]!r}")
            return (*_check_index(index), precision)

    def _check_header(self, name: str, d: Declared) -> Declared:
        info = self._members.get(d.file)
        if info is None:
            raise self.fail(f"array {name!r}: member {d.file} is missing")
        with self.reading(f"array {name!r}"), self._zip.open(info) as f:
            dtype, shape, fortran, hlen = _npy_header(f)
        if dtype.str != d.dtype.str or shape != d.shape or fortran:
            raise self.fail(f"array {name!r} does not match its index ({dtype.str} {list(shape)}"
                            f"{' Fortran order' if fortran else ''} vs {d.dtype.str} {list(d.shape)})")
        if info.file_size != hlen + d.nbytes:
            raise self.fail(f"array {name!r}: member of {info.file_size} bytes for {hlen} + {d.nbytes}")
        return dataclasses.replace(d, header_bytes=hlen)

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, read in bounded chunks into a new array of its declared dtype and shape (a
        quantized file's weights decoded to float32)."""
        parts = self._parts.get(name)
        if parts is not None:
            with self.reading(f"array {name!r}"):
                return self._codec.decode({p: self._read_stored(name + p) for p in parts})
        return self._read_stored(name)

    def _read_stored(self, name: str) -> np.ndarray:
        d = self.stored[name]
        arr = np.empty(d.shape, d.dtype)
        view = arr.reshape(-1).view(np.uint8)
        with self.reading(f"array {name!r}"), self._zip.open(self._members[d.file]) as f:
            _read_exact(f, d.header_bytes)
            pos = 0
            while pos < d.nbytes:
                chunk = _read_exact(f, min(_CHUNK, d.nbytes - pos))
                view[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                pos += len(chunk)
            f.read(1)  # reaches the end: the CRC is checked
        return arr

    def read_all(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Every array whose name starts with ``prefix``."""
        return {name: self.read(name) for name in self.declared if name.startswith(prefix)}

    def close(self) -> None:
        """Close the file."""
        self._zip.close()
        self._fp.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _budget(max_bytes: Any) -> int:
    if max_bytes is None:
        return DEFAULT_MAX_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int or None, got {type(max_bytes).__name__}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    return int(max_bytes)


def open_archive(path: PathLike, *, max_bytes: int | None = None) -> Archive:
    """Open and check an rnnfast file (steps 1-4 of :mod:`rnnfast.io`'s list); no array data is read yet.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, optional
        The largest file accepted, in bytes (default :data:`DEFAULT_MAX_BYTES`).

    Returns
    -------
    Archive
        Close it (or use it as a context manager).

    Raises
    ------
    FormatError
        Not a regular file, larger than ``max_bytes``, or not a complete, valid rnnfast file of a supported
        version.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = os.fspath(path)
    budget = _budget(max_bytes)
    st = os.stat(path)  # FileNotFoundError, PermissionError as they are
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{path}: not an rnnfast file (not a regular file)")
    if st.st_size > budget:
        raise FormatError(f"{path}: {st.st_size} bytes, more than max_bytes={budget}")
    fp = open(path, "rb")
    try:
        return Archive(path, fp, st.st_size, budget)
    except BaseException:
        fp.close()
        raise


def _kind_matches(got: str, kind: str | Sequence[str]) -> bool:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    return any(got.startswith(k) if k.endswith(".") else got == k for k in kinds)


def load_archive(path: PathLike, kind: str | Sequence[str] | None = None, *, max_bytes: int | None = None
                 ) -> tuple[str, dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read a whole file written by :func:`save_archive`.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str or sequence of str, optional
        The kinds expected (one ending with ``"."`` is a prefix: ``"estimator."``); any other kind raises
        :class:`FormatError` before array data is read.
    max_bytes : int, optional
        As :func:`open_archive`.

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
    with open_archive(path, max_bytes=max_bytes) as ar:
        if kind is not None and not _kind_matches(ar.kind, kind):
            want = [kind] if isinstance(kind, str) else list(kind)
            expected = " or ".join(k + "*" if k.endswith(".") else k for k in want)
            raise ar.fail(f"holds a {ar.kind[:80]!r}, expected {expected}")
        return ar.kind, ar.config, ar.read_all(), ar.extra


# ---------------------------------------------------------------------------------------- rf.load
#: What :func:`load` builds, by kind (a kind ending with "." is a prefix): "module:function" taking an Archive.
LOADERS = {"estimator.": "rnnfast.estimators.persistence:from_archive",
           "nn.Sequential": "rnnfast.nn._serial:from_archive"}


def load(path: PathLike, *, max_bytes: int | None = None) -> Any:
    """Load what :meth:`rnnfast.LSTM.save` (any estimator) or :meth:`rnnfast.nn.Sequential.save` (and the
    trainer's :class:`~rnnfast.train.ModelCheckpoint`) wrote.

    Nothing in the file is executed: it is parsed as JSON and ``.npy`` arrays (no pickle), and checked, in
    the order :mod:`rnnfast.io` lists, before anything is built.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, optional
        The largest file accepted, in bytes (default :data:`rnnfast.io.DEFAULT_MAX_BYTES`, 2 GiB).

    Returns
    -------
    estimator or rnnfast.nn.Sequential
        An estimator fitted as it was saved (predictions are bit-identical; training can continue), or a
        Sequential in eval mode.

    Raises
    ------
    rnnfast.io.FormatError
        The file is damaged, truncated, too large, not an rnnfast file, or holds something else.
    FileNotFoundError
    """
    with open_archive(path, max_bytes=max_bytes) as ar:
        for prefix, target in LOADERS.items():
            if _kind_matches(ar.kind, prefix):
                module, func = target.split(":")
                model = getattr(importlib.import_module(module), func)(ar)
                if ar.precision is not None:
                    from rnnfast.quantize import quantize
                    model = quantize(model, ar.precision)
                return model
        if ar.kind == "model.state_dict":
            raise ar.fail("holds only a state dict (weights without the model's architecture, as older "
                          "checkpoints wrote): read it with rnnfast.io.load_archive(path) and pass its arrays "
                          "to your model's load_state_dict")
        raise ar.fail(f"holds a {ar.kind[:80]!r}, which rnnfast.load does not read (it reads estimator.* "
                      "and nn.Sequential files)")
