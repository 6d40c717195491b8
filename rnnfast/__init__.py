"""rnnfast: fast, exact recurrent neural networks for CPUs."""
__version__ = "0.1.0"

from rnnfast import nn, train
from rnnfast._memory import get_workspace_limit, set_workspace_limit
from rnnfast._threads import get_num_threads, set_num_threads
from rnnfast._tune import tune
from rnnfast.estimators import (GRU, LSTM, RNN, GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                                RNNClassifier, RNNRegressor, load)
from rnnfast.nn import Sequential

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "load", "nn", "train", "Sequential", "get_num_threads",
           "set_num_threads", "set_workspace_limit", "get_workspace_limit", "tune", "serving", "__version__"]


def __getattr__(name):
    # rnnfast.serving is imported on first use (it starts no thread until a Batcher is made)
    if name == "serving":
        import importlib
        return importlib.import_module("rnnfast.serving")
    raise AttributeError(f"module 'rnnfast' has no attribute {name!r}")
