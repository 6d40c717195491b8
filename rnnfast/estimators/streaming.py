"""Streaming prediction: one time step at a time, with a state the caller owns.

::

    state = None
    for x_t in stream:                      # x_t: (B, F) features, or (B,) token ids
        y_t, state = model.predict_step(x_t, state)

``y_t`` is what :meth:`predict` gives for the sequences seen so far: at step ``t`` of a per-step model,
the prediction for that step; for a per-sequence model, the prediction had the sequences ended at ``t``
(``predict(X[:, :t + 1])``; mean and max pooling run as a sum and a maximum in the state). The recurrent
layers' exact ``step`` does the work, so the numbers are those of the whole-sequence call to float
rounding. Nothing is stored on the model: any number of streams (threads) can share one estimator, and a
state can be copied to branch a stream.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple, Union

import numpy as np

from rnnfast import nn
from rnnfast.estimators.inputs import TOKENS
from rnnfast.estimators.targets import CLASSIFICATION, predictions, probabilities
from rnnfast.nn.module import to_numpy
from rnnfast.nn.stateful import unwrap
from rnnfast.quantize import QuantizedRNN

__all__ = ["StreamState", "StreamingMixin", "stream_step"]

_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN, QuantizedRNN)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamState:
    """The state of a batch of streams between two :meth:`predict_step` calls (made by it; never changed
    in place, so keeping an old one and stepping from it again branches the stream).

    Attributes
    ----------
    recurrent : ndarray (num_layers, B, H), or for LSTM a tuple (h, c) of such arrays
        The recurrent layer's state after the last step.
    pooled : ndarray (B, H) or None
        Mean pooling: the running sum of the recurrent outputs (float64); max pooling: their running
        maximum; None otherwise.
    steps : int
        Time steps seen.
    batch_size : int
        Streams in the batch (B); a state from a single-row call has 1.
    """

    recurrent: Any
    pooled: Optional[np.ndarray]
    steps: int
    batch_size: int


def _network(model) -> list:
    """The model's layers, checked for streaming: the recurrent layer must be unidirectional."""
    layers = [unwrap(layer) for layer in model.layers]
    for layer in layers:
        if isinstance(layer, _RECURRENT) and layer.bidirectional:
            raise ValueError("predict_step needs a unidirectional model: a bidirectional layer's reverse "
                             "direction reads the sequence from its end, which a stream has not seen yet")
        if not isinstance(layer, _RECURRENT + (nn.Embedding, nn.LastStep, nn.MeanPool, nn.MaxPool, nn.Dropout,
                                               nn.Linear)):
            raise TypeError(f"predict_step cannot stream through a {type(layer).__name__} layer")
    return layers


