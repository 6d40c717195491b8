"""The fit loop: one training loop for every model, with :func:`evaluate` and :func:`predict` beside it.

A model is anything with the layer protocol: ``forward(x, lengths=..., n_threads=...)``, ``backward(dout)``,
``named_parameters()``, ``grads``, ``zero_grad()``, ``train()``/``eval()``, ``state_dict()`` (e.g. an
:class:`rnnfast.nn.Sequential`). Per epoch :func:`fit` shuffles (seeded), batches (bucketed by length),
and for every batch runs forward, the loss (padded steps masked), backward, gradient clipping and the
optimizer step; then validation, the schedule, the callbacks and the history.

Long sequences: ``tbptt=k`` cuts every batch into chunks of ``k`` steps, one optimizer step per chunk,
carrying the recurrent state from chunk to chunk without gradient (truncated backpropagation through
time); ``stateful=True`` also carries it from batch to batch (row i of a batch continues row i of the
previous one). Both need the recurrent layer wrapped in :class:`Stateful`.

Stopping: callbacks (``trainer.stop()``), a non-finite loss (the step is not applied), and Ctrl-C. While
:func:`fit` runs in the main thread a first Ctrl-C only asks the loop to stop after the current step (a
second one interrupts at once); a ``KeyboardInterrupt`` raised anywhere in the loop (e.g. by a callback)
stops it too. In every case :func:`fit` returns normally with the history of the completed epochs and
the weights of the last completed optimizer step, and warns.

Reproducibility: with an integer ``seed`` every random choice of epoch ``e`` (shuffling, bucketing,
dropout masks) derives from ``(seed, e)`` alone, so training resumed at epoch ``e`` (``initial_epoch``)
from saved weights and optimizer state repeats an uninterrupted run step for step.
"""
import math
import numbers
import signal
import threading
import time
import warnings

import numpy as np

from rnnfast.nn.sequential import _accepts
from rnnfast.train.callbacks import Callback, LearningRateScheduler, ProgressBar
from rnnfast.train.clip import clip_grad_norm, clip_grad_value
from rnnfast.train.data import SequenceDataset, batch_indices, bucket_batches
from rnnfast.train.metrics import METRICS, resolve

__all__ = ["fit", "evaluate", "predict", "Stateful", "History", "Trainer", "METRICS"]


# ---------------------------------------------------------------------------------------- Stateful
class Stateful:
    """A recurrent layer whose initial state can be set from outside, for truncated BPTT and stateful
    training.

    It behaves exactly as the wrapped layer (same parameters, state-dict keys, gradients) while ``hx``
    is None. The fit loop sets ``hx`` before a call and reads the call's final state from
    ``last_state``; no gradient flows into ``hx`` (the state is detached).

    Parameters
    ----------
    layer : rnnfast.nn.LSTM, GRU or RNN (or any layer whose ``forward(x, hx, lengths=, n_threads=)``
        returns ``(out, state)``)

    Attributes
    ----------
    hx : initial state of the next call, or None (zeros)
    last_state : final state of the last call
    """

    def __init__(self, layer):
        for meth in ("forward", "backward"):
            if not callable(getattr(layer, meth, None)):
                raise TypeError(f"Stateful needs a layer with {meth}(), got {type(layer).__name__}")
        self.layer = layer
        self.hx = None
        self.last_state = None

    def forward(self, x, lengths=None, n_threads=None):
        """``layer.forward(x, hx, ...)``; returns ``(out, state)`` and keeps ``state`` in ``last_state``."""
        res = self.layer.forward(x, self.hx, lengths=lengths, n_threads=n_threads)
        self.last_state = res[1]
        return res

    __call__ = forward

    def backward(self, dout, dstate=None, n_threads=None):
        """``layer.backward``: the gradient does not continue into ``hx`` (truncation)."""
        return self.layer.backward(dout, dstate, n_threads=n_threads)

    def reset_state(self):
        """Forget the carried state (next call starts from zeros)."""
        self.hx = None
        self.last_state = None

    def train(self, mode=True):
        """Training mode of the wrapped layer. Returns self."""
        self.layer.train(mode)
        return self

    def eval(self):
        """Inference mode of the wrapped layer. Returns self."""
        return self.train(False)

    def __getattr__(self, name):
        # everything else (state_dict, grads, hidden_size, ...) is the wrapped layer's
        layer = self.__dict__.get("layer")
        if layer is None:
            raise AttributeError(name)
        return getattr(layer, name)

    def __repr__(self):
        return f"Stateful({self.layer!r})"


