"""Callbacks of the fit loop (:func:`rnnfast.train.fit`), Keras-style.

A callback overrides any of ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_batch_begin(batch, logs)``, ``on_batch_end(batch, logs)``, ``on_test_begin(logs)``, ``on_test_end(logs)``
(around each epoch's validation, when there is validation data), ``on_epoch_end(epoch, logs)`` and
``on_train_end(logs)``. Before training the loop calls ``set_trainer(trainer)`` with the
:class:`rnnfast.train.Trainer` that runs it; through ``self.trainer`` a callback reaches the ``model``, the
``optimizer``, the ``estimator`` (when fitting through one, else None), the ``history`` and ``params``,
and stops training by calling ``self.trainer.stop()`` or setting ``self.trainer.stop_training = True``
(checked after every batch).

Status messages (early stopping, checkpoints, learning-rate changes, NaN stops, epoch lines) go to the
``rnnfast.train`` logger (:mod:`rnnfast._logging` says when they reach the terminal with no logging set up).

Logs: ``on_batch_end`` gets ``{"loss": running mean of the epoch, <metric>: running mean, "size":
sequences in this step, "steps": valid time steps in this step}``; ``on_epoch_end`` gets the epoch's
``loss`` and metrics, ``val_loss`` and ``val_<metric>`` when validating, and ``lr``. Epochs are counted
from 0 (file names formatted with ``{epoch}`` count from 1, as Keras).

The loop calls the callbacks through a :class:`CallbackList` built once per fit, which only calls the hooks
a callback overrides, so an unused hook costs nothing per batch.
"""
import logging
import math
import numbers
import os
import sys
import time
import warnings

import numpy as np

from rnnfast._logging import get_logger
from rnnfast._validation import check_bool, check_int, check_option, check_real
from rnnfast.train.optimizers import _lerp_

#: Training's status messages (see rnnfast._logging): INFO when the callback's ``verbose`` is set, else DEBUG.
log = get_logger("train")

__all__ = ["Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "ReduceLROnPlateau",
           "CSVLogger", "TerminateOnNaN", "ProgressBar", "TimeLimit", "WeightAveraging", "EpochAveraging"]

_COUNTERS = ("size", "steps", "batch")  # bookkeeping entries of the batch logs, not metrics


def _status(verbose, msg: str, *args) -> None:
    """A callback's status message: INFO when its ``verbose`` is set, else DEBUG."""
    log.log(logging.INFO if verbose else logging.DEBUG, msg, *args)


class Callback:
    """Base class: every hook does nothing.

    Attributes
    ----------
    trainer : rnnfast.train.Trainer
        The trainer running the fit; set before ``on_train_begin``.
    """

    trainer = None

    def set_trainer(self, trainer):
        """Called by the fit loop before training starts."""
        self.trainer = trainer

    @property
    def model(self):
        """The model being trained (e.g. an :class:`rnnfast.nn.Sequential`)."""
        return None if self.trainer is None else self.trainer.model

    def on_train_begin(self, logs=None):
        """Before the first epoch."""

    def on_train_end(self, logs=None):
        """After the last epoch, also when training stopped early (callback, NaN, Ctrl-C)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch ``epoch`` (counted from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """After epoch ``epoch`` and its validation; ``logs`` holds the epoch's figures."""

    def on_batch_begin(self, batch, logs=None):
        """Before each optimizer step (with truncated BPTT, each chunk), e.g. for a per-step schedule."""

    def on_batch_end(self, batch, logs=None):
        """After each optimizer step (with truncated BPTT, after each chunk)."""

    def on_test_begin(self, logs=None):
        """Before an epoch's validation (only when the fit has validation data), as Keras's hook."""

    def on_test_end(self, logs=None):
        """After an epoch's validation; ``logs`` holds the epoch's figures (before ``on_epoch_end``)."""


_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end",
          "on_test_begin", "on_test_end")


