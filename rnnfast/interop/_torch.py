"""PyTorch in and out: :func:`from_torch` and :func:`to_torch`.

rnnfast's layers are PyTorch's (same constructor, state-dict keys, gate order and numerics), so a layer
converts by its settings and ``state_dict``. A :class:`rnnfast.nn.Sequential` has no PyTorch twin in
``torch.nn.Sequential``: torch's recurrent layers return ``(output, state)`` tuples, and nothing there
takes ``lengths``. It converts to :class:`Sequence` (a small ``torch.nn.Module`` defined here on first use):
``forward(x, lengths=None)`` runs the layers in order, each recurrent one over
``pack_padded_sequence(x, lengths, enforce_sorted=False)`` and back through ``pad_packed_sequence`` (so
padded steps are zero and never touch a state, as in rnnfast) keeping the output and dropping the state,
and the pooling layers :class:`LastStep`, :class:`MeanPool`, :class:`MaxPool` (also defined here) reduce
over each sequence's valid steps; :class:`BatchNorm` and :class:`LayerNorm` (torch's ``BatchNorm1d`` and
``LayerNorm`` with ``forward(x, lengths=None)``, same state-dict keys) normalize the last axis over the valid
steps only, zero at the padded ones. ``from_torch`` takes those modules back (and torch's own
``BatchNorm1d``, as on (N, C) rows: its features on the last axis, and ``LayerNorm``).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rnnfast.interop._network import cell_of, float_dtype, layers_of, network, refuse_layer_norm, reset_after

__all__ = ["from_torch", "to_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError("PyTorch is needed for this conversion: pip install torch") from e
    return torch


@functools.cache
def _modules() -> dict:
    """The torch modules that rnnfast layers without a torch twin convert to (defined once torch is imported)."""
    torch = _torch()
    pools = _lengths_modules(torch)
    return {**pools, "Sequence": _sequence_module(torch, tuple(pools.values()))}


def _lengths_modules(torch: Any) -> dict:
    """rnnfast's LastStep, MeanPool, MaxPool, BatchNorm and LayerNorm as torch modules taking
    ``forward(x, lengths=None)``."""

    def last_valid(x: Any, lengths: Any) -> Any:
        B, T = x.shape[0], x.shape[1]
        if lengths is None:
            return torch.full((B,), T - 1, dtype=torch.long, device=x.device)
        return torch.as_tensor(lengths, device=x.device).long() - 1

    def valid(x: Any, lengths: Any) -> Any:
        """(B, T, 1) bool: the valid steps of each sequence."""
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        return (steps <= last_valid(x, lengths)[:, None])[:, :, None]

    class LastStep(torch.nn.Module):
        """rnnfast.nn.LastStep: (B, T, F) -> (B, F) at each sequence's last valid step (the reverse half
        of a bidirectional output at step 0)."""

        def __init__(self, bidirectional: bool = False) -> None:
            super().__init__()
            self.bidirectional = bidirectional

        def forward(self, x: Any, lengths: Any = None) -> Any:
            out = x[torch.arange(x.shape[0], device=x.device), last_valid(x, lengths)]
            if self.bidirectional:
                half = x.shape[2] // 2
                out = torch.cat([out[:, :half], x[:, 0, half:]], dim=1)
            return out

    class MeanPool(torch.nn.Module):
        """rnnfast.nn.MeanPool: the mean over each sequence's valid steps."""

        def forward(self, x: Any, lengths: Any = None) -> Any:
            n = last_valid(x, lengths) + 1
            return (x * valid(x, lengths)).sum(dim=1) / n[:, None].to(x.dtype)

    class MaxPool(torch.nn.Module):
        """rnnfast.nn.MaxPool: the maximum over each sequence's valid steps."""

        def forward(self, x: Any, lengths: Any = None) -> Any:
            return x.masked_fill(~valid(x, lengths), float("-inf")).amax(dim=1)

    return {"LastStep": LastStep, "MeanPool": MeanPool, "MaxPool": MaxPool, **_norm_modules(torch, valid)}


