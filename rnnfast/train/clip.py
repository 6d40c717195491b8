"""Gradient clipping, in place: by global norm (``torch.nn.utils.clip_grad_norm_``) and by value."""
import math

import numpy as np

from rnnfast._kernels import _optim
from rnnfast._threads import resolve_threads
from rnnfast._validation import check_bool, check_real

__all__ = ["clip_grad_norm", "clip_grad_value"]


def _grad_arrays(grads):
    """The gradient arrays from a dict, a model (``.grads``), arrays, or (name, param, grad) triples."""
    if hasattr(grads, "grads") and not isinstance(grads, np.ndarray):
        grads = grads.grads
    if isinstance(grads, dict):
        items = list(grads.values())
    elif isinstance(grads, np.ndarray):
        items = [grads]
    else:
        try:
            items = list(grads)
        except TypeError:
            raise TypeError("grads must be a dict of arrays, a model with .grads, an iterable of arrays or of "
                            f"(name, param, grad) triples, got {type(grads).__name__}") from None
    out = []
    for it in items:
        a = it[2] if isinstance(it, (tuple, list)) and len(it) == 3 else it
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            raise TypeError(f"gradients must be float numpy arrays (clipped in place), got {type(a).__name__}")
        out.append(a)
    return out


def _positive(value, name):
    """``value`` as a float in (0, inf] (TypeError for a non-number, ValueError otherwise)."""
    return check_real(value, name, 0.0, closed="right")


_CHUNK = 1 << 15  # elements converted to float64 at a time: 256 KiB, in cache


def _sum_squares(a: np.ndarray) -> float:
    """The sum of squares of ``a``'s elements, accumulated in float64 (float32 converted chunk by chunk,
    never a float64 copy of the whole array). A contiguous float32 array: the compiled pass (rnnfast's
    threads, a value independent of their number; no BLAS, whose own spinning threads collapse on a busy
    machine). float64 keeps numpy's dot products, and with them its results to the last bit."""
    if a.dtype == np.float32 and a.flags.c_contiguous:
        return _optim.sum_squares(a, resolve_threads(None))
    return _sum_squares_np(a)


def _sum_squares_np(a: np.ndarray) -> float:
    """:func:`_sum_squares` by numpy's dot products."""
    r = a.reshape(-1)
    if r.dtype == np.float64:
        return float(np.dot(r, r))
    total = 0.0
    for i in range(0, r.size, _CHUNK):
        c = r[i:i + _CHUNK].astype(np.float64)
        total += float(np.dot(c, c))
    return total


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so their global norm is at most ``max_norm``.

    As PyTorch: the norm is taken over all gradients as one vector; when it exceeds ``max_norm`` every
    gradient is multiplied by ``max_norm / (norm + 1e-6)``.

    Parameters
    ----------
    grads : dict of arrays, model with ``grads``, iterable of arrays or of (name, param, grad) triples
        Modified in place.
    max_norm : float > 0
    norm_type : float > 0 or inf, default 2
    error_if_nonfinite : bool, default False
        Raise if the norm is NaN or infinite (otherwise the gradients become NaN, as in PyTorch).

    Returns
    -------
    float
        The global norm before clipping.
    """
    arrays = _grad_arrays(grads)
    max_norm = _positive(max_norm, "max_norm")
    norm_type = _positive(norm_type, "norm_type")
    error_if_nonfinite = check_bool(error_if_nonfinite, "error_if_nonfinite")
    if not arrays:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)
    else:
        # Per-array norms first (no concatenated copy), summed in float64 so float32 sums keep their digits
        # and do not overflow (float32 squares pass 3.4e38 from elements of 1.8e19).
        if norm_type == 2.0:  # the common case: dot products
            norms = [_sum_squares(a) for a in arrays]
        else:
            norms = [float(np.sum(np.abs(a.astype(np.float64, copy=False)) ** norm_type)) for a in arrays]
        total = float(math.fsum(norms) ** (1.0 / norm_type))
    if not math.isfinite(total) and error_if_nonfinite:
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({total}), "
                           "so they cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also true for NaN, which then propagates as in PyTorch
        for a in arrays:
            a *= a.dtype.type(coef)
    return total


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to ``[-clip_value, clip_value]``, in place.

    Parameters
    ----------
    grads : dict of arrays, model with ``grads``, iterable of arrays or of (name, param, grad) triples
    clip_value : float > 0
    """
    arrays = _grad_arrays(grads)
    c = _positive(clip_value, "clip_value")
    for a in arrays:
        np.clip(a, -c, c, out=a)