class CallbackList:
    """The callbacks of one fit, built once: each hook calls, in order, the callbacks that override it.

    Parameters
    ----------
    callbacks : list of Callback
    trainer : rnnfast.train.Trainer
        Given to every callback's ``set_trainer``.

    Raises
    ------
    TypeError
        An element is not a :class:`Callback`.
    """

    def __init__(self, callbacks, trainer):
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be rnnfast.train.callbacks.Callback objects, got {type(cb).__name__}")
        for cb in callbacks:
            cb.set_trainer(trainer)
        self.callbacks = callbacks
        self._hooks = {hook: [getattr(cb, hook) for cb in callbacks
                              if getattr(type(cb), hook) is not getattr(Callback, hook)] for hook in _HOOKS}

    def _call(self, hook, *args):
        for fn in self._hooks[hook]:
            fn(*args)

    def on_train_begin(self, logs):
        """Before the first epoch."""
        self._call("on_train_begin", logs)

    def on_train_end(self, logs):
        """After training, however it stopped."""
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs):
        """Before epoch ``epoch``."""
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs):
        """After epoch ``epoch`` and its validation."""
        self._call("on_epoch_end", epoch, logs)

    def on_batch_begin(self, batch, logs):
        """Before step ``batch`` of the epoch."""
        self._call("on_batch_begin", batch, logs)

    def on_batch_end(self, batch, logs):
        """After step ``batch`` of the epoch."""
        self._call("on_batch_end", batch, logs)

    def on_test_begin(self, logs):
        """Before an epoch's validation."""
        self._call("on_test_begin", logs)

    def on_test_end(self, logs):
        """After an epoch's validation."""
        self._call("on_test_end", logs)


def _resolve_mode(mode, monitor):
    mode = check_option(mode, "mode", ("auto", "min", "max"))
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(k in name for k in ("acc", "auc", "f1", "r2", "score")) else "min"


