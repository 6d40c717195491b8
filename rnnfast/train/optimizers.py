"""Optimizers with PyTorch's update formulas (``torch.optim``, single-tensor path), updating numpy arrays in place.

An optimizer works on ``(name, param, grad)`` triples: ``param`` is a live parameter array (updated in
place by :meth:`Optimizer.step`), ``grad`` the array its gradient accumulates in. A model with
``named_parameters()`` and ``grads`` (any ``rnnfast.nn`` layer or :class:`rnnfast.nn.Sequential`) can be
passed directly::

    opt = Adam(model, lr=1e-3)
    model.zero_grad(); loss, d = loss_fn(model(x), y); model.backward(d); opt.step()

Learning-rate schedules change :attr:`Optimizer.lr` between steps. :meth:`Optimizer.state_dict` holds
only strings, numbers, tuples of numbers and numpy arrays, so it can be saved without pickle.

Every layer's ``load_state_dict`` copies into its live parameter arrays, so an optimizer built before a
load stays attached to the model.
"""
from typing import ClassVar

import numpy as np

from rnnfast._kernels import _optim
from rnnfast._threads import resolve_threads
from rnnfast._validation import Boolean, Constraint, Pair, Real, check_int, validate_params

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "parameter_triples"]


def parameter_triples(params):
    """Normalise ``params`` to a validated list of ``(name, param, grad)`` triples.

    Parameters
    ----------
    params : model or iterable of (str, numpy.ndarray, numpy.ndarray)
        A model with ``named_parameters()`` and a ``grads`` dict, or the triples themselves.

    Returns
    -------
    list of (str, numpy.ndarray, numpy.ndarray)

    Raises
    ------
    TypeError
        An item is not a triple of (str, writeable float array, float array).
    ValueError
        No parameters, duplicate names, or a gradient whose shape differs from its parameter's.
    """
    if hasattr(params, "named_parameters") and hasattr(params, "grads"):
        grads = params.grads
        triples = [(name, p, grads[name]) for name, p in params.named_parameters()]
    else:
        try:
            triples = list(params)
        except TypeError:
            raise TypeError("params must be a model (named_parameters() and grads) or an iterable of "
                            f"(name, param, grad) triples, got {type(params).__name__}") from None
    if not triples:
        raise ValueError("optimizer got an empty parameter list")
    seen = set()
    out = []
    for item in triples:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"each parameter must be a (name, param, grad) triple, got {item!r:.80}")
        name, p, g = item
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {type(name).__name__}")
        if name in seen:
            raise ValueError(f"duplicate parameter name {name!r}")
        seen.add(name)
        for what, a in (("parameter", p), ("gradient", g)):
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise TypeError(f"{what} {name!r} must be a float32 or float64 numpy array (updated in place), "
                                f"got {type(a).__name__}{'' if not isinstance(a, np.ndarray) else ' ' + str(a.dtype)}")
        if not p.flags.writeable:
            raise ValueError(f"parameter {name!r} is read-only")
        if g.shape != p.shape:
            raise ValueError(f"gradient {name!r} has shape {g.shape}, its parameter {p.shape}")
        out.append((name, p, g))
    return out


# Hyperparameter constraints (see rnnfast._validation: TypeError for a wrong type, ValueError for a bad value).
_NONNEG = Real(0.0)                                 # a number >= 0 (not NaN)
_FLAG = Boolean()
_BETA = Real(0.0, 1.0, closed="left")               # a decay rate in [0, 1)


def _lerp_(a, b, w, tmp=None):
    """In-place ``a = lerp(a, b, w)``, rounded as ``torch.lerp`` (two formulas around w = 0.5); ``tmp``:
    an array shaped as ``a`` to work in (none: temporaries)."""
    tmp = np.subtract(b, a, out=tmp)
    if w < 0.5:
        tmp *= w
        a += tmp
    else:
        tmp *= 1.0 - w
        np.subtract(b, tmp, out=a)