def _state_take(state, rows):
    if state is None or rows is None:
        return state
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def _state_put(full, rows, part, B):
    """Write the state of the chunk's rows into the batch's state (part is fresh: no copy needed)."""
    if rows is None:
        return part
    if isinstance(part, tuple):
        if full is None:
            full = tuple(np.zeros((s.shape[0], B) + s.shape[2:], s.dtype) for s in part)
        for f, s in zip(full, part):
            f[:, rows] = s
        return full
    if full is None:
        full = np.zeros((part.shape[0], B) + part.shape[2:], part.dtype)
    full[:, rows] = part
    return full


def _layers(model):
    """The model's layers, looking inside Stateful wrappers too."""
    layers = list(getattr(model, "layers", [model]))
    return layers + [l.layer for l in layers if isinstance(l, Stateful)]


# ---------------------------------------------------------------------------------------- metrics
def _weights(shape, mask, sw):
    """Per-position weights (mask times sample weight), or None when all are 1."""
    w = None if mask is None else mask.astype(np.float64)
    if sw is not None:
        swr = sw.astype(np.float64).reshape((-1,) + (1,) * (len(shape) - 1))
        w = np.broadcast_to(swr, shape) if w is None else w * swr
    return w


class _Tally:
    """Running means of the loss and the metrics over batches, each batch weighted by its sequences (or,
    per step, its valid steps) times the sample weights: fit's batch and epoch logs, and evaluate."""

    def __init__(self, metrics):
        self.metrics = metrics
        for m in metrics.values():
            m.reset()
        self.loss_sum = self.loss_w = 0.0

    def add(self, value, out, target, mask, sw, shape):
        """One batch: its mean loss ``value``, outputs and targets; ``shape`` (B,) or per step (B, T), with
        ``mask`` (B, T) of the valid steps or None."""
        w = _weights(shape, mask if len(shape) == 2 else None, sw)
        w = float(w.sum()) if w is not None else float(np.prod(shape))
        self.loss_sum += value * w
        self.loss_w += w
        for m in self.metrics.values():
            m.update_masked(target, out, mask, sw)

    def means(self):
        res = {"loss": self.loss_sum / self.loss_w if self.loss_w else math.nan}
        for name, m in self.metrics.items():
            res[name] = m.result()
        return res


def _metric_fns(metrics):
    return resolve(metrics, from_logits=True)


# ---------------------------------------------------------------------------------------- history
class History:
    """What a fit produced.

    Attributes
    ----------
    history : dict of str to list of float
        Per completed epoch: ``loss``, the metrics, ``val_loss`` and ``val_<metric>`` when validating,
        ``lr``; as Keras's ``History.history``.
    epoch : list of int
        The completed epochs (from 0; they continue across resumed fits).
    stop_reason : str or None
        None when all epochs ran, else ``"callback"``, ``"time_limit"``, ``"nan"`` or ``"interrupted"``.
    stop_message : str or None
    optimizer_steps, sequences, time_steps : int
        Counted over all steps, including those of an unfinished epoch.
    train_time : float
        Seconds spent in the training loop (validation included).
    """

    def __init__(self, history=None):
        self.history = {} if history is None else history
        self.epoch = []
        self.stop_reason = None
        self.stop_message = None
        self.optimizer_steps = 0
        self.sequences = 0
        self.time_steps = 0
        self.train_time = 0.0

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)}, stop_reason={self.stop_reason!r})"