class _Monitor(Callback):
    """Shared logic: a monitored log entry, its direction and the best value so far."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged value, got {type(monitor).__name__} {monitor!r}")
        if not monitor:
            raise ValueError("monitor must be the name of a logged value, got ''")
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = check_real(min_delta, "min_delta", 0.0)
        self._warned = False

    def _reset_best(self):
        self.best = math.inf if self.mode == "min" else -math.inf

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: '{self.monitor}' is not logged (available: "
                              f"{sorted(k for k in (logs or {}) if k not in _COUNTERS)}); it does nothing",
                              RuntimeWarning, stacklevel=3)
                self._warned = True
            return None
        return float(value)

    def _improved(self, value):
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop training when a monitored value has stopped improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    min_delta : float, default 0
        Smaller changes do not count as improvements.
    patience : int, default 0
        Epochs without improvement after which training stops.
    mode : {"auto", "min", "max"}, default "auto"
        "auto": "max" for accuracy-like names (acc, auc, f1, r2, score), else "min".
    baseline : float, optional
        Training stops if the value has not beaten it within ``patience`` epochs.
    restore_best_weights : bool, default False
        At the end of training, load the weights of the best epoch (when it is not the last one).
    start_from_epoch : int, default 0
        Epochs to wait before monitoring (warm-up).
    verbose : int, default 0

    Attributes
    ----------
    best : float
    best_epoch : int or None
    stopped_epoch : int or None
        The epoch after which this callback stopped training.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0, verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = check_int(patience, "patience", 0)
        self.baseline = check_real(baseline, "baseline", allow_none=True)
        self.restore_best_weights = check_bool(restore_best_weights, "restore_best_weights")
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", 0)
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self._reset_best()
        if self.baseline is not None:
            self.best = self.baseline
        self.wait = 0
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self._last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if epoch < self.start_from_epoch:
            return
        value = self._current(logs)
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()  # copies
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop(f"early stopping: {self.monitor} did not improve for {self.wait} epoch(s)")

    def on_train_end(self, logs=None):
        if self.stopped_epoch is not None:
            _status(self.verbose, "Early stopping after epoch %d; best %s = %.6g at epoch %d", self.stopped_epoch + 1,
                    self.monitor, self.best, (self.best_epoch or 0) + 1)
        if (self.restore_best_weights and self.best_weights is not None
                and self.best_epoch != self._last_epoch):
            self.trainer.model.load_state_dict(self.best_weights)
            _status(self.verbose, "Restored the weights of epoch %d", self.best_epoch + 1)


class ModelCheckpoint(_Monitor):
    """Save the model after every epoch, or only when a monitored value improves.

    With an estimator (``rnnfast.LSTM(...).fit``) the whole estimator is written with its ``save``
    (weights, optimizer state, history: :func:`rnnfast.load` resumes from it). A bare
    :class:`~rnnfast.nn.Sequential` of rnnfast's layers is written as :meth:`~rnnfast.nn.Sequential.save` does
    (kind ``"nn.Sequential"``, with ``extra["epoch"]``): :func:`rnnfast.load` returns it. Any other model is
    written as its ``state_dict`` alone (kind ``"model.state_dict"``): read it back with
    :func:`rnnfast.io.load_archive` and pass the arrays to the model's ``load_state_dict``.

    Parameters
    ----------
    filepath : str or os.PathLike
        May hold ``{epoch}`` (from 1) and log entries, e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.rnnfast"``.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
    mode : {"auto", "min", "max"}, default "auto"
    verbose : int, default 0

    Attributes
    ----------
    saved : list of str
        Files written, in order.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", verbose=0):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = check_bool(save_best_only, "save_best_only")
        self.verbose = verbose
        self.saved = []

    def on_train_begin(self, logs=None):
        self._reset_best()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._current(logs)
            if value is None or not self._improved(value):
                return
            self.best = value
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} cannot be formatted with the "
                             f"epoch and logs {sorted(logs)}: {e}") from None
        est = self.trainer.estimator
        if est is not None:
            est.save(path)
        else:
            from rnnfast.nn._serial import save_checkpoint
            save_checkpoint(self.trainer.model, path, {"epoch": epoch + 1})
        self.saved.append(path)
        _status(self.verbose, "Saved %s", path)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate by a schedule, once per epoch.

    Parameters
    ----------
    schedule : schedule object, schedule class, or callable
        - an :mod:`rnnfast.train.schedules` object (``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``...)
          built on the optimizer: stepped at the end of every epoch;
        - an :class:`rnnfast.train.ReduceLROnPlateau` object: stepped with the monitored value;
        - a schedule class, e.g. ``CosineAnnealingLR``: built at the start of training on the trainer's
          optimizer with ``**kwargs`` (useful when the optimizer is made inside ``fit``);
        - a callable ``f(epoch, lr) -> new lr`` (Keras's form): called at the start of every epoch.
    monitor : str, optional
        For plateau schedules: the value to watch (default ``"val_loss"`` when logged, else ``"loss"``).
    verbose : int, default 0
    **kwargs
        Arguments of a schedule class.
    """

    def __init__(self, schedule, monitor=None, verbose=0, **kwargs):
        if isinstance(schedule, type):
            self._factory = lambda opt: schedule(opt, **kwargs)
            self.schedule = None
        elif kwargs:
            raise TypeError("keyword arguments are only for a schedule class")
        else:
            if not callable(schedule) and not hasattr(schedule, "step"):
                raise TypeError(f"schedule must be a schedule, a schedule class or a callable, "
                                f"got {type(schedule).__name__}")
            self._factory = None
            self.schedule = schedule
        self.monitor = monitor
        self.verbose = verbose

    def _is_plateau(self):
        # declared by the schedule (``monitors_metric``, True on ReduceLROnPlateau), not guessed
        return bool(getattr(self.schedule, "monitors_metric", False))

    def _is_callable(self):
        return not hasattr(self.schedule, "step")

    def on_train_begin(self, logs=None):
        if self._factory is not None:
            self.schedule = self._factory(self.trainer.optimizer)

    def on_epoch_begin(self, epoch, logs=None):
        if self._is_callable():
            opt = self.trainer.optimizer
            new = self.schedule(epoch, float(opt.lr))
            if isinstance(new, bool) or not isinstance(new, (numbers.Real, np.floating)) or not math.isfinite(new):
                raise ValueError(f"the schedule returned {new!r}; it must return a finite learning rate")
            opt.lr = float(new)

    def on_epoch_end(self, epoch, logs=None):
        if self._is_callable():
            return
        old = float(self.trainer.optimizer.lr)
        if self._is_plateau():
            logs = logs or {}
            key = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
            if key not in logs:
                raise KeyError(f"LearningRateScheduler monitors {key!r}, which is not logged "
                               f"(available: {sorted(logs)})")
            self.schedule.step(logs[key])
        else:
            self.schedule.step()
        if float(self.trainer.optimizer.lr) != old:
            _status(self.verbose, "Epoch %d: learning rate %.3g -> %.3g", epoch + 1, old,
                    float(self.trainer.optimizer.lr))


class ReduceLROnPlateau(LearningRateScheduler):
    """Reduce the learning rate when a monitored value stops improving (Keras's callback).

    Builds an :class:`rnnfast.train.ReduceLROnPlateau` schedule on the trainer's optimizer at the start
    of training; its parameters are those of the schedule.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Falls back to ``"loss"`` when there is no validation.
    factor : float in (0, 1), default 0.1
    patience : int, default 10
    mode : {"auto", "min", "max"}, default "auto"
    min_delta : float, default 1e-4
        The schedule's ``threshold`` (relative, as PyTorch's default).
    cooldown : int, default 0
    min_lr : float, default 0
    verbose : int, default 0
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0, verbose=0):
        from rnnfast.train.schedules import ReduceLROnPlateau as _Plateau
        mode = _resolve_mode(mode, monitor)
        super().__init__(_Plateau, monitor=None, verbose=verbose, mode=mode, factor=factor, patience=patience,
                         threshold=min_delta, cooldown=cooldown, min_lr=min_lr)
        self._preferred = monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.monitor = self._preferred if self._preferred in logs else "loss"
        super().on_epoch_end(epoch, logs)


