"""Metrics, one streaming system for the fit loop, :func:`rnnfast.train.evaluate` and the estimators' ``score``.

A metric object accumulates over batches: ``reset()``, then ``update(y_true, y_pred, sample_weight=None)``
per batch, then ``result() -> float``; :func:`get` builds one from a name (``"accuracy"``, ``"mae"``,
``"mse"``, ``"r2"``). The functions of the same names (:func:`accuracy`, :func:`mae`, :func:`mse`,
:func:`rmse`, :func:`r2`) validate their input and run one update; they follow scikit-learn's definitions.

``sample_weight`` is per sample ``(N,)`` or per position (the leading axes of ``y_true``, e.g. ``(N, T)``
for per-step targets, where the fit loop folds the padding mask in). Positions with weight 0 count for
nothing. The mean metrics report ``sum(w * value) / sum(w)`` over everything seen since ``reset``.

Metrics of whole output sequences (translation, tagging, recognition) compare lists of token or tag lists:
:func:`bleu` (sacrebleu's corpus BLEU), :func:`entity_f1` and :func:`entity_report` (seqeval's entity-level
scores), :func:`wer` and :func:`cer` (corpus error rates), :func:`edit_distance`.
"""
import math
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Type, Union

import numpy as np

from rnnfast._validation import check_bool, check_option, check_real
from rnnfast.nn.module import as_real_array, to_numpy
from rnnfast.train._sequence_metrics import bleu, cer, edit_distance, entity_f1, entity_report, wer

__all__ = ["Metric", "Mean", "Accuracy", "MeanAbsoluteError", "MeanSquaredError", "R2", "FunctionMetric",
           "get", "resolve", "position_weights", "broadcast_weights", "METRICS",
           "accuracy", "f1", "mae", "mse", "rmse", "r2", "perplexity",
           "bleu", "entity_f1", "entity_report", "edit_distance", "wer", "cer"]

ArrayLike = Union[np.ndarray, Iterable, float]