def _pool(layer, y: np.ndarray, pooled: Optional[np.ndarray], steps: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A pooling layer's output after one more step ``y`` (B, H), and its new running value."""
    if isinstance(layer, nn.MeanPool):
        total = y.astype(np.float64) if pooled is None else pooled + y
        return (total / (steps + 1)).astype(y.dtype), total
    if isinstance(layer, nn.MaxPool):
        top = y if pooled is None else np.maximum(pooled, y)
        return top, top
    return y, None  # LastStep: the output at the current step


def stream_step(model, x_t: np.ndarray, state: Optional[StreamState], n_threads: Optional[int] = None):
    """One step of an estimator's network (a Sequential of the layers :mod:`rnnfast.estimators.network`
    builds) over ``x_t`` (B, F) features or (B,) token ids: (raw outputs (B, n_outputs), new state)."""
    x = x_t
    pooled, new_pooled = None if state is None else state.pooled, None
    steps = 0 if state is None else state.steps
    new_rec = None
    for layer in _network(model):
        if isinstance(layer, nn.Dropout):
            continue  # identity at inference
        if isinstance(layer, _RECURRENT):
            x, new_rec = layer.step(x, None if state is None else state.recurrent, n_threads=n_threads)
        elif isinstance(layer, (nn.LastStep, nn.MeanPool, nn.MaxPool)):
            x, new_pooled = _pool(layer, x, pooled, steps)
        else:
            x = layer.forward(x)
    return x, StreamState(new_rec, new_pooled, steps + 1, x.shape[0])


class StreamingMixin:
    """``predict_step`` / ``predict_proba_step`` for the estimators (see :mod:`rnnfast.estimators.streaming`)."""

    def _step_input(self, x_t: Any, state: Optional[StreamState]) -> Tuple[np.ndarray, bool]:
        """``x_t`` checked against the fitted input: (rows as the network takes them, unbatched)."""
        inputs = self._specs[0]  # type: ignore[attr-defined]
        try:
            x = np.asarray(to_numpy(x_t))
        except (TypeError, ValueError) as e:
            raise TypeError(f"x_t must be a numeric array: {e}") from None
        if inputs.kind == TOKENS:
            if x.dtype.kind not in "iu":
                raise TypeError(f"x_t must hold integer token ids for this token model, got dtype {x.dtype}")
            if x.ndim > 1:
                raise ValueError(f"x_t must be (B,) token ids, or one id, got shape {x.shape}")
            if x.size and (x.min() < 1 or x.max() >= inputs.vocab_size):
                raise ValueError(f"token ids must be in [1, {inputs.vocab_size}) (0 is padding), got "
                                 f"{x.min() if x.min() < 1 else x.max()}")
            unbatched, x = x.ndim == 0, x.reshape(-1).astype(np.intp)
        else:
            if x.dtype.kind not in "iufb":
                raise TypeError(f"x_t must hold real numbers, got dtype {x.dtype}")
            F = inputs.n_features_in
            if x.ndim not in (1, 2) or x.shape[-1] != F:
                raise ValueError(f"x_t must be (B, {F}) features, or ({F},) for one sequence, got shape {x.shape}")
            unbatched, x = x.ndim == 1, np.atleast_2d(x).astype(self._fitted_dtype())  # type: ignore[attr-defined]
            if not np.all(np.isfinite(x)):
                raise ValueError("x_t contains NaN or infinity")
        if x.shape[0] == 0:
            raise ValueError("x_t must hold at least one row")
        if state is not None:
            if not isinstance(state, StreamState):
                raise TypeError(f"state must be a StreamState from predict_step, or None; got {type(state).__name__}")
            if state.batch_size != x.shape[0]:
                raise ValueError(f"x_t has {x.shape[0]} rows but the state is of a batch of {state.batch_size}")
        return x, unbatched

    def _stream(self, x_t: Any, state: Optional[StreamState]):
        self._check_fitted()  # type: ignore[attr-defined]
        x, unbatched = self._step_input(x_t, state)
        out, new_state = stream_step(self.model_, x, state,  # type: ignore[attr-defined]
                                     n_threads=self._validate_params().n_threads)  # type: ignore[attr-defined]
        return out, new_state, unbatched

    def predict_step(self, x_t: Any, state: Optional[StreamState] = None) -> Tuple[Union[np.ndarray, Any], StreamState]:
        """Predict from one more time step of a batch of sequences (streaming inference).

        Parameters
        ----------
        x_t : array (B, F) of features, or (B,) token ids for token models
            Step ``t`` of B sequences; (F,) (or one id) for a single sequence, whose ``y_t`` is then
            unbatched as well.
        state : StreamState, optional
            What the previous call returned for these sequences; None starts them.

        Returns
        -------
        y_t : ndarray (B,) or (B, k), or one label / value for a single sequence
            Per-step models: the prediction for step ``t``, as ``predict(X)[:, t]``. Per-sequence models:
            the prediction were the sequences to end at ``t``, as ``predict(X[:, :t + 1])``.
        state : StreamState
            A new state to pass with step ``t + 1``; ``state`` itself is not changed.

        Raises
        ------
        ValueError
            A bidirectional model (the reverse direction needs the whole sequence), or ``x_t`` that does not
            fit the model or the state.
        """
        out, new_state, unbatched = self._stream(x_t, state)
        y = predictions(out, self._specs[1])  # type: ignore[attr-defined]
        return (y[0] if unbatched else y), new_state

    def predict_proba_step(self, x_t: Any, state: Optional[StreamState] = None) -> Tuple[np.ndarray, StreamState]:
        """:meth:`predict_step` giving class probabilities (B, n_classes) (classification), columns in
        the order of ``classes_``; as ``predict_proba`` would for the sequences seen so far."""
        self._check_fitted()  # type: ignore[attr-defined]
        if self.task_ != CLASSIFICATION:  # type: ignore[attr-defined]
            raise AttributeError("predict_proba_step is for classification; this model was fitted for regression")
        out, new_state, unbatched = self._stream(x_t, state)
        z = probabilities(out, np.ones(out.shape[0], np.int64), per_step=False)
        return (z[0] if unbatched else z), new_state
