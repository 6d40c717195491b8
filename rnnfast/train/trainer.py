"""The Trainer: one training loop for every model, with evaluation and prediction beside it (Keras's design).

A model follows the layer protocol (see :mod:`rnnfast.nn.module`): ``forward(x, *, lengths=None,
n_threads=None)``, ``backward(dout, *, n_threads=None)``, ``named_parameters()``, ``grads``, ``zero_grad()``,
``train()``/``eval()``, ``state_dict()`` (e.g. an :class:`rnnfast.nn.Sequential`).

:meth:`Trainer.fit` runs epochs over an iterator of batches; every batch goes through :meth:`Trainer.train_step`
(forward, the loss with padded steps masked, backward, gradient clipping, the optimizer step, the running
metrics), which a subclass may override, as :meth:`Trainer.test_step` for evaluation. Callbacks are called
through a :class:`rnnfast.train.callbacks.CallbackList` built once per fit; they see the trainer itself
(``callback.trainer``: model, optimizer, history, params, ``stop()``). Truncated BPTT and stateful training are
the subclass :class:`rnnfast.train.tbptt.TruncatedBPTTTrainer`.

Stopping: callbacks (``trainer.stop()``), a non-finite loss (the step is not applied), and Ctrl-C. While
:meth:`Trainer.fit` runs in the main thread a first Ctrl-C only asks the loop to stop after the current step
(a second one interrupts at once); a ``KeyboardInterrupt`` raised anywhere in the loop (e.g. by a callback)
stops it too. In every case fit returns normally with the history of the completed epochs and the weights of
the last completed optimizer step, and warns.

Reproducibility: with an integer ``seed`` every random choice of epoch ``e`` (shuffling, bucketing, dropout
masks) derives from ``(seed, e)`` alone, so training resumed at epoch ``e`` (``initial_epoch``) from saved
weights and optimizer state repeats an uninterrupted run step for step.
"""
import copy
import functools
import inspect
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from rnnfast._fpu import flush_denormals
from rnnfast._logging import console
from rnnfast._validation import THREADS, AnyOf, Boolean, Integer, Real, check_seed, validate_params
from rnnfast.nn.module import call_backward, call_forward
from rnnfast.nn.stateful import StateCarry, Stateful, _layers_of
from rnnfast.train.callbacks import Callback, CallbackList, LearningRateScheduler, ProgressBar
from rnnfast.train.clip import clip_grad_norm, clip_grad_value
from rnnfast.train.data import SequenceDataset, batch_indices, bucket_batches
from rnnfast.train.metrics import Metric, broadcast_weights, position_weights, resolve

__all__ = ["Trainer", "Batch", "History"]


# ---------------------------------------------------------------------------------------- records
@dataclass
class Batch:
    """One step's data: a batch of sequences, or (truncated BPTT) a chunk of one.

    Attributes
    ----------
    x : array (B, T, ...)
    lengths : int array (B,) or None (every row runs all T steps)
    y : targets, (B, ...) or per step (B, T, ...)
    sample_weight : float array (B,) or None
    per_step : bool
        One target per time step.
    n_rows : int
        Sequences in the whole batch (a chunk may hold fewer: ``rows``).
    rows : int array or None
        The rows of the whole batch this chunk holds (None: all).
    done : bool
        The batch's sequences end in this step (its last chunk).
    learn : bool
        The step has a loss (a chunk in which no per-sequence target ends only advances the state).
    """

    x: np.ndarray
    lengths: Optional[np.ndarray]
    y: Any
    sample_weight: Optional[np.ndarray]
    per_step: bool = False
    n_rows: int = 0
    rows: Optional[np.ndarray] = None
    done: bool = True
    learn: bool = True

    def mask(self) -> Optional[np.ndarray]:
        """(B, T) bool, True at valid steps, for per-step targets of unequal lengths; else None."""
        if self.per_step and self.lengths is not None:
            return np.arange(self.x.shape[1])[None, :] < self.lengths[:, None]
        return None

    def time_steps(self) -> int:
        """Valid time steps in the batch."""
        if self.lengths is not None:
            return int(self.lengths.sum())
        return self.x.shape[0] * self.x.shape[1]

    def target_shape(self) -> tuple:
        """``(B, T)`` for per-step targets, else ``(B,)``: what the loss averages over."""
        return (self.x.shape[0], self.x.shape[1]) if self.per_step else (self.x.shape[0],)


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

    def __init__(self, history: Optional[Dict[str, List[float]]] = None) -> None:
        self.history = {} if history is None else history
        self.epoch: List[int] = []
        self.stop_reason: Optional[str] = None
        self.stop_message: Optional[str] = None
        self.optimizer_steps = 0
        self.sequences = 0
        self.time_steps = 0
        self.train_time = 0.0

    def _append(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)}, stop_reason={self.stop_reason!r})"


