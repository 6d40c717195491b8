"""Encoding the estimators' targets ``y``, and turning outputs back into predictions and scores.

The task follows from ``y`` unless the estimator fixes it (``*Classifier`` / ``*Regressor``): labels
of any type are classification (encoded as indices into the sorted ``classes``), floats regression
(standardised per output); ``(N, T)`` targets matching X's time axis are one per step. What fitting
learnt is a :class:`TargetSpec`; later ``y`` (warm start, ``partial_fit``, ``score``) must match it.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Union

import numpy as np

from rnnfast._validation import check_real
from rnnfast.estimators.base import with_sklearn_twin
from rnnfast.estimators.inputs import is_ragged
from rnnfast.estimators.params import jsonable
from rnnfast.nn.module import to_numpy
from rnnfast.train.data import pad_sequences
from rnnfast.train.metrics import R2, Accuracy

__all__ = ["TargetSpec", "EncodedTargets", "FloatLabelsWarning", "DataConversionWarning", "encode_targets",
           "check_sample_weight", "class_weights", "predictions", "probabilities", "unpad", "score_outputs",
           "CLASSIFICATION", "REGRESSION", "CTC"]

CLASSIFICATION, REGRESSION = "classification", "regression"
#: ``loss="ctc"``: a label sequence per input sequence (see :mod:`rnnfast.estimators.ctc`).
CTC = "ctc"


class FloatLabelsWarning(UserWarning):
    """Float ``y`` whose values are all whole numbers (0.0 / 1.0 ...) was taken as regression."""


class DataConversionWarning(UserWarning):
    """Class labels came as a column (N, 1) and were read as (N,) (scikit-learn's warning of the same
    name, and a subclass of it when scikit-learn is imported)."""


@dataclasses.dataclass(frozen=True, eq=False)
class TargetSpec:
    """What fitting learnt about ``y``: the task, whether targets are per step, the outputs (``classes``
    for classification; ``y_mean`` / ``y_scale`` per output for regression) and whether regression
    targets were 1-D (predictions are returned the same way). ``loss="ctc"``: ``classes`` are the labels
    (outputs 1..K; output 0 is the blank) and ``strings`` says whether ``y`` held strings."""

    task: str
    per_step: bool
    n_outputs: int
    y_1d: bool = True
    classes: Optional[np.ndarray] = None
    y_mean: Optional[np.ndarray] = None
    y_scale: Optional[np.ndarray] = None
    strings: bool = False

    def labels(self, out: np.ndarray) -> np.ndarray:
        """The classes of raw outputs (N, [T,] C) (classification)."""
        assert self.classes is not None, "a classification spec has classes"
        return self.classes[out.argmax(axis=-1)]

    def values(self, out: np.ndarray) -> np.ndarray:
        """Raw outputs (N, [T,] k) in the targets' units (regression)."""
        assert self.y_scale is not None and self.y_mean is not None, "a regression spec has a scaling"
        return out.astype(np.float64) * self.y_scale + self.y_mean


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedTargets:
    """Targets for the loss: class indices or standardised floats; ``mask`` (N, T) marks the valid
    steps of per-step targets of variable length (None: all valid)."""

    y: np.ndarray
    spec: TargetSpec
    mask: Optional[np.ndarray] = None

    def valid(self) -> np.ndarray:
        """The targets at valid positions."""
        return self.y if self.mask is None else self.y[self.mask]


# ---------------------------------------------------------------------------------------- encoding
def _as_array(y, n, t, lengths, who):
    """``y`` as an array (a list of per-step sequences is padded to ``t``) and whether it was a list."""
    if y is None:
        raise ValueError(f"{who} requires y to be passed, but the target y is None")
    if is_ragged(y):
        try:
            ya, ylen = pad_sequences([np.asarray(to_numpy(s)) for s in y], max_length=t)
        except ValueError as e:
            raise ValueError(f"y: {e}") from None
        if ya.shape[0] != n:
            raise ValueError(f"X has {n} sequences but y has {ya.shape[0]} targets (lengths differ)")
        lx = lengths if lengths is not None else np.full(n, t)
        if not np.array_equal(ylen, lx):
            i = int(np.flatnonzero(ylen != lx)[0])
            raise ValueError(f"y[{i}] has {ylen[i]} steps but X[{i}] has {lx[i]}: per-step targets need one "
                             "target per time step")
        return ya, True
    if isinstance(y, (list, tuple)) and len(y) == 0:
        raise ValueError(f"y is empty, X has {n} sequences")
    ya = np.asarray(to_numpy(y))
    if ya.ndim == 0:
        raise ValueError("y must be an array of targets, got a scalar")
    if ya.shape[0] != n:
        raise ValueError(f"X has {n} sequences but y has {ya.shape[0]} targets (lengths differ)")
    return ya, False