class CSVLogger(Callback):
    """Write one row per epoch (epoch from 1, then the logged values) to a CSV file.

    The file is opened, appended to and closed at every epoch, so it is complete after a crash.

    Parameters
    ----------
    filename : str or os.PathLike
    separator : str, default ","
    append : bool, default False
        Keep an existing file and add rows (no new header); otherwise start a new file.
    """

    def __init__(self, filename, separator=",", append=False):
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = check_bool(append, "append")
        self.keys = None

    def on_train_begin(self, logs=None):
        self.keys = None
        self._header = not (self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0)
        if not self.append:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(k for k in logs if k not in _COUNTERS)
        sep = self.separator
        with open(self.filename, "a", newline="") as f:
            if self._header:
                f.write(sep.join(["epoch"] + self.keys) + "\n")
                self._header = False
            row = [str(epoch + 1)] + [repr(float(logs[k])) if k in logs else "" for k in self.keys]
            f.write(sep.join(row) + "\n")


class TerminateOnNaN(Callback):
    """Stop training as soon as the loss or a logged metric of a batch is NaN or infinite.

    The fit loop already refuses to apply a step whose loss is not finite and stops (keeping the
    last good weights); this callback stops on a non-finite metric too, and says so.
    """

    def on_batch_end(self, batch, logs=None):
        for k, v in (logs or {}).items():
            if k not in _COUNTERS and isinstance(v, (numbers.Real, np.floating)) and not math.isfinite(v):
                log.warning("Batch %d: %s = %s, terminating training", batch, k, v)
                self.trainer.stop(f"non-finite {k}", reason="nan")
                return


class TimeLimit(Callback):
    """Stop training once ``seconds`` have passed since it started (checked after every step).

    Parameters
    ----------
    seconds : float > 0
    """

    def __init__(self, seconds):
        self.seconds = check_real(seconds, "seconds", 0.0, closed="right")

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()

    def on_batch_end(self, batch, logs=None):
        if time.perf_counter() - self._t0 >= self.seconds:
            self.trainer.stop(f"time limit of {self.seconds:g} s reached", reason="time_limit")


class _Averaging(Callback):
    """What the averaging callbacks share: the average is validated each epoch (``on_test_begin`` swaps it
    in, ``on_epoch_begin`` swaps the raw weights back), so callbacks after the validation see it, and it is
    the model's when training ends (see :class:`WeightAveraging`). Subclasses keep ``averaged_weights``."""

    def __init__(self, start_epoch=0):
        self.start_epoch = check_int(start_epoch, "start_epoch", 0)
        self.updates, self.averaged_weights = 0, None

    def on_train_begin(self, logs=None):
        self.updates, self.averaged_weights, self._raw, self._epoch = 0, None, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._restore_raw()

    def on_test_begin(self, logs=None):
        if self.averaged_weights is not None and self._raw is None:
            model = self.trainer.model
            self._raw = model.state_dict()
            model.load_state_dict(self.averaged_weights)

    def on_train_end(self, logs=None):
        if self.averaged_weights is None:
            return
        if self.trainer.stop_reason in ("nan", "interrupted"):
            self._restore_raw()
        elif self._raw is None:  # (no validation since the last steps)
            self.trainer.model.load_state_dict(self.averaged_weights)
        self._raw = None

    def _restore_raw(self):
        if self._raw is not None:
            self.trainer.model.load_state_dict(self._raw)
            self._raw = None


