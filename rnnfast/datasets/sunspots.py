"""Yearly sunspot numbers 1700-2008, as shipped by ``statsmodels``, and supervised forecasting windows."""
from __future__ import annotations

import csv
import functools

import numpy as np

from rnnfast._typing import ArrayLike, DTypeLike
from rnnfast._validation import check_int
from rnnfast.datasets._base import data_path

__all__ = ["load_sunspots", "make_windows"]

PACKAGE = "statsmodels"
_FILE = "datasets/sunspots/sunspots.csv"


@functools.lru_cache(maxsize=2)
def _parsed(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    head = [h.strip().upper() for h in rows[0]]
    if head[:2] != ["YEAR", "SUNACTIVITY"]:
        raise ValueError(f"{path}: expected the columns YEAR, SUNACTIVITY, got {rows[0]}")
    body = [r for r in rows[1:] if r]
    years = np.asarray([int(float(r[0])) for r in body], dtype=np.int64)
    values = np.asarray([float(r[1]) for r in body], dtype=np.float64)
    if years.size > 1 and np.any(np.diff(years) != 1):
        raise ValueError(f"{path}: the years are not consecutive")
    years.setflags(write=False)
    values.setflags(write=False)
    return years, values


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Yearly mean sunspot numbers from the ``statsmodels`` package (offline, no statsmodels import).

    Reads ``statsmodels/datasets/sunspots/sunspots.csv`` (columns YEAR, SUNACTIVITY): 309 consecutive years,
    1700 to 2008, values from 0.0 to 190.2 (mean about 49.8; the series has a cycle of about 11 years).

    Returns
    -------
    years : int64 ndarray, shape (309,)
        1700, 1701, ..., 2008.
    values : float64 ndarray, shape (309,)
        The yearly sunspot number of each year.

    Raises
    ------
    DatasetNotAvailable
        If ``statsmodels`` (or the file) is not installed (``pip install --no-deps statsmodels``).

    Notes
    -----
    Parsed once per process (cached); each call returns new, writable arrays.
    """
    years, values = _parsed(data_path(PACKAGE, _FILE, "sunspots"))
    return years.copy(), values.copy()


def make_windows(series: ArrayLike, input_len: int, horizon: int = 1, stride: int = 1,
                 dtype: DTypeLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into (input window, following values) pairs for supervised forecasting.

    Window ``k`` starts at ``i = k * stride``: its input is ``series[i : i + input_len]`` and its target the
    next ``horizon`` values ``series[i + input_len : i + input_len + horizon]``.

    Parameters
    ----------
    series : array-like, shape (T,) or (T, F)
        A univariate or multivariate series, oldest first.
    input_len : int
        Time steps per input window (>= 1).
    horizon : int, default 1
        Future steps to predict (>= 1).
    stride : int, default 1
        Step between the starts of consecutive windows (>= 1).
    dtype : numpy dtype, optional
        dtype of the outputs; default: the series' dtype if floating, else float64.

    Returns
    -------
    X : ndarray, shape (N, input_len, F)
        Input windows, time-major within each window, ready for the estimators (``F = 1`` for a 1-D series).
    y : ndarray, shape (N, horizon) for a 1-D series, (N, horizon, F) for a 2-D one
        Targets. ``N = (T - input_len - horizon) // stride + 1``; N = 0 (empty arrays of those shapes) when
        the series is too short.

    Raises
    ------
    TypeError
        On a length that is not an int (``3.0``, ``"3"``, ``True``).
    ValueError
        On non-positive lengths or a series of more than 2 dimensions.
    """
    input_len, horizon, stride = (check_int(v, name, 1) for name, v in
                                  (("input_len", input_len), ("horizon", horizon), ("stride", stride)))
    s = np.asarray(series)
    if dtype is None:
        dtype = s.dtype if np.issubdtype(s.dtype, np.floating) else np.float64
    s = s.astype(dtype, copy=False)
    if s.ndim not in (1, 2):
        raise ValueError(f"series must be 1-D or 2-D (time, features), got shape {s.shape}")
    univariate = s.ndim == 1
    if univariate:
        s = s[:, None]
    T, F = s.shape
    n = max(0, (T - input_len - horizon) // stride + 1)
    starts = np.arange(n) * stride
    X = s[starts[:, None] + np.arange(input_len)[None, :]] if n else np.empty((0, input_len, F), dtype)
    y = (s[starts[:, None] + input_len + np.arange(horizon)[None, :]] if n
         else np.empty((0, horizon, F), dtype))
    if univariate:
        y = y[:, :, 0]
    return np.ascontiguousarray(X), np.ascontiguousarray(y)
