"""Layers with forward and backward passes and parameters, PyTorch-compatible."""
from rnnfast.nn.recurrent import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN"]