class WeightAveraging(_Averaging):
    """An exponential moving average (EMA) of the weights: validated each epoch, and the model's at the end.

    After every optimizer step from epoch ``start_epoch`` on, each parameter's average becomes
    ``avg := decay * avg + (1 - decay) * w`` (the first update copies the weights), as Keras's optimizer
    option ``use_ema`` or PyTorch's ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``.
    An average smooths the last steps' noise; late in a decaying learning rate it often validates better
    than the last weights.

    Each epoch's validation (``on_test_begin``) runs on the averaged weights, and the model keeps them until
    the next epoch starts, so :class:`EarlyStopping` with ``restore_best_weights`` and
    :class:`ModelCheckpoint` keep averaged weights (whatever their order in the list); training itself goes
    on from the raw weights, exactly as without the callback. When training ends the model holds the
    average, unless it stopped on a non-finite loss or an interruption (then the last step's weights, as
    the warning says).

    Parameters
    ----------
    decay : float in (0, 1), default 0.999
        The average's share at each update; it spans about ``1 / (1 - decay)`` steps.
    start_epoch : int >= 0, default 0
        The first epoch (counted from 0) whose steps enter the average; before it, validation sees the raw
        weights.

    Attributes
    ----------
    updates : int
        Steps averaged so far.
    averaged_weights : dict of str to numpy.ndarray or None
        The average (live arrays, updated in place), None before the first update.

    See Also
    --------
    EpochAveraging : the mean of the weights at the last few epochs' ends (checkpoint averaging).
    """

    def __init__(self, decay=0.999, start_epoch=0):
        self.decay = check_real(decay, "decay", 0.0, 1.0, closed="neither")
        super().__init__(start_epoch)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._scratch = None

    def on_batch_end(self, batch, logs=None):
        if self._epoch < self.start_epoch or not math.isfinite((logs or {}).get("loss", 0.0)):
            return  # (a non-finite loss: that step was not applied)
        params = self.trainer.model.named_parameters()
        if not params:
            return
        if self.averaged_weights is None:
            self.averaged_weights = {name: p.copy() for name, p in params}
            self._scratch = np.empty(max(p.size for _, p in params), np.result_type(*[p for _, p in params]))
        else:
            w = 1.0 - self.decay
            for name, p in params:
                _lerp_(self.averaged_weights[name], p, w, self._scratch[:p.size].reshape(p.shape))
        self.updates += 1


class EpochAveraging(_Averaging):
    """The mean of the weights at the ends of the last ``window`` epochs (checkpoint averaging, as fairseq's
    ``average_checkpoints`` or the Transformer's "last 5 checkpoints"): validated each epoch, and the
    model's at the end, as :class:`WeightAveraging`'s average.

    An epoch's weights join the window when it ends (before its validation), from epoch ``start_epoch`` on;
    the mean is taken in float64. Training goes on from the raw weights, exactly as without the callback.

    Parameters
    ----------
    window : int >= 1, default 5
        Epochs in the mean (fewer until that many have ended).
    start_epoch : int >= 0, default 0
        The first epoch (counted from 0) whose weights join.

    Attributes
    ----------
    updates : int
        Epochs averaged so far (counting those that have left the window).
    averaged_weights : dict of str to numpy.ndarray or None
        The mean of the window, None before its first epoch.
    """

    def __init__(self, window=5, start_epoch=0):
        self.window = check_int(window, "window", 1)
        super().__init__(start_epoch)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._kept, self._added = [], None

    def on_test_begin(self, logs=None):
        self._add()
        super().on_test_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add()  # (no validation; with one, this epoch's weights joined before it)

    def _add(self):
        if self._epoch < self.start_epoch or self._added == self._epoch or self._raw is not None:
            return
        self._added = self._epoch
        self._kept = (self._kept + [self.trainer.model.state_dict()])[-self.window:]
        self.averaged_weights = {name: np.mean([k[name] for k in self._kept], axis=0, dtype=np.float64).astype(w.dtype)
                                 for name, w in self._kept[0].items()}
        self.updates += 1


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


