"""Encoding the estimators' input ``X``: float features or integer token ids, padded, with lengths.

``X`` is a float array (N, T, F), a list of (T_i, F) arrays, integer token ids (N, T) (trailing zeros
pad shorter sequences) or a list of id lists. :func:`encode_inputs` checks it and returns an
:class:`EncodedInput`; on a fitted estimator it is checked against the :class:`InputSpec` fitting made.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from rnnfast.nn.module import to_numpy
from rnnfast.train.data import pad_sequences

__all__ = ["InputSpec", "EncodedInput", "encode_inputs", "input_spec", "is_ragged"]

FEATURES, TOKENS = "features", "tokens"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a fitted estimator takes: ``kind`` "features" (``n_features_in`` per step) or "tokens"
    (ids in [0, ``vocab_size``); ``n_features_in`` is 1)."""

    kind: str
    n_features_in: int
    vocab_size: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class EncodedInput:
    """``X`` padded to (N, T[, F]) with per-sequence ``lengths`` (None when all are T)."""

    X: np.ndarray
    lengths: Optional[np.ndarray]
    from_list: bool
    kind: str
    n_features: int
    max_id: Optional[int] = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def t(self) -> int:
        return self.X.shape[1]


def is_ragged(obj: Any) -> bool:
    """A list/tuple (or object array) of sequences rather than a plain array of scalars."""
    if isinstance(obj, np.ndarray):
        return obj.dtype == object and obj.ndim == 1 and obj.size > 0 and isinstance(obj[0], (list, tuple, np.ndarray))
    if isinstance(obj, (list, tuple)):
        # numpy scalars have __array__ too: a sequence needs at least one axis
        return len(obj) > 0 and (isinstance(obj[0], (list, tuple)) or
                                 (hasattr(obj[0], "__array__") and np.ndim(obj[0]) >= 1))
    return False


def _from_sequences(X, univariate_2d):
    """A list of sequences -> (padded array, lengths, kind); 1-D float sequences are one feature per step
    when ``univariate_2d``."""
    seqs = [np.asarray(to_numpy(s)) for s in X]
    ndims = {s.ndim for s in seqs}
    if len(ndims) != 1:
        raise ValueError("the sequences of X must all be 1-D token ids or all 2-D (T_i, F) features")
    nd = ndims.pop()
    kinds = {s.dtype.kind for s in seqs}
    _refuse_complex(kinds)
    if nd == 1 and univariate_2d and not kinds <= set("iu") and kinds <= set("iufb"):
        seqs, nd = [s[:, None] for s in seqs], 2
    if nd == 1:
        if not kinds <= set("iu"):
            raise ValueError("1-D sequences must hold integer token ids; for one feature per step pass "
                             "(T_i, 1) arrays")
        kind = TOKENS
    elif nd == 2:
        if not kinds <= set("iufb"):
            bad = sorted({str(s.dtype) for s in seqs})
            raise ValueError(f"X's sequences must be numeric, got dtypes {bad}")
        kind = FEATURES
    else:
        raise ValueError(f"each sequence of X must be (T_i,) token ids or (T_i, F) features, got {nd}-D")
    try:
        Xp, lengths = pad_sequences(seqs, dtype=np.int64 if kind == TOKENS else None)
    except ValueError as e:
        raise ValueError(f"X: {e}") from None
    return Xp, lengths, kind


def _refuse_complex(kinds):
    if "c" in kinds:
        raise ValueError("Complex data not supported: X must hold real numbers")


def _from_array(X, univariate_2d):
    """An array -> (array, kind); 2-D floats are one feature per step when ``univariate_2d``."""
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X is empty (0 sequences)")
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("sparse input is not supported: pass X as a dense array")
    try:
        Xp = np.asarray(to_numpy(X))
    except ValueError as e:
        raise ValueError(f"X must be an array or a list of sequences: {e}") from None
    _refuse_complex({Xp.dtype.kind})
    if Xp.dtype == object:
        Xp = Xp.astype(np.float64)  # numbers held as objects; anything else raises TypeError / ValueError
    if Xp.dtype.kind not in "iufb":
        raise ValueError(f"X must be numeric (float features or integer token ids), got dtype {Xp.dtype}")
    if Xp.ndim == 2 and Xp.dtype.kind in "iu":
        kind = TOKENS
    elif Xp.ndim == 2 and univariate_2d:
        Xp, kind = Xp[..., None], FEATURES
    elif Xp.ndim == 3:
        kind = FEATURES
    elif Xp.ndim == 2:
        raise ValueError(f"X has shape {Xp.shape} of {Xp.dtype}: pass (N, T, F) features (for one feature "
                         "per step, X[..., None]) or integer token ids (N, T)")
    else:
        hint = "; Reshape your data: X[None] is one sequence" if Xp.ndim < 2 else ""
        raise ValueError(f"X must be 3-D (N, T, F) features or 2-D (N, T) token ids, got shape {Xp.shape}{hint}")
    if Xp.shape[0] == 0:
        raise ValueError("X is empty (0 sequences)")
    if Xp.shape[1] == 0:
        raise ValueError(f"X has sequences of length 0 (shape {Xp.shape})")
    return Xp, kind


