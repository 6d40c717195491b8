"""rnnfast: fast, exact recurrent neural networks for CPUs."""
__version__ = "0.1.0"

from rnnfast import interop, nn, train
from rnnfast._memory import get_workspace_limit, set_workspace_limit
from rnnfast._threads import MAX_THREADS, get_num_threads, set_num_threads
from rnnfast._tune import tune
from rnnfast.estimators import (GRU, LSTM, RNN, GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                                RNNClassifier, RNNRegressor, Seq2Seq, Seq2SeqEnsemble, load)
from rnnfast.nn import Sequential
from rnnfast.quantize import quantize

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "Seq2Seq", "Seq2SeqEnsemble", "load", "nn", "train", "interop",
           "Sequential", "get_num_threads", "set_num_threads", "MAX_THREADS", "set_workspace_limit",
           "get_workspace_limit", "tune",
           "quantize", "serving", "datasets", "distributed",
           "__version__"]

#: modules imported on first use, so ``import rnnfast`` stays cheap (``rf.serving`` starts no thread until a
#: Batcher is made; ``rf.datasets.audio.mfcc``; ``rf.distributed.predict``)
_LAZY = ("serving", "datasets", "distributed")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"rnnfast.{name}")
    raise AttributeError(f"module 'rnnfast' has no attribute {name!r}")
