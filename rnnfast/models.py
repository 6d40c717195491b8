"""The estimators' former home, kept so ``rnnfast.models.LSTM`` and friends still import.

The code lives in :mod:`rnnfast.estimators`, split by job.
"""
from rnnfast.estimators import (GRU, LSTM, RNN, FloatLabelsWarning, GRUClassifier, GRURegressor, LSTMClassifier,
                                LSTMRegressor, NotFittedError, RNNClassifier, RNNRegressor, Seq2Seq, load)
from rnnfast.estimators.recurrent import _RecurrentEstimator

__all__ = ["LSTM", "GRU", "RNN", "load", "NotFittedError", "LSTMClassifier", "LSTMRegressor", "GRUClassifier",
           "GRURegressor", "RNNClassifier", "RNNRegressor", "Seq2Seq", "FloatLabelsWarning", "_RecurrentEstimator"]
