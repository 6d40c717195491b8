"""Batching of variable-length sequences: padding with lengths, bucketing by length, seeded shuffling.

Sequences are stored once, right-padded into one array with a ``lengths`` vector (:func:`pad_sequences`,
:class:`SequenceDataset`); a batch is a gather of rows trimmed to its own longest sequence, so padding
costs only up to the batch's longest length. :func:`bucket_batches` groups sequences of similar length
(sorting within chunks of a shuffled order, then shuffling the batches), which keeps that padding small
while every epoch still sees a different, seeded order.
"""

import numpy as np

from rnnfast._validation import check_bool, check_real
from rnnfast.nn.module import as_real_array, check_int, make_rng, to_numpy

__all__ = ["pad_sequences", "batch_indices", "bucket_batches", "SequenceDataset"]


def pad_sequences(sequences, dtype=None, value=0, max_length=None):
    """Right-pad a list of sequences into one array.

    Parameters
    ----------
    sequences : list of array-like
        Each ``(T_i,)`` (e.g. token ids) or ``(T_i, F, ...)`` with the same trailing shape; ``T_i >= 1``.
    dtype : numpy dtype, optional
        Of the result; default the common dtype of the sequences.
    value : scalar, default 0
        Fill value of the padded steps.
    max_length : int, optional
        Pad to this length (default: the longest sequence); longer sequences are an error.

    Returns
    -------
    padded : numpy.ndarray, shape ``(B, T_max) + trailing``
    lengths : numpy.ndarray of int64, shape ``(B,)``

    Raises
    ------
    ValueError
        No sequences, an empty sequence, trailing shapes that differ, or a sequence longer than
        ``max_length``.

    Examples
    --------
    >>> x, lengths = pad_sequences([[3, 1, 4], [1, 5]])
    >>> x
    array([[3, 1, 4],
           [1, 5, 0]])
    >>> lengths
    array([3, 2])
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        raise TypeError("sequences must be a list of arrays (a padded array needs no padding)")
    seqs = [np.asarray(to_numpy(s)) for s in sequences]
    if not seqs:
        raise ValueError("no sequences to pad (empty list)")
    trailing = None
    for i, s in enumerate(seqs):
        if s.ndim == 0:
            raise ValueError(f"sequence {i} is a scalar; each sequence needs a time axis")
        if s.shape[0] == 0:
            raise ValueError(f"sequence {i} is empty (length 0); every sequence needs at least one step")
        if trailing is None:
            trailing = s.shape[1:]
        elif s.shape[1:] != trailing:
            raise ValueError(f"sequence {i} has per-step shape {s.shape[1:]}, sequence 0 has {trailing}")
    lengths = np.fromiter((s.shape[0] for s in seqs), dtype=np.int64, count=len(seqs))
    T = int(lengths.max())
    if max_length is not None:
        max_length = check_int(max_length, "max_length", 1)
        if T > max_length:
            raise ValueError(f"a sequence has {T} steps, more than max_length={max_length}")
        T = max_length
    dt = np.result_type(*{s.dtype for s in seqs}) if dtype is None else np.dtype(dtype)
    out = np.full((len(seqs), T) + trailing, value, dtype=dt)
    # One vectorised scatter of all valid steps instead of a copy per sequence.
    mask = np.arange(T)[None, :] < lengths[:, None]
    out[mask] = np.concatenate(seqs, axis=0)
    return out, lengths


def batch_indices(n, batch_size, rng=None, shuffle=True):
    """Split ``range(n)`` into batches of ``batch_size`` (the last may be smaller).

    Parameters
    ----------
    n, batch_size : int
    rng : int, numpy Generator or None
        Seeds the shuffle.
    shuffle : bool, default True

    Returns
    -------
    list of numpy.ndarray of intp
    """
    n = check_int(n, "n", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    order = make_rng(rng).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def bucket_batches(lengths, batch_size, rng=None, shuffle=True, bucket_size=None):
    """Batches of sequences of similar length: sort by length within chunks of a (shuffled) order.

    The order is shuffled, cut into chunks of ``bucket_size`` sequences, each chunk sorted by length
    (longest first) and cut into batches; with ``shuffle`` the batches are then shuffled too. Larger
    chunks give less padding and less randomness.

    Parameters
    ----------
    lengths : array-like of int, shape (n,)
    batch_size : int
    rng : int, numpy Generator or None
        Seeds both shuffles.
    shuffle : bool, default True
    bucket_size : int, optional
        Sequences per chunk; rounded up to a multiple of ``batch_size`` so that only the last batch
        can be short. Default ``32 * batch_size``.

    Returns
    -------
    list of numpy.ndarray of intp
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    batch_size = check_int(batch_size, "batch_size", 1)
    if bucket_size is None:
        bucket_size = 32 * batch_size
    bucket_size = check_int(bucket_size, "bucket_size", 1)
    bucket_size = -(-bucket_size // batch_size) * batch_size
    rng = make_rng(rng)
    n = lengths.shape[0]
    order = rng.permutation(n) if shuffle else np.arange(n)
    batches = []
    for c in range(0, n, bucket_size):
        chunk = order[c:c + bucket_size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, chunk.shape[0], batch_size))
    if shuffle and len(batches) > 1:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class SequenceDataset:
    """Sequences (padded once), targets and sample weights, gathered batch by batch.

    Parameters
    ----------
    X : array-like (N, T, ...) or list of (T_i, ...) sequences
        A list is padded with zeros (:func:`pad_sequences`).
    y : array-like (N, ...), optional
        One target per sequence, or with ``per_step`` one per time step: (N, T, ...), or a list of
        (T_i, ...) arrays matching ``X``'s lengths.
    lengths : array-like of int (N,), optional
        Valid steps of each row of a padded ``X`` (default: all ``T``); not allowed with a list ``X``.
    sample_weight : array-like (N,), optional
    per_step : bool, default False
        Whether ``y`` has a time axis aligned with ``X``'s (trimmed together with it).

    Attributes
    ----------
    X, y, sample_weight : numpy.ndarray or None
    lengths : numpy.ndarray of int64 (N,)
    full : bool
        True when every sequence has all ``T`` steps.
    """

    def __init__(self, X, y=None, lengths=None, sample_weight=None, per_step=False):
        self.per_step = check_bool(per_step, "per_step")
        if isinstance(X, (list, tuple)) or (isinstance(X, np.ndarray) and X.dtype == object):
            if lengths is not None:
                raise ValueError("lengths is taken from the sequences of a list X; do not pass it")
            X, lengths = pad_sequences(X)
        else:
            X = np.asarray(to_numpy(X))
            if X.ndim < 2:
                raise ValueError(f"X must have a batch and a time axis, got shape {X.shape}")
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise ValueError(f"X must hold at least one sequence of at least one step, got shape {X.shape}")
        N, T = X.shape[:2]
        if lengths is None:
            lengths = np.full(N, T, dtype=np.int64)
        else:
            lengths = as_real_array(lengths, "lengths")
            if lengths.shape != (N,):
                raise ValueError(f"lengths must have shape ({N},), got {lengths.shape}")
            if lengths.dtype.kind == "f" and not np.all(lengths == np.round(lengths)):
                raise TypeError("lengths must be whole numbers")
            lengths = lengths.astype(np.int64)
            if lengths.min() < 1 or lengths.max() > T:
                raise ValueError(f"lengths must be in [1, {T}], got min {lengths.min()}, max {lengths.max()}")
        if y is not None:
            if self.per_step and (isinstance(y, (list, tuple)) or (isinstance(y, np.ndarray) and y.dtype == object)):
                y, ylen = pad_sequences(y, max_length=T)
                if not np.array_equal(ylen, lengths):
                    bad = int(np.flatnonzero(ylen != lengths)[0])
                    raise ValueError(f"y[{bad}] has {ylen[bad]} steps, X[{bad}] has {lengths[bad]}")
            y = np.asarray(to_numpy(y))
            if y.ndim == 0 or y.shape[0] != N:
                raise ValueError(f"X has {N} sequences, y has {y.shape[0] if y.ndim else 0} targets")
            if self.per_step and (y.ndim < 2 or y.shape[1] != T):
                raise ValueError(f"per-step targets need shape ({N}, {T}, ...), got {y.shape}")
        if sample_weight is not None:
            sample_weight = as_real_array(sample_weight, "sample_weight")
            if sample_weight.shape != (N,):
                raise ValueError(f"sample_weight must have shape ({N},), got {sample_weight.shape}")
            if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
                raise ValueError("sample_weight must be finite and non-negative")
        self.X, self.y, self.lengths, self.sample_weight = X, y, lengths, sample_weight
        self.full = bool(np.all(lengths == T))

    def __len__(self):
        return self.X.shape[0]

    @property
    def T(self):
        """Padded length (int)."""
        return self.X.shape[1]

    def batch(self, idx):
        """Rows ``idx``, trimmed to their longest sequence.

        Returns
        -------
        x : numpy.ndarray (b, T_b, ...)
        lengths : numpy.ndarray of int64 (b,), or None when every row has all T_b steps
        y : numpy.ndarray or None
        sample_weight : numpy.ndarray or None
        """
        if self.full:
            lb = None
            x = self.X[idx]
            Tb = self.T
        else:
            lb = self.lengths[idx]
            Tb = int(lb.max())
            x = self.X[idx, :Tb] if Tb < self.T else self.X[idx]
            if np.all(lb == Tb):
                lb = None
        y = None
        if self.y is not None:
            y = self.y[idx, :Tb] if self.per_step and Tb < self.T else self.y[idx]
        sw = None if self.sample_weight is None else self.sample_weight[idx]
        return x, lb, y, sw

    def subset(self, idx):
        """A new dataset of rows ``idx`` (copies)."""
        idx = np.asarray(idx)
        ds = SequenceDataset.__new__(SequenceDataset)
        ds.per_step = self.per_step
        ds.lengths = self.lengths[idx]
        T = int(ds.lengths.max()) if ds.lengths.size else self.T
        ds.X = self.X[idx, :T]
        ds.y = None if self.y is None else (self.y[idx, :T] if self.per_step else self.y[idx])
        ds.sample_weight = None if self.sample_weight is None else self.sample_weight[idx]
        ds.full = bool(np.all(ds.lengths == T))
        return ds

    def split(self, validation_fraction):
        """``(train, validation)``: the validation set is the last ``validation_fraction`` of the rows
        (taken before any shuffling, as Keras's ``validation_split``).

        Raises
        ------
        TypeError
            If the fraction is not a number.
        ValueError
            If the fraction is not in (0, 1) or leaves either part empty.
        """
        validation_fraction = check_real(validation_fraction, "validation_split", 0.0, 1.0, closed="neither")
        n = len(self)
        n_val = int(np.floor(n * float(validation_fraction)))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"validation_split={validation_fraction} of {n} sequences leaves "
                             f"{n - n_val} for training and {n_val} for validation; both need at least one")
        return self.subset(np.arange(n - n_val)), self.subset(np.arange(n - n_val, n))