def _norm_modules(torch: Any, valid: Any) -> dict:
    """rnnfast's BatchNorm and LayerNorm as torch modules taking ``forward(x, lengths=None)``; ``valid(x, lengths)``
    is the (B, T, 1) mask of the valid steps."""

    def over_valid(norm: Any, x: Any, lengths: Any, k: int) -> Any:
        """``norm`` over the valid steps of a (B, T, ...) sequence with ``k`` normalized axes, zero elsewhere."""
        if x.dim() < k + 2:
            return norm(x)
        mask = valid(x, lengths)[:, :, 0]
        return x.new_zeros(x.shape).index_put((mask,), norm(x[mask]))

    class BatchNorm(torch.nn.BatchNorm1d):
        """rnnfast.nn.BatchNorm: torch's BatchNorm1d over the last axis of (B, T, F) valid steps, or (B, F)."""

        def forward(self, x: Any, lengths: Any = None) -> Any:
            return over_valid(super().forward, x, lengths, 1)

    class LayerNorm(torch.nn.LayerNorm):
        """rnnfast.nn.LayerNorm: torch's LayerNorm, zero at the padded steps of a sequence."""

        def forward(self, x: Any, lengths: Any = None) -> Any:
            return over_valid(super().forward, x, lengths, len(self.normalized_shape))

    return {"BatchNorm": BatchNorm, "LayerNorm": LayerNorm}


