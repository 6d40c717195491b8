"""rnnfast: fast, exact recurrent neural networks for CPUs."""
__version__ = "0.1.0"

from rnnfast import nn, train
from rnnfast._threads import MAX_THREADS, get_num_threads, set_num_threads
from rnnfast._tune import tune
from rnnfast.estimators import (GRU, LSTM, RNN, GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                                RNNClassifier, RNNRegressor, load)
from rnnfast.nn import Sequential

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "load", "nn", "train", "Sequential", "get_num_threads",
           "set_num_threads", "MAX_THREADS", "tune", "__version__"]