class _Tally:
    """Running means of the loss and the metrics over batches, each batch weighted by its sequences (or,
    per step, its valid steps) times the sample weights: fit's batch and epoch logs, and evaluate."""

    def __init__(self, metrics: Dict[str, Metric]) -> None:
        self.metrics = {name: copy.deepcopy(m) for name, m in metrics.items()}  # each tally its own state
        for m in self.metrics.values():
            m.reset()
        self.loss_sum = self.loss_w = 0.0

    def add(self, value: float, out, batch: Batch, mask: Optional[np.ndarray]) -> None:
        """One batch: its mean loss ``value``, its outputs, and the mask of its valid steps (or None)."""
        shape = batch.target_shape()
        pw = broadcast_weights(position_weights(mask, batch.sample_weight), shape)
        w = float(pw.sum()) if pw is not None else float(np.prod(shape))
        self.loss_sum += value * w
        self.loss_w += w
        for m in self.metrics.values():
            m.update_masked(batch.y, out, mask, batch.sample_weight)

    def means(self) -> Dict[str, float]:
        res = {"loss": self.loss_sum / self.loss_w if self.loss_w else math.nan}
        for name, m in self.metrics.items():
            res[name] = m.result()
        return res


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


# ---------------------------------------------------------------------------------------- helpers
#: fit's and the constructor's parameters (see rnnfast._validation: TypeError for a wrong type, ValueError for a bad
#: value); ``clip_*`` are finite and positive.
_PARAMS = {
    "epochs": Integer(0), "batch_size": Integer(1), "initial_epoch": Integer(0),
    "per_step": Boolean(), "shuffle": Boolean(), "bucket": Boolean(),
    "clip_norm": Real(0.0, math.inf, closed="neither", allow_none=True),
    "clip_value": Real(0.0, math.inf, closed="neither", allow_none=True),
    "verbose": AnyOf(Boolean(), Integer(0, 2)),
    "n_threads": THREADS,
}


def _as_dataset(data, per_step: bool, what: str) -> Optional[SequenceDataset]:
    if data is None or isinstance(data, SequenceDataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TypeError(f"{what} must be a SequenceDataset or a tuple (X, y) or (X, y, sample_weight)")
    sw = data[2] if len(data) == 3 else None
    return SequenceDataset(data[0], data[1], sample_weight=sw, per_step=per_step)


def _inference_batches(data: SequenceDataset, batch_size: int) -> List[np.ndarray]:
    # longest first, so every batch pads to similar lengths
    order = np.arange(len(data)) if data.full else np.argsort(-data.lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(data), batch_size)]


def _seeded_layers(model) -> list:
    """``(i, layer)`` for the layers drawing random numbers, numbered as fit always has (a Sequential's
    layers, then those inside :class:`Stateful` wrappers, a wrapper counting too), so that the dropout
    streams of seeded runs stay what they were."""
    layers = _layers_of(model)
    layers += [layer.layer for layer in layers if isinstance(layer, Stateful)]
    numbered = enumerate(layer for layer in layers if getattr(layer, "uses_rng", False))
    return [(i, layer) for i, layer in numbered if not isinstance(layer, Stateful)]


