"""Training utilities: losses, optimizers, gradient clipping, learning-rate schedules, initialisers, metrics.

They are plain building blocks on numpy arrays and the ``rnnfast.nn`` layer protocol (``named_parameters``,
``grads``, ``backward``), e.g. one step::

    opt = Adam(model, lr=1e-3)
    model.zero_grad()
    loss, dlogits = CrossEntropy()(model(x, lengths=lengths), y)
    model.backward(dlogits)
    clip_grad_norm(model.grads, 1.0)
    opt.step()
"""
from rnnfast.train.clip import clip_grad_norm, clip_grad_value
from rnnfast.train.init import glorot_uniform, init_recurrent, orthogonal, pytorch_default, zeros
from rnnfast.train.losses import (MAE, MSE, BinaryCrossEntropyWithLogits, CrossEntropy, Huber, Loss,
                                  lengths_to_mask)
from rnnfast.train.metrics import accuracy, f1, mae, perplexity, rmse
from rnnfast.train.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, parameter_triples
from rnnfast.train.schedules import CosineAnnealingLR, ExponentialLR, LRSchedule, ReduceLROnPlateau, StepLR

__all__ = [
    "Loss", "MSE", "MAE", "Huber", "BinaryCrossEntropyWithLogits", "CrossEntropy", "lengths_to_mask",
    "Optimizer", "SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "parameter_triples",
    "clip_grad_norm", "clip_grad_value",
    "LRSchedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau",
    "glorot_uniform", "orthogonal", "zeros", "pytorch_default", "init_recurrent",
    "accuracy", "f1", "mae", "rmse", "perplexity",
]