def _task(ya, valid_of, forced, spec, who):
    """The task ``y`` asks for (``forced`` by the estimator class, else from its dtype)."""
    if ya.dtype.kind not in "biufUSO":
        raise ValueError(f"y must hold labels or numbers, got dtype {ya.dtype}")
    task = forced or (REGRESSION if ya.dtype.kind == "f" else CLASSIFICATION)
    if forced == CLASSIFICATION and ya.dtype.kind == "f":
        v = valid_of(ya)
        if np.all(np.isfinite(v)) and not np.all(v == np.round(v)):
            raise ValueError(f"Unknown label type: continuous. {who} is a classifier and y holds floats that are "
                             "not whole numbers; use a regressor for continuous targets")
    if spec is not None and task != spec.task:
        raise ValueError(f"y holds {'floats' if task == REGRESSION else 'labels'} ({ya.dtype}), but "
                         f"{who} was fitted for {spec.task}; pass "
                         f"{'labels (ints or strings)' if spec.task == CLASSIFICATION else 'floats'}")
    if forced is None and spec is None and task == REGRESSION:
        v = valid_of(ya)
        if v.size and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
            warnings.warn(f"y holds floats that are all whole numbers, which {who} takes as regression: for "
                          "classification pass int or str labels or use a *Classifier (rnnfast.LSTMClassifier...); "
                          "a *Regressor says regression is meant", FloatLabelsWarning, stacklevel=5)
    return task


def _classes(valid, spec, classes):
    """The sorted classes: the fitted ones, the given ones (``partial_fit``), or those in ``y``."""
    if spec is not None:
        return spec.classes
    if classes is not None:
        cls = np.asarray(classes)
        if cls.ndim != 1 or cls.size < 2:
            raise ValueError("classes must be a 1-D list of at least 2 labels")
        if np.unique(cls).size != cls.size:
            raise ValueError("classes holds duplicates")
        return np.unique(cls)
    try:
        cls = np.unique(valid)
    except TypeError as e:
        raise ValueError(f"the labels in y cannot be sorted (mixed types?): {e}") from None
    if cls.size < 2:
        raise ValueError(f"y holds a single class ({jsonable(cls[0])!r}): one class cannot be classified, "
                         "classification needs at least 2 (float y means regression)")
    return cls


def _encode_labels(ya, n, per_step, mask, spec, classes):
    if ya.ndim == 2 and not per_step and ya.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected: the labels are read as y[:, 0]",
                      with_sklearn_twin(DataConversionWarning, "DataConversionWarning"), stacklevel=6)
        ya = ya[:, 0]
    if ya.ndim != (2 if per_step else 1):
        raise ValueError(f"class labels must have shape ({n},){' or (N, T)' if per_step else ''}, "
                         f"got {ya.shape}; multi-output classification is not supported")
    valid = ya if mask is None else ya[mask]
    if ya.dtype == object and any(v is None or (isinstance(v, float) and v != v) for v in valid.ravel()):
        raise ValueError("y contains NaN or None labels")
    if ya.dtype.kind == "f" and not np.all(np.isfinite(valid)):
        raise ValueError("y contains NaN or infinity")
    cls = _classes(valid, spec, classes)
    try:
        codes = np.searchsorted(cls, ya)
    except TypeError as e:
        raise ValueError(f"the labels of y do not match the classes' type: {e}") from None
    codes = np.minimum(codes, cls.size - 1)
    ok = cls[codes] == ya
    if mask is not None:
        ok |= ~mask
    if not np.all(ok):
        bad = jsonable(ya[~ok].ravel()[0])
        raise ValueError(f"y contains the label {bad!r}, not among the classes {cls.tolist()[:20]}")
    if mask is not None:
        codes = np.where(mask, codes, 0)
    return codes.astype(np.intp), TargetSpec(CLASSIFICATION, per_step, int(cls.size), True, classes=cls)