def _takes_input_lengths(loss) -> bool:
    """Whether ``loss`` has an ``input_lengths`` parameter (looked up once per loss class)."""
    fn = loss if inspect.isroutine(loss) else getattr(type(loss), "__call__", None)
    return fn is not None and _has_input_lengths(fn)


@functools.lru_cache(maxsize=256)
def _has_input_lengths(fn) -> bool:
    try:
        return "input_lengths" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _seed_parts(seed):
    """``(int seed or None, shared Generator or None)`` from fit's ``seed``."""
    seed = check_seed(seed)
    if isinstance(seed, np.random.Generator):
        return None, seed
    if seed is None:
        return None, np.random.default_rng()
    return seed, None


# ---------------------------------------------------------------------------------------- Trainer
class Trainer:
    """Trains a model: :meth:`fit`, :meth:`evaluate`, :meth:`predict`; override :meth:`train_step` and
    :meth:`test_step` to change what one step does.

    Parameters
    ----------
    model : model object (see the module docstring), e.g. :class:`rnnfast.nn.Sequential`
    loss : callable ``loss(output, target, mask=, sample_weight=) -> (value, d_output)``
        E.g. :class:`rnnfast.train.CrossEntropy` or :class:`rnnfast.train.MSE`. A loss with an
        ``input_lengths`` parameter (:class:`rnnfast.train.CTCLoss`) also gets each batch's sequence lengths
        (None when all run the batch's T steps).
    optimizer : :class:`rnnfast.train.Optimizer` built on ``model``, or None (evaluate and predict only)
    metrics : names, Metric objects or callables, or dict name -> one of them, optional
        See :func:`rnnfast.train.metrics.resolve`; the names are the history's keys. The model's outputs
        are scores: ``"accuracy"`` takes their argmax.
    callbacks : list of :class:`rnnfast.train.callbacks.Callback`, optional
    clip_norm, clip_value : float, optional
        Clip the gradients by global norm and/or by value before each step.
    schedule : schedule object, optional
        Stepped at the end of every epoch (see :class:`rnnfast.train.callbacks.LearningRateScheduler`).
    n_threads : int, optional
        Threads of the kernels.
    verbose : {0, 1, 2}, default 0
        1: a progress bar per epoch; 2: one line per epoch.
        The epoch lines and status messages are records of the ``rnnfast.train`` logger, shown on stderr
        while no logging is configured (see :mod:`rnnfast._logging`).
    estimator : object, optional
        Given to the callbacks (``trainer.estimator``); :class:`ModelCheckpoint` saves it.
    distributed : None, "auto", "mpi" or rnnfast.distributed.DataParallel, optional
        Data-parallel training over MPI ranks (see :mod:`rnnfast.distributed.mpi`): each rank trains on its
        share of every global batch and the gradients are summed. ``"auto"``: when the process was started by
        an MPI launcher with more than one rank (``mpiexec -n N``).

    Attributes
    ----------
    history : History
        Of the current (or last) fit.
    params : dict
        ``epochs``, ``initial_epoch``, ``last_epoch`` (the number of the last epoch, from 1),
        ``batch_size``, ``samples``, ``steps`` (optimizer steps in the current epoch), ``per_step``,
        ``tbptt``, ``validation`` (bool).
    stop_training : bool
        Set it (or call :meth:`stop`) to end training after the current step.
    """

    tbptt: Optional[int] = None

    def __init__(self, model, loss, optimizer=None, metrics=None, callbacks=None, clip_norm: Optional[float] = None,
                 clip_value: Optional[float] = None, schedule=None, n_threads: Optional[int] = None,
                 verbose: int = 0, estimator=None, distributed=None) -> None:
        checked = validate_params({"clip_norm": clip_norm, "clip_value": clip_value, "verbose": verbose,
                                   "n_threads": n_threads}, _PARAMS)
        self.model, self.loss, self.optimizer, self.estimator = model, loss, optimizer, estimator
        self.clip_norm, self.clip_value, verbose = checked["clip_norm"], checked["clip_value"], checked["verbose"]
        self.metrics = resolve(metrics, from_logits=True)
        self.callbacks = ([LearningRateScheduler(schedule)] if schedule is not None else []) + list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be rnnfast.train.callbacks.Callback objects, got {type(cb).__name__}")
        self.n_threads, self.verbose = checked["n_threads"], verbose
        self.carry = StateCarry(model)
        self.history = History()
        self.params: Dict[str, Any] = {}
        self.stop_training = False
        self.stop_reason: Optional[str] = None
        self.stop_message: Optional[str] = None
        self._tally = _Tally(self.metrics)
        self.distributed = None
        if distributed is not None:
            from rnnfast.distributed import mpi
            self.distributed = mpi.resolve(distributed)

    def stop(self, message: Optional[str] = None, reason: str = "callback") -> None:
        """Ask the loop to stop after the current step (the first reason given is kept)."""
        self.stop_training = True
        if self.stop_reason is None:
            self.stop_reason, self.stop_message = reason, message

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, lengths=None, *, sample_weight=None, per_step: bool = False, epochs: int = 1,
            batch_size: int = 32, shuffle: bool = True, bucket: bool = True, validation_data=None,
            validation_split: float = 0.0, seed=None, initial_epoch: int = 0, history=None) -> History:
        """Train on sequences; arguments as :func:`rnnfast.train.fit` (which builds a Trainer and calls this).

        Returns
        -------
        History
        """
        if self.optimizer is None:
            raise TypeError("fit needs an optimizer (Trainer(model, loss, optimizer, ...))")
        per_step, epochs, batch_size, shuffle, bucket, initial_epoch = validate_params(
            dict(per_step=per_step, epochs=epochs, batch_size=batch_size, shuffle=shuffle, bucket=bucket,
                 initial_epoch=initial_epoch), _PARAMS).values()
        data, val = self._fit_data(X, y, lengths, sample_weight, per_step, validation_data, validation_split)
        self._check_fit(data, shuffle, batch_size)
        dist = self.distributed
        seed_int, seed_rng = _seed_parts(seed if dist is None else dist.common_seed(seed))
        self._begin_fit(data, val, epochs, initial_epoch, batch_size, history)
        cbs = self.callbacks + ([ProgressBar(per_batch=self.verbose == 1)] if self.verbose else [])
        callbacks = CallbackList(cbs if dist is None else dist.callbacks(cbs), self)
        logs: Dict[str, float] = {}
        t_start = time.perf_counter()
        with _SigintGuard() as guard, console(self.verbose or any(getattr(c, "verbose", 0) for c in self.callbacks)), \
                flush_denormals():
            try:
                callbacks.on_train_begin({})
                for epoch in range(initial_epoch, initial_epoch + epochs):
                    rng = self._epoch_rng(seed_int, seed_rng, epoch)
                    batches = self.epoch_batches(data, rng, batch_size, shuffle, bucket)
                    self.params["steps"] = self.count_steps(data, batches)
                    self.carry.reset()
                    callbacks.on_epoch_begin(epoch, {})
                    self.model.train()
                    self._tally = _Tally(self.metrics)
                    finite = True
                    steps = self.iter_steps(data, batches) if dist is None else dist.iter_steps(self, data, batches)
                    for step, batch in enumerate(steps):
                        callbacks.on_batch_begin(step, {})
                        blogs, finite = self._run_step(batch, epoch, step)
                        callbacks.on_batch_end(step, blogs)
                        if not finite:
                            break
                        if dist is not None and dist.agree(self.stop_training or guard.flag):
                            self.stop("another rank stopped training")
                        if guard.flag:
                            raise KeyboardInterrupt
                        if self.stop_training:
                            break
                    if not finite:
                        break  # an epoch that ended in a non-finite loss is not recorded
                    if val is not None:
                        callbacks.on_test_begin({})
                    logs = self._epoch_logs(val, batch_size) if dist is None else dist.epoch_logs(self, val, batch_size)
                    if val is not None:
                        callbacks.on_test_end(dict(logs))
                    self.history._append(epoch, logs)
                    callbacks.on_epoch_end(epoch, logs)
                    if guard.flag:
                        raise KeyboardInterrupt
                    if self.stop_training:
                        break
            except KeyboardInterrupt:
                self.stop("interrupted (Ctrl-C)", reason="interrupted")
            except Exception as e:
                if dist is not None:
                    dist.fail(e)  # ends every rank of the job (a job of one rank: raises)
                raise
            finally:
                self.carry.detach()
        return self._end_fit(callbacks, logs, t_start)

    def _fit_data(self, X, y, lengths, sample_weight, per_step, validation_data, validation_split):
        """The training set and the validation set (None) of a fit; ``validation_split`` takes the LAST
        fraction of the sequences, before any shuffling."""
        if isinstance(X, SequenceDataset):
            if y is not None or lengths is not None or sample_weight is not None:
                raise ValueError("with a SequenceDataset, y, lengths and sample_weight come from it")
            data = X
        else:
            data = SequenceDataset(X, y, lengths, sample_weight, per_step)
        if data.y is None:
            raise ValueError("fit needs targets y")
        val = _as_dataset(validation_data, data.per_step, "validation_data")
        if val is None and validation_split:
            data, val = data.split(validation_split)
        needs_lengths = not data.full or (val is not None and not val.full)
        if needs_lengths and not getattr(self.model, "keyword_protocol", False):
            raise TypeError(f"the data has variable lengths but {type(self.model).__name__}.forward takes no "
                            "lengths (the layer protocol: forward(x, *, lengths=None, n_threads=None))")
        return data, val

    def _check_fit(self, data: SequenceDataset, shuffle: bool, batch_size: int) -> None:
        """Checks of the data against the trainer's options, before any training (subclasses add theirs)."""

    def _begin_fit(self, data, val, epochs, initial_epoch, batch_size, history) -> None:
        self.history = history if isinstance(history, History) else History(history)
        self.params = {"epochs": epochs, "initial_epoch": initial_epoch, "last_epoch": initial_epoch + epochs,
                       "batch_size": batch_size, "samples": len(data), "steps": None, "per_step": data.per_step,
                       "tbptt": self.tbptt, "validation": val is not None}
        self.stop_training, self.stop_reason, self.stop_message = False, None, None
        self._grads = list(self.model.grads.values())  # live arrays, zeroed in place: fetch once
        if self.distributed is not None:
            self.distributed.begin(self)  # every rank starts from rank 0's weights and optimizer state

    def _end_fit(self, callbacks: CallbackList, logs: Dict[str, float], t_start: float) -> History:
        # after an interruption the gradients may be partial: leave none behind
        self.model.zero_grad()
        hist = self.history
        hist.train_time += time.perf_counter() - t_start
        hist.stop_reason, hist.stop_message = self.stop_reason, self.stop_message
        callbacks.on_train_end(dict(logs))
        if self.stop_reason in ("nan", "interrupted"):
            warnings.warn(f"training stopped: {self.stop_message}; the model keeps the weights of the last "
                          f"completed step and the history of {len(hist.epoch)} completed epoch(s)",
                          RuntimeWarning, stacklevel=3)
        return hist

    def _epoch_rng(self, seed_int: Optional[int], seed_rng, epoch: int) -> np.random.Generator:
        """The epoch's Generator; with an int seed, the dropout streams of the model restart too."""
        if seed_int is None:
            return seed_rng
        for i, layer in _seeded_layers(self.model):
            # fresh dropout streams per epoch: resuming at this epoch repeats them exactly
            layer.reseed(np.random.SeedSequence(seed_int, spawn_key=(2, epoch, i)))
        return np.random.default_rng(np.random.SeedSequence(seed_int, spawn_key=(1, epoch)))

    def epoch_batches(self, data: SequenceDataset, rng: np.random.Generator, batch_size: int, shuffle: bool,
                      bucket: bool) -> List[np.ndarray]:
        """The epoch's batches as arrays of sequence indices (bucketed by length unless ``bucket`` is off
        or every sequence is full length)."""
        if bucket and not data.full:
            return bucket_batches(data.lengths, batch_size, rng, shuffle)
        return batch_indices(len(data), batch_size, rng, shuffle)

    def count_steps(self, data: SequenceDataset, batches: Sequence[np.ndarray]) -> int:
        """Optimizer steps the epoch will take (``params["steps"]``)."""
        return len(batches)

    def iter_steps(self, data: SequenceDataset, batches: Sequence[np.ndarray]) -> Iterator[Batch]:
        """The epoch's steps: one :class:`Batch` per batch of indices."""
        for idx in batches:
            x, lengths, y, sw = data.batch(idx)
            yield Batch(x, lengths, y, sw, data.per_step, n_rows=x.shape[0])

    def _run_step(self, batch: Batch, epoch: int, step: int):
        """One step and its bookkeeping: ``(batch logs, whether the loss was finite)``."""
        value = self.train_step(batch)
        learned = value is not None
        if value is not None and not math.isfinite(value):
            self.stop(f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; that step was not applied",
                      reason="nan")
            return {"loss": value, "size": 0, "steps": 0}, False
        n_steps = batch.time_steps()
        hist = self.history
        hist.optimizer_steps += learned
        hist.time_steps += n_steps
        if batch.done:
            hist.sequences += batch.n_rows
        logs = self._tally.means()
        logs["size"] = batch.n_rows if batch.done else 0
        logs["steps"] = n_steps
        return logs, True

    def _epoch_logs(self, val: Optional[SequenceDataset], batch_size: int) -> Dict[str, float]:
        logs = self._tally.means()
        if val is not None:
            self.carry.reset()
            logs.update({f"val_{k}": v for k, v in self.evaluate(val, batch_size=max(batch_size, 256)).items()})
            self.model.train()
        logs["lr"] = float(self.optimizer.lr)
        return logs

    # ------------------------------------------------------------------ steps
    def forward(self, batch: Batch):
        """The model's output for a batch (the layer protocol's call)."""
        return call_forward(self.model, batch.x, batch.lengths, self.n_threads)

    def train_step(self, batch: Batch) -> Optional[float]:
        """One optimizer step on ``batch``: forward, loss (padded steps masked), backward, clipping, the
        optimizer's step, the running loss and metrics (:meth:`update_metrics`).

        Returns
        -------
        float or None
            The batch's loss; a non-finite value means the step was not applied and training stops. None
            means the batch had no loss and no step was taken (it still counts its time steps).
        """
        self.model.zero_grad()
        out = self.forward(batch)
        mask = batch.mask()
        value, dout = self.compute_loss(out, batch, mask)
        if self.distributed is not None:  # backward, the gradients summed over the ranks, the step
            return self.distributed.step(self, value, dout, out, batch, mask)
        if not math.isfinite(value):
            return value
        call_backward(self.model, dout, self.n_threads)
        if not self.apply_gradients():
            return math.nan
        self.update_metrics(value, out, batch, mask)
        return value

    def compute_loss(self, out, batch: Batch, mask: Optional[np.ndarray]):
        """``(value, d_output)`` of the loss on a batch's outputs: ``loss(out, y, mask=, sample_weight=)``,
        and ``input_lengths=batch.lengths`` for a loss that takes them (:class:`rnnfast.train.CTCLoss`:
        its targets are not per step, so the mask cannot tell it where each sequence ends)."""
        kw = {"input_lengths": batch.lengths} if _takes_input_lengths(self.loss) else {}
        return self.loss(out, batch.y, mask=mask, sample_weight=batch.sample_weight, **kw)

    def apply_gradients(self) -> bool:
        """Clip the accumulated gradients and take the optimizer's step; False (no step) when their norm
        is not finite."""
        if self.clip_value is not None:
            clip_grad_value(self._grads, self.clip_value)
        if self.clip_norm is not None:
            norm = clip_grad_norm(self._grads, self.clip_norm)
            if not math.isfinite(norm):
                return False
        self.optimizer.step()
        return True

    def update_metrics(self, value: float, out, batch: Batch, mask: Optional[np.ndarray] = None) -> None:
        """Add a batch's loss ``value`` and outputs to the running loss and metrics of the epoch."""
        self._tally.add(value, out, batch, mask)

    def test_step(self, batch: Batch) -> float:
        """Loss and metrics of one batch in inference mode (added to the running tally). Returns the loss."""
        out = self.forward(batch)
        mask = batch.mask()
        value, _ = self.compute_loss(out, batch, mask)
        self.update_metrics(value, out, batch, mask)
        return value

    # ------------------------------------------------------------------ inference
    def _inference_data(self, data: SequenceDataset, batch_size: int):
        batch_size = _PARAMS["batch_size"].check(batch_size, "batch_size")
        if not data.full and not getattr(self.model, "keyword_protocol", False):
            raise TypeError(f"the data has variable lengths but {type(self.model).__name__}.forward takes no lengths")
        self.model.eval()
        self.carry.reset()
        for idx in _inference_batches(data, batch_size):
            x, lengths, y, sw = data.batch(idx)
            yield idx, Batch(x, lengths, y, sw, data.per_step, n_rows=x.shape[0])

    def evaluate(self, X, y=None, lengths=None, *, sample_weight=None, per_step: bool = False,
                 batch_size: int = 256) -> Dict[str, float]:
        """Loss and metrics of the model on data, in inference mode.

        Parameters
        ----------
        X, y, lengths, sample_weight, per_step : as :meth:`fit` (or a SequenceDataset as ``X``)
        batch_size : int, default 256

        Returns
        -------
        dict
            ``{"loss": float, <metric>: float}``; the loss is the mean of the batch losses weighted by
            their number of sequences (or valid steps), times the sample weights.
        """
        data = X if isinstance(X, SequenceDataset) else SequenceDataset(X, y, lengths, sample_weight, per_step)
        running, self._tally = self._tally, _Tally(self.metrics)  # a fit's running figures stay as they are
        try:
            for _, batch in self._inference_data(data, batch_size):
                self.test_step(batch)
            return self._tally.means()
        finally:
            self._tally = running

    def predict(self, X, lengths=None, *, per_step: bool = False, batch_size: int = 256) -> Optional[np.ndarray]:
        """Model outputs for every sequence, in inference mode, in batches of similar length.

        Parameters
        ----------
        X : array (N, T, ...), list of sequences, or SequenceDataset
        lengths : array of int (N,), optional
        per_step : bool, default False
            The model returns one output per step: outputs are assembled as (N, T, ...), zero past each
            sequence's length.
        batch_size : int, default 256

        Returns
        -------
        numpy.ndarray, (N, ...) or (N, T, ...)
            (None for no sequences.)
        """
        data = X if isinstance(X, SequenceDataset) else SequenceDataset(X, lengths=lengths)
        result = None
        for idx, batch in self._inference_data(data, batch_size):
            out = np.asarray(self.forward(batch))
            if result is None:
                n_seq = len(data)
                shape = (n_seq, data.T) + out.shape[2:] if per_step else (n_seq,) + out.shape[1:]
                result = np.zeros(shape, out.dtype)
            if per_step:
                result[idx, :out.shape[1]] = out
            else:
                result[idx] = out
        return result
