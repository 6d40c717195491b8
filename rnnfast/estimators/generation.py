"""Sampling token sequences from an estimator trained as a language model: ``model.generate(prompt, n)``.

A language model here is a token estimator (``X`` integer ids) with one class label per step (``y`` of
shape (N, T)) drawn from the same ids as its inputs: the label at step t is the token that follows
step t, so a sampled label is fed back as the next input. The prompt goes through the network once, in
one whole-sequence call that keeps the recurrent state; then each new token costs one :meth:`step` of
the recurrent layer (exact: the same numbers as re-running the whole sequence) and one output layer.

:class:`TokenStream` does the stepping and :func:`generate` the sampling; :class:`GenerationMixin` gives
the estimators their ``generate`` method. Nothing of the estimator is changed (the network is put in
inference mode, as ``predict`` does), so several threads may generate from one fitted model at once.
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from rnnfast import nn
from rnnfast._validation import check_int, check_real, check_seed
from rnnfast.nn.stateful import unwrap
from rnnfast.quantize import QuantizedRNN

__all__ = ["GenerationMixin", "TokenStream", "generate", "GREEDY_TEMPERATURE"]

#: Temperatures below this take the most probable token (no random draw): the limit of sampling as the
#: temperature goes to 0.
GREEDY_TEMPERATURE = 1e-6

_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN, QuantizedRNN)


def _check_language_model(est: Any) -> None:
    """Refuse, with the reason, an estimator whose outputs cannot be fed back as its next input."""
    est._check_fitted()
    who = type(est).__name__
    if getattr(est, "input_kind_", None) != "tokens":
        raise ValueError(f"generate needs a language model: this {who} was fitted on float features, "
                         "not token ids")
    if getattr(est, "task_", None) != "classification" or not est.per_step_:
        kind = "per-sequence targets" if not est.per_step_ else "regression targets"
        raise ValueError(f"generate needs a language model (a class label per step, the next token); this "
                         f"{who} was fitted on {kind}")
    classes = est.classes_
    if classes.dtype.kind not in "iu" or classes.min() < 1 or classes.max() >= est.vocab_size_:
        raise ValueError(f"generate needs per-step labels that are token ids of the input vocabulary "
                         f"[1, {est.vocab_size_}); this {who}'s classes_ are not")
    if any(getattr(unwrap(layer), "bidirectional", False) for layer in est.model_.layers):
        raise ValueError(f"generate cannot run a bidirectional {who}: its reverse direction reads the future")


class TokenStream:
    """The network of a fitted language-model estimator, advanced token by token.

    ``logits = stream.prime(prompt)`` runs the prompt through the network in one call and keeps each
    recurrent layer's state; ``logits = stream.advance(token_id)`` then feeds one more token with the
    layers' ``step``. Both return the next token's unnormalised scores over ``classes_`` (float64, (C,)).

    Parameters
    ----------
    estimator : a fitted token estimator with per-step class labels (see :func:`generate`)
    """

    def __init__(self, estimator: Any) -> None:
        _check_language_model(estimator)
        self.classes = estimator.classes_
        self.vocab_size = int(estimator.vocab_size_)
        self.model = estimator.model_
        self.model.eval()
        self.layers = [unwrap(layer) for layer in self.model.layers]
        self.states: List[Any] = [None] * len(self.layers)

    def prime(self, prompt: np.ndarray) -> np.ndarray:
        """Run the prompt (1-D ids) from zero states; the scores of the token after it."""
        x: Any = prompt[None, :]
        for i, layer in enumerate(self.layers):
            if isinstance(layer, _RECURRENT):
                x, self.states[i] = layer.forward(x)
            else:
                x = layer.forward(x)
        return np.asarray(x[0, -1], dtype=np.float64)

    def advance(self, token: int) -> np.ndarray:
        """Feed one token id; the scores of the token after it."""
        x: Any = np.array([token], dtype=np.int64)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, _RECURRENT):
                x, self.states[i] = layer.step(x, self.states[i])
            else:
                x = layer.forward(x)
        return np.asarray(x[0], dtype=np.float64)


def _check_prompt(prompt: Any, vocab_size: int) -> np.ndarray:
    arr = np.asarray(prompt)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"prompt must be a sequence of integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"prompt must be a non-empty 1-D sequence of token ids, got shape {arr.shape}")
    if arr.min() < 1 or arr.max() >= vocab_size:
        bad = arr.min() if arr.min() < 1 else arr.max()
        raise ValueError(f"prompt token ids must be in [1, {vocab_size}) (0 is padding), got {bad}")
    return arr.astype(np.int64)


def _sampler(temperature: float, top_k: Optional[int], rng: np.random.Generator):
    """``pick(logits) -> class index``: greedy, or a draw from the tempered (top-k) softmax."""
    def pick(logits: np.ndarray) -> int:
        if temperature < GREEDY_TEMPERATURE:
            return int(np.argmax(logits))
        z = logits / temperature
        if top_k is not None and top_k < z.size:
            kth = np.partition(z, z.size - top_k)[z.size - top_k]
            z = np.where(z >= kth, z, -np.inf)
        p = np.exp(z - z.max())
        return int(rng.choice(z.size, p=p / p.sum()))
    return pick


def generate(estimator: Any, prompt: Any, n_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
             random_state: Any = None) -> np.ndarray:
    """Sample ``n_tokens`` tokens that continue ``prompt`` from a language-model estimator.

    Parameters
    ----------
    estimator : a fitted LSTM / GRU / RNN estimator
        Fitted on token ids ``X`` with per-step class labels ``y`` that are ids of the same vocabulary
        (the next token of each step), unidirectional.
    prompt : sequence of int
        Token ids in [1, ``vocab_size_``); 0 is padding.
    n_tokens : int >= 0
    temperature : float > 0, default 1.0
        Divides the scores before the softmax: below 1 sharper, above 1 flatter. Below
        :data:`GREEDY_TEMPERATURE` (1e-6) the most probable token is taken (greedy decoding, no draw).
    top_k : int >= 1, optional
        Sample among the ``top_k`` most probable tokens only (ties at the k-th score are all kept).
    random_state : int, numpy.random.Generator or None
        The same int gives the same tokens.

    Returns
    -------
    numpy.ndarray (n_tokens,)
        The generated tokens, labels from ``classes_`` (the ids the estimator was fitted with).

    Raises
    ------
    ValueError
        The estimator is not a language model (features input, per-sequence or regression targets, labels
        that are not input ids, a bidirectional network), or a bad argument.
    """
    n_tokens = check_int(n_tokens, "n_tokens", 0)
    temperature = check_real(temperature, "temperature", 0.0, float("inf"), closed="neither")
    top_k = check_int(top_k, "top_k", 1, allow_none=True)
    rng = np.random.default_rng(check_seed(random_state, "random_state"))
    stream = TokenStream(estimator)
    ids = _check_prompt(prompt, stream.vocab_size)
    pick = _sampler(temperature, top_k, rng)
    out = np.empty(n_tokens, dtype=stream.classes.dtype)
    if n_tokens == 0:
        return out
    logits = stream.prime(ids)
    for i in range(n_tokens):
        out[i] = stream.classes[pick(logits)]
        if i + 1 < n_tokens:
            logits = stream.advance(int(out[i]))
    return out


class GenerationMixin:
    """Adds :meth:`generate` to the token estimators."""

    def generate(self, prompt: Any, n_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 random_state: Any = None) -> np.ndarray:
        """Sample tokens continuing ``prompt`` (a model fitted as a language model: token ids in, the next
        token id as the per-step label). See :func:`rnnfast.estimators.generation.generate`.

        Parameters
        ----------
        prompt : sequence of int token ids
        n_tokens : int >= 0
        temperature : float > 0, default 1.0
            Below 1e-6: greedy (the most probable token each step).
        top_k : int >= 1, optional
        random_state : int, numpy.random.Generator or None

        Returns
        -------
        numpy.ndarray (n_tokens,) of labels from ``classes_``
        """
        return generate(self, prompt, n_tokens, temperature, top_k, random_state)
