"""rnnfast: fast, exact recurrent neural networks for CPUs."""
from rnnfast import nn, train
from rnnfast._threads import get_num_threads, set_num_threads
from rnnfast.nn import Sequential

__version__ = "0.1.0"
__all__ = ["nn", "train", "Sequential", "get_num_threads", "set_num_threads", "__version__"]
