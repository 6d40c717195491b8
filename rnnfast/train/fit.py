"""The fit loop as functions: :func:`fit`, :func:`evaluate` and :func:`predict`, each a thin wrapper over a
:class:`rnnfast.train.Trainer` (see :mod:`rnnfast.train.trainer` for the loop, its stopping rules and its
seeding; :mod:`rnnfast.train.tbptt` for truncated BPTT and stateful training).
"""
from rnnfast.nn.stateful import Stateful
from rnnfast.train.metrics import METRICS
from rnnfast.train.tbptt import TruncatedBPTTTrainer
from rnnfast.train.trainer import History, Trainer

__all__ = ["fit", "evaluate", "predict", "Stateful", "History", "Trainer", "METRICS"]


def fit(model, loss, optimizer, X, y=None, lengths=None, *, sample_weight=None, per_step=False, epochs=1,
        batch_size=32, shuffle=True, bucket=True, validation_data=None, validation_split=0.0, clip_norm=None,
        clip_value=None, schedule=None, metrics=None, callbacks=None, tbptt=None, stateful=False, seed=None,
        initial_epoch=0, history=None, n_threads=None, verbose=0, estimator=None, distributed=None) -> History:
    """Train ``model`` on sequences: ``Trainer(model, loss, optimizer, ...).fit(X, y, ...)`` (a
    :class:`rnnfast.train.tbptt.TruncatedBPTTTrainer` when ``tbptt`` or ``stateful`` is given).

    Parameters
    ----------
    model : model object (the layer protocol, see :mod:`rnnfast.train.trainer`), e.g. a Sequential
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
    epochs : int, default 1 (epochs to run from ``initial_epoch``)
    batch_size : int, default 32
    shuffle : bool, default True
    bucket : bool, default True
        Group sequences of similar length into batches (:func:`rnnfast.train.bucket_batches`).
    validation_data : tuple (X, y[, sample_weight]) or SequenceDataset, optional
    validation_split : float in [0, 1), default 0
        Validate on the LAST fraction of the sequences in the order given, taken before any shuffling (not
        a random subset, unlike the estimators'); ignored when ``validation_data`` is given.
    clip_norm, clip_value : float, optional
        Clip the gradients by global norm and/or by value before each step.
    schedule : schedule object, optional
        Stepped at the end of every epoch (a ``ReduceLROnPlateau`` with ``val_loss``, else ``loss``); see
        :class:`rnnfast.train.callbacks.LearningRateScheduler`.
    metrics : list of names, Metric objects or callables, or dict name -> one of them, optional
        Names from :data:`rnnfast.train.metrics.METRICS` ("accuracy", "mae", "mse", "r2"); a callable is
        ``f(output, target, mask, sample_weight) -> (numerator, denominator)``. See
        :func:`rnnfast.train.metrics.resolve`.
    callbacks : list of :class:`rnnfast.train.callbacks.Callback`, optional
    tbptt : int, optional
        Truncated BPTT: chunks of this many steps, one optimizer step each, the state carried between
        chunks (detached). With per-sequence targets each sequence's loss is taken in the chunk where it
        ends; chunks where none ends run forward only (in inference mode), to advance the state.
    stateful : bool, default False
        Carry the state from batch to batch as well (reset at each epoch); needs ``shuffle=False`` and a
        number of sequences divisible by ``batch_size``.
    seed : int or numpy Generator, optional
        An int makes every epoch's randomness derive from ``(seed, epoch)`` (see :mod:`rnnfast.train.trainer`).
    initial_epoch : int, default 0
        Number of the first epoch (to resume).
    history : History or dict, optional
        Continue this history (a dict is appended to in place).
    n_threads : int, optional (threads of the kernels)
    verbose : {0, 1, 2}, default 0
        1: a progress bar per epoch; 2: one line per epoch (records of the ``rnnfast.train`` logger).
    estimator : object, optional
        Given to the callbacks (``trainer.estimator``); :class:`ModelCheckpoint` saves it.
    distributed : None, "auto", "mpi" or rnnfast.distributed.DataParallel, optional
        Data-parallel training over MPI ranks (see :class:`rnnfast.train.Trainer`).

    Returns
    -------
    History

    Raises
    ------
    ValueError, TypeError
        Bad arguments or data (before any training).
    """
    kw = dict(metrics=metrics, callbacks=callbacks, clip_norm=clip_norm, clip_value=clip_value, schedule=schedule,
              n_threads=n_threads, verbose=verbose, estimator=estimator, distributed=distributed)
    tb = tbptt is not None or stateful
    trainer = (TruncatedBPTTTrainer(model, loss, optimizer, tbptt=tbptt, stateful=stateful, **kw) if tb
               else Trainer(model, loss, optimizer, **kw))
    return trainer.fit(X, y, lengths, sample_weight=sample_weight, per_step=per_step, epochs=epochs,
                       batch_size=batch_size, shuffle=shuffle, bucket=bucket, validation_data=validation_data,
                       validation_split=validation_split, seed=seed, initial_epoch=initial_epoch, history=history)


def predict(model, X, lengths=None, *, per_step=False, batch_size=256, n_threads=None):
    """Model outputs for every sequence: :meth:`rnnfast.train.Trainer.predict` of ``model``.

    Parameters
    ----------
    model : model object
    X, lengths, per_step, batch_size : as :meth:`rnnfast.train.Trainer.predict`
    n_threads : int, optional

    Returns
    -------
    numpy.ndarray, (N, ...) or (N, T, ...)
    """
    return Trainer(model, None, n_threads=n_threads).predict(X, lengths, per_step=per_step, batch_size=batch_size)


def evaluate(model, loss, X, y=None, lengths=None, *, sample_weight=None, per_step=False, batch_size=256,
             metrics=None, n_threads=None):
    """Loss and metrics of ``model`` on data: :meth:`rnnfast.train.Trainer.evaluate`.

    Parameters
    ----------
    model, loss, metrics : as :func:`fit`
    X, y, lengths, sample_weight, per_step, batch_size : as :meth:`rnnfast.train.Trainer.evaluate`
    n_threads : int, optional

    Returns
    -------
    dict
        ``{"loss": float, <metric>: float}``.
    """
    return Trainer(model, loss, metrics=metrics, n_threads=n_threads).evaluate(
        X, y, lengths, sample_weight=sample_weight, per_step=per_step, batch_size=batch_size)
