"""rnnfast: fast, exact recurrent neural networks for CPUs."""
__version__ = "0.1.0"

from rnnfast import interop, nn, train
from rnnfast._threads import get_num_threads, set_num_threads
from rnnfast._tune import tune
from rnnfast.estimators import (GRU, LSTM, RNN, GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                                RNNClassifier, RNNRegressor, load)
from rnnfast.nn import Sequential

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "load", "nn", "train", "interop", "Sequential", "get_num_threads",
           "set_num_threads", "tune", "__version__"]


def __getattr__(name: str):
    """``rnnfast.datasets`` (``rf.datasets.audio.mfcc``) is imported on first use: ``import rnnfast`` stays cheap."""
    if name == "datasets":
        import importlib
        return importlib.import_module("rnnfast.datasets")
    raise AttributeError(f"module 'rnnfast' has no attribute {name!r}")
