"""Truncated backpropagation through time: the chunking of a batch (:func:`iter_chunks`, pure) and the trainer
that steps once per chunk, carrying the recurrent state from chunk to chunk (:class:`TruncatedBPTTTrainer`).

``tbptt=k`` cuts every batch into chunks of ``k`` steps, one optimizer step per chunk, carrying the state of
the model's :class:`rnnfast.nn.Stateful` layers from chunk to chunk without gradient; ``stateful=True`` also
carries it from batch to batch (row i of a batch continues row i of the previous one).
"""
from typing import Iterator, List, Optional, Sequence

import numpy as np

from rnnfast._validation import check_bool, check_int
from rnnfast.train.data import SequenceDataset
from rnnfast.train.trainer import Batch, Trainer

__all__ = ["iter_chunks", "TruncatedBPTTTrainer"]


def iter_chunks(batch: Batch, k: Optional[int]) -> Iterator[Batch]:
    """Cut a batch into chunks of ``k`` time steps (the last one shorter), for truncated BPTT.

    A pure generator: it reads ``batch`` and yields views and small arrays, nothing else.

    - Rows whose sequence ended before a chunk leave it (``rows`` lists the rows kept, None: all);
      a chunk's ``lengths`` are the rows' valid steps in it (None when all run the whole chunk).
    - Per-step targets are sliced with the inputs. Per-sequence targets get their loss in the chunk where
      the sequence ends: the other rows of a chunk get sample weight 0, and a chunk where no sequence ends
      has ``learn=False`` (it only advances the state).
    - The last chunk has ``done=True``; every chunk keeps ``n_rows``, the batch's number of sequences.

    Parameters
    ----------
    batch : Batch
        A whole batch (``rows`` None).
    k : int or None
        Chunk length; None, or ``k`` at least the batch's length, gives the batch as one chunk.

    Yields
    ------
    Batch
    """
    x, lengths, y, sw, per_step = batch.x, batch.lengths, batch.y, batch.sample_weight, batch.per_step
    n_rows, T = x.shape[0], x.shape[1]
    k = k if k and T > k else T
    for t0 in range(0, T, k):
        t1 = min(t0 + k, T)
        rows = None
        if k == T:
            xc, lc, yc, swc = x, lengths, y, sw
        else:
            sl = slice(t0, t1)
            lc = None
            if lengths is not None:
                act = lengths > t0
                if not act.all():
                    rows = np.flatnonzero(act)
                lr = lengths if rows is None else lengths[rows]
                lc = np.minimum(lr - t0, t1 - t0)
                if lc.min() == t1 - t0:
                    lc = None
            if rows is None:
                xc, yc, swc = x[:, sl], (y[:, sl] if per_step else y), sw
            else:
                xc, yc = x[rows, sl], (y[rows, sl] if per_step else y[rows])
                swc = None if sw is None else sw[rows]
        learn = True
        if not per_step and t1 < T:
            # per-sequence targets: only sequences ending in this chunk have a loss here
            fin = None if lengths is None else (lengths if rows is None else lengths[rows]) <= t1
            if fin is None or not fin.any():
                learn = False
            else:
                swc = fin.astype(np.float64) if swc is None else swc * fin
        yield Batch(xc, lc, yc, swc, per_step, n_rows=n_rows, rows=rows, done=t1 == T, learn=learn)


class TruncatedBPTTTrainer(Trainer):
    """A :class:`Trainer` for long sequences: one optimizer step per chunk of ``tbptt`` steps, the recurrent
    state carried (detached) between chunks, and with ``stateful`` between batches too.

    Parameters
    ----------
    model, loss, optimizer : as :class:`Trainer`
        The model's recurrent layers must be wrapped in :class:`rnnfast.nn.Stateful`.
    tbptt : int, optional
        Chunk length (None: whole batches, e.g. for ``stateful`` alone).
    stateful : bool, default False
        Carry the state from batch to batch as well (reset at each epoch); :meth:`fit` then needs
        ``shuffle=False`` and a number of sequences divisible by ``batch_size``.
    **kwargs
        The other arguments of :class:`Trainer`.

    Raises
    ------
    TypeError
        The model has no :class:`rnnfast.nn.Stateful` layer.
    """

    def __init__(self, model, loss, optimizer=None, *, tbptt: Optional[int] = None, stateful: bool = False,
                 **kwargs) -> None:
        self.tbptt = check_int(tbptt, "tbptt", 1, allow_none=True)
        self.stateful = check_bool(stateful, "stateful")
        super().__init__(model, loss, optimizer, **kwargs)
        if not self.carry:
            raise TypeError("tbptt and stateful need the model's recurrent layer wrapped in "
                            "rnnfast.train.Stateful (e.g. Sequential(Stateful(LSTM(...)), ...))")

    def _check_fit(self, data: SequenceDataset, shuffle: bool, batch_size: int) -> None:
        if self.stateful:
            if shuffle:
                raise ValueError("stateful=True carries the state from batch to batch: it needs shuffle=False")
            if len(data) % batch_size:
                raise ValueError(f"stateful=True needs equal batches: {len(data)} sequences is not a multiple of "
                                 f"batch_size={batch_size}")

    def epoch_batches(self, data, rng, batch_size, shuffle, bucket) -> List[np.ndarray]:
        """Consecutive batches when stateful (row i of a batch continues row i of the previous one)."""
        if self.stateful:
            return [np.arange(i, i + batch_size) for i in range(0, len(data), batch_size)]
        return super().epoch_batches(data, rng, batch_size, shuffle, bucket)

    def count_steps(self, data: SequenceDataset, batches: Sequence[np.ndarray]) -> int:
        """One step per chunk."""
        if not self.tbptt:
            return len(batches)
        return sum(-(-int(data.lengths[b].max()) // self.tbptt) for b in batches)

    def iter_steps(self, data: SequenceDataset, batches: Sequence[np.ndarray]) -> Iterator[Batch]:
        """The chunks of every batch; each batch starts from zero states unless stateful."""
        for whole in super().iter_steps(data, batches):
            if not self.stateful:
                self.carry.forget()
            yield from iter_chunks(whole, self.tbptt)

    def train_step(self, batch: Batch) -> Optional[float]:
        """:meth:`Trainer.train_step` from the carried state of the chunk's rows (a chunk without a loss
        only runs forward, in inference mode), then keeps the final state for the next chunk."""
        self.carry.load(batch.rows)
        if batch.learn:
            value = super().train_step(batch)
        else:
            self.model.eval()
            self.forward(batch)
            self.model.train()
            value = None
        self.carry.store(batch.rows, batch.n_rows)
        return value
