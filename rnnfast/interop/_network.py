"""What a converter works on: the rnnfast network behind a model (layer, Sequential or fitted estimator)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["network", "layers_of", "cell_of", "reset_after", "float_dtype", "refuse_layer_norm"]


def cell_of(layer: Any) -> str | None:
    """"lstm", "gru" or "rnn" for an rnnfast recurrent layer, None for any other object."""
    from rnnfast.nn import GRU, LSTM, RNN
    for cls, cell in ((LSTM, "lstm"), (GRU, "gru"), (RNN, "rnn")):
        if isinstance(layer, cls):
            return cell
    return None


def reset_after(layer: Any) -> bool:
    """Whether an rnnfast GRU applies the reset gate after the recurrent product (PyTorch's form)."""
    return bool(getattr(layer, "reset_after", True))


def refuse_layer_norm(layer: Any, framework: str) -> None:
    """ValueError for a layer-normalized rnnfast LSTM / GRU, which ``framework`` has no layer for."""
    if getattr(layer, "layer_norm", False):
        raise ValueError(f"a {type(layer).__name__} with layer_norm=True has no {framework} form ({framework}'s "
                         f"{type(layer).__name__} has no layer normalization inside the cell)")


def network(model: Any) -> Any:
    """The rnnfast layer or :class:`rnnfast.nn.Sequential` that ``model`` computes with.

    A fitted estimator gives its network (``model_``; NotFittedError when it is not fitted), a
    :class:`rnnfast.nn.Stateful` wrapper the layer inside; anything else is returned as it is.
    """
    from rnnfast.estimators.base import EstimatorBase
    from rnnfast.nn.stateful import unwrap

    if isinstance(model, EstimatorBase):
        model._check_fitted()
        return model.model_  # type: ignore[attr-defined]  # set by fit (checked above)
    return unwrap(model)


def layers_of(model: Any) -> list:
    """The layers of a Sequential (Stateful wrappers removed), or ``[model]`` for a single layer."""
    from rnnfast.nn import Sequential
    from rnnfast.nn.stateful import unwrap

    net = network(model)
    if isinstance(net, Sequential):
        return [unwrap(layer) for layer in net.layers]
    return [net]


def float_dtype(dtype: Any, where: str) -> np.dtype:
    """float32 or float64 from a framework's dtype (ValueError for anything else: rnnfast computes in those two)."""
    name = str(dtype).replace("torch.", "")
    try:
        dt = np.dtype(name)
    except TypeError:  # bfloat16 and the like, which numpy does not know
        dt = None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{where} holds {name} weights; rnnfast computes in float32 or float64 "
                         "(convert the weights to one of those first)")
    return np.dtype(dt)
