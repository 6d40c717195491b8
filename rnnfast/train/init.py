"""Weight initialisers (new arrays, PyTorch's conventions: a weight is (fan_out, fan_in, ...)) and
:func:`init_recurrent`, which re-initialises a recurrent layer Keras-style.
"""
import numbers

import numpy as np

from rnnfast._validation import check_int, check_real
from rnnfast.nn.module import check_float_dtype, make_rng

__all__ = ["glorot_uniform", "orthogonal", "zeros", "pytorch_default", "init_recurrent"]


def _shape(shape):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sizes, got {shape}")
    return shape


def _fans(shape):
    """(fan_in, fan_out) as ``torch.nn.init._calculate_fan_in_and_fan_out``."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def glorot_uniform(shape, gain=1.0, rng=None, dtype=np.float32):
    """Glorot (Xavier) uniform: U(-a, a), ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        At least 2-D, (fan_out, fan_in, ...) as PyTorch weights.
    gain : float, default 1
    rng : int, numpy Generator or None
    dtype : float32 (default) or float64

    Returns
    -------
    numpy.ndarray
    """
    shape = _shape(shape)
    fan_in, fan_out = _fans(shape)
    a = check_real(gain, "gain") * np.sqrt(6.0 / max(1, fan_in + fan_out))
    return make_rng(rng).uniform(-a, a, shape).astype(check_float_dtype(dtype))


def orthogonal(shape, gain=1.0, rng=None, dtype=np.float32):
    """(Semi-)orthogonal matrix as ``torch.nn.init.orthogonal_``: QR of a Gaussian matrix, signs fixed.

    Rows are orthonormal if there are fewer rows than columns, columns otherwise; the result is scaled by
    ``gain``. Dimensions after the first are flattened.

    Parameters
    ----------
    shape : tuple of int
        At least 2-D.
    gain : float, default 1
    rng : int, numpy Generator or None
    dtype : float32 (default) or float64

    Returns
    -------
    numpy.ndarray
    """
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs at least 2 dimensions, got shape {shape}")
    gain = check_real(gain, "gain")
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    dt = check_float_dtype(dtype)
    if rows == 0 or cols == 0:
        return np.zeros(shape, dt)
    a = make_rng(rng).standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # makes the decomposition unique, so q is uniformly distributed
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dt)


def zeros(shape, dtype=np.float32):
    """Zeros of ``shape`` and ``dtype``."""
    return np.zeros(_shape(shape), check_float_dtype(dtype))


def pytorch_default(shape, fan_in=None, rng=None, dtype=np.float32):
    """PyTorch's default initialisation of Linear and recurrent layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Parameters
    ----------
    shape : tuple of int
    fan_in : int, optional
        Default: from ``shape`` (its second dimension for a matrix), as ``torch.nn.Linear``. A recurrent
        layer uses its ``hidden_size`` for every parameter; a bias uses its weight's fan_in.
    rng : int, numpy Generator or None
    dtype : float32 (default) or float64

    Returns
    -------
    numpy.ndarray
    """
    shape = _shape(shape)
    if fan_in is None:
        if len(shape) < 2:
            raise ValueError(f"fan_in must be given for a {len(shape)}-D shape")
        fan_in = _fans(shape)[0]
    fan_in = check_int(fan_in, "fan_in", 1)
    k = 1.0 / np.sqrt(fan_in)
    return make_rng(rng).uniform(-k, k, shape).astype(check_float_dtype(dtype))


def init_recurrent(layer, forget_bias=1.0, seed=None):
    """Re-initialise a recurrent layer (LSTM, GRU, RNN) Keras-style, in place.

    - input weights ``weight_ih_*`` (G*H, F): Glorot uniform over the whole matrix (fan_in F, fan_out G*H),
      as Keras' ``glorot_uniform`` on its (F, G*H) kernel;
    - recurrent weights ``weight_hh_*`` (G*H, H): orthogonal, each gate's (H, H) block separately;
    - biases zero; for an LSTM the forget gate's ``bias_ih`` block (rows H:2H, gate order i, f, g, o) is set
      to ``forget_bias`` (Keras' ``unit_forget_bias``), ``bias_hh`` stays zero, so the sum is ``forget_bias``.

    Every layer and direction is initialised. The parameter arrays are written in place, so optimizers
    already holding them stay valid.

    Parameters
    ----------
    layer : rnnfast.nn.LSTM, GRU or RNN
    forget_bias : float, default 1.0
        LSTM only (ignored for GRU and RNN, and without biases); 0 for all-zero biases.
    seed : int, numpy Generator or None

    Returns
    -------
    layer
    """
    from rnnfast.nn.recurrent import LSTM

    if not hasattr(layer, "named_parameters") or not hasattr(layer, "hidden_size"):
        raise TypeError(f"layer must be a recurrent layer (LSTM, GRU or RNN), got {type(layer).__name__}")
    forget_bias = check_real(forget_bias, "forget_bias")
    rng = make_rng(seed)
    H = int(layer.hidden_size)
    is_lstm = isinstance(layer, LSTM)
    params = list(layer.named_parameters())
    if not any(name.startswith("weight_hh") for name, _ in params):
        raise TypeError(f"layer must be a recurrent layer (LSTM, GRU or RNN), got {type(layer).__name__}")
    new = {}
    for name, p in params:
        if name.startswith("weight_ih"):
            new[name] = glorot_uniform(p.shape, rng=rng, dtype=np.float64)
        elif name.startswith("weight_hh"):
            G = p.shape[0] // H
            new[name] = np.concatenate([orthogonal((H, H), rng=rng, dtype=np.float64) for _ in range(G)])
        elif name.startswith("bias"):
            b = np.zeros(p.shape)
            if is_lstm and name.startswith("bias_ih"):
                b[H:2 * H] = forget_bias
            new[name] = b
        else:
            raise ValueError(f"unexpected parameter {name!r} in a recurrent layer")
    for name, p in params:
        p[...] = new[name]
    return layer
