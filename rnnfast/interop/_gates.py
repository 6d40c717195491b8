"""Gate orders: rnnfast (PyTorch's) against ONNX's and Keras's, and the block permutation between them.

rnnfast stores gate blocks as PyTorch does: LSTM (i, f, g, o), GRU (r, z, n), RNN one block, each block
H rows of the (G*H, I) weight. ONNX uses LSTM (i, o, f, c) and GRU (z, r, h); Keras uses LSTM (i, f, c, o)
and GRU (z, r, h), with kernels transposed to (I, G*H).
"""
from __future__ import annotations

import numpy as np

# ORDER[framework][cell][k] = the rnnfast gate block that framework keeps at position k
ORDER = {
    "onnx": {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)},
    "keras": {"lstm": (0, 1, 2, 3), "gru": (1, 0, 2), "rnn": (0,)},
}


def to_order(a: np.ndarray, framework: str, cell: str) -> np.ndarray:
    """Blocks of ``a`` (gates along axis 0, rnnfast order) in ``framework``'s order."""
    order = ORDER[framework][cell]
    blocks = np.split(np.asarray(a), len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def from_order(a: np.ndarray, framework: str, cell: str) -> np.ndarray:
    """Blocks of ``a`` (gates along axis 0, ``framework``'s order) in rnnfast's order."""
    order = ORDER[framework][cell]
    blocks = np.split(np.asarray(a), len(order), axis=0)
    where = np.argsort(order)   # where[k] = the position that holds rnnfast block k
    return np.concatenate([blocks[pos] for pos in where], axis=0)
