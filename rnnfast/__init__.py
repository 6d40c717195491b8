"""rnnfast: fast, exact recurrent neural networks for CPUs."""
from rnnfast import nn
from rnnfast._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"
__all__ = ["nn", "get_num_threads", "set_num_threads", "__version__"]
