"""scikit-learn style estimators over rnnfast's recurrent layers, split by job.

================  ==============================================================================
module            job
================  ==============================================================================
``base``          the scikit-learn protocol: parameters, ``repr``, fitted check, tags
``params``        the parameter table (constraints) and its validation into a ``Params``
``inputs``        encoding ``X`` (features or token ids, padded, with lengths) -> ``EncodedInput``
``targets``       encoding ``y`` -> ``EncodedTargets``; predictions, probabilities, scores
``ctc``           ``loss="ctc"``: label-sequence targets encoded, outputs decoded, scored
``network``       building the network, optimizer and loss
``training``      validation set, warm start, the epochs over :func:`rnnfast.train.fit`
``persistence``   ``save`` / ``load`` in the pickle-free file format
``streaming``     ``predict_step``: one time step at a time, the state the caller's (``StreamState``)
``memory``        ``release_memory`` and pickling without transient state
``recurrent``     ``LSTM`` / ``GRU`` / ``RNN``: the task follows ``y``
``tasks``         ``*Classifier`` / ``*Regressor``: the task is the class's
``seq2seq``       ``Seq2Seq``: token sequences to token sequences (encoder-decoder with attention); ``Seq2SeqEnsemble``
================  ==============================================================================
"""
from rnnfast.estimators.base import NotFittedError
from rnnfast.io import load
from rnnfast.estimators.recurrent import GRU, LSTM, RNN
from rnnfast.estimators.seq2seq import Seq2Seq, Seq2SeqEnsemble
from rnnfast.estimators.streaming import StreamState
from rnnfast.estimators.targets import DataConversionWarning, FloatLabelsWarning
from rnnfast.estimators.tasks import (GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor, RNNClassifier,
                                      RNNRegressor)

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "Seq2Seq", "Seq2SeqEnsemble", "load", "NotFittedError", "StreamState",
           "FloatLabelsWarning", "DataConversionWarning", "ESTIMATORS"]

#: The estimator classes by name (what a saved file's kind refers to).
ESTIMATORS = {cls.__name__: cls for cls in (LSTM, GRU, RNN, LSTMClassifier, LSTMRegressor, GRUClassifier,
                                            GRURegressor, RNNClassifier, RNNRegressor)}