def position_weights(mask: Optional[np.ndarray], sample_weight: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The weights of a batch's positions: a per-step ``mask`` (B, T) times the per-sequence weights.

    Parameters
    ----------
    mask : bool array (B, T) or None
        True at the valid steps of per-step targets.
    sample_weight : array (B,) or None

    Returns
    -------
    numpy.ndarray or None
        ``sample_weight`` as given when there is no mask, else float64 (B, T); None when both are None.
    """
    if mask is None:
        return sample_weight
    w = mask.astype(np.float64)
    if sample_weight is not None:
        w = w * sample_weight.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
    return w


def broadcast_weights(sample_weight: Optional[ArrayLike], shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """``sample_weight`` (weights of the leading axes of ``shape``) as float64, broadcast to ``shape``.

    Returns
    -------
    numpy.ndarray (read-only view) or None
        None when ``sample_weight`` is None.
    """
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    w = sw.astype(np.float64).reshape(sw.shape + (1,) * (len(shape) - sw.ndim))
    return np.broadcast_to(w, shape)


def _weighted_sums(values: np.ndarray, sample_weight) -> Tuple[float, float]:
    """``(sum(w * values), sum(w))``, with ``sample_weight`` broadcast over the trailing axes of ``values``;
    ``(sum(values), values.size)`` without weights."""
    if sample_weight is None:
        return float(values.sum()), float(values.size)
    w = broadcast_weights(sample_weight, values.shape)
    assert w is not None
    return float((values * w).sum()), float(w.sum())


# ---------------------------------------------------------------------------------------- the protocol
class Metric:
    """A streaming metric: ``reset``, ``update`` per batch, ``result``.

    Attributes
    ----------
    name : str
        The key of the metric in logs and histories.
    compares_labels : bool
        Class attribute: the metric compares class labels, so it takes ``from_logits`` (see :func:`get`).
    """

    name: str = "metric"
    compares_labels: bool = False

    def __init__(self, name: Optional[str] = None) -> None:
        if name is not None:
            self.name = str(name)
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        raise NotImplementedError

    def update(self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> "Metric":
        """Add one batch. Returns self."""
        raise NotImplementedError

    def update_masked(self, y_true: np.ndarray, y_pred: np.ndarray, mask: Optional[np.ndarray],
                      sample_weight: Optional[np.ndarray]) -> None:
        """Add one batch of the fit loop: a per-step ``mask`` (B, T) of valid steps (or None) and per-sequence
        ``sample_weight`` (B,) (or None), folded into position weights."""
        self.update(y_true, y_pred, position_weights(mask, sample_weight))

    def result(self) -> float:
        """The value over every update since :meth:`reset` (NaN before any weight was seen)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Base of the metrics that are a weighted mean of per-position values (:meth:`values`)."""

    def reset(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def values(self, y_true: np.ndarray, y_pred: np.ndarray, sample_weight) -> np.ndarray:
        """The per-position values of one batch (override)."""
        raise NotImplementedError

    def update(self, y_true, y_pred, sample_weight=None):
        num, den = _weighted_sums(self.values(y_true, y_pred, sample_weight), sample_weight)
        self.total += num
        self.weight += den
        return self

    def result(self) -> float:
        return self.total / self.weight if self.weight else math.nan


class Accuracy(Mean):
    """Fraction of correct labels, at every position of ``y_true``.

    Parameters
    ----------
    from_logits : bool, default False
        False: ``y_pred`` holds labels, compared for equality. True: ``y_pred`` holds class scores on its
        last axis (the argmax is the class; a single score means class 1 when positive), as a model outputs.
    name : str, default "accuracy"
    """

    name = "accuracy"
    compares_labels = True

    def __init__(self, from_logits: bool = False, name: Optional[str] = None) -> None:
        self.from_logits = check_bool(from_logits, "from_logits")
        super().__init__(name)

    def values(self, y_true, y_pred, sample_weight):
        pred = y_pred
        if self.from_logits:
            pred = y_pred.argmax(axis=-1) if y_pred.shape[-1] > 1 else (y_pred[..., 0] > 0)
        return pred == y_true


class _Elementwise(Mean):
    """Mean of ``fn(y_pred - y_true)``: each sample's (each weighted position's) mean over the remaining
    axes, then the weighted mean over samples (positions)."""

    fn: Callable = staticmethod(np.abs)  # the per-element error (set by each subclass)

    def values(self, y_true, y_pred, sample_weight):
        err = self.fn(y_pred - y_true)
        lead = 1 if sample_weight is None else max(np.ndim(sample_weight), 1)
        return err.reshape(err.shape[:lead] + (-1,)).mean(axis=-1)


class MeanAbsoluteError(_Elementwise):
    """Mean absolute error (``"mae"``)."""

    name = "mae"
    fn = staticmethod(np.abs)


class MeanSquaredError(_Elementwise):
    """Mean squared error (``"mse"``)."""

    name = "mse"
    fn = staticmethod(np.square)


class R2(Metric):
    """Coefficient of determination, scikit-learn's ``r2_score`` with ``multioutput="uniform_average"``.

    Targets ``(N,)`` are one output; ``(N, k)``, ``(N, T)`` (and more axes, flattened) are one output per
    column, and the score is the mean over outputs. An output whose targets are constant scores 1.0 when
    predicted exactly, else 0.0 (scikit-learn's ``force_finite``); fewer than two samples give NaN.
    Streaming: per output, the weighted count, mean and sum of squared deviations merge batch by batch
    (Chan et al.'s update), so the result does not depend on how the data is batched beyond rounding.
    """

    name = "r2"

    def reset(self) -> None:
        self.n = 0
        self.w = 0.0
        self.mean = self.m2 = self.sse = None

    def update(self, y_true, y_pred, sample_weight=None):
        yt = np.asarray(y_true, np.float64)
        yt = yt.reshape(yt.shape[0], -1)
        yp = np.asarray(y_pred, np.float64).reshape(yt.shape)
        w = np.ones(yt.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
        wb = float(w.sum())
        if wb == 0:
            return self
        mb = (w @ yt) / wb
        m2b = w @ np.square(yt - mb)
        sseb = w @ np.square(yt - yp)
        if self.mean is None:
            self.mean, self.m2, self.sse = mb, m2b, sseb
        else:
            delta = mb - self.mean
            tot = self.w + wb
            self.mean = self.mean + delta * (wb / tot)
            self.m2 = self.m2 + m2b + np.square(delta) * (self.w * wb / tot)
            self.sse = self.sse + sseb
        self.n += yt.shape[0]
        self.w += wb
        return self

    def result(self) -> float:
        if self.n < 2 or self.mean is None:
            return math.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = 1.0 - self.sse / self.m2
        const = self.m2 == 0
        scores[const] = np.where(self.sse[const] == 0, 1.0, 0.0)
        return float(scores.mean())


class FunctionMetric(Metric):
    """A user metric ``fn(output, target, mask, sample_weight) -> (numerator, denominator)``; the result is
    the sum of numerators over the sum of denominators (the fit loop's older callable form).

    Parameters
    ----------
    fn : callable
    name : str, optional
        Defaults to ``fn.__name__``.
    """

    def __init__(self, fn: Callable, name: Optional[str] = None) -> None:
        if not callable(fn):
            raise TypeError(f"metric {name!r} must be a name, a Metric or a callable")
        self.fn = fn
        super().__init__(name if name is not None else getattr(fn, "__name__", "metric"))

    def reset(self) -> None:
        self.num = self.den = 0.0

    def update(self, y_true, y_pred, sample_weight=None):
        self.update_masked(y_true, y_pred, None, sample_weight)
        return self

    def update_masked(self, y_true, y_pred, mask, sample_weight):
        num, den = self.fn(y_pred, y_true, mask, sample_weight)
        self.num += num
        self.den += den

    def result(self) -> float:
        return self.num / self.den if self.den else math.nan


#: Built-in metrics by name (the classes :func:`get` builds).
METRICS: Dict[str, Type[Metric]] = {"accuracy": Accuracy, "mae": MeanAbsoluteError, "mse": MeanSquaredError, "r2": R2}


def get(identifier: Union[str, Metric], *, from_logits: bool = False) -> Metric:
    """A metric object from a name in :data:`METRICS` (a :class:`Metric` is returned as is).

    Parameters
    ----------
    identifier : str or Metric
    from_logits : bool, default False
        For metrics that compare labels: ``y_pred`` holds class scores (a model's output).

    Returns
    -------
    Metric
    """
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"a metric is a name or a Metric, got {type(identifier).__name__}")
    if identifier not in METRICS:
        raise ValueError(f"unknown metric {identifier!r}; built-in metrics: {sorted(METRICS)}")
    cls = METRICS[identifier]
    return cls(from_logits=from_logits) if cls.compares_labels else cls()  # type: ignore[call-arg]


def resolve(metrics, *, from_logits: bool = False) -> Dict[str, Metric]:
    """The metrics argument of fit and evaluate as ``{name: Metric}`` (names are the history's keys).

    Parameters
    ----------
    metrics : None, a name, a Metric, a callable, a list of them, or a dict name -> one of them
        Callables take ``(output, target, mask, sample_weight)`` and return ``(numerator, denominator)``.
    from_logits : bool, default False
        As :func:`get`.

    Returns
    -------
    dict of str to Metric
    """
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        if isinstance(metrics, (str, Metric)) or callable(metrics):
            metrics = [metrics]
        items = [(m, m) if isinstance(m, str) else (getattr(m, "name", None) or getattr(m, "__name__", "metric"), m)
                 for m in metrics]
    out = {}
    for name, m in items:
        if isinstance(m, (str, Metric)):
            m = get(m, from_logits=from_logits)
        else:
            m = FunctionMetric(m, name=str(name))
        out[str(name)] = m
    return out


# ---------------------------------------------------------------------------------------- functional forms
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


def _score(metric: Metric, y_true, y_pred, sample_weight, numeric: bool) -> float:
    yt, yp = _pair(y_true, y_pred, numeric)
    return metric.update(yt, yp, _sample_weight(sample_weight, yt.shape[0])).result()


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
    """Fraction of exactly matching labels (every position of 2-D labels counts).

    Parameters
    ----------
    y_true, y_pred : array-like of labels, same shape
    sample_weight : array-like (n,), optional

    Returns
    -------
    float
    """
    return _score(Accuracy(), y_true, y_pred, sample_weight, numeric=False)


def f1(y_true: ArrayLike, y_pred: ArrayLike, average: str = "binary", pos_label=1,
       sample_weight: Optional[ArrayLike] = None) -> float:
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
    average = check_option(average, "average", ("binary", "macro"))
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
    return float(np.mean([score(label) for label in np.union1d(yt, yp)]))  # "macro"


def mae(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
    """Mean absolute error (over all elements; ``sample_weight`` weights the samples on axis 0).

    Returns
    -------
    float
    """
    return _score(MeanAbsoluteError(), y_true, y_pred, sample_weight, numeric=True)


def mse(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
    """Mean squared error (over all elements; ``sample_weight`` weights the samples on axis 0).

    Returns
    -------
    float
    """
    return _score(MeanSquaredError(), y_true, y_pred, sample_weight, numeric=True)


def rmse(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
    """Root mean squared error (over all elements; ``sample_weight`` weights the samples on axis 0).

    Returns
    -------
    float
    """
    return math.sqrt(mse(y_true, y_pred, sample_weight))


def r2(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
    """Coefficient of determination, as scikit-learn's ``r2_score`` (uniform average over outputs).

    Parameters
    ----------
    y_true, y_pred : array-like (N,), (N, k) or (N, T), same shape
    sample_weight : array-like (N,), optional

    Returns
    -------
    float
        See :class:`R2` (constant targets, fewer than two samples).
    """
    return _score(R2(), y_true, y_pred, sample_weight, numeric=True)


def perplexity(mean_cross_entropy: float) -> float:
    """Perplexity ``exp(H)`` from a mean cross-entropy ``H`` in nats (e.g. :class:`CrossEntropy`'s value).

    Parameters
    ----------
    mean_cross_entropy : float >= 0

    Returns
    -------
    float
        ``inf`` when ``exp`` overflows.
    """
    h = check_real(mean_cross_entropy, "mean_cross_entropy (nats)", 0.0)
    try:
        return math.exp(h)
    except OverflowError:
        return math.inf
