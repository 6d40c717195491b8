"""Stateful carry: a recurrent layer whose initial state is set from outside, and the carried states of a
model's such layers from chunk to chunk and batch to batch (truncated BPTT, stateful training).

The state is carried without gradient (detached): a chunk's backward stops at the state it started from.
"""
from typing import List, Optional, Tuple, Union

import numpy as np

__all__ = ["Stateful", "StateCarry", "stateful_layers", "unwrap"]

State = Union[np.ndarray, Tuple[np.ndarray, ...]]


class Stateful:
    """A recurrent layer whose initial state can be set from outside, for truncated BPTT and stateful
    training.

    It behaves exactly as the wrapped layer (same parameters, state-dict keys, gradients) while ``hx``
    is None. The training loop sets ``hx`` before a call and reads the call's final state from
    ``last_state``; no gradient flows into ``hx`` (the state is detached).

    Parameters
    ----------
    layer : rnnfast.nn.LSTM, GRU or RNN (or any layer whose ``forward(x, hx, lengths=, n_threads=)``
        returns ``(out, state)``)

    Attributes
    ----------
    hx : initial state of the next call, or None (zeros)
    last_state : final state of the last call
    """

    #: Follows the layer protocol ``forward(x, *, lengths=None, n_threads=None)`` (see rnnfast.nn.Module).
    keyword_protocol = True

    def __init__(self, layer) -> None:
        for meth in ("forward", "backward"):
            if not callable(getattr(layer, meth, None)):
                raise TypeError(f"Stateful needs a layer with {meth}(), got {type(layer).__name__}")
        self.layer = layer
        self.hx: Optional[State] = None
        self.last_state: Optional[State] = None

    def forward(self, x, lengths=None, n_threads=None):
        """``layer.forward(x, hx, ...)``; returns ``(out, state)`` and keeps ``state`` in ``last_state``."""
        res = self.layer.forward(x, self.hx, lengths=lengths, n_threads=n_threads)
        self.last_state = res[1]
        return res

    __call__ = forward

    def _forward_last(self, x, lengths=None, n_threads=None):
        """``layer._forward_last(x, hx, ...)`` (rnnfast.nn.sequential: a LastStep head run with the layer),
        keeping the state in ``last_state`` as :meth:`forward` does; None when the layer has no such path."""
        fwd = getattr(type(self.layer), "_forward_last", None)
        res = None if fwd is None else fwd(self.layer, x, self.hx, lengths=lengths, n_threads=n_threads)
        if res is not None:
            self.last_state = res[1]
        return res

    def backward(self, dout, dstate=None, n_threads=None):
        """``layer.backward``: the gradient does not continue into ``hx`` (truncation)."""
        return self.layer.backward(dout, dstate, n_threads=n_threads)

    def reset_state(self) -> None:
        """Forget the carried state (next call starts from zeros)."""
        self.hx = None
        self.last_state = None

    def release_memory(self) -> None:
        """Forget the carried state and drop what the wrapped layer keeps between calls."""
        self.reset_state()
        release = getattr(self.layer, "release_memory", None)
        if callable(release):
            release()

    def __getstate__(self):
        # the carried state is transient (a new fit or predict starts from zeros)
        return {**self.__dict__, "hx": None, "last_state": None}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def train(self, mode: bool = True) -> "Stateful":
        """Training mode of the wrapped layer. Returns self."""
        self.layer.train(mode)
        return self

    def eval(self) -> "Stateful":
        """Inference mode of the wrapped layer. Returns self."""
        return self.train(False)

    def __getattr__(self, name):
        # everything else (state_dict, grads, hidden_size, reseed, ...) is the wrapped layer's; never the
        # protocols' dunders (on Python 3.10 pickle asked for __getstate__ here, and got the layer's)
        layer = self.__dict__.get("layer")
        if layer is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(layer, name)

    def __repr__(self) -> str:
        return f"Stateful({self.layer!r})"


def unwrap(layer):
    """The layer inside a :class:`Stateful` wrapper (any other layer as is)."""
    return layer.layer if isinstance(layer, Stateful) else layer


def _layers_of(model) -> list:
    from rnnfast.nn.sequential import Sequential
    return list(model.layers) if isinstance(model, Sequential) else [model]


def stateful_layers(model) -> List[Stateful]:
    """The :class:`Stateful` layers of a model (a Sequential's layers, or the model itself)."""
    return [layer for layer in _layers_of(model) if isinstance(layer, Stateful)]


def _take_rows(state: Optional[State], rows: Optional[np.ndarray]) -> Optional[State]:
    if state is None or rows is None:
        return state
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def _put_rows(full, rows: Optional[np.ndarray], part, n_rows: int):
    """Write the state of a chunk's rows into the batch's state (``part`` is fresh: no copy needed)."""
    if rows is None:
        return part
    if isinstance(part, tuple):
        if full is None:
            full = tuple(np.zeros((s.shape[0], n_rows) + s.shape[2:], s.dtype) for s in part)
        for f, s in zip(full, part):
            f[:, rows] = s
        return full
    if full is None:
        full = np.zeros((part.shape[0], n_rows) + part.shape[2:], part.dtype)
    full[:, rows] = part
    return full


class StateCarry:
    """The states a model's :class:`Stateful` layers carry from one call to the next.

    The state of a batch has one row per sequence; a call on some of its rows (``rows``, the sequences
    not yet ended) starts from those rows' states and writes its final states back into them.

    Parameters
    ----------
    model : a Sequential (or one layer)
    """

    def __init__(self, model) -> None:
        self.layers = stateful_layers(model)
        self.states: List[Optional[State]] = [None] * len(self.layers)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def forget(self) -> None:
        """Start the next batch from zero states."""
        self.states = [None] * len(self.layers)

    def reset(self) -> None:
        """Forget everything, including what the layers hold (a new epoch, or inference next)."""
        self.forget()
        for layer in self.layers:
            layer.reset_state()

    def load(self, rows: Optional[np.ndarray]) -> None:
        """Set each layer's initial state to the carried state of ``rows`` (None: all rows)."""
        for layer, s in zip(self.layers, self.states):
            layer.hx = _take_rows(s, rows)

    def store(self, rows: Optional[np.ndarray], n_rows: int) -> None:
        """Keep each layer's final state as the carried state of ``rows`` of a batch of ``n_rows``."""
        self.states = [_put_rows(s, rows, layer.last_state, n_rows) for layer, s in zip(self.layers, self.states)]

    def detach(self) -> None:
        """Clear the layers' initial states (the carried states are kept)."""
        for layer in self.layers:
            layer.hx = None

