"""Layers with forward and backward passes and parameters, PyTorch-compatible."""
from rnnfast.nn.layers import Attention, Dropout, Embedding, LastStep, Linear, MaxPool, MeanPool
from rnnfast.nn.module import BackwardStateError, Module
from rnnfast.nn.recurrent import GRU, LSTM, RNN
from rnnfast.nn.sequential import Sequential

__all__ = ["LSTM", "GRU", "RNN", "Embedding", "Linear", "Dropout", "LastStep", "MeanPool", "MaxPool",
           "Attention", "Sequential", "Module", "BackwardStateError"]
