"""Evaluation metrics (scikit-learn's definitions): accuracy, F1, MAE, RMSE, and perplexity."""
import math
import numbers

import numpy as np

from rnnfast.nn.module import as_real_array, to_numpy

__all__ = ["accuracy", "f1", "mae", "rmse", "perplexity"]


def _pair(y_true, y_pred, numeric):
    yt = np.asarray(to_numpy(y_true))
    yp = np.asarray(to_numpy(y_pred))
    if numeric:
        yt = as_real_array(yt, "y_true").astype(np.float64)
        yp = as_real_array(yp, "y_pred").astype(np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {yt.shape} and {yp.shape}")
    if yt.size == 0:
        raise ValueError("y_true and y_pred are empty")
    return yt, yp


def _sample_weight(sample_weight, n):
    """(n,) float64 weights, or None."""
    if sample_weight is None:
        return None
    sw = as_real_array(sample_weight, "sample_weight").astype(np.float64)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {sw.shape}")
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    if sw.sum() == 0:
        raise ValueError("sample_weight sums to zero")
    return sw


def _row_values(values, sw):
    """Average per-element values of each sample (axis 0), then the (weighted) mean over samples."""
    per_sample = values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values
    return float(np.average(per_sample, weights=sw))


def accuracy(y_true, y_pred, sample_weight=None):
    """Fraction of exactly matching labels.

    Parameters
    ----------
    y_true, y_pred : array-like of labels, same shape
    sample_weight : array-like (n,), optional

    Returns
    -------
    float
    """
    yt, yp = _pair(y_true, y_pred, numeric=False)
    sw = _sample_weight(sample_weight, yt.shape[0])
    return _row_values((yt == yp).astype(np.float64), sw)


def f1(y_true, y_pred, average="binary", pos_label=1, sample_weight=None):
    """F1 score, ``2 tp / (2 tp + fp + fn)`` (0 when the denominator is 0, as scikit-learn).

    Parameters
    ----------
    y_true, y_pred : array-like of labels, 1-D
    average : {"binary", "macro"}, default "binary"
        "binary": the F1 of ``pos_label``; "macro": the unweighted mean of the per-class F1 over the
        labels present in ``y_true`` or ``y_pred``.
    pos_label : label, default 1
    sample_weight : array-like (n,), optional

    Returns
    -------
    float
    """
    yt, yp = _pair(y_true, y_pred, numeric=False)
    if yt.ndim != 1:
        raise ValueError(f"f1 takes 1-D label arrays, got shape {yt.shape}")
    sw = _sample_weight(sample_weight, yt.shape[0])
    w = np.ones(yt.shape[0]) if sw is None else sw

    def score(label):
        t, p = yt == label, yp == label
        tp, fp, fn = w[t & p].sum(), w[~t & p].sum(), w[t & ~p].sum()
        den = 2 * tp + fp + fn
        return 0.0 if den == 0 else float(2 * tp / den)

    if average == "binary":
        labels = np.union1d(yt, yp)
        if labels.size > 2:
            raise ValueError(f"average='binary' needs at most 2 labels, got {labels.size}; use average='macro'")
        if labels.size and pos_label not in labels.tolist() and labels.size == 2:
            raise ValueError(f"pos_label={pos_label!r} is not a label; labels are {labels.tolist()}")
        return score(pos_label)
    if average == "macro":
        return float(np.mean([score(label) for label in np.union1d(yt, yp)]))
    raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")


def mae(y_true, y_pred, sample_weight=None):
    """Mean absolute error (over all elements; ``sample_weight`` weights the samples on axis 0).

    Returns
    -------
    float
    """
    yt, yp = _pair(y_true, y_pred, numeric=True)
    return _row_values(np.abs(yt - yp), _sample_weight(sample_weight, yt.shape[0]))


def rmse(y_true, y_pred, sample_weight=None):
    """Root mean squared error (over all elements; ``sample_weight`` weights the samples on axis 0).

    Returns
    -------
    float
    """
    yt, yp = _pair(y_true, y_pred, numeric=True)
    return math.sqrt(_row_values((yt - yp) ** 2, _sample_weight(sample_weight, yt.shape[0])))


def perplexity(mean_cross_entropy):
    """Perplexity ``exp(H)`` from a mean cross-entropy ``H`` in nats (e.g. :class:`CrossEntropy`'s value).

    Parameters
    ----------
    mean_cross_entropy : float >= 0

    Returns
    -------
    float
        ``inf`` when ``exp`` overflows.
    """
    if isinstance(mean_cross_entropy, bool) or not isinstance(mean_cross_entropy, (numbers.Real, np.floating)):
        raise TypeError(f"mean_cross_entropy must be a number, got {type(mean_cross_entropy).__name__}")
    h = float(mean_cross_entropy)
    if math.isnan(h) or h < 0:
        raise ValueError(f"mean_cross_entropy must be >= 0 (nats), got {mean_cross_entropy}")
    try:
        return math.exp(h)
    except OverflowError:
        return math.inf