def _encode_values(ya, per_step, mask, dtype, spec):
    try:
        if ya.dtype.kind in "US":
            raise ValueError
        ya = ya.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"regression targets must be numbers, got dtype {ya.dtype}") from None
    if ya.ndim > (3 if per_step else 2):
        raise ValueError(f"regression targets must be (N,) or (N, k){' or (N, T[, k])' if per_step else ''}, "
                         f"got {ya.shape}")
    y_1d = ya.ndim == (2 if per_step else 1)
    yk = ya[..., None] if y_1d else ya
    valid = yk if mask is None else yk[mask]
    if not np.all(np.isfinite(valid)):
        raise ValueError("y contains NaN or infinity")
    k = yk.shape[-1]
    if spec is not None:
        if k != spec.n_outputs:
            raise ValueError(f"y has {k} outputs, the fitted model {spec.n_outputs}")
        mean, scale = spec.y_mean, spec.y_scale
    else:
        flat = valid.reshape(-1, k)
        mean = flat.mean(axis=0)
        scale = flat.std(axis=0)
        scale[scale == 0] = 1.0
    enc = (yk - mean) / scale
    if mask is not None:
        enc[~mask] = 0.0  # padded steps may hold anything (NaN): a masked NaN would still poison the sum
    return enc.astype(dtype), TargetSpec(REGRESSION, per_step, int(k), bool(y_1d), y_mean=mean, y_scale=scale)


def encode_targets(y: Any, n: int, t: int, lengths: Optional[np.ndarray], *, return_sequences: Union[str, bool],
                   dtype: np.dtype, spec: Optional[TargetSpec] = None, classes: Any = None,
                   task: Optional[str] = None, who: str = "the estimator") -> EncodedTargets:
    """Check and encode ``y`` for ``n`` sequences of ``t`` padded steps (``lengths``: their lengths).

    Parameters
    ----------
    y : array (N,) of labels, (N,) or (N, k) of floats, or (N, T) / list of (T_i,) per-step targets
    n, t : int
    lengths : numpy.ndarray (N,) or None
    return_sequences : {"auto", True, False}
        Per-step targets: from ``y``'s shape, or forced.
    dtype : numpy.dtype
        Of encoded regression targets.
    spec : TargetSpec, optional
        A fitted estimator's: ``y`` must match it (the task, classes, outputs and scaling are kept).
    classes : array-like, optional
        All the labels (``partial_fit``'s first call).
    task : {"classification", "regression"}, optional
        Fixed by the estimator class; None: from ``y`` (float means regression, with a
        :class:`FloatLabelsWarning` when the floats are all whole numbers).
    who : str
        The estimator's name, for messages.

    Returns
    -------
    EncodedTargets
    """
    ya, ragged = _as_array(y, n, t, lengths, who)
    if ya.size == 0:
        raise ValueError("y is empty")
    if spec is not None:
        per_step = spec.per_step
    elif return_sequences == "auto":
        per_step = ragged or (ya.ndim >= 2 and ya.shape[1] == t)
    else:
        per_step = bool(return_sequences)
    if per_step and (ya.ndim < 2 or ya.shape[1] != t):
        raise ValueError(f"per-step targets need shape ({n}, {t}) (one per time step of X), got {ya.shape}")
    mask = np.arange(t)[None, :] < lengths[:, None] if per_step and lengths is not None else None
    kind = _task(ya, lambda a: a if mask is None else a[mask], task, spec, who)
    if kind == CLASSIFICATION:
        enc, new_spec = _encode_labels(ya, n, bool(per_step), mask, spec, classes)
    else:
        enc, new_spec = _encode_values(ya, bool(per_step), mask, dtype, spec)
    return EncodedTargets(enc, spec if spec is not None else new_spec, mask)


def check_sample_weight(sample_weight: Any, n: int) -> Optional[np.ndarray]:
    """``sample_weight`` as float64 (n,), finite, non-negative and not all zero (None stays None)."""
    if sample_weight is None:
        return None
    sw = np.asarray(to_numpy(sample_weight))
    if sw.dtype.kind not in "iufb":
        raise TypeError(f"sample_weight must be numeric, got dtype {sw.dtype}")
    sw = sw.astype(np.float64)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {sw.shape}")
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    if not np.any(sw > 0):
        raise ValueError("sample_weight is zero everywhere")
    return sw


