"""rnnfast: fast, exact recurrent neural networks for CPUs."""
__version__ = "0.1.0"

from rnnfast import nn, train
from rnnfast._threads import get_num_threads, set_num_threads
from rnnfast._tune import tune
from rnnfast.models import GRU, LSTM, RNN, load
from rnnfast.nn import Sequential

__all__ = ["LSTM", "GRU", "RNN", "load", "nn", "train", "Sequential", "get_num_threads", "set_num_threads", "tune",
           "__version__"]