def _sequence_module(torch: Any, pools: tuple) -> Any:
    """The torch module an rnnfast Sequential converts to (module docstring)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Sequence(torch.nn.Module):
        """rnnfast.nn.Sequential in torch: ``forward(x, lengths=None)`` runs the layers in order (the
        recurrent ones over packed sequences when ``lengths`` is given, keeping their output only; the
        pooling ones over the valid steps)."""

        def __init__(self, *layers: Any) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(layers)

        def forward(self, x: Any, lengths: Any = None) -> Any:
            for layer in self.layers:
                if isinstance(layer, torch.nn.RNNBase):
                    x = self._recurrent(layer, x, lengths)
                elif isinstance(layer, pools):
                    x = layer(x, lengths)
                else:
                    x = layer(x)
            return x

        @staticmethod
        def _recurrent(layer: Any, x: Any, lengths: Any) -> Any:
            if lengths is None:
                return layer(x)[0]
            steps = x.shape[1] if layer.batch_first else x.shape[0]
            packed = pack_padded_sequence(x, torch.as_tensor(lengths).cpu().long(), batch_first=layer.batch_first,
                                          enforce_sorted=False)
            return pad_packed_sequence(layer(packed)[0], batch_first=layer.batch_first, total_length=steps)[0]

    return Sequence


def __getattr__(name: str) -> Any:
    # the torch-side classes, e.g. rnnfast.interop._torch.Sequence (torch is imported on first use)
    if name in ("LastStep", "MeanPool", "MaxPool", "BatchNorm", "LayerNorm", "Sequence"):
        return _modules()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------- to torch


def _numpy_state(state_dict: dict) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def _torch_recurrent(torch: Any, layer: Any, cell: str) -> Any:
    refuse_layer_norm(layer, "PyTorch")
    if not reset_after(layer):
        raise ValueError("a GRU with reset_after=False has no PyTorch form (torch.nn.GRU resets after the "
                         "recurrent product); export it to ONNX or Keras instead")
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    kw = {"nonlinearity": layer.nonlinearity} if cell == "rnn" else {}
    if getattr(layer, "proj_size", 0):
        kw["proj_size"] = layer.proj_size
    # (recurrent_dropout has no PyTorch form and is left behind: see to_torch)
    return cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
               batch_first=layer.batch_first, dropout=layer.dropout, bidirectional=layer.bidirectional, **kw)


def _torch_layer(torch: Any, part: Any) -> Any:
    """The torch module of one rnnfast layer, holding its weights, in its mode."""
    from rnnfast import nn

    cell = cell_of(part)
    if cell is not None:
        mod = _torch_recurrent(torch, part, cell)
    elif isinstance(part, nn.Linear):
        mod = torch.nn.Linear(part.in_features, part.out_features, bias=part.bias)
    elif isinstance(part, nn.Embedding):
        mod = torch.nn.Embedding(part.num_embeddings, part.embedding_dim, padding_idx=part.padding_idx)
    elif isinstance(part, nn.Dropout):
        mod = torch.nn.Dropout(part.p)
    elif isinstance(part, (nn.LastStep, nn.MeanPool, nn.MaxPool)):
        cls = _modules()[type(part).__name__]
        mod = cls(part.bidirectional) if isinstance(part, nn.LastStep) else cls()
    elif isinstance(part, nn.BatchNorm):
        mod = _modules()["BatchNorm"](part.num_features, eps=part.eps, momentum=part.momentum, affine=part.affine,
                                      track_running_stats=part.track_running_stats)
    elif isinstance(part, nn.LayerNorm):
        mod = _modules()["LayerNorm"](part.normalized_shape, eps=part.eps, elementwise_affine=part.elementwise_affine,
                                      bias=part.bias)
    else:
        raise TypeError(f"to_torch cannot convert a {type(part).__name__}: it takes rnnfast LSTM, GRU, RNN, Linear, "
                        "Embedding, Dropout, LastStep, MeanPool, MaxPool, BatchNorm, LayerNorm, a Sequential of them "
                        "or a fitted estimator")
    if hasattr(part, "state_dict"):
        sd = part.state_dict()
        if sd:
            mod = mod.to({np.float32: torch.float32, np.float64: torch.float64}[part.dtype.type])
            mod.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return mod.train(bool(getattr(part, "training", True)))


def to_torch(model: Any) -> Any:
    """A ``torch.nn.Module`` computing what an rnnfast model computes, with the same weights.

    Parameters
    ----------
    model : rnnfast layer, rnnfast.nn.Sequential, or fitted estimator (its network)
        LSTM (``proj_size`` included), GRU (``reset_after=True``), RNN, Linear, Embedding, Dropout, LastStep,
        MeanPool, MaxPool, BatchNorm, LayerNorm (to the torch modules of the module docstring: same state-dict
        keys). A layer's ``recurrent_dropout`` is not carried (PyTorch has none): the module computes what the
        layer computes in eval mode.

    Returns
    -------
    torch.nn.Module
        A layer gives its torch twin (``torch.nn.LSTM`` ..., same settings, dtype and mode). A Sequential
        or an estimator gives a :class:`Sequence` (module docstring) whose ``forward(x, lengths=None)``
        equals rnnfast's ``forward(x, lengths=lengths)``; for an estimator that is its network's output:
        logits for a classifier (softmax gives ``predict_proba``), scaled values for a regressor
        (``out * y_scale_ + y_mean_`` gives ``predict``).

    Raises
    ------
    TypeError
        Not an rnnfast model.
    ValueError
        A GRU with ``reset_after=False`` (PyTorch has no such GRU).

    Examples
    --------
    >>> import rnnfast as rf
    >>> to_torch(rf.nn.LSTM(3, 4, bidirectional=True))
    LSTM(3, 4, batch_first=True, bidirectional=True)
    """
    from rnnfast import nn

    torch = _torch()
    net = network(model)
    if isinstance(net, nn.Sequential):
        return _modules()["Sequence"](*[_torch_layer(torch, part) for part in layers_of(net)]).train(net.training)
    return _torch_layer(torch, net)


# --------------------------------------------------------------------------------------- from torch


def _rf_recurrent(torch: Any, mod: Any) -> Any:
    from rnnfast import nn

    cls = {torch.nn.LSTM: nn.LSTM, torch.nn.GRU: nn.GRU, torch.nn.RNN: nn.RNN}[type(mod)]
    kw = {"nonlinearity": mod.nonlinearity} if cls is nn.RNN else {}
    if getattr(mod, "proj_size", 0):
        kw["proj_size"] = mod.proj_size
    dt = float_dtype(mod.weight_ih_l0.dtype, f"torch.nn.{type(mod).__name__}")
    return cls(mod.input_size, mod.hidden_size, num_layers=mod.num_layers, bias=mod.bias,
               batch_first=mod.batch_first, dropout=mod.dropout, bidirectional=mod.bidirectional, dtype=dt, **kw)


def _rf_layer(torch: Any, mod: Any) -> Any:
    """The rnnfast layer of one torch module, holding its weights, in its mode."""
    from rnnfast import nn

    extra = _modules()
    name = f"torch.nn.{type(mod).__name__}"
    if type(mod) in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN):
        layer = _rf_recurrent(torch, mod)
    elif type(mod) is torch.nn.Linear:
        layer = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                          dtype=float_dtype(mod.weight.dtype, name))
    elif type(mod) is torch.nn.Embedding:
        if mod.max_norm is not None:
            raise ValueError("torch.nn.Embedding with max_norm is not supported (it renormalises rows at lookup)")
        layer = nn.Embedding(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx,
                             dtype=float_dtype(mod.weight.dtype, name))
    elif type(mod) is torch.nn.Dropout:
        layer = nn.Dropout(mod.p)
    elif type(mod) is extra["LastStep"]:
        layer = nn.LastStep(bidirectional=mod.bidirectional)
    elif type(mod) in (extra["MeanPool"], extra["MaxPool"]):
        layer = {extra["MeanPool"]: nn.MeanPool, extra["MaxPool"]: nn.MaxPool}[type(mod)]()
    elif type(mod) in (torch.nn.BatchNorm1d, extra["BatchNorm"]):
        if mod.affine and mod.bias is None:
            raise ValueError("torch.nn.BatchNorm1d with affine=True and bias=False is not supported (rnnfast's "
                             "BatchNorm learns both weight and bias, or neither)")
        layer = nn.BatchNorm(mod.num_features, momentum=mod.momentum, eps=mod.eps, affine=mod.affine,
                             track_running_stats=mod.track_running_stats, dtype=_norm_dtype(mod, name))
    elif type(mod) in (torch.nn.LayerNorm, extra["LayerNorm"]):
        layer = nn.LayerNorm(mod.normalized_shape, eps=mod.eps, elementwise_affine=mod.elementwise_affine,
                             bias=mod.bias is not None, dtype=_norm_dtype(mod, name))
    else:
        raise ValueError(f"unsupported torch module {type(mod).__name__}; from_torch converts nn.LSTM, nn.GRU, "
                         "nn.RNN, nn.Linear, nn.Embedding, nn.Dropout, nn.BatchNorm1d, nn.LayerNorm and "
                         "nn.Sequential of them (and to_torch's Sequence, LastStep, MeanPool, MaxPool, BatchNorm, "
                         "LayerNorm)")
    sd = mod.state_dict()
    if sd:
        layer.load_state_dict(_numpy_state(sd))
    return layer.train(bool(mod.training))


def _norm_dtype(mod: Any, name: str) -> np.dtype:
    """The dtype of a torch norm's weights or statistics (float32 when it has neither)."""
    held = [t for t in (mod.weight, getattr(mod, "running_mean", None)) if t is not None]
    return float_dtype(held[0].dtype, name) if held else np.dtype(np.float32)


