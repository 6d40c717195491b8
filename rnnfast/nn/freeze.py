"""``rf.nn.freeze(model)``: a frozen copy of a model for inference, whose weights are read-only constants.

As ``torch.jit.freeze`` (or an ONNX Runtime session, which packs its weights once when made), a frozen model
is a snapshot: later changes to the original do not reach it, and its own weights cannot change (every
parameter array is read-only: writing one, ``load_state_dict`` or training raise). What that buys: a float32
recurrent layer on a kernel that packs its weights into the layout its per-step products read (the packed,
few-rows and batch-1 kernels) packs them at its first call only, and trusts them after without checking
them against the weights; an unfrozen layer keeps its packs too but checks them at every call by a digest
of the weights, one read of them (rnnfast.nn._packs). Results are bit for bit those of the model it was
frozen from.

Making a weight writeable again (``a.flags.writeable = True``) or replacing a parameter array ends the trust:
the layer then checks its packs at every call as any other.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator, TypeVar

from rnnfast.nn.module import Module, aligned_empty

__all__ = ["freeze", "is_frozen"]

M = TypeVar("M")


def _modules(obj: Any, seen: set) -> Iterator[Module]:
    """Every Module reachable from ``obj`` through attributes, lists, tuples and dicts (each once)."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Module):
        yield obj
    if isinstance(obj, (list, tuple)):
        items = obj
    elif isinstance(obj, dict):
        items = obj.values()
    elif hasattr(obj, "__dict__") and (isinstance(obj, Module) or hasattr(obj, "named_parameters")):
        items = vars(obj).values()
    else:
        return
    for item in items:
        if isinstance(item, (Module, list, tuple, dict)) or hasattr(item, "named_parameters"):
            yield from _modules(item, seen)


def freeze(model: M) -> M:
    """A frozen copy of ``model`` (any rnnfast.nn layer, Sequential or Seq2SeqModel, in eval mode; or a fitted
    estimator, whose network ``model_`` is frozen) for inference.

    Parameters
    ----------
    model : rnnfast.nn layer or model, or fitted estimator
        Left as it is.

    Returns
    -------
    A deep copy whose parameter arrays are read-only and whose recurrent layers keep their packed weights
    from call to call (see the module docstring). ``train()`` on it raises RuntimeError, ``load_state_dict``
    and writing a weight raise ValueError; so does ``partial_fit`` on a frozen estimator (``fit`` builds a
    new network, which is not frozen).

    Examples
    --------
    >>> import rnnfast as rf
    >>> lstm = rf.nn.LSTM(8, 16, seed=0)
    >>> served = rf.nn.freeze(lstm)
    >>> [a.flags.writeable for _, a in served.named_parameters()][:2]
    [False, False]
    """
    net = getattr(model, "model_", None) if not hasattr(model, "named_parameters") else model
    if not hasattr(net, "named_parameters"):
        raise TypeError(f"freeze takes an rnnfast.nn layer or model or a fitted estimator, got {type(model).__name__}")
    frozen = copy.deepcopy(model)
    net = frozen if net is model else frozen.model_
    net.eval()
    for m in _layers(net):
        for name, a in m._params.items():
            # (a copy's arrays start 16 bytes past a cache line, which slows the kernels: see aligned_empty;
            # nothing but the copy holds them, so they can be replaced)
            m._params[name] = b = aligned_empty(a.shape, a.dtype)
            b[...] = a
            b.flags.writeable = False
        m._frozen = dict(m._params)
    return frozen


def _layers(model: Any) -> list:
    """The layers holding parameters (``_params``) in ``model``."""
    return [m for m in _modules(model, set()) if isinstance(getattr(m, "_params", None), dict)]


def is_frozen(model: Any) -> bool:
    """Whether every parameter of ``model`` is one its :func:`freeze` made read-only and still is."""
    net = model if hasattr(model, "named_parameters") else getattr(model, "model_", None)
    mods = [m for m in _layers(net) if m._params] if net is not None else []
    return bool(mods) and all(m._frozen and all(m._params.get(k) is a and not a.flags.writeable
                                                for k, a in m._frozen.items()) for m in mods)