def class_weights(class_weight: Any, targets: EncodedTargets) -> Optional[np.ndarray]:
    """Per-class loss weights (in the order of ``classes``) from a dict label -> weight or "balanced"
    (inverse class frequencies in ``targets``); None for None."""
    if class_weight is None:
        return None
    if targets.spec.task != CLASSIFICATION:
        raise ValueError("class_weight is for classification; this is a regression task")
    classes = targets.spec.classes
    assert classes is not None, "a classification spec has classes"
    C = classes.size
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {class_weight!r}")
        counts = np.bincount(targets.valid().ravel(), minlength=C).astype(np.float64)
        return np.where(counts > 0, counts.sum() / (C * np.maximum(counts, 1)), 0.0)
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict, 'balanced' or None, got {type(class_weight).__name__}")
    w = np.ones(C)
    labels = classes.tolist()
    for label, weight in class_weight.items():
        key = label.item() if isinstance(label, np.generic) else label
        if key not in labels:
            raise ValueError(f"class_weight names the label {label!r}, not among the classes {labels[:20]}")
        w[labels.index(key)] = check_real(weight, f"class_weight[{label!r}]", 0.0)
    return w


# ---------------------------------------------------------------------------------------- decoding
def predictions(out: np.ndarray, spec: TargetSpec) -> np.ndarray:
    """Labels (classification) or values in the original units (regression) from raw outputs."""
    if spec.task == CTC:
        raise ValueError("a model fitted with loss='ctc' decodes whole sequences: use predict")
    if spec.task == CLASSIFICATION:
        return spec.labels(out)
    pred = spec.values(out)
    return pred[..., 0] if spec.y_1d else pred


def probabilities(out: np.ndarray, lengths: np.ndarray, per_step: bool) -> np.ndarray:
    """Softmax of raw outputs (in place); per step, zero past each sequence's end."""
    z = out - out.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    if per_step:
        z[~(np.arange(z.shape[1])[None, :] < lengths[:, None])] = 0
    return z


def unpad(arr: np.ndarray, lengths: np.ndarray, from_list: bool):
    """Per-sequence arrays cut to their lengths when the input was a list, else ``arr``."""
    if from_list:
        return [arr[i, :n] for i, n in enumerate(lengths)]
    return arr


# ---------------------------------------------------------------------------------------- scoring
def _score_targets(y, n, t, lengths, per_step):
    """``y`` for scoring, as an array, and the (N, T) mask of the valid steps of per-step targets (else None)."""
    if not per_step:
        ya = np.asarray(to_numpy(y))
        if ya.shape[0] != n:
            raise ValueError(f"X has {n} sequences but y has {ya.shape[0]} targets")
        return ya, None
    if is_ragged(y):
        ya, _ = pad_sequences([np.asarray(to_numpy(s)) for s in y], max_length=t)
    else:
        ya = np.asarray(to_numpy(y))
    if ya.shape[:2] != (n, t):
        raise ValueError(f"y must have one target per time step, shape ({n}, {t}), got {ya.shape}")
    return ya, np.arange(t)[None, :] < lengths[:, None]


def _accuracy(pred, ya, mask, sw):
    if ya.ndim == pred.ndim + 1 and ya.shape[-1] == 1:
        ya = ya[..., 0]
    metric = Accuracy()
    metric.update_masked(ya, pred, mask, sw)
    return metric.result()


def _r2(pred, ya, mask, sw):
    """R^2 with every valid step a sample (per-step targets) and each of the k outputs scored apart."""
    yk = ya.astype(np.float64)
    if yk.ndim == pred.ndim - 1:
        yk = yk[..., None]
    if yk.shape != pred.shape:
        raise ValueError(f"y has shape {ya.shape}, predictions {pred.shape}")
    if mask is not None:
        yk, pred = yk[mask], pred[mask]
        sw = None if sw is None else np.broadcast_to(sw[:, None], mask.shape)[mask]
    return R2().update(yk, pred, sw).result()


def score_outputs(out: np.ndarray, lengths: np.ndarray, y: Any, sample_weight: Any, spec: TargetSpec) -> float:
    """Accuracy (classification) or R^2 (regression, mean over outputs) of raw outputs ``out`` (N, T?, C)
    against ``y``, with :mod:`rnnfast.train.metrics`; per-step models score every valid step."""
    n, t = out.shape[:2]
    sw = check_sample_weight(sample_weight, n)
    ya, mask = _score_targets(y, n, t, lengths, spec.per_step)
    if spec.task == CLASSIFICATION:
        return _accuracy(spec.labels(out), ya, mask, sw)
    return _r2(spec.values(out), ya, mask, sw)