def _flat_modules(torch: Any, module: Any) -> list:
    if isinstance(module, torch.nn.Sequential):
        return [m for inner in module for m in _flat_modules(torch, inner)]
    if isinstance(module, _modules()["Sequence"]):
        return list(module.layers)
    return [module]


def from_torch(module: Any) -> Any:
    """An rnnfast model computing what a PyTorch module computes, with the same weights.

    Parameters
    ----------
    module : torch.nn.Module
        ``nn.LSTM`` (``proj_size`` included), ``nn.GRU``, ``nn.RNN``, ``nn.Linear``, ``nn.Embedding``,
        ``nn.Dropout``, ``nn.BatchNorm1d`` (features on the last axis; ``bias=False`` refused), ``nn.LayerNorm``,
        an ``nn.Sequential`` of them, or what :func:`to_torch` returns. float32 or float64 weights.

    Returns
    -------
    rnnfast layer or rnnfast.nn.Sequential
        The layer (same settings, dtype and training mode), or a Sequential for a Sequential / Sequence.
        An ``nn.Sequential`` holding recurrent layers cannot run in torch (they return tuples); rnnfast's
        Sequential passes each recurrent layer's output on, which is what such a model means.

    Raises
    ------
    TypeError
        Not a torch module.
    ValueError
        Unsupported modules or options (``proj_size``, Embedding ``max_norm``, half-precision weights).
    """
    from rnnfast import nn

    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    layers = [_rf_layer(torch, m) for m in _flat_modules(torch, module)]
    if isinstance(module, (torch.nn.Sequential, _modules()["Sequence"])):
        return nn.Sequential(*layers).train(bool(module.training))
    return layers[0]