class Trainer:
    """What callbacks see of a running fit.

    Attributes
    ----------
    model, loss, optimizer : the objects being used
    estimator : the estimator fitting through this loop, or None
    history : History
    params : dict
        ``epochs``, ``initial_epoch``, ``last_epoch`` (the number of the last epoch, from 1),
        ``batch_size``, ``samples``, ``steps`` (optimizer steps in the current epoch), ``per_step``,
        ``tbptt``, ``validation`` (bool).
    stop_training : bool
        Set it (or call :meth:`stop`) to end training after the current step.
    """

    def __init__(self, model, loss, optimizer, estimator, history, params):
        self.model, self.loss, self.optimizer, self.estimator = model, loss, optimizer, estimator
        self.history = history
        self.params = params
        self.stop_training = False
        self.stop_reason = None
        self.stop_message = None

    def stop(self, message=None, reason="callback"):
        """Ask the loop to stop after the current step."""
        self.stop_training = True
        if self.stop_reason is None:
            self.stop_reason, self.stop_message = reason, message


class _SigintGuard:
    """While active (main thread, default handler only), Ctrl-C sets a flag the loop checks after each
    step, so an optimizer step is never cut in half; a second Ctrl-C raises at once."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
        return False


# ---------------------------------------------------------------------------------------- checks
def _check_pos_int(value, name, minimum=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_pos_float(value, name, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _as_dataset(data, per_step, what):
    if data is None or isinstance(data, SequenceDataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TypeError(f"{what} must be a SequenceDataset or a tuple (X, y) or (X, y, sample_weight)")
    sw = data[2] if len(data) == 3 else None
    return SequenceDataset(data[0], data[1], sample_weight=sw, per_step=per_step)


def _call_kw(model, lengths_needed):
    fkw = {"lengths": _accepts(model.forward, "lengths"), "n_threads": _accepts(model.forward, "n_threads")}
    if lengths_needed and not fkw["lengths"]:
        raise TypeError(f"the data has variable lengths but {type(model).__name__}.forward takes no lengths")
    return fkw, _accepts(model.backward, "n_threads")


def _forward(model, fkw, x, lengths, n_threads):
    kw = {}
    if fkw["lengths"] and lengths is not None:
        kw["lengths"] = lengths
    if fkw["n_threads"] and n_threads is not None:
        kw["n_threads"] = n_threads
    return model.forward(x, **kw)


# ---------------------------------------------------------------------------------------- fit
def fit(model, loss, optimizer, X, y=None, lengths=None, *, sample_weight=None, per_step=False, epochs=1,
        batch_size=32, shuffle=True, bucket=True, validation_data=None, validation_split=0.0, clip_norm=None,
        clip_value=None, schedule=None, metrics=None, callbacks=None, tbptt=None, stateful=False, seed=None,
        initial_epoch=0, history=None, n_threads=None, verbose=0, estimator=None):
    """Train ``model`` on sequences.

    Parameters
    ----------
    model : model object (see the module docstring), e.g. :class:`rnnfast.nn.Sequential`
    loss : callable ``loss(output, target, mask=, sample_weight=) -> (value, d_output)``
        E.g. :class:`rnnfast.train.CrossEntropy` or :class:`rnnfast.train.MSE`.
    optimizer : :class:`rnnfast.train.Optimizer` built on ``model``
    X : array (N, T, ...), list of (T_i, ...) sequences, or :class:`rnnfast.train.SequenceDataset`
        Inputs (float features, or integer ids for a model starting with an Embedding).
    y : array (N, ...) or, with ``per_step``, (N, T, ...) or a list of (T_i, ...) arrays
        Targets as ``loss`` takes them (integer class indices for CrossEntropy).
    lengths : array of int (N,), optional
        Valid steps of each row of a padded ``X``.
    sample_weight : array (N,), optional
        Weight of each sequence in the loss.
    per_step : bool, default False
        Targets per time step (the loss masks padded steps) rather than per sequence.
    epochs : int, default 1
        Epochs to run (from ``initial_epoch``).
    batch_size : int, default 32
    shuffle : bool, default True
    bucket : bool, default True
        Group sequences of similar length into batches (:func:`rnnfast.train.bucket_batches`).
    validation_data : tuple (X, y[, sample_weight]) or SequenceDataset, optional
    validation_split : float in [0, 1), default 0
        Validate on the last fraction of the sequences (taken before shuffling); ignored when
        ``validation_data`` is given.
    clip_norm, clip_value : float, optional
        Clip the gradients by global norm and/or by value before each step.
    schedule : schedule object, optional
        Stepped at the end of every epoch (a ``ReduceLROnPlateau`` with ``val_loss``, else ``loss``); see
        :class:`rnnfast.train.callbacks.LearningRateScheduler`.
    metrics : list of names or callables, or dict name -> callable, optional
        Names from :data:`METRICS` ("accuracy", "mae", "mse"); a callable is
        ``f(output, target, mask, sample_weight) -> (numerator, denominator)``.
    callbacks : list of :class:`rnnfast.train.callbacks.Callback`, optional
    tbptt : int, optional
        Truncated BPTT: chunks of this many steps, one optimizer step each, the state carried between
        chunks (detached). With per-sequence targets each sequence's loss is taken in the chunk where it
        ends; chunks where none ends run forward only (in inference mode), to advance the state.
    stateful : bool, default False
        Carry the state from batch to batch as well (reset at each epoch); needs ``shuffle=False`` and a
        number of sequences divisible by ``batch_size``.
    seed : int or numpy Generator, optional
        An int makes every epoch's randomness derive from ``(seed, epoch)`` (see the module docstring).
    initial_epoch : int, default 0
        Number of the first epoch (to resume).
    history : History or dict, optional
        Continue this history (a dict is appended to in place).
    n_threads : int, optional
        Threads of the kernels.
    verbose : {0, 1, 2}, default 0
        1: a progress bar per epoch; 2: one line per epoch.
    estimator : object, optional
        Given to the callbacks (``trainer.estimator``); :class:`ModelCheckpoint` saves it.

    Returns
    -------
    History

    Raises
    ------
    ValueError, TypeError
        Bad arguments or data (before any training).
    """
    epochs = _check_pos_int(epochs, "epochs", 0)
    batch_size = _check_pos_int(batch_size, "batch_size")
    initial_epoch = _check_pos_int(initial_epoch, "initial_epoch", 0)
    tbptt = _check_pos_int(tbptt, "tbptt", allow_none=True)
    clip_norm = _check_pos_float(clip_norm, "clip_norm")
    clip_value = _check_pos_float(clip_value, "clip_value")
    if verbose not in (0, 1, 2, False, True):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    per_step, shuffle, bucket, stateful = bool(per_step), bool(shuffle), bool(bucket), bool(stateful)

    if isinstance(X, SequenceDataset):
        if y is not None or lengths is not None or sample_weight is not None:
            raise ValueError("with a SequenceDataset, y, lengths and sample_weight come from it")
        data = X
        per_step = data.per_step
    else:
        data = SequenceDataset(X, y, lengths, sample_weight, per_step)
    if data.y is None:
        raise ValueError("fit needs targets y")
    val = _as_dataset(validation_data, per_step, "validation_data")
    if val is None and validation_split:
        data, val = data.split(validation_split)
    N = len(data)

    st_layers = [l for l in getattr(model, "layers", [model]) if isinstance(l, Stateful)]
    if (tbptt or stateful) and not st_layers:
        raise TypeError("tbptt and stateful need the model's recurrent layer wrapped in "
                        "rnnfast.train.Stateful (e.g. Sequential(Stateful(LSTM(...)), ...))")
    if stateful:
        if shuffle:
            raise ValueError("stateful=True carries the state from batch to batch: it needs shuffle=False")
        if N % batch_size:
            raise ValueError(f"stateful=True needs equal batches: {N} sequences is not a multiple of "
                             f"batch_size={batch_size}")
    fkw, bkw_threads = _call_kw(model, not data.full or (val is not None and not val.full))
    bkw = {"n_threads": n_threads} if (n_threads is not None and bkw_threads) else {}
    metric_fns = _metric_fns(metrics)
    grads = list(model.grads.values())  # live arrays, zeroed in place: fetch once
    if isinstance(seed, np.random.Generator):
        seed_int, seed_rng = None, seed
    elif seed is None:
        seed_int, seed_rng = None, np.random.default_rng()
    else:
        seed_int, seed_rng = _check_pos_int(seed, "seed", 0), None
    dropout_layers = [l for l in _layers(model) if hasattr(l, "_rng")]

    if isinstance(history, History):
        hist = history
    else:
        hist = History(history)
    last_epoch = initial_epoch + epochs
    params = {"epochs": epochs, "initial_epoch": initial_epoch, "last_epoch": last_epoch,
              "batch_size": batch_size, "samples": N, "steps": None, "per_step": per_step, "tbptt": tbptt,
              "validation": val is not None}
    trainer = Trainer(model, loss, optimizer, estimator, hist, params)
    cbs = []
    if schedule is not None:
        cbs.append(LearningRateScheduler(schedule))
    cbs.extend(callbacks or [])
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be rnnfast.train.callbacks.Callback objects, got {type(cb).__name__}")
    if verbose:
        cbs.append(ProgressBar(per_batch=verbose == 1))
    for cb in cbs:
        cb.set_trainer(trainer)

    def overriding(name):
        return [getattr(cb, name) for cb in cbs if getattr(type(cb), name) is not getattr(Callback, name)]

    on_batch_end = overriding("on_batch_end")
    on_epoch_begin = overriding("on_epoch_begin")
    on_epoch_end = overriding("on_epoch_end")

    def train_step(x, lc, yc, swc):
        """One forward/backward/update. Returns (loss value, output, mask); the step is not applied
        when the loss (or the gradient norm) is not finite."""
        model.zero_grad()
        out = _forward(model, fkw, x, lc, n_threads)
        mask = None
        if per_step and lc is not None:
            mask = np.arange(x.shape[1])[None, :] < lc[:, None]
        value, dout = loss(out, yc, mask=mask, sample_weight=swc)
        if not math.isfinite(value):
            return value, out, mask
        model.backward(dout, **bkw)
        if clip_value is not None:
            clip_grad_value(grads, clip_value)
        if clip_norm is not None:
            norm = clip_grad_norm(grads, clip_norm)
            if not math.isfinite(norm):
                return math.nan, out, mask
        optimizer.step()
        return value, out, mask

    def carried_reset():
        for l in st_layers:
            l.reset_state()

    logs = {}
    t_start = time.perf_counter()
    with _SigintGuard() as guard:
        try:
            for cb in cbs:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, last_epoch):
                if seed_int is not None:
                    rng = np.random.default_rng(np.random.SeedSequence(seed_int, spawn_key=(1, epoch)))
                    for i, layer in enumerate(dropout_layers):
                        # fresh dropout streams per epoch: resuming at this epoch repeats them exactly
                        layer._rng = np.random.default_rng(np.random.SeedSequence(seed_int, spawn_key=(2, epoch, i)))
                else:
                    rng = seed_rng
                if stateful:
                    batches = [np.arange(i, i + batch_size) for i in range(0, N, batch_size)]
                elif bucket and not data.full:
                    batches = bucket_batches(data.lengths, batch_size, rng, shuffle)
                else:
                    batches = batch_indices(N, batch_size, rng, shuffle)
                if tbptt:
                    Tb = [int(data.lengths[b].max()) for b in batches]
                    params["steps"] = sum(-(-t // tbptt) for t in Tb)
                else:
                    params["steps"] = len(batches)
                carried_reset()
                for f in on_epoch_begin:
                    f(epoch, {})
                model.train()
                tally = _Tally(metric_fns)
                step_i = 0
                states = [None] * len(st_layers)
                nan_stop = False
                for idx in batches:
                    x, l, yb, sw = data.batch(idx)
                    B, Tb = x.shape[0], x.shape[1]
                    k = tbptt if tbptt and Tb > tbptt else Tb
                    carry = stateful or k < Tb
                    if carry and not stateful:
                        states = [None] * len(st_layers)
                    for t0 in range(0, Tb, k):
                        t1 = min(t0 + k, Tb)
                        rows = None
                        if k == Tb:
                            xc, lc, yc, swc = x, l, yb, sw
                        else:
                            sl = slice(t0, t1)
                            if l is None:
                                lc = None
                            else:
                                act = l > t0
                                if not act.all():
                                    rows = np.flatnonzero(act)
                                lr = l if rows is None else l[rows]
                                lc = np.minimum(lr - t0, t1 - t0)
                                if lc.min() == t1 - t0:
                                    lc = None
                            if rows is None:
                                xc = x[:, sl]
                                yc = yb[:, sl] if per_step else yb
                                swc = sw
                            else:
                                xc = x[rows, sl]
                                yc = yb[rows, sl] if per_step else yb[rows]
                                swc = None if sw is None else sw[rows]
                        if carry:
                            for layer, s in zip(st_layers, states):
                                layer.hx = _state_take(s, rows)
                        learn = True
                        if not per_step and t1 < Tb:
                            # per-sequence targets: only sequences ending in this chunk have a loss here
                            if l is None:
                                learn = False
                            else:
                                fin = (l if rows is None else l[rows]) <= t1
                                if not fin.any():
                                    learn = False
                                else:
                                    swc = fin.astype(np.float64) if swc is None else swc * fin
                        if learn:
                            value, out, mask = train_step(xc, lc, yc, swc)
                        else:
                            model.eval()
                            _forward(model, fkw, xc, lc, n_threads)
                            model.train()
                        if carry:
                            states = [_state_put(s, rows, layer.last_state, B) for layer, s in zip(st_layers, states)]
                        nb = xc.shape[0]
                        n_steps = int(lc.sum()) if lc is not None else nb * xc.shape[1]
                        step_i += 1
                        if learn and not math.isfinite(value):
                            nan_stop = True
                            trainer.stop(f"the loss became {value} at epoch {epoch + 1}, step {step_i}; "
                                         "that step was not applied", reason="nan")
                            blogs = {"loss": value, "size": 0, "steps": 0}
                            for f in on_batch_end:
                                f(step_i - 1, blogs)
                            break
                        hist.optimizer_steps += learn
                        hist.time_steps += n_steps
                        done = t1 == Tb
                        if done:
                            hist.sequences += B
                        if learn:
                            tally.add(value, out, yc, mask, swc, (nb, xc.shape[1]) if per_step else (nb,))
                        if on_batch_end:
                            blogs = tally.means()
                            blogs["size"] = B if done else 0
                            blogs["steps"] = n_steps
                            for f in on_batch_end:
                                f(step_i - 1, blogs)
                        if guard.flag:
                            raise KeyboardInterrupt
                        if trainer.stop_training:
                            break
                    if not stateful:
                        for layer in st_layers:
                            layer.hx = None
                    if trainer.stop_training:
                        break
                if nan_stop:
                    break  # an epoch that ended in a non-finite loss is not recorded
                logs = tally.means()
                if val is not None:
                    carried_reset()
                    logs.update({f"val_{k}": v for k, v in evaluate(
                        model, loss, val, batch_size=max(batch_size, 256), metrics=metric_fns,
                        n_threads=n_threads, _fkw=fkw).items()})
                    model.train()
                logs["lr"] = float(optimizer.lr)
                hist._append(epoch, logs)
                for f in on_epoch_end:
                    f(epoch, logs)
                if guard.flag:
                    raise KeyboardInterrupt
                if trainer.stop_training:
                    break
        except KeyboardInterrupt:
            trainer.stop("interrupted (Ctrl-C)", reason="interrupted")
        finally:
            for layer in st_layers:
                layer.hx = None
    # after an interruption the gradients may be partial: leave none behind
    model.zero_grad()
    hist.train_time += time.perf_counter() - t_start
    hist.stop_reason, hist.stop_message = trainer.stop_reason, trainer.stop_message
    for cb in cbs:
        cb.on_train_end(dict(logs))
    if trainer.stop_reason in ("nan", "interrupted"):
        warnings.warn(f"training stopped: {trainer.stop_message}; the model keeps the weights of the last "
                      f"completed step and the history of {len(hist.epoch)} completed epoch(s)",
                      RuntimeWarning, stacklevel=2)
    return hist


# ---------------------------------------------------------------------------------------- inference
def _inference_batches(data, batch_size):
    # longest first, so every batch pads to similar lengths
    order = np.arange(len(data)) if data.full else np.argsort(-data.lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(data), batch_size)]


def predict(model, X, lengths=None, *, per_step=False, batch_size=256, n_threads=None):
    """Model outputs for every sequence, in inference mode, in batches of similar length.

    Parameters
    ----------
    model : model object
    X : array (N, T, ...), list of sequences, or SequenceDataset
    lengths : array of int (N,), optional
    per_step : bool, default False
        The model returns one output per step: outputs are assembled as (N, T, ...), zero past each
        sequence's length.
    batch_size : int, default 256
    n_threads : int, optional

    Returns
    -------
    numpy.ndarray, (N, ...) or (N, T, ...)
    """
    data = X if isinstance(X, SequenceDataset) else SequenceDataset(X, lengths=lengths)
    batch_size = _check_pos_int(batch_size, "batch_size")
    fkw, _ = _call_kw(model, not data.full)
    model.eval()
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Stateful):
            layer.reset_state()
    result = None
    for idx in _inference_batches(data, batch_size):
        x, l, _, _ = data.batch(idx)
        out = np.asarray(_forward(model, fkw, x, l, n_threads))
        if result is None:
            shape = (len(data), data.T) + out.shape[2:] if per_step else (len(data),) + out.shape[1:]
            result = np.zeros(shape, out.dtype)
        if per_step:
            result[idx, :out.shape[1]] = out
        else:
            result[idx] = out
    return result


def evaluate(model, loss, X, y=None, lengths=None, *, sample_weight=None, per_step=False, batch_size=256,
             metrics=None, n_threads=None, _fkw=None):
    """Loss and metrics of ``model`` on data, in inference mode.

    Parameters
    ----------
    model, loss : as :func:`fit`
    X, y, lengths, sample_weight, per_step : as :func:`fit` (or a SequenceDataset as ``X``)
    batch_size : int, default 256
    metrics : as :func:`fit`
    n_threads : int, optional

    Returns
    -------
    dict
        ``{"loss": float, <metric>: float}``; the loss is the mean of the batch losses weighted by their
        number of sequences (or valid steps), times the sample weights.
    """
    data = X if isinstance(X, SequenceDataset) else SequenceDataset(X, y, lengths, sample_weight, per_step)
    per_step = data.per_step
    fkw = _fkw if _fkw is not None else _call_kw(model, not data.full)[0]
    metric_fns = _metric_fns(metrics)
    model.eval()
    tally = _Tally(metric_fns)
    for idx in _inference_batches(data, batch_size):
        x, l, yb, sw = data.batch(idx)
        out = _forward(model, fkw, x, l, n_threads)
        mask = None
        if per_step and l is not None:
            mask = np.arange(x.shape[1])[None, :] < l[:, None]
        value, _ = loss(out, yb, mask=mask, sample_weight=sw)
        tally.add(value, out, yb, mask, sw, (x.shape[0], x.shape[1]) if per_step else (x.shape[0],))
    return tally.means()