class Optimizer:
    """Base class. Subclasses define ``_hyper`` (a declarative table: hyperparameter name -> constraint of
    :mod:`rnnfast._validation`, in the order of the constructor), ``_update``, and ``_validate`` when
    hyperparameters constrain each other.

    Attributes
    ----------
    params : list of (name, param, grad)
    lr : float
        Learning rate, read at every step (schedules set it).
    steps : int
        Number of :meth:`step` calls so far (PyTorch's per-parameter ``step``).
    state : dict of str to dict of str to numpy.ndarray
        Per-parameter moment arrays, named as in PyTorch's optimizer state.
    """

    _hyper: ClassVar[dict[str, Constraint]] = {"lr": _NONNEG, "weight_decay": _NONNEG}

    def __init__(self, params, **hyper):
        self.params = parameter_triples(params)
        for k, v in self._validate(hyper).items():
            setattr(self, k, v)
        self.steps = 0
        self.state = {name: self._new_state(p) for name, p, _ in self.params}

    @property
    def lr(self):
        """Learning rate (float >= 0)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = self._hyper["lr"].check(value, "lr")

    def _validate(self, hyper):
        """Validated copy of a hyperparameter dict (TypeError for a wrong type, ValueError for a bad value)."""
        return validate_params(hyper, self._hyper)

    def _slots(self, hyper):
        """Names of the per-parameter state arrays for these hyperparameters."""
        return ()

    def _new_state(self, p, hyper=None):
        hyper = self._current_hyper() if hyper is None else hyper
        return {k: np.zeros_like(p) for k in self._slots(hyper)}

    def _current_hyper(self):
        return {k: getattr(self, k) for k in self._hyper}

    def step(self):
        """Update every parameter in place from its gradient."""
        self.steps += 1
        for name, p, g in self.params:
            self._update(p, g, self.state[name])

    def _update(self, p, g, st):  # pragma: no cover - abstract
        raise NotImplementedError

    def _scratch(self, p, n):
        """``n`` arrays shaped as ``p``, kept between steps: a temporary of a large parameter is a fresh
        mapping whose pages the kernel zeroes at every step, which cost Adam half its time."""
        tmp = self.__dict__.setdefault("_tmp", {})
        key = (p.shape, p.dtype.str)
        bufs = tmp.get(key)
        if bufs is None or len(bufs) < n:
            bufs = tmp[key] = [np.empty_like(p) for _ in range(n)]
        return bufs

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_tmp"}  # scratch is not state

    def zero_grad(self):
        """Set all gradients to zero (in place)."""
        for _, _, g in self.params:
            g[...] = 0

    def state_dict(self):
        """Hyperparameters, step count and copies of the moment arrays (no objects needing pickle).

        Returns
        -------
        dict
            ``{"optimizer": class name, "hyper": {name: value}, "steps": int,
            "state": {param name: {slot: ndarray}}}``
        """
        return {"optimizer": type(self).__name__, "hyper": self._current_hyper(), "steps": self.steps,
                "state": {n: {k: a.copy() for k, a in st.items()} for n, st in self.state.items()}}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` of the same optimizer class and parameter names.

        Raises
        ------
        ValueError, TypeError
            On any mismatch (class, hyperparameter names or values, parameter names, slot names, shapes);
            nothing is changed then.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("optimizer", "hyper", "steps", "state"):
            if key not in state_dict:
                raise ValueError(f"optimizer state_dict lacks {key!r}")
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['optimizer']!r}, this is {type(self).__name__}")
        hyper = state_dict["hyper"]
        if not isinstance(hyper, dict) or set(hyper) != set(self._hyper):
            raise ValueError(f"state_dict hyperparameters must be {sorted(self._hyper)}, "
                             f"got {sorted(hyper) if isinstance(hyper, dict) else hyper!r}")
        hyper = self._validate(hyper)
        steps = state_dict["steps"]
        steps = check_int(steps, "state_dict steps", 0)
        st = state_dict["state"]
        names = [n for n, _, _ in self.params]
        if not isinstance(st, dict) or set(st) != set(names):
            raise ValueError("state_dict parameter names do not match: missing "
                             f"{sorted(set(names) - set(st))}, unexpected {sorted(set(st) - set(names))}"
                             if isinstance(st, dict) else "state_dict 'state' must be a dict")
        slots = set(self._slots(hyper))
        new_state = {}
        for name, p, _ in self.params:
            entry = st[name]
            if not isinstance(entry, dict) or set(entry) != slots:
                raise ValueError(f"state of {name!r} must hold {sorted(slots)}, got "
                                 f"{sorted(entry) if isinstance(entry, dict) else entry!r}")
            new_state[name] = {}
            for k in slots:
                a = np.asarray(entry[k])
                if a.dtype.kind not in "iuf":
                    raise TypeError(f"state[{name!r}][{k!r}] must hold real numbers, got dtype {a.dtype}")
                if a.shape != p.shape:
                    raise ValueError(f"state[{name!r}][{k!r}] has shape {a.shape}, parameter {p.shape}")
                new_state[name][k] = np.array(a, dtype=p.dtype, copy=True)
        for k, v in hyper.items():
            setattr(self, k, v)
        self.steps = int(steps)
        self.state = new_state

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, ``torch.optim.SGD``.

    ``g = grad + weight_decay * p``; with momentum ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``; ``g = g + momentum * b`` (Nesterov) or ``g = b``;
    ``p -= lr * g``.

    Parameters
    ----------
    params : model or iterable of (name, param, grad)
    lr : float, default 0.01
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    """

    _hyper = {"lr": _NONNEG, "momentum": _NONNEG, "dampening": _NONNEG, "weight_decay": _NONNEG, "nesterov": _FLAG}

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

    def _validate(self, hyper):
        out = super()._validate(hyper)
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        return out

    def _slots(self, hyper):
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def _update(self, p, g, st):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum != 0:
            buf = st["momentum_buffer"]
            if self.steps == 1:
                buf[...] = g  # PyTorch starts the buffer at the first gradient, not at zero
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class RMSprop(Optimizer):
    """RMSprop, ``torch.optim.RMSprop``.

    ``s = alpha s + (1 - alpha) g^2``; centered: ``a = lerp(a, g, 1 - alpha)``, ``avg = sqrt(s - a^2) + eps``,
    else ``avg = sqrt(s) + eps``; with momentum ``b = momentum b + g / avg``, ``p -= lr b``; else
    ``p -= lr g / avg``.

    Parameters
    ----------
    params : model or iterable of (name, param, grad)
    lr : float, default 0.01
    alpha : float, default 0.99
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
    """

    _hyper = {"lr": _NONNEG, "alpha": Real(0.0, 1.0), "eps": _NONNEG, "weight_decay": _NONNEG, "momentum": _NONNEG,
              "centered": _FLAG}

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered)

    def _slots(self, hyper):
        return (("square_avg",) + (("momentum_buffer",) if hyper["momentum"] > 0 else ())
                + (("grad_avg",) if hyper["centered"] else ()))

    def _update(self, p, g, st):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        sq = st["square_avg"]
        sq *= self.alpha
        sq += (1.0 - self.alpha) * g * g
        if self.centered:
            ga = st["grad_avg"]
            _lerp_(ga, g, 1.0 - self.alpha)
            avg = np.sqrt(sq - ga * ga)
        else:
            avg = np.sqrt(sq)
        avg += self.eps
        if self.momentum > 0:
            buf = st["momentum_buffer"]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * g / avg


