"""What a fitted estimator keeps in memory and in a pickle.

A fitted estimator's network keeps buffers for reuse between calls (workspaces, batch layouts, gradient
arrays, the carried state of its last batch); none of it is part of what the estimator learnt. Pickling
(joblib, ``GridSearchCV(n_jobs=...)``, MLflow) therefore keeps what a saved file keeps, the weights and
the optimizer's state as arrays, and builds the network again when unpickled: the copy predicts
identically and can be trained further (``warm_start``, ``partial_fit``) exactly as the original.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from rnnfast import _memory
from rnnfast.estimators import params as _params
from rnnfast.estimators.network import build_model, build_optimizer, optimizer_name

__all__ = ["MemoryMixin", "rebuild_network"]


def rebuild_network(est, p: _params.Params, model_state: dict, optimizer_state: Optional[dict]) -> None:
    """Build ``est``'s network for its fitted specs and ``p``, load ``model_state`` into it, and an optimizer:
    of the class ``optimizer_state`` names with that state, or a fresh ``p.optimizer`` when it is None (a
    file saved without its optimizer); the network is left in eval mode."""
    inputs, targets = est._specs
    est.model_ = build_model(est._layer_cls, p, inputs, targets.per_step, targets.n_outputs, est.seed_)
    est.model_.load_state_dict(model_state)
    name = p.optimizer if optimizer_state is None else optimizer_name(optimizer_state["optimizer"])
    est.optimizer_ = build_optimizer(est.model_, dataclasses.replace(p, optimizer=name))
    if optimizer_state is not None:
        est.optimizer_.load_state_dict(optimizer_state)
    est.model_.eval()


class MemoryMixin:
    """``release_memory`` and pickling without transient state, for the estimators."""

    def release_memory(self) -> None:
        """Free the buffers the network keeps for reuse between calls.

        A large ``predict`` leaves each recurrent layer holding workspaces as large as that request until
        this runs (or bound them for good with :func:`rnnfast.set_workspace_limit`). Results do not change;
        the next call allocates what it needs again. Freed memory is handed back to the operating system
        (glibc's ``malloc_trim`` where available). Does nothing on an unfitted estimator.
        """
        model = self.__dict__.get("model_")
        if model is not None:
            model.release_memory()
        _memory.return_freed_memory()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        optimizer = state.pop("optimizer_", None)
        if model is not None:
            precision = state.get("precision_")
            if precision is not None:  # a quantized copy (rnnfast.quantize): its float32 weights, no optimizer
                from rnnfast.quantize import float_state
                state["_model_state"], state["_optimizer_state"] = float_state(model.state_dict(), precision), None
            else:
                state["_model_state"] = model.state_dict()
                state["_optimizer_state"] = None if optimizer is None else optimizer.state_dict()
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        model_state = state.pop("_model_state", None)
        optimizer_state = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if model_state is not None:
            p = _params.validate({**self.get_params(), **self._arch_})  # type: ignore[attr-defined]
            rebuild_network(self, p, model_state, optimizer_state)
            if self.__dict__.get("precision_") is not None:
                from rnnfast.quantize import requantize_estimator
                requantize_estimator(self)
