"""Losses returning ``(value, gradient wrt the prediction)``, with masking of padded steps and sample weights.

Every loss is a callable object::

    value, grad = loss(pred, target, mask=None, sample_weight=None)

Weighting: each element's loss gets the weight ``mask * sample_weight`` (times the target's class
weight for :class:`CrossEntropy`). ``reduction="mean"`` (default) divides the weighted sum by the sum of
the weights, so padded steps contribute nothing and the mean is over the valid elements;
``reduction="sum"`` returns the weighted sum. With all weights zero the loss is 0 and the gradient zero.

- ``mask``: bool (or 0/1) array whose shape is a leading part of the prediction's (for CrossEntropy, of
  the target's): e.g. (B, T) for predictions (B, T) or (B, T, k); build it from lengths with
  :func:`lengths_to_mask`.
- ``sample_weight``: non-negative (B,) weights, one per sequence / sample (axis 0).
"""
import math

import numpy as np

from rnnfast._validation import check_int, check_option, check_real
from rnnfast.nn.module import as_float_keep, as_real_array, check_lengths

__all__ = ["Loss", "MSE", "MAE", "Huber", "BinaryCrossEntropyWithLogits", "CrossEntropy", "lengths_to_mask"]


def lengths_to_mask(lengths, T):
    """Boolean (B, T) mask, True at the valid steps of right-padded sequences.

    Parameters
    ----------
    lengths : array-like of int, shape (B,)
        Valid steps of each sequence, in [1, T].
    T : int
        Padded length.

    Returns
    -------
    numpy.ndarray of bool, shape (B, T)
    """
    T = check_int(T, "T", 1)
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be 1-D (one length per sequence), got shape {arr.shape}")
    arr = check_lengths(arr, arr.shape[0], T)
    return np.arange(T)[None, :] < arr[:, None]


