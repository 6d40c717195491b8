"""Normalization layers: :class:`BatchNorm` over the feature axis of sequences (valid steps only, running
statistics for eval) and :class:`LayerNorm`, as PyTorch's ``torch.nn.BatchNorm1d`` and ``torch.nn.LayerNorm``.

Both are batch-first like the other ``rnnfast.nn`` layers: a (B, T, ...) sequence is right-padded and
``lengths`` (B,) gives each sequence's valid steps. Only the valid steps are normalized (and, for
:class:`BatchNorm`, counted in the statistics); the padded steps' output is zero and they get zero gradient.
Both compute, over the "rows" they normalize (N valid positions of F features for BatchNorm, the
``normalized_shape`` block of each position for LayerNorm)::

    x_hat = (x - mean) / sqrt(var + eps)        var: the biased variance (divided by the count)
    y = x_hat * weight + bias                   (weight and bias when affine)

and share one backward::

    dx = (dy - mean(dy) - x_hat * mean(dy * x_hat)) / sqrt(var + eps),   dy = dout * weight
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rnnfast._typing import ArrayLike, DTypeLike
from rnnfast._validation import check_bool, check_int, check_real
from rnnfast.nn.layers import _check_grad
from rnnfast.nn.module import (Module, _shared, as_float, check_float_dtype, check_lengths, check_param_count,
                               time_mask, validate_state_dict)

__all__ = ["BatchNorm", "LayerNorm", "BUFFERS"]

#: The state-dict entries of :class:`BatchNorm` that are statistics, not trainable parameters (no gradient).
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ---------------------------------------------------------------------------------------- shared helpers
def _rows(x: np.ndarray, lengths: Any, k: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(rows, pad): ``x`` as (M, S) rows of its last ``k`` axes (S their product), and for a (B, T, ...)
    sequence with ``lengths`` the (M,) bool mask of the rows at padded steps (None when there are none).

    The padded rows are computed with the others and zeroed after (cheaper than gathering the valid rows
    and scattering them back: the estimators batch sequences of similar lengths, so padding is little)."""
    rows = x.reshape(-1, int(np.prod(x.shape[x.ndim - k:], dtype=np.int64)))
    if lengths is None:
        return rows, None
    B, T = x.shape[:2]
    lens = check_lengths(lengths, B, T)
    if int(lens.sum()) == B * T:
        return rows, None
    pad = ~time_mask(lens, B, T)
    extra = x.ndim - k - 2  # axes between time and the normalized ones, each row of them alike
    return rows, np.broadcast_to(pad.reshape(pad.shape + (1,) * extra), x.shape[:x.ndim - k]).reshape(-1)


def _valid_sum(a: np.ndarray, pad: Optional[np.ndarray]) -> np.ndarray:
    """The sum of the valid rows of ``a`` (M, S): (S,) (whatever the padded rows hold)."""
    return a.sum(axis=0) if pad is None else np.add.reduce(a, axis=0, where=~pad[:, None])


def _zero(a: np.ndarray, pad: Optional[np.ndarray]) -> np.ndarray:
    """``a`` with its padded rows set to zero (in place)."""
    if pad is not None:
        a[pad] = 0
    return a


