"""Layers with forward and backward passes and parameters, PyTorch-compatible."""
from rnnfast.nn.layers import Attention, Dropout, Embedding, LastStep, Linear, MaxPool, MeanPool
from rnnfast.nn.module import BackwardStateError, Module
from rnnfast.nn.freeze import freeze, is_frozen
from rnnfast.nn.normalization import BatchNorm, LayerNorm
from rnnfast.nn.recurrent import GRU, LSTM, RNN
from rnnfast.nn.seq2seq import AttentionDecoder, Encoder, Seq2SeqModel
from rnnfast.nn.sequential import Sequential
from rnnfast.nn.stateful import StateCarry, Stateful, stateful_layers, unwrap

__all__ = ["LSTM", "GRU", "RNN", "Embedding", "Linear", "Dropout", "LastStep", "MeanPool", "MaxPool",
           "Attention", "BatchNorm", "LayerNorm", "Encoder", "AttentionDecoder", "Seq2SeqModel", "Sequential",
           "Module", "BackwardStateError", "Stateful", "StateCarry", "stateful_layers", "unwrap", "freeze",
           "is_frozen"]