class Adagrad(Optimizer):
    """Adagrad, ``torch.optim.Adagrad``.

    ``clr = lr / (1 + (step - 1) lr_decay)``; ``s += g^2``; ``p -= clr g / (sqrt(s) + eps)``.

    Parameters
    ----------
    params : model or iterable of (name, param, grad)
    lr : float, default 0.01
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    """

    _hyper = {"lr": _NONNEG, "lr_decay": _NONNEG, "weight_decay": _NONNEG, "initial_accumulator_value": _NONNEG,
              "eps": _NONNEG}

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

    def _slots(self, hyper):
        return ("sum",)

    def _new_state(self, p, hyper=None):
        return {"sum": np.full_like(p, self.initial_accumulator_value)}

    def _update(self, p, g, st):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (self.steps - 1) * self.lr_decay)
        s = st["sum"]
        s += g * g
        std = np.sqrt(s)
        std += self.eps
        p -= clr * g / std


_FLUSH_EVERY = 64


def _flush_subnormal(a):
    """Set the subnormal (and smaller) entries of ``a`` to zero, in place: their effect on a step is
    below the dtype's resolution, their cost is not."""
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0


class Adam(Optimizer):
    """Adam, ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    ``m = lerp(m, g, 1 - beta1)``; ``v = beta2 v + (1 - beta2) g^2``;
    ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`` (``v`` replaced by its running
    maximum with ``amsgrad``).

    Parameters
    ----------
    params : model or iterable of (name, param, grad)
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    amsgrad : bool, default False
    """

    _hyper = {"lr": _NONNEG, "betas": Pair(_BETA, _BETA), "eps": _NONNEG, "weight_decay": _NONNEG, "amsgrad": _FLAG}
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

    def _slots(self, hyper):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hyper["amsgrad"] else ())

    def step(self):
        """Update every parameter in place from its gradient: one pass over each parameter's arrays in
        the compiled kernel (split over rnnfast's threads), rounded exactly as :meth:`_update`'s numpy
        passes, which serve arrays the kernel does not take (mixed dtypes, non-contiguous)."""
        self.steps += 1
        t, (beta1, beta2) = self.steps, self.betas
        mode, wd = 0, self.weight_decay
        if wd != 0:
            mode, wd = (2, 1.0 - self.lr * wd) if self._decoupled else (1, wd)
        args = (mode, wd, 1.0 - beta1, t % _FLUSH_EVERY == 0, beta2, (1 - beta2 ** t) ** 0.5, self.eps,
                self.lr / (1 - beta1 ** t), resolve_threads(None))
        for name, p, g in self.params:
            st = self.state[name]
            arrays = (p, g, st["exp_avg"], st["exp_avg_sq"]) + ((st["max_exp_avg_sq"],) if self.amsgrad else ())
            if all(a.dtype == p.dtype and a.flags.c_contiguous for a in arrays):
                _optim.adam_step(*arrays[:4], arrays[4] if self.amsgrad else None, *args)
            else:
                self._update(p, g, st)

    def _update(self, p, g, st):
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self._decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m, v = st["exp_avg"], st["exp_avg_sq"]
        a, b = self._scratch(p, 2)
        _lerp_(m, g, 1.0 - beta1, a)
        v *= beta2
        np.multiply(g, 1.0 - beta2, out=a)  # the rounding of (1 - beta2) * g * g, without temporaries
        a *= g
        v += a
        t = self.steps
        if t % _FLUSH_EVERY == 0:
            # moments of parameters whose gradient stays zero (embedding rows never seen) decay into
            # subnormal numbers, on which every following step runs several times slower
            _flush_subnormal(m)
            _flush_subnormal(v)
        step_size = self.lr / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        if self.amsgrad:
            vmax = st["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v, out=a)
        denom /= bc2_sqrt
        denom += self.eps
        np.multiply(m, step_size, out=b)
        b /= denom
        p -= b


class AdamW(Adam):
    """Adam with decoupled weight decay, ``torch.optim.AdamW``: ``p *= 1 - lr * weight_decay`` before
    the Adam step (the decay never enters the moments).

    Parameters are those of :class:`Adam`, with ``weight_decay`` defaulting to 0.01.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