def _token_lengths(Xp, lengths, from_list):
    """Check token ids (0 is padding, only at the end) and return the lengths."""
    if Xp.min() < 0:
        raise ValueError(f"token ids must be >= 0, got {Xp.min()}")
    T = Xp.shape[1]
    nz = Xp != 0
    if from_list:
        bad = ~nz & (np.arange(T)[None, :] < lengths[:, None])
        if np.any(bad):
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"sequence {i} holds token id 0, which is reserved for padding; shift the ids by 1")
        return lengths
    has = nz.any(axis=1)
    if not has.all():
        raise ValueError(f"sequence {int(np.flatnonzero(~has)[0])} of X holds only padding (token 0)")
    lengths = T - np.argmax(nz[:, ::-1], axis=1).astype(np.int64)
    inner = ~nz & (np.arange(T)[None, :] < lengths[:, None])
    if inner.any():
        i = int(np.flatnonzero(inner.any(axis=1))[0])
        raise ValueError(f"sequence {i} of X holds token id 0 before its end; 0 is reserved for "
                         "trailing padding (shift the ids by 1)")
    return lengths


def _check_against(enc: EncodedInput, spec: InputSpec, who: str) -> None:
    if enc.kind != spec.kind:
        raise ValueError(f"X holds {enc.kind}, but {who} was fitted on {spec.kind}")
    if enc.kind == FEATURES and enc.n_features != spec.n_features_in:
        raise ValueError(f"X has {enc.n_features} features, but {who} is expecting "
                         f"{spec.n_features_in} features as input")
    if enc.kind == TOKENS and enc.max_id >= spec.vocab_size:  # type: ignore[operator]  # both set for tokens
        raise ValueError(f"X holds token id {enc.max_id}, outside the vocabulary of the fitted model "
                         f"(vocab_size_={spec.vocab_size}); set vocab_size when fitting")


def encode_inputs(X: Any, dtype: np.dtype, spec: Optional[InputSpec] = None, who: str = "the estimator",
                  univariate_2d: bool = False) -> EncodedInput:
    """Check and pad ``X``.

    Parameters
    ----------
    X : array (N, T, F), list of (T_i, F) arrays, token ids (N, T) or list of id lists
    dtype : numpy.dtype
        Float features are converted to it (token ids become int64).
    spec : InputSpec, optional
        A fitted estimator's: ``X`` must match it.
    who : str
        The estimator's name, for messages.
    univariate_2d : bool, default False
        Read a 2-D float array (N, T) and a list of 1-D float sequences as one feature per step (else
        they are refused).

    Returns
    -------
    EncodedInput

    Raises
    ------
    ValueError
        Empty, non-numeric, badly shaped or non-finite ``X``; misplaced padding ids; a mismatch with ``spec``.
    """
    from_list = is_ragged(X)
    if from_list:
        Xp, lengths, kind = _from_sequences(X, univariate_2d)
    else:
        (Xp, kind), lengths = _from_array(X, univariate_2d), None
    T = Xp.shape[1]
    if kind == TOKENS:
        Xp = Xp.astype(np.int64, copy=False)
        lengths = _token_lengths(Xp, lengths, from_list)
        n_feat, max_id = 1, int(Xp.max())
    else:
        Xp = Xp.astype(dtype, copy=False)
        if not np.all(np.isfinite(Xp)):
            raise ValueError("X contains NaN or infinity")
        n_feat, max_id = Xp.shape[2], None
    if lengths is not None and np.all(lengths == T):
        lengths = None
    enc = EncodedInput(Xp, lengths, from_list, kind, n_feat, max_id)
    if spec is not None:
        _check_against(enc, spec, who)
    return enc


def input_spec(enc: EncodedInput, vocab_size: Optional[int]) -> InputSpec:
    """The :class:`InputSpec` of fitting on ``enc``; ``vocab_size`` (the parameter) defaults to the largest id + 1."""
    if enc.kind != TOKENS or enc.max_id is None:
        return InputSpec(FEATURES, enc.n_features)
    if vocab_size is not None and vocab_size <= enc.max_id:
        raise ValueError(f"X holds token id {enc.max_id} but vocab_size={vocab_size}")
    return InputSpec(TOKENS, 1, vocab_size if vocab_size is not None else enc.max_id + 1)