class Loss:
    """Base class: subclasses implement ``_elementwise(pred, target) -> (losses, grads)``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
    """

    def __init__(self, reduction="mean"):
        self.reduction = check_option(reduction, "reduction", ("mean", "sum"))

    # ------------------------------------------------------------------ validation
    def _check_pred(self, pred):
        pred = as_float_keep(pred, "pred")
        if pred.ndim == 0:
            raise ValueError("pred must be at least 1-D")
        return pred

    def _check_target(self, target, pred):
        target = as_real_array(target, "target").astype(pred.dtype, copy=False)
        if target.shape != pred.shape:
            raise ValueError(f"target must have the prediction's shape {pred.shape}, got {target.shape}")
        return target

    @staticmethod
    def _weights(shape, dtype, mask, sample_weight):
        """Per-element weights of ``shape`` (the per-element loss's shape), or None for all ones."""
        w = None
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != bool:
                m = as_real_array(m, "mask")
                if not np.all((m == 0) | (m == 1)):
                    raise ValueError("mask must be boolean (or hold only 0 and 1)")
                m = m.astype(bool)
            if m.ndim > len(shape) or m.shape != tuple(shape[:m.ndim]):
                raise ValueError(f"mask must have a leading part of the shape {tuple(shape)}, got {m.shape}")
            w = m.reshape(m.shape + (1,) * (len(shape) - m.ndim)).astype(dtype)
        if sample_weight is not None:
            sw = as_real_array(sample_weight, "sample_weight")
            if sw.ndim != 1 or sw.shape[0] != shape[0]:
                raise ValueError(f"sample_weight must have shape ({shape[0]},), got {sw.shape}")
            if not np.all(np.isfinite(sw)) or np.any(sw < 0):
                raise ValueError("sample_weight must be finite and non-negative")
            sw = sw.astype(dtype).reshape((-1,) + (1,) * (len(shape) - 1))
            w = sw if w is None else w * sw
        return None if w is None else np.broadcast_to(w, shape)

    def _reduce(self, losses, dlosses, w):
        """Weighted reduction of per-element losses and their derivatives."""
        if w is None:
            total = losses.size
            value = np.sum(losses, dtype=np.float64)
            grad = dlosses
        else:
            total = np.sum(w, dtype=np.float64)
            value = np.sum(losses * w, dtype=np.float64)
            grad = dlosses * w
        if self.reduction == "mean":
            if total == 0:
                return 0.0, np.zeros_like(dlosses)
            value /= total
            grad = grad * grad.dtype.type(1.0 / total)
        return float(value), grad

    def __call__(self, pred, target, mask=None, sample_weight=None):
        """Loss value and its gradient wrt ``pred``.

        Parameters
        ----------
        pred : array-like of float
            Predictions (logits for the cross-entropies).
        target : array-like
            Same shape as ``pred`` (class indices of shape ``pred.shape[:-1]`` for CrossEntropy).
        mask : array-like of bool, optional
            False at padded positions; shape a leading part of ``pred``'s.
        sample_weight : array-like of float (B,), optional

        Returns
        -------
        value : float
        grad : numpy.ndarray, the shape and dtype of ``pred`` (float32 kept, else float64)
        """
        pred = self._check_pred(pred)
        target = self._check_target(target, pred)
        losses, dlosses = self._elementwise(pred, target)
        w = self._weights(pred.shape, pred.dtype, mask, sample_weight)
        return self._reduce(losses, dlosses, w)

    def _elementwise(self, pred, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSE(Loss):
    """Mean squared error ``(pred - target)^2`` (PyTorch's ``MSELoss``)."""

    def _elementwise(self, pred, target):
        d = pred - target
        return d * d, 2 * d


class MAE(Loss):
    """Mean absolute error ``|pred - target|`` (PyTorch's ``L1Loss``; gradient 0 where they are equal)."""

    def _elementwise(self, pred, target):
        d = pred - target
        return np.abs(d), np.sign(d)


class Huber(Loss):
    """Huber loss (PyTorch's ``HuberLoss``): ``0.5 d^2`` if ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    Parameters
    ----------
    delta : float > 0, default 1.0
    reduction : {"mean", "sum"}, default "mean"
    """

    def __init__(self, delta=1.0, reduction="mean"):
        super().__init__(reduction)
        self.delta = check_real(delta, "delta", 0.0, math.inf, closed="neither")

    def _elementwise(self, pred, target):
        d = pred - target
        a = np.abs(d)
        delta = pred.dtype.type(self.delta)
        small = a < delta
        losses = np.where(small, 0.5 * d * d, delta * (a - 0.5 * delta))
        grads = np.where(small, d, delta * np.sign(d))
        return losses, grads

    def __repr__(self):
        return f"Huber(delta={self.delta}, reduction={self.reduction!r})"


class BinaryCrossEntropyWithLogits(Loss):
    """Binary cross-entropy from logits (PyTorch's ``BCEWithLogitsLoss``), computed stably.

    ``loss = max(x, 0) - x y + log(1 + exp(-|x|))`` with logits ``x`` and targets ``y`` in [0, 1];
    the gradient is ``sigmoid(x) - y``.
    """

    def _check_target(self, target, pred):
        target = super()._check_target(target, pred)
        if not np.all((target >= 0) & (target <= 1)):
            raise ValueError("target of a binary cross-entropy must be in [0, 1]")
        return target

    def _elementwise(self, pred, target):
        x, y = pred, target
        e = np.exp(-np.abs(x))
        losses = np.maximum(x, 0) - x * y + np.log1p(e)
        # sigmoid(x) without overflow: 1/(1+e) for x >= 0, e/(1+e) for x < 0.
        sig = np.where(x >= 0, 1.0, e) / (1.0 + e)
        return losses, (sig - y).astype(pred.dtype, copy=False)


class CrossEntropy(Loss):
    """Categorical cross-entropy from logits with a fused, stable log-softmax (PyTorch's ``CrossEntropyLoss``).

    Classes are on the last axis: logits (..., C), e.g. (B, C) or (B, T, C); targets are integer class
    indices of shape ``logits.shape[:-1]``. The gradient is ``softmax(logits) - q``, weighted, with q the
    target distribution: ``onehot(target)``, or with label smoothing ``(1 - eps) * onehot + eps / C``.

    Parameters
    ----------
    weight : array-like (C,), optional
        Class weights. As in PyTorch, the mean divides by the summed weights of the targets' classes.
    ignore_index : int, optional
        Targets equal to it contribute nothing (like a False mask entry).
    reduction : {"mean", "sum"}, default "mean"
    label_smoothing : float in [0, 1], default 0
        ``eps`` above. As in PyTorch, with class weights a position's loss is ``-(1 - eps) w_t log p_t -
        (eps / C) sum_c w_c log p_c`` (and the mean still divides by the summed ``w_t``).
    """

    def __init__(self, weight=None, ignore_index=None, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if weight is not None:
            weight = as_real_array(weight, "weight").astype(np.float64)
            if weight.ndim != 1 or weight.size == 0:
                raise ValueError(f"weight must be a 1-D array of class weights, got shape {weight.shape}")
            if not np.all(np.isfinite(weight)) or np.any(weight < 0):
                raise ValueError("class weights must be finite and non-negative")
        self.weight = weight
        self.ignore_index = check_int(ignore_index, "ignore_index", allow_none=True)
        self.label_smoothing = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)

    def _check_pred(self, pred):
        pred = super()._check_pred(pred)
        if pred.ndim < 2:
            raise ValueError(f"logits must be at least 2-D (..., classes), got shape {pred.shape}")
        if pred.shape[-1] == 0:
            raise ValueError("logits must have at least one class")
        if self.weight is not None and self.weight.shape[0] != pred.shape[-1]:
            raise ValueError(f"weight has {self.weight.shape[0]} classes, logits have {pred.shape[-1]}")
        return pred

    def _check_target(self, target, pred):
        target = as_real_array(target, "target")
        if target.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        if target.shape != pred.shape[:-1]:
            raise ValueError(f"target must have shape {pred.shape[:-1]} (the logits' without the class axis), "
                             f"got {target.shape}")
        C = pred.shape[-1]
        check = target if self.ignore_index is None else target[target != self.ignore_index]
        if check.size and (check.min() < 0 or check.max() >= C):
            bad = check.min() if check.min() < 0 else check.max()
            raise ValueError(f"target class indices must be in [0, {C}), got {bad}")
        return target.astype(np.intp)

    def __call__(self, pred, target, mask=None, sample_weight=None):
        logits = self._check_pred(pred)
        target = self._check_target(target, logits)
        dt = logits.dtype
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        w = self._weights(target.shape, dt, mask, sample_weight)  # per position: mask, sample weight, ignored
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target = np.where(valid, target, 0)
            w = valid.astype(dt) if w is None else w * valid
        eps, C = self.label_smoothing, logits.shape[-1]
        cw = None if self.weight is None else self.weight.astype(dt)
        tix = target[..., None]
        grad = np.exp(logp)
        if not eps:  # -log p_t and softmax - onehot, times the target's class weight
            losses = -np.take_along_axis(logp, tix, axis=-1)[..., 0]
            np.put_along_axis(grad, tix, np.take_along_axis(grad, tix, axis=-1) - 1, axis=-1)
            if cw is not None:
                losses *= cw[target]
                grad *= cw[target][..., None]
        else:  # a: the weighted target distribution; loss -sum_c a_c log p_c, gradient (sum_c a_c) softmax - a
            a = np.full_like(logp, eps / C) if cw is None else np.broadcast_to(dt.type(eps / C) * cw, logp.shape).copy()
            np.put_along_axis(a, tix, np.take_along_axis(a, tix, axis=-1)
                              + dt.type(1.0 - eps) * (1.0 if cw is None else cw[tix]), axis=-1)
            losses = -(a * logp).sum(axis=-1)
            grad *= a.sum(axis=-1, keepdims=True)
            grad -= a
        # the mean's denominator: the positions' weights times their targets' class weights (PyTorch's)
        denom = w if cw is None else (cw[target] if w is None else w * cw[target])
        if w is None:
            value = np.sum(losses, dtype=np.float64)
        else:
            value = np.sum(losses * w, dtype=np.float64)
            grad *= w[..., None]
        total = losses.size if denom is None else np.sum(denom, dtype=np.float64)
        if self.reduction == "mean":
            if total == 0:
                return 0.0, np.zeros_like(logits)
            value /= total
            grad *= dt.type(1.0 / total)
        return float(value), grad

    def __repr__(self):
        w = "" if self.weight is None else f"weight={self.weight.tolist()}, "
        ig = "" if self.ignore_index is None else f"ignore_index={self.ignore_index}, "
        ls = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"CrossEntropy({w}{ig}reduction={self.reduction!r}{ls})"