class _Norm(Module):
    """What BatchNorm and LayerNorm share: the affine parameters, the kept cache and the backward.

    A training-mode forward standardizes (M, S) rows to ``x_hat`` (zero at the padded rows) and calls
    :meth:`_finish`; :meth:`_means` gives backward the means of ``dy`` and ``dy * x_hat`` along the axis the
    statistics run over (over valid rows for BatchNorm, over each row for LayerNorm)."""

    dtype: np.dtype

    def _add_affine(self, shape: tuple, bias: bool = True) -> None:
        self._add_param("weight", np.ones(shape, self.dtype))
        if bias:
            self._add_param("bias", np.zeros(shape, self.dtype))

    def _affine(self) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(weight, bias) as flat (S,) views, each None when the layer has none."""
        p = self._params
        return tuple(p[k].reshape(-1) if k in p else None for k in ("weight", "bias"))  # type: ignore[return-value]

    def _finish(self, xhat: np.ndarray, invstd: np.ndarray, pad: Optional[np.ndarray], shape: tuple,
                n: int) -> np.ndarray:
        """The output of the standardized rows ``xhat``: the affine map, zero at the padded rows."""
        w, b = self._affine()
        _zero(xhat, pad)
        if self.training:  # x_hat is kept for backward
            y = xhat * w if w is not None else xhat.copy()
        else:  # nothing is kept: x_hat's buffer becomes the output
            y = xhat if w is None else np.multiply(xhat, w, out=xhat)
        if b is not None:
            y += b
        self._keep((xhat, invstd, pad, shape, n))
        return _zero(y, pad).reshape(shape)

    def _means(self, dy: np.ndarray, xhat: np.ndarray, sum_d: np.ndarray, sum_dx: np.ndarray,
               n: int) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: ArrayLike, *, n_threads: Optional[int] = None) -> np.ndarray:
        """Accumulate ``grads`` (weight, bias) and return the gradient wrt the input (zero at padded steps).

        Parameters
        ----------
        dout : array, the shape of the last training-mode forward's output
        n_threads : int, optional
            Accepted for the layer protocol; not used.

        Returns
        -------
        numpy.ndarray, the input's shape
        """
        xhat, invstd, pad, shape, n = self._take_cache()
        d = _check_grad(dout, shape, self.dtype).reshape(xhat.shape)
        w, b = self._affine()
        # x_hat is zero at the padded rows: they add nothing (einsum: no temporary the size of the batch, whose
        # fresh pages cost more than the arithmetic)
        sum_dx, sum_d = np.einsum("ij,ij->j", d, xhat), _valid_sum(d, pad)
        if w is not None:
            self.grads["weight"].reshape(-1)[...] += sum_dx
        if b is not None:
            self.grads["bias"].reshape(-1)[...] += sum_d
        dy = d * w if w is not None else d.copy()
        mean_dy, mean_dyx = self._means(dy, xhat, sum_d, sum_dx, n)
        dy -= mean_dy
        xhat *= mean_dyx  # the cache is consumed: its buffer serves
        dy -= xhat
        dy *= invstd
        return _zero(dy, pad).reshape(shape)


# ---------------------------------------------------------------------------------------- BatchNorm
class BatchNorm(_Norm):
    """Batch normalization over the feature (last) axis, counting only valid steps: PyTorch's
    ``torch.nn.BatchNorm1d`` applied to the packed valid steps of a (B, T, F) batch, or to (B, F) rows.

    Parameters
    ----------
    num_features : int
        F, the size of the last axis.
    momentum : float in [0, 1] or None, default 0.1
        ``running = (1 - momentum) * running + momentum * batch_statistic``; None: the cumulative average
        over the batches seen (``momentum = 1 / num_batches_tracked``), as PyTorch.
    eps : float > 0, default 1e-5
        Added to the variance.
    affine : bool, default True
        Learn ``weight`` (ones) and ``bias`` (zeros), shape (F,).
    track_running_stats : bool, default True
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``, updated by every
        training-mode forward and used in eval mode. Without them, eval mode normalizes with the batch's
        own statistics, as PyTorch.
    dtype : float32 (default) or float64

    Notes
    -----
    ``forward(x, *, lengths=None)``: ``x`` (B, T, F) with ``lengths`` (B,) (the statistics are the mean and
    biased variance over the sum(lengths) valid steps; padded steps output zero), or (B, F) rows (``lengths``
    is then ignored, so the layer may follow a pooling layer in a :class:`Sequential` given ``lengths``).
    Training mode normalizes with the batch statistics and updates the running ones (the variance
    unbiased, times N / (N - 1), as PyTorch); it needs more than one valid row. ``state_dict`` keys are
    PyTorch's: ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked`` (int64);
    ``grads`` and :meth:`named_parameters` hold the trainable ``weight`` and ``bias`` only.

    Examples
    --------
    >>> bn = BatchNorm(4)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    >>> y = bn(x, lengths=[5, 3])
    >>> float(abs(y[1, 3:]).max()), sorted(bn.state_dict())[:2]
    (0.0, ['bias', 'num_batches_tracked'])
    """

    _read_only = ("num_features", "affine", "track_running_stats", "dtype")

    def __init__(self, num_features: int, momentum: Optional[float] = 0.1, eps: float = 1e-5, affine: bool = True,
                 track_running_stats: bool = True, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.num_features = check_int(num_features, "num_features", 1)
        self.momentum = check_real(momentum, "momentum", 0.0, 1.0, allow_none=True)
        self.eps = check_real(eps, "eps", 0.0, closed="neither")
        self.affine = check_bool(affine, "affine")
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats")
        self.dtype = check_float_dtype(dtype)
        F = self.num_features
        check_param_count(4 * F, self.dtype, f"BatchNorm({F})")
        if self.affine:
            self._add_affine((F,))
        self._buffers: dict = {}
        if self.track_running_stats:
            self._buffers = {"running_mean": np.zeros(F, self.dtype), "running_var": np.ones(F, self.dtype),
                             "num_batches_tracked": np.zeros((), np.int64)}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Copies of the parameters and the running statistics (PyTorch's keys).

        Returns
        -------
        dict of str to numpy.ndarray
        """
        return {**super().state_dict(), **{k: v.copy() for k, v in self._buffers.items()}}

    def load_state_dict(self, state_dict: Any) -> None:
        """Load parameters and running statistics (keys as :meth:`state_dict`); nothing changes on error.

        Raises
        ------
        ValueError
            Missing or unexpected keys, a wrong shape, or a negative ``num_batches_tracked``.
        TypeError
            ``state_dict`` is not a mapping or a value is not real-numeric.
        """
        new = validate_state_dict(state_dict, {**self._params, **self._buffers})
        if "num_batches_tracked" in new and new["num_batches_tracked"] < 0:
            raise ValueError("state_dict['num_batches_tracked'] must be >= 0")
        for name, arr in new.items():
            (self._params if name in self._params else self._buffers)[name][...] = arr
        self._drop_caches()

    def reset_running_stats(self) -> None:
        """Running mean to zeros, running variance to ones, ``num_batches_tracked`` to 0."""
        if self.track_running_stats:
            self._buffers["running_mean"][...] = 0
            self._buffers["running_var"][...] = 1
            self._buffers["num_batches_tracked"][...] = 0

    # ------------------------------------------------------------------ calling
    def _check_input(self, x: ArrayLike) -> np.ndarray:
        x = as_float(x, self.dtype, "x")
        if x.ndim not in (2, 3) or x.shape[-1] != self.num_features:
            raise ValueError(f"x must be (batch, time, {self.num_features}) or (batch, {self.num_features}) "
                             f"(num_features on the last axis), got shape {x.shape}")
        return x

    def _update_running(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        with _shared(self).lock:  # training forwards in several threads: each update whole
            self._blend_running(mean, var, n)

    def _blend_running(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        buf = self._buffers
        buf["num_batches_tracked"] += 1
        m = 1.0 / float(buf["num_batches_tracked"]) if self.momentum is None else self.momentum
        m = self.dtype.type(m)
        buf["running_mean"] *= 1 - m
        buf["running_mean"] += m * mean.reshape(-1)
        buf["running_var"] *= 1 - m
        buf["running_var"] += (m * var.reshape(-1) * self.dtype.type(n / (n - 1)))

    def forward(self, x: ArrayLike, *, lengths: Optional[ArrayLike] = None,
                n_threads: Optional[int] = None) -> np.ndarray:
        """Normalize ``x`` (B, T, F) over its valid steps, or (B, F) rows; the output has ``x``'s shape.

        Parameters
        ----------
        x : array (B, T, F) or (B, F)
        lengths : array-like of int (B,), optional
            Valid steps of each right-padded sequence (a 3-D ``x`` only; ignored for (B, F)).
        n_threads : int, optional
            Accepted for the layer protocol; not used.

        Raises
        ------
        ValueError
            A wrong shape or lengths, or training with a single valid row (no variance to speak of).
        """
        x = self._check_input(x)
        rows, pad = _rows(x, lengths if x.ndim == 3 else None, 1)
        if not self.training and self.track_running_stats:
            return self._eval(rows, pad, x.shape)
        n = rows.shape[0] - (0 if pad is None else int(pad.sum()))
        if self.training and n < 2:
            raise ValueError(f"BatchNorm needs more than one valid row per feature to train, got {n} "
                             f"(input shape {x.shape})")
        mean = _valid_sum(rows, pad) / n
        xc = _zero(rows - mean, pad)
        var = np.einsum("ij,ij->j", xc, xc) / self.dtype.type(n)
        if self.training and self.track_running_stats:
            self._update_running(mean, var, n)
        invstd = 1.0 / np.sqrt(var + self.dtype.type(self.eps))
        xc *= invstd
        return self._finish(xc, invstd, pad, x.shape, n)

    def _eval(self, rows: np.ndarray, pad: Optional[np.ndarray], shape: tuple) -> np.ndarray:
        """Eval mode with the running statistics: ``x * scale + shift``, zero at the padded rows."""
        w, b = self._affine()
        scale = 1.0 / np.sqrt(self._buffers["running_var"] + self.dtype.type(self.eps))
        if w is not None:
            scale *= w
        shift = -self._buffers["running_mean"] * scale
        if b is not None:
            shift += b
        y = rows * scale
        y += shift
        return _zero(y, pad).reshape(shape)

    def _means(self, dy: np.ndarray, xhat: np.ndarray, sum_d: np.ndarray, sum_dx: np.ndarray,
               n: int) -> tuple[Any, Any]:
        """Over the valid rows: mean(dy) = w * sum(d) / n and mean(dy * x_hat) = w * sum(d * x_hat) / n."""
        w = self._affine()[0]
        scale = (1.0 if w is None else w) / self.dtype.type(n)
        return sum_d * scale, sum_dx * scale

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, dtype={self.dtype.name}")


# ---------------------------------------------------------------------------------------- LayerNorm
class LayerNorm(_Norm):
    """Layer normalization over the last axes, PyTorch's ``torch.nn.LayerNorm``.

    Parameters
    ----------
    normalized_shape : int or sequence of int
        The shape of the trailing axes normalized together (an int ``F``: the last axis).
    eps : float > 0, default 1e-5
    elementwise_affine : bool, default True
        Learn ``weight`` (ones) and, with ``bias``, ``bias`` (zeros), both of ``normalized_shape``.
    bias : bool, default True
    dtype : float32 (default) or float64

    Notes
    -----
    ``forward(x, *, lengths=None)``: ``x`` of shape ``(..., *normalized_shape)``; each position's block is
    normalized with its own mean and biased variance, in training and eval alike. ``lengths`` (B,) applies
    to a sequence ``(B, T, *normalized_shape)``: its padded steps output zero and get zero gradient (with
    fewer leading axes it is ignored, so the layer may follow a pooling layer in a :class:`Sequential`).

    Examples
    --------
    >>> ln = LayerNorm(4)
    >>> y = ln(np.arange(8.0).reshape(2, 4))
    >>> np.round(y[0], 3)
    array([-1.342, -0.447,  0.447,  1.342], dtype=float32)
    """

    _read_only = ("normalized_shape", "elementwise_affine", "bias", "dtype")

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.normalized_shape = _check_shape(normalized_shape)
        self.eps = check_real(eps, "eps", 0.0, closed="neither")
        self.elementwise_affine = check_bool(elementwise_affine, "elementwise_affine")
        self.bias = check_bool(bias, "bias")
        self.dtype = check_float_dtype(dtype)
        size = int(np.prod(self.normalized_shape, dtype=np.int64))
        check_param_count(2 * size, self.dtype, f"LayerNorm({self.normalized_shape})")
        if self.elementwise_affine:
            self._add_affine(self.normalized_shape, self.bias)

    def forward(self, x: ArrayLike, *, lengths: Optional[ArrayLike] = None,
                n_threads: Optional[int] = None) -> np.ndarray:
        """Normalize each position of ``x`` over its last ``len(normalized_shape)`` axes.

        Parameters
        ----------
        x : array (..., *normalized_shape)
        lengths : array-like of int (B,), optional
            Valid steps of a right-padded (B, T, *normalized_shape) sequence.
        n_threads : int, optional
            Accepted for the layer protocol; not used.

        Returns
        -------
        numpy.ndarray, ``x``'s shape
        """
        x = as_float(x, self.dtype, "x")
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"x must end with normalized_shape {self.normalized_shape}, got shape {x.shape}")
        rows, pad = _rows(x, lengths if x.ndim >= k + 2 else None, k)
        size = rows.shape[1]
        xc = rows - rows.mean(axis=1, keepdims=True)
        var = np.einsum("ij,ij->i", xc, xc)[:, None] / self.dtype.type(size)
        invstd = 1.0 / np.sqrt(var + self.dtype.type(self.eps))
        xc *= invstd
        return self._finish(xc, invstd, pad, x.shape, size)

    def _means(self, dy: np.ndarray, xhat: np.ndarray, sum_d: np.ndarray, sum_dx: np.ndarray,
               n: int) -> tuple[Any, Any]:
        """Over each row: mean(dy) and mean(dy * x_hat), (M, 1)."""
        return dy.mean(axis=1, keepdims=True), np.einsum("ij,ij->i", dy, xhat)[:, None] / self.dtype.type(n)

    def extra_repr(self) -> str:
        bias = "" if self.bias else ", bias=False"
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}{bias}, "
                f"dtype={self.dtype.name}")


def _check_shape(shape: Any) -> tuple:
    """``normalized_shape`` as a non-empty tuple of ints >= 1."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        return (check_int(int(shape), "normalized_shape", 1),)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {type(shape).__name__}")
    dims = tuple(check_int(s, "normalized_shape[i]", 1) for s in shape)
    if not dims:
        raise ValueError("normalized_shape must have at least one axis")
    return dims
