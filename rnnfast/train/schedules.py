"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics, acting on an optimizer's ``lr``.

Construction records the optimizer's current ``lr`` as the base rate (epoch 0); each :meth:`step` (once
per epoch, after the optimizer's steps) advances one epoch and sets ``optimizer.lr``. The updates are
PyTorch's recursive ("chainable") forms, so the rates match PyTorch's float for float.
"""
import math
import numbers

from rnnfast._validation import Integer, Options, Real, check_real, validate_params

__all__ = ["LRSchedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


# Constraints of the settings and the progress (rnnfast._validation: TypeError for a wrong type, ValueError for a
# bad value); each class's ``_state`` table checks its constructor's arguments and a loaded state_dict alike.
_NONNEG = Real(0.0)
_COUNT = Integer(0)
_PROGRESS = {"base_lr": _NONNEG, "last_epoch": _COUNT}


def _check_optimizer(optimizer):
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"optimizer must have an 'lr' attribute, got {type(optimizer).__name__}")
    return optimizer


class LRSchedule:
    """Base class of the epoch-based schedules; subclasses implement ``_next_lr()``.

    Attributes
    ----------
    optimizer : object with an ``lr`` attribute
    base_lr : float
        The optimizer's lr when the schedule was built.
    last_epoch : int
        Epochs stepped so far (0 after construction).
    """

    _state = _PROGRESS

    #: Declared: stepped with a monitored value (``step(metric)``), as :class:`ReduceLROnPlateau`; False here.
    monitors_metric = False

    def __init__(self, optimizer):
        self.optimizer = _check_optimizer(optimizer)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self):
        """Advance one epoch and set the optimizer's learning rate. Returns the new rate."""
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr()
        return self.optimizer.lr

    def get_last_lr(self):
        """The optimizer's current learning rate (float)."""
        return float(self.optimizer.lr)

    def _next_lr(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _set(self, **values):
        """Check ``values`` against the ``_state`` table and set them as attributes."""
        for k, v in validate_params(values, self._state).items():
            setattr(self, k, v)

    def state_dict(self):
        """Scalars describing the schedule (its settings and progress); no optimizer.

        Returns
        -------
        dict of str to int, float or str
        """
        return {k: getattr(self, k) for k in self._state}

    def load_state_dict(self, state_dict):
        """Restore :meth:`state_dict` (keys must match exactly; values are checked as the constructor's).

        Raises
        ------
        TypeError
            Not a dict, or a value of the wrong type.
        ValueError
            Other keys, or a value out of range.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"schedule state_dict must be a dict, got {type(state_dict).__name__}")
        if set(state_dict) != set(self._state):
            raise ValueError(f"schedule state_dict must have the keys {sorted(self._state)}, got {sorted(state_dict)}")
        self._set(**state_dict)

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._state if k not in ("base_lr", "last_epoch"))
        return f"{type(self).__name__}({args})"


class StepLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs (``torch...StepLR``).

    Parameters
    ----------
    optimizer : object with an ``lr`` attribute
    step_size : int >= 1
    gamma : float, default 0.1
    """

    _state = {"step_size": Integer(1), "gamma": _NONNEG, **_PROGRESS}

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self._set(step_size=step_size, gamma=gamma)

    def _next_lr(self):
        lr = self.optimizer.lr
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class ExponentialLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every epoch (``torch...ExponentialLR``).

    Parameters
    ----------
    optimizer : object with an ``lr`` attribute
    gamma : float
    """

    _state = {"gamma": _NONNEG, **_PROGRESS}

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self._set(gamma=gamma)

    def _next_lr(self):
        return self.optimizer.lr * self.gamma


class CosineAnnealingLR(LRSchedule):
    """Cosine annealing from the base rate to ``eta_min`` over ``T_max`` epochs (``torch...CosineAnnealingLR``).

    ``lr_t = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2``, computed recursively as PyTorch
    does; past ``T_max`` the rate rises again (a cosine of period ``2 T_max``), as in PyTorch.

    Parameters
    ----------
    optimizer : object with an ``lr`` attribute
    T_max : int >= 1
    eta_min : float, default 0
    """

    _state = {"T_max": Integer(1), "eta_min": _NONNEG, **_PROGRESS}

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self._set(T_max=T_max, eta_min=eta_min)

    def _next_lr(self):
        lr, t, T, lo = self.optimizer.lr, self.last_epoch, self.T_max, self.eta_min
        if t == 0:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - lo) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - lo) + lo


class ReduceLROnPlateau:
    """Reduce the learning rate when a monitored metric stops improving (``torch...ReduceLROnPlateau``).

    Parameters
    ----------
    optimizer : object with an ``lr`` attribute
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease (a loss) or increase (an accuracy).
    factor : float in (0, 1), default 0.1
    patience : int, default 10
        Epochs without improvement tolerated; the rate drops on the next one.
    threshold : float, default 1e-4
    threshold_mode : {"rel", "abs"}, default "rel"
        An improvement beats ``best * (1 -/+ threshold)`` ("rel") or ``best -/+ threshold`` ("abs").
    cooldown : int, default 0
        Epochs to wait after a reduction before counting bad epochs again.
    min_lr : float, default 0
    eps : float, default 1e-8
        Reductions smaller than this are skipped.

    Notes
    -----
    Call ``step(metric)`` once per epoch with the monitored value.
    """

    #: Declared: ``step`` takes the monitored value (the fit loop's scheduler callback passes it).
    monitors_metric = True

    _state = {"mode": Options("min", "max"), "factor": Real(0.0, 1.0, closed="left"), "patience": _COUNT,
              "threshold": _NONNEG, "threshold_mode": Options("rel", "abs"), "cooldown": _COUNT, "min_lr": _NONNEG,
              "eps": _NONNEG, "best": Real(), "num_bad_epochs": _COUNT, "cooldown_counter": _COUNT,
              "last_epoch": _COUNT}

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        self.optimizer = _check_optimizer(optimizer)
        self._set(mode=mode, factor=factor, patience=patience, threshold=threshold, threshold_mode=threshold_mode,
                  cooldown=cooldown, min_lr=min_lr, eps=eps)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metric):
        """Record one epoch's metric and reduce the rate if it has not improved for ``patience`` epochs.

        Parameters
        ----------
        metric : float

        Returns
        -------
        float
            The learning rate now in effect.
        """
        if hasattr(metric, "item") and not isinstance(metric, numbers.Real):  # a 0-d array or tensor
            metric = metric.item()
        current = check_real(metric, "metric", allow_nan=True)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.optimizer.lr

    def get_last_lr(self):
        """The optimizer's current learning rate (float)."""
        return float(self.optimizer.lr)

    _set = LRSchedule._set
    state_dict = LRSchedule.state_dict
    load_state_dict = LRSchedule.load_state_dict

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience}, "
                f"threshold={self.threshold}, threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown}, "
                f"min_lr={self.min_lr}, eps={self.eps})")
