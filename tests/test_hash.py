"""The digest that checks kept weight packs (csrc/rf_hash.h, ``_recurrent.weights_digest``).

It must not depend on the instruction-set copy or the thread count (a pack made on one is checked on the
other), must change with any change of the bytes (a flipped bit anywhere, two floats swapped, a length
that differs only by zero padding), and must hash the bytes exactly as they lie (non-contiguous views are
made contiguous first).
"""
import numpy as np
import pytest

from rnnfast._kernels._recurrent import weights_digest

CHUNK = 256 * 1024  # RF_HASH_CHUNK
SIZES = [0, 1, 7, 63, 64, 65, 511, 512, 513, 4096 + 12, CHUNK - 4, CHUNK, CHUNK + 4, 3 * CHUNK + 100]


def _bytes(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _reference(a):
    """The digest from the lane-by-lane copy on one thread."""
    return weights_digest(a, 1, 0)


@pytest.mark.parametrize("n", SIZES)
def test_copies_and_threads_agree(n):
    a = _bytes(n)
    want = _reference(a)
    assert isinstance(want, bytes) and len(want) == 16
    for isa in (1, 2, 3):
        got = weights_digest(a, 1, isa)
        assert got is None or got == want, isa  # (None: this processor lacks the copy)
    for nth in (1, 2, 3, 8):
        assert weights_digest(a, nth) == want


@pytest.mark.parametrize("n", [64, 4096 + 12, CHUNK + 4, 3 * CHUNK + 100])
def test_every_flipped_bit_changes_the_digest(n):
    a = _bytes(n, 1)
    base = weights_digest(a, 2)
    rng = np.random.default_rng(2)
    positions = set(rng.integers(0, n, 200).tolist()) | {0, n - 1, min(n - 1, CHUNK - 1), min(n - 1, CHUNK)}
    seen = {base}
    for pos in sorted(positions):
        for bit in (0, 3, 7):
            b = a.copy()
            b[pos] ^= np.uint8(1 << bit)
            d = weights_digest(b, 2)
            assert d != base, (pos, bit)
            seen.add(d)
    assert len(seen) == 1 + 3 * len(positions)  # (no two changes collide either)


def test_swapped_and_shifted_floats_change_the_digest():
    w = np.random.default_rng(3).standard_normal((96, 40)).astype(np.float32)
    base = weights_digest(w)
    for i, j in [(0, 1), (0, 8), (0, 16), (5, 5 + 64), (100, 3000), (0, w.size - 1)]:
        v = w.ravel().copy()
        v[i], v[j] = v[j], v[i]
        assert weights_digest(v) != base, (i, j)
    assert weights_digest(np.roll(w.ravel(), 16)) != base  # (one 64-byte stripe over)
    assert weights_digest(w.T) != base  # (a transposed copy: the same floats, elsewhere)
    assert weights_digest(w.T) == weights_digest(np.ascontiguousarray(w.T))


def test_zero_padding_and_length_count():
    a = np.zeros(64, np.uint8)
    digests = {weights_digest(a[:n]) for n in range(65)}
    assert len(digests) == 65
    w = np.ones(1000, np.float32)
    assert weights_digest(w) != weights_digest(np.ones(1001, np.float32))


def test_same_bytes_same_digest_whatever_the_dtype():
    w = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    assert weights_digest(w) == weights_digest(w.view(np.uint8)) == weights_digest(w.copy())