class ProgressBar(Callback):
    """A progress bar per epoch with the running loss and metrics and the throughput.

    Uses ``tqdm`` when it is importable (``pip install "rnnfast[progress]"``); otherwise a plain line,
    rewritten in place on a terminal and printed every ``log_every`` seconds elsewhere. Throughput is in
    sequences per second, plus time steps per second (e.g. characters) for per-step targets.

    Parameters
    ----------
    file : file object, optional
        Where the progress goes; default ``sys.stderr``. With the default, each epoch's closing line is a
        status message of the ``rnnfast.train`` logger (INFO) instead (see :mod:`rnnfast._logging`); a
        ``file`` given here gets those lines too.
    mininterval : float, default 0.2
        Seconds between refreshes.
    use_tqdm : bool, optional
        Force (True) or avoid (False) tqdm; default: when importable.
    log_every : float, default 10
        Without tqdm and a terminal: seconds between progress lines.
    per_batch : bool, default True
        False: no bar, one line per epoch (Keras's ``verbose=2``).
    """

    def __init__(self, file=None, mininterval=0.2, use_tqdm=None, log_every=10.0, per_batch=True):
        self.file = file
        self.per_batch = check_bool(per_batch, "per_batch")
        if not self.per_batch:
            use_tqdm = False
            log_every = math.inf
        self.mininterval = check_real(mininterval, "mininterval", 0.0)
        self.log_every = check_real(log_every, "log_every", 0.0)
        if use_tqdm is None or use_tqdm:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if use_tqdm:
                    raise ImportError('tqdm is not installed: pip install "rnnfast[progress]"') from None
                tqdm = None
        else:
            tqdm = None
        self._tqdm = tqdm
        self._bar = None

    def _out(self):
        return self.file if self.file is not None else sys.stderr

    def on_train_begin(self, logs=None):
        self._per_step = bool(self.trainer.params.get("per_step") or self.trainer.params.get("tbptt"))

    def on_epoch_begin(self, epoch, logs=None):
        p = self.trainer.params
        self._desc = f"Epoch {epoch + 1}/{p['last_epoch']}"
        self._total = p.get("steps")
        self._t0 = self._last = self._last_line = time.perf_counter()
        self._n = self._seqs = self._toks = 0
        self._line_len = 0
        if self._tqdm is not None:
            self._bar = self._tqdm(total=self._total, desc=self._desc, unit="step", file=self._out(),
                                   mininterval=self.mininterval, leave=True, dynamic_ncols=True)

    def _rates(self, now):
        dt = max(now - self._t0, 1e-9)
        rates = []
        if self._seqs or not self._per_step:  # with truncated BPTT sequences finish only at the end
            rates.append(f"{self._seqs / dt:,.0f} seq/s")
        if self._per_step:
            rates.append(f"{self._toks / dt:,.0f} steps/s")
        return ", ".join(rates)

    @staticmethod
    def _metrics(logs):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in logs.items() if k not in _COUNTERS and k != "lr")

    def on_batch_end(self, batch, logs=None):
        self._n += 1
        self._seqs += logs.get("size", 0)
        self._toks += logs.get("steps", 0)
        if self._bar is not None:
            self._bar.update(1)
        now = time.perf_counter()
        if now - self._last < self.mininterval or not self.per_batch:
            return
        self._last = now
        text = f"{self._metrics(logs)}, {self._rates(now)}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            return
        out = self._out()
        total = f"/{self._total}" if self._total else ""
        line = f"{self._desc} [{self._n}{total}] {text}"
        if getattr(out, "isatty", lambda: False)():
            out.write("\r" + line.ljust(self._line_len))
            self._line_len = len(line)
            out.flush()
        elif now - self._last_line >= self.log_every:
            self._last_line = now
            print(line, file=out, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        text = f"{self._metrics(logs or {})}, {now - self._t0:.1f}s, {self._rates(now)}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
            self._bar.close()
            self._bar = None
            return
        out = self._out()
        line = f"{self._desc} [{self._n} steps] {text}"
        tty = getattr(out, "isatty", lambda: False)()
        if self.file is None:  # a status line: to the rnnfast.train logger, over the cleared progress line
            if tty and self._line_len:
                out.write("\r" + " " * self._line_len + "\r")
                out.flush()
            log.info("%s", line)
        else:  # the file the caller gave gets it all
            print(("\r" if tty else "") + line.ljust(self._line_len), file=out, flush=True)
        self._line_len = 0

    def on_train_end(self, logs=None):
        # an interrupted epoch leaves its bar open
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._line_len:
            print(file=self._out(), flush=True)
            self._line_len = 0
