"""Training utilities: losses (CTC among them, with its decoders), optimizers, gradient clipping,
learning-rate schedules, initialisers, metrics, batching of variable-length data, callbacks and the fit loop
(:func:`fit`).

They are plain building blocks on numpy arrays and the ``rnnfast.nn`` layer protocol (``named_parameters``,
``grads``, ``backward``), e.g. one step::

    opt = Adam(model, lr=1e-3)
    model.zero_grad()
    loss, dlogits = CrossEntropy()(model(x, lengths=lengths), y)
    model.backward(dlogits)
    clip_grad_norm(model.grads, 1.0)
    opt.step()

or the whole loop: ``history = Trainer(model, CrossEntropy(), Adam(model)).fit(X, y, epochs=10)`` (or the
function form ``fit(model, CrossEntropy(), Adam(model), X, y, epochs=10)``); subclass :class:`Trainer` and
override ``train_step`` to change what one step does. The callbacks are
in :mod:`rnnfast.train.callbacks` (Keras's names; ``callbacks.ReduceLROnPlateau`` is the callback form of
the schedule :class:`ReduceLROnPlateau`).
"""
from rnnfast.train import callbacks
from rnnfast.train.callbacks import (Callback, CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                                     EpochAveraging, ProgressBar, TerminateOnNaN, TimeLimit,
                                     WeightAveraging)
from rnnfast.train.clip import clip_grad_norm, clip_grad_value
from rnnfast.train.data import SequenceDataset, batch_indices, bucket_batches, pad_sequences
from rnnfast.train.callbacks import CallbackList
from rnnfast.train.fit import METRICS, History, Stateful, evaluate, fit, predict
from rnnfast.train.tbptt import TruncatedBPTTTrainer, iter_chunks
from rnnfast.train.trainer import Batch, Trainer
from rnnfast.train.init import glorot_uniform, init_recurrent, orthogonal, pytorch_default, zeros
from rnnfast.train.ctc import CTCLoss, ctc_beam_decode, ctc_greedy_decode
from rnnfast.train.losses import (MAE, MSE, BinaryCrossEntropyWithLogits, CrossEntropy, Huber, Loss,
                                  lengths_to_mask)
from rnnfast.train import metrics
from rnnfast.train.metrics import Metric, accuracy, f1, mae, mse, perplexity, r2, rmse
from rnnfast.train.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, parameter_triples
from rnnfast.train.schedules import CosineAnnealingLR, ExponentialLR, LRSchedule, ReduceLROnPlateau, StepLR

__all__ = [
    "Loss", "MSE", "MAE", "Huber", "BinaryCrossEntropyWithLogits", "CrossEntropy", "lengths_to_mask",
    "CTCLoss", "ctc_greedy_decode", "ctc_beam_decode",
    "Optimizer", "SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "parameter_triples",
    "clip_grad_norm", "clip_grad_value",
    "LRSchedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau",
    "glorot_uniform", "orthogonal", "zeros", "pytorch_default", "init_recurrent",
    "metrics", "Metric", "accuracy", "f1", "mae", "mse", "rmse", "r2", "perplexity",
    "pad_sequences", "batch_indices", "bucket_batches", "SequenceDataset",
    "fit", "evaluate", "predict", "Stateful", "History", "Trainer", "TruncatedBPTTTrainer", "Batch", "iter_chunks",
    "CallbackList", "METRICS",
    "callbacks", "Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "CSVLogger",
    "TerminateOnNaN", "ProgressBar", "TimeLimit", "WeightAveraging", "EpochAveraging",
]
