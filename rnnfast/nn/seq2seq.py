"""Sequence-to-sequence blocks: an encoder, an attention decoder and the model joining them, with greedy and
beam decoding.

- :class:`Encoder`: Embedding -> dropout -> stacked, optionally bidirectional LSTM/GRU over the sources'
  lengths; returns every step's output (the *memory* the decoder attends to) and the final states.
- :class:`AttentionDecoder`: Embedding -> dropout -> stacked LSTM/GRU (teacher-forced: one kernel call over
  all target steps) -> attention of every decoder output over the memory's valid steps at once (Luong's
  "general" / "dot" scores or Bahdanau's additive score) -> ``tanh(W [context; h])`` -> dropout -> Linear to
  the vocabulary. The attention reads the decoder's outputs and does not feed back into the recurrence
  (Luong et al. 2015 without input feeding), so training runs no Python per time step. :meth:`~AttentionDecoder.step`
  advances one step from a state, for decoding.
- :class:`Seq2SeqModel`: encoder, a bridge ``tanh(Linear(final encoder states))`` giving the decoder's initial
  hidden state, and the decoder; ``forward(src, src_lengths, tgt_in, tgt_lengths) -> logits`` and
  ``backward(dlogits)``, with parameters named ``"encoder.rnn.weight_ih_l0"``, ``"decoder.out.bias"``...
  For training, ``forward_loss(..., targets) -> loss`` then ``backward()`` is the same step without the
  (B, T, vocabulary) logits: the output layer and the cross-entropy run fused
  (:meth:`rnnfast.nn.Linear.cross_entropy`) on the non-padded target steps only; it was 46 % of a step on
  the translation example, and took a training step from 102 to 63 CPU ms there.
- :func:`greedy_decode`, :func:`beam_decode`: batched over sequences (the beam over batch * beam rows), one
  Python iteration per output step; :func:`sequence_log_prob` scores given outputs.

Everything follows the layer protocol of :mod:`rnnfast.nn.module` (``named_parameters``, ``grads``,
``zero_grad``, ``train``/``eval``, ``state_dict``/``load_state_dict``), so the optimizers and
:class:`rnnfast.train.Trainer` take these models as they take a Sequential.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from rnnfast._typing import ArrayLike, DTypeLike, Seed
from rnnfast._validation import check_bool, check_int, check_option, check_real
from rnnfast.nn.layers import Attention, Dropout, Embedding, Linear
from rnnfast.nn.module import Module, check_float_dtype, check_lengths, make_rng, validate_state_dict
from rnnfast.nn.recurrent import GRU, LSTM

__all__ = ["Encoder", "AttentionDecoder", "Seq2SeqModel", "greedy_decode", "beam_decode", "sequence_log_prob",
           "ATTENTION_KINDS"]

#: The decoder's ``attention`` names -> :class:`rnnfast.nn.Attention` kinds ("luong" is Luong's "general").
ATTENTION_KINDS = {"luong": "general", "general": "general", "dot": "dot", "bahdanau": "additive",
                   "additive": "additive", None: None}
_CELLS = {"lstm": LSTM, "gru": GRU}


class _Composite(Module):
    """Named child layers seen as one layer: parameters ``"<child>.<name>"``, their gradients, modes and
    state dicts (the children own the arrays, as in :class:`rnnfast.nn.Sequential`)."""

    def __init__(self, children: dict) -> None:
        # no Module.__init__: the parameters and gradients live in the children (``grads`` is a property)
        self.training = True
        self._children = dict(children)

    def named_parameters(self) -> list:
        """(``"<child>.<name>"``, live array) pairs of every child's parameters."""
        return [(f"{n}.{k}", p) for n, c in self._children.items() for k, p in c.named_parameters()]

    @property
    def grads(self) -> dict:  # type: ignore[override]
        """Every child's live gradient arrays, keyed as :meth:`state_dict`."""
        return {f"{n}.{k}": g for n, c in self._children.items() for k, g in c.grads.items()}

    def state_dict(self) -> dict:
        """Copies of all parameters, keyed ``"<child>.<name>"``."""
        return {k: p.copy() for k, p in self.named_parameters()}

    def load_state_dict(self, state_dict: Any) -> None:
        """Load all parameters (validated first: nothing changes on a mismatch)."""
        new = validate_state_dict(state_dict, dict(self.named_parameters()))
        for n, c in self._children.items():
            c.load_state_dict({k[len(n) + 1:]: v for k, v in new.items() if k.split(".", 1)[0] == n})

    def zero_grad(self) -> None:
        """Zero every child's gradients."""
        for c in self._children.values():
            c.zero_grad()

    def train(self, mode: bool = True) -> "_Composite":
        """Training (``mode=True``) or eval mode for every child. Returns self."""
        self.training = check_bool(mode, "mode")
        for c in self._children.values():
            c.train(self.training)
        return self

    def release_memory(self) -> None:
        """Drop what the children keep between calls."""
        for c in self._children.values():
            c.release_memory()

    def __getattr__(self, name: str) -> Any:
        children = self.__dict__.get("_children")
        if children is not None and name in children:
            return children[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({n}): {c!r}" for n, c in self._children.items())
        return f"{type(self).__name__}(\n{inner}\n)"


def _seeds(seed: Seed, n: int) -> list:
    """``n`` independent Generators from ``seed``."""
    return make_rng(seed).spawn(n)


def _check_ids(ids: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D (batch, time) with at least one row and step, got shape {arr.shape}")
    return arr


def _rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool,
         dtype: np.dtype, seed: Seed) -> Module:
    cls = _CELLS[check_option(cell, "cell", tuple(_CELLS))]
    return cls(input_size, hidden_size, num_layers, dropout=dropout, bidirectional=bidirectional, dtype=dtype,
               seed=seed)


# ---------------------------------------------------------------------------------------- Encoder
class Encoder(_Composite):
    """Token ids -> Embedding -> dropout -> stacked (bidirectional) LSTM/GRU over each sequence's length.

    Parameters
    ----------
    vocab_size, embedding_dim, hidden_size : int
    num_layers : int, default 1
    cell : {"lstm", "gru"}, default "lstm"
    bidirectional : bool, default True
    dropout : float in [0, 1), default 0
        On the embeddings and between recurrent layers, in training mode.
    padding_idx : int or None, default 0
        The padding id: its embedding is zero and gets no gradient.
    dtype : float32 (default) or float64
    seed : int or numpy Generator, optional

    Attributes
    ----------
    output_size : int
        Features of every output step: ``hidden_size * (2 if bidirectional else 1)``.

    Examples
    --------
    >>> enc = Encoder(20, 8, 16, seed=0)
    >>> memory, state = enc(np.array([[4, 5, 6], [7, 8, 0]]), lengths=[3, 2])
    >>> memory.shape, state[0].shape
    ((2, 3, 32), (2, 2, 16))
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int = 1,
                 cell: str = "lstm", bidirectional: bool = True, dropout: float = 0.0, padding_idx: Optional[int] = 0,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        dtype = check_float_dtype(dtype)
        dropout = check_real(dropout, "dropout", 0.0, 1.0, closed="left")
        bidirectional = check_bool(bidirectional, "bidirectional")
        g = _seeds(seed, 3)
        super().__init__({
            "embedding": Embedding(vocab_size, embedding_dim, padding_idx=padding_idx, dtype=dtype, seed=g[0]),
            "dropout": Dropout(dropout, seed=g[1]),
            "rnn": _rnn(cell, embedding_dim, hidden_size, num_layers, dropout, bidirectional, dtype, g[2]),
        })
        self.cell, self.dtype = cell, dtype
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, ids: ArrayLike, *, lengths: ArrayLike | None = None,
                n_threads: int | None = None) -> tuple[np.ndarray, Any]:
        """(B, S) ids -> ``(outputs (B, S, output_size), final state)``; the state as the recurrent layer's:
        ``(h_n, c_n)`` for LSTM, ``h_n`` for GRU, each (num_layers * D, B, hidden_size)."""
        ids = _check_ids(ids, "ids")
        x = self.dropout(self.embedding(ids))
        return self.rnn(x, None, lengths=lengths, n_threads=n_threads)

    def backward(self, doutputs: ArrayLike, dstate: Any = None, *, n_threads: int | None = None) -> None:
        """Backpropagate the gradients of the outputs and (optionally) the final state; returns None."""
        dx, _ = self.rnn.backward(doutputs, dstate, n_threads=n_threads)
        self.embedding.backward(self.dropout.backward(dx))


# ---------------------------------------------------------------------------------------- Decoder
class AttentionDecoder(_Composite):
    """Teacher-forced decoder with attention over a memory (the encoder's outputs); see the module docstring.

    Parameters
    ----------
    vocab_size, embedding_dim, hidden_size : int
    memory_size : int
        Features of the memory (the encoder's ``output_size``).
    num_layers : int, default 1
    cell : {"lstm", "gru"}, default "lstm"
    attention : {"luong", "general", "dot", "bahdanau", "additive", None}, default "luong"
        The score: Luong's "general" (``h . W m``; "luong" is this), "dot" (``h . m``, needs
        ``hidden_size == memory_size``) or Bahdanau's additive ``v . tanh(W_q h + W_k m)``, always with the
        decoder's output at the step as the query. None: no attention, logits from the decoder's outputs.
    dropout : float in [0, 1), default 0
        On the embeddings, between recurrent layers and before the output layer.
    padding_idx : int or None, default 0
    dtype : float32 (default) or float64
    seed : int or numpy Generator, optional

    Notes
    -----
    ``forward(ids, memory, memory_lengths=None, state=None, lengths=None)`` returns logits (B, T, vocab_size);
    ``backward(dlogits)`` returns ``(dmemory, dstate)``; :meth:`step` decodes one step (eval mode).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, memory_size: int,
                 num_layers: int = 1, cell: str = "lstm", attention: Optional[str] = "luong", dropout: float = 0.0,
                 padding_idx: Optional[int] = 0, dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        dtype = check_float_dtype(dtype)
        dropout = check_real(dropout, "dropout", 0.0, 1.0, closed="left")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {list(ATTENTION_KINDS)}, got {attention!r}")
        kind = ATTENTION_KINDS[attention]
        H, M = check_int(hidden_size, "hidden_size", 1), check_int(memory_size, "memory_size", 1)
        g = _seeds(seed, 7)
        children = {
            "embedding": Embedding(vocab_size, embedding_dim, padding_idx=padding_idx, dtype=dtype, seed=g[0]),
            "dropout": Dropout(dropout, seed=g[1]),
            "rnn": _rnn(cell, embedding_dim, H, num_layers, dropout, False, dtype, g[2]),
        }
        if kind is not None:
            hid = H if kind == "additive" else None
            children["attention"] = Attention(H, M, kind=kind, hidden_size=hid, dtype=dtype, seed=g[3])
            children["combine"] = Linear(M + H, H, dtype=dtype, seed=g[4])
        children["out_dropout"] = Dropout(dropout, seed=g[5])
        children["out"] = Linear(H, vocab_size, dtype=dtype, seed=g[6])
        super().__init__(children)
        self.cell, self.kind, self.dtype = cell, kind, dtype
        self.hidden_size, self.memory_size, self.vocab_size = H, M, vocab_size

    def _combine(self, h: np.ndarray, memory: np.ndarray, memory_lengths: Optional[np.ndarray],
                 projected: Optional[np.ndarray] = None, n_threads: int | None = None) -> tuple:
        """Decoder outputs (B, T, H) or (B, H) -> ``(z, attention weights)``: ``tanh(W [context; h])``, or
        ``(h, None)`` without attention."""
        if self.kind is None:
            return h, None
        ctx, weights = self.attention(h, memory, key_lengths=memory_lengths, projected_keys=projected,
                                      n_threads=n_threads)
        return np.tanh(self.combine(np.concatenate([ctx, h], axis=-1), n_threads=n_threads)), weights

    def _features(self, ids: ArrayLike, memory: ArrayLike, memory_lengths: ArrayLike | None, state: Any,
                  lengths: ArrayLike | None, n_threads: int | None) -> tuple:
        """Teacher forcing up to the output layer: ``(z, out_dropout(z))``, both (B, T, H)."""
        ids = _check_ids(ids, "ids")
        memory = np.asarray(memory, self.dtype)
        if memory.ndim != 3 or memory.shape[0] != ids.shape[0] or memory.shape[2] != self.memory_size:
            raise ValueError(f"memory must be ({ids.shape[0]}, S, {self.memory_size}), got shape {memory.shape}")
        memory_lengths = check_lengths(memory_lengths, memory.shape[0], memory.shape[1], "memory_lengths")
        x = self.dropout(self.embedding(ids))
        h, _ = self.rnn(x, state, lengths=lengths, n_threads=n_threads)
        z, _ = self._combine(h, memory, memory_lengths, n_threads=n_threads)
        return z, self.out_dropout(z)

    def forward(self, ids: ArrayLike, memory: ArrayLike, memory_lengths: ArrayLike | None = None, state: Any = None,
                lengths: ArrayLike | None = None, n_threads: int | None = None) -> np.ndarray:
        """Teacher-forced logits (B, T, vocab_size) for the input ids (B, T) (``<s>`` then the target but its
        last token), from ``state`` (zeros when None); ``lengths`` are the valid steps of ``ids``."""
        z, zd = self._features(ids, memory, memory_lengths, state, lengths, n_threads)
        self._keep((z, None))
        return self.out(zd, n_threads=n_threads)

    def forward_loss(self, ids: ArrayLike, memory: ArrayLike, memory_lengths: ArrayLike | None, state: Any,
                     lengths: ArrayLike | None, targets: ArrayLike, *, ignore_index: int = 0,
                     label_smoothing: float = 0.0, n_threads: int | None = None) -> float:
        """Teacher forcing and the mean cross-entropy against ``targets`` (B, T) at once, training mode only.

        The output layer and the loss run only on the steps whose target is not ``ignore_index``
        (:meth:`rnnfast.nn.Linear.cross_entropy`, which also adds the output layer's gradients);
        the result equals ``CrossEntropy(ignore_index=ignore_index, label_smoothing=label_smoothing)(forward(...),
        targets)[0]`` up to float rounding. Call :meth:`backward` with no ``dlogits`` next. Arguments as
        :meth:`forward`.
        """
        if not self.training:
            raise ValueError("forward_loss trains: call .train() first (forward gives the logits in eval mode)")
        targets = np.asarray(targets)
        if targets.shape != np.shape(ids):
            raise ValueError(f"targets must have the ids' shape {np.shape(ids)}, got {targets.shape}")
        z, zd = self._features(ids, memory, memory_lengths, state, lengths, n_threads)
        valid = targets != ignore_index
        value, drows = self.out.cross_entropy(zd[valid], targets[valid], label_smoothing=label_smoothing,
                                              n_threads=n_threads)
        dzd = np.zeros_like(zd)
        dzd[valid] = drows
        self._keep((z, dzd))
        return value

    def backward(self, dlogits: ArrayLike | None = None, *, n_threads: int | None = None
                 ) -> tuple[Optional[np.ndarray], Any]:
        """Gradients of the last training forward: ``(dmemory or None without attention, dstate)``.
        ``dlogits`` after :meth:`forward`; none after :meth:`forward_loss`."""
        z, dzd = self._take_cache()
        if (dzd is None) == (dlogits is None):
            raise ValueError("backward takes dlogits after forward, and none after forward_loss")
        if dzd is None:
            dzd = self.out.backward(dlogits, n_threads=n_threads)
        dz = self.out_dropout.backward(dzd)
        dmemory = None
        if self.kind is not None:
            dcat = self.combine.backward(dz * (1 - z * z), n_threads=n_threads)
            M = self.memory_size
            dq, dmemory, _ = self.attention.backward(dcat[..., :M], n_threads=n_threads)
            dh = dcat[..., M:] + dq
        else:
            dh = dz
        dx, dstate = self.rnn.backward(dh, None, n_threads=n_threads)
        self.embedding.backward(self.dropout.backward(dx))
        return dmemory, dstate

    def project(self, memory: ArrayLike, n_threads: int | None = None) -> Optional[np.ndarray]:
        """The memory's part of the attention scores (:meth:`rnnfast.nn.Attention.project_keys`), computed
        once for all the steps of a decoding; None without attention or with "dot"."""
        return None if self.kind is None else self.attention.project_keys(memory, n_threads)

    def step(self, ids: ArrayLike, memory: np.ndarray, memory_lengths: Optional[np.ndarray], state: Any = None,
             projected: Optional[np.ndarray] = None, n_threads: int | None = None) -> tuple[np.ndarray, Any]:
        """One decoding step from token ids (B,): ``(logits (B, vocab_size), new state)`` (in eval mode);
        ``projected`` is :meth:`project` of the memory (computed here when omitted)."""
        x = self.embedding(np.asarray(ids)[:, None])[:, 0]
        h, state = self.rnn.step(x, state, n_threads=n_threads)
        z, _ = self._combine(h, memory, memory_lengths, projected, n_threads)
        return self.out(self.out_dropout(z), n_threads=n_threads), state


# ---------------------------------------------------------------------------------------- the model
def _last_layer(h_n: np.ndarray, directions: int) -> np.ndarray:
    """The last layer's final states (D, B, H) as (B, D * H)."""
    last = h_n[-directions:]
    return last.transpose(1, 0, 2).reshape(last.shape[1], -1)


class Seq2SeqModel(_Composite):
    """:class:`Encoder`, bridge and :class:`AttentionDecoder`: the whole encoder-decoder (see the module
    docstring). The decoder's initial hidden state, every layer's, is ``tanh(bridge(h))`` of the encoder's
    last layer's final states (both directions concatenated); an LSTM decoder's cells start at zero.

    Parameters
    ----------
    src_vocab_size, tgt_vocab_size : int
    hidden_size : int
        Units of the decoder, and of each encoder direction.
    embedding_dim : int, default 64
    num_layers : int, default 1
        Of the encoder and of the decoder.
    cell, attention, dropout, padding_idx, dtype : as :class:`AttentionDecoder`
    bidirectional_encoder : bool, default True
    seed : int or numpy Generator, optional

    Examples
    --------
    >>> m = Seq2SeqModel(10, 12, 16, embedding_dim=8, seed=0)
    >>> m(np.array([[4, 5, 6]]), None, np.array([[1, 7, 8]])).shape
    (1, 3, 12)
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, hidden_size: int, embedding_dim: int = 64,
                 num_layers: int = 1, cell: str = "lstm", bidirectional_encoder: bool = True,
                 attention: Optional[str] = "luong", dropout: float = 0.0, padding_idx: Optional[int] = 0,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        g = _seeds(seed, 3)
        enc = Encoder(src_vocab_size, embedding_dim, hidden_size, num_layers, cell, bidirectional_encoder, dropout,
                      padding_idx, dtype, g[0])
        dec = AttentionDecoder(tgt_vocab_size, embedding_dim, hidden_size, enc.output_size, num_layers, cell,
                               attention, dropout, padding_idx, dtype, g[2])
        super().__init__({"encoder": enc, "bridge": Linear(enc.output_size, hidden_size, dtype=dtype, seed=g[1]),
                          "decoder": dec})
        self.cell, self.num_layers, self.dtype = cell, num_layers, enc.dtype
        self._D = 2 if bidirectional_encoder else 1

    def _pack(self, h0: np.ndarray) -> Any:
        """The decoder's state from the bridge's output (B, H)."""
        h = np.ascontiguousarray(np.broadcast_to(h0, (self.num_layers,) + h0.shape))
        return (h, np.zeros_like(h)) if self.cell == "lstm" else h

    def encode(self, src: ArrayLike, lengths: ArrayLike | None = None,
               n_threads: int | None = None) -> tuple[np.ndarray, Optional[np.ndarray], Any]:
        """``(memory (B, S, M), its lengths, the decoder's initial state)`` for source ids (B, S)."""
        memory, state = self.encoder(src, lengths=lengths, n_threads=n_threads)
        h_n = state[0] if self.cell == "lstm" else state
        h0 = np.tanh(self.bridge(_last_layer(h_n, self._D)))
        lengths = check_lengths(lengths, memory.shape[0], memory.shape[1])
        return memory, lengths, self._pack(h0)

    def _encode_for_training(self, src: ArrayLike, src_lengths: ArrayLike | None, tgt_in: ArrayLike,
                             n_threads: int | None) -> tuple:
        memory, lengths, state = self.encode(src, src_lengths, n_threads)
        n_tgt = np.shape(tgt_in)[:1]
        if n_tgt != memory.shape[:1]:
            raise ValueError(f"src and tgt_in must have the same batch size, got {memory.shape[0]} and "
                             f"{n_tgt[0] if n_tgt else None}")
        self._keep(((state[0] if self.cell == "lstm" else state)[0], memory.shape))
        return memory, lengths, state

    def forward(self, src: ArrayLike, src_lengths: ArrayLike | None, tgt_in: ArrayLike,
                tgt_lengths: ArrayLike | None = None, n_threads: int | None = None) -> np.ndarray:
        """Teacher-forced logits (B, T, tgt_vocab_size) for sources (B, S) and decoder inputs (B, T)."""
        memory, lengths, state = self._encode_for_training(src, src_lengths, tgt_in, n_threads)
        return self.decoder(tgt_in, memory, lengths, state, tgt_lengths, n_threads)

    def forward_loss(self, src: ArrayLike, src_lengths: ArrayLike | None, tgt_in: ArrayLike,
                     tgt_lengths: ArrayLike | None, targets: ArrayLike, *, ignore_index: int = 0,
                     label_smoothing: float = 0.0, n_threads: int | None = None) -> float:
        """Training: the mean cross-entropy of the teacher-forced outputs against ``targets`` (B, T), with the
        output layer and the loss only on the non-padded targets (:meth:`AttentionDecoder.forward_loss`);
        equal, up to float rounding, to ``CrossEntropy(ignore_index=ignore_index,
        label_smoothing=label_smoothing)(forward(...), targets)[0]``. Then call :meth:`backward` without
        ``dlogits``."""
        memory, lengths, state = self._encode_for_training(src, src_lengths, tgt_in, n_threads)
        return self.decoder.forward_loss(tgt_in, memory, lengths, state, tgt_lengths, targets,
                                         ignore_index=ignore_index, label_smoothing=label_smoothing,
                                         n_threads=n_threads)

    def backward(self, dlogits: ArrayLike | None = None, *, n_threads: int | None = None) -> None:
        """Backpropagate through decoder, bridge and encoder; gradients accumulate in ``grads``. ``dlogits``
        after :meth:`forward`, none after :meth:`forward_loss`."""
        h0, memory_shape = self._take_cache()
        dmemory, dstate = self.decoder.backward(dlogits, n_threads=n_threads)
        dh = (dstate[0] if self.cell == "lstm" else dstate).sum(axis=0)  # every decoder layer starts at h0
        dcat = self.bridge.backward(dh * (1 - h0 * h0), n_threads=n_threads)
        B, L, D = dcat.shape[0], self.num_layers, self._D
        dh_n = np.zeros((L * D, B, dcat.shape[1] // D), self.dtype)
        dh_n[-D:] = dcat.reshape(B, D, -1).transpose(1, 0, 2)
        if dmemory is None:  # no attention: the memory is not used
            dmemory = np.zeros(memory_shape, self.dtype)
        self.encoder.backward(dmemory, (dh_n, None) if self.cell == "lstm" else dh_n, n_threads=n_threads)


# ---------------------------------------------------------------------------------------- decoding
def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _log_prob_of_max(logits: np.ndarray) -> np.ndarray:
    """Each row's log-softmax at its largest logit, ``-log(sum(exp(x - max)))`` (float64), in the logits'
    dtype up to the float64 sum: the greedy step's score without a (B, vocabulary) float64 log-softmax (which
    took half of decoding on the translation example)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    return -np.log(z.sum(axis=-1, dtype=np.float64))


def _take_rows(state: Any, rows: np.ndarray) -> Any:
    """The decoder state's batch rows ``rows`` (the state is (L, B, H), or a pair of them)."""
    if isinstance(state, tuple):
        return tuple(np.ascontiguousarray(s[:, rows]) for s in state)
    return np.ascontiguousarray(state[:, rows])


class _Decoding:
    """The encoded batch and decoder states of one model or of an ensemble, stepped together.

    An ensemble's next-token distribution is the mean of its members' probabilities,
    ``log p(y) = logsumexp_m log p_m(y) - log M`` (fairseq's ``EnsembleModel``); one model's is its own.
    """

    def __init__(self, model: Any, src: ArrayLike, lengths: ArrayLike | None, max_length: int,
                 n_threads: int | None) -> None:
        check_int(max_length, "max_length", 1)
        self.models = _members(model)
        src = _check_ids(src, "src")
        self.n_threads, self.enc = n_threads, []
        for m in self.models:
            m.eval()
            memory, mlen, state = m.encode(src, lengths, n_threads)
            self.enc.append([memory, mlen, state, m.decoder.project(memory, n_threads)])
        self.B = src.shape[0]

    def take_rows(self, rows: np.ndarray, states_only: bool = False) -> None:
        """Keep the batch rows ``rows`` (beams reordered or repeated) of every member."""
        for e in self.enc:
            if not states_only:
                e[0] = e[0][rows]
                e[1] = None if e[1] is None else e[1][rows]
                e[3] = None if e[3] is None else e[3][rows]
            e[2] = _take_rows(e[2], rows)

    def logits(self, prev: np.ndarray) -> list:
        """Every member's next-step logits (B, V) after the tokens ``prev``; the states advance."""
        out = []
        for m, e in zip(self.models, self.enc):
            logits, e[2] = m.decoder.step(prev, e[0], e[1], e[2], e[3], self.n_threads)
            out.append(logits)
        return out

    def log_probs(self, prev: np.ndarray) -> np.ndarray:
        """The next-step log-probabilities (B, V) in float64."""
        logp = [_log_softmax(x.astype(np.float64)) for x in self.logits(prev)]
        if len(logp) == 1:
            return logp[0]
        stacked = np.stack(logp)
        top = stacked.max(axis=0)
        return top + np.log(np.exp(stacked - top).mean(axis=0))


def _members(model: Any) -> list:
    """``model`` (a Seq2SeqModel or a non-empty list of them with the same vocabulary sizes) as a list."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model: an empty list of models")
    for i, m in enumerate(models):
        if not isinstance(m, Seq2SeqModel):
            raise TypeError(f"model must be a Seq2SeqModel or a list of them, got {type(m).__name__}"
                            + (f" at position {i}" if len(models) > 1 else ""))
    sizes = {(m.encoder.embedding.num_embeddings, m.decoder.vocab_size) for m in models}
    if len(sizes) > 1:
        raise ValueError("an ensemble's models must have the same source and target vocabulary sizes, got "
                         + ", ".join(f"{s}/{t}" for s, t in sorted(sizes)))
    return models


def _trim(rows: np.ndarray, eos: int) -> list:
    """Token lists up to (without) the first ``eos``."""
    out = []
    for r in rows.tolist():
        out.append(r[:r.index(eos)] if eos in r else r)
    return out


def greedy_decode(model: Seq2SeqModel | Sequence[Seq2SeqModel], src: ArrayLike, lengths: ArrayLike | None = None,
                  *, bos: int = 1, eos: int = 2, max_length: int = 100,
                  n_threads: int | None = None) -> tuple[list, np.ndarray]:
    """Greedy decoding of a batch: the most likely token at every step until ``eos`` or ``max_length``.

    Parameters
    ----------
    model : Seq2SeqModel, or a list of them
        Put in eval mode. A list is an ensemble (same vocabularies; sizes, cells and attention may differ):
        each step's distribution is the mean of the members' probabilities (fairseq's ``EnsembleModel``).
    src : int array (B, S), right-padded
    lengths : int array (B,), optional
    bos, eos : int
        Start and end ids of the target vocabulary.
    max_length : int, default 100
        Output tokens at most (``eos`` excluded).
    n_threads : int, optional

    Returns
    -------
    tokens : list of B lists of int (without ``bos`` and ``eos``)
    log_prob : ndarray (B,)
        Each output's log-probability, ``eos`` included when it was reached.
    """
    dec = _Decoding(model, src, lengths, max_length, n_threads)
    B = dec.B
    prev = np.full(B, bos, np.int64)
    done = np.zeros(B, bool)
    score = np.zeros(B)
    out = np.full((B, max_length), eos, np.int64)
    for t in range(max_length):
        if len(dec.models) == 1:
            logits = dec.logits(prev)[0]
            prev, step = logits.argmax(axis=-1), _log_prob_of_max(logits)
        else:
            logp = dec.log_probs(prev)
            prev = logp.argmax(axis=-1)
            step = logp[np.arange(B), prev]
        score += np.where(done, 0.0, step)
        prev[done] = eos
        out[:, t] = prev
        done |= prev == eos
        if done.all():
            break
    return _trim(out, eos), score


def beam_decode(model: Seq2SeqModel | Sequence[Seq2SeqModel], src: ArrayLike, lengths: ArrayLike | None = None,
                *, beam_size: int = 5, bos: int = 1, eos: int = 2, max_length: int = 100,
                length_penalty: float = 0.0, n_threads: int | None = None) -> tuple[list, np.ndarray]:
    """Beam search over a batch, vectorised over batch * beam rows, one step per output token.

    A finished hypothesis (it produced ``eos``) stays in its beam with its score; the search ends when every
    beam's hypotheses are finished or after ``max_length`` tokens. The result is each sequence's best
    hypothesis by log-probability divided by ``length ** length_penalty`` (``eos`` counted).

    Parameters
    ----------
    model, src, lengths, bos, eos, max_length, n_threads : as :func:`greedy_decode`
    beam_size : int, default 5
    length_penalty : float >= 0, default 0

    Returns
    -------
    tokens : list of B lists of int
    log_prob : ndarray (B,), the chosen hypotheses' log-probabilities
    """
    K = check_int(beam_size, "beam_size", 1)
    alpha = check_real(length_penalty, "length_penalty", 0.0)
    dec = _Decoding(model, src, lengths, max_length, n_threads)
    B = dec.B
    dec.take_rows(np.repeat(np.arange(B), K))
    score = np.full((B, K), -np.inf)
    score[:, 0] = 0.0  # one live hypothesis per sequence to start with
    hist = np.full((B * K, max_length), eos, np.int64)
    done = np.zeros(B * K, bool)
    n_tok = np.zeros(B * K)
    prev = np.full(B * K, bos, np.int64)
    for t in range(max_length):
        logp = dec.log_probs(prev)
        logp[done] = -np.inf
        logp[done, eos] = 0.0  # a finished hypothesis continues unchanged
        V = logp.shape[1]
        cand = (score.reshape(-1)[:, None] + logp).reshape(B, K * V)
        top = np.argpartition(-cand, K - 1, axis=1)[:, :K] if K < K * V else np.tile(np.arange(K * V), (B, 1))
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, 1), axis=1, kind="stable"), 1)
        score = np.take_along_axis(cand, top, 1)
        src_rows = (np.arange(B)[:, None] * K + top // V).reshape(-1)
        prev = (top % V).reshape(-1)
        hist, done, n_tok = hist[src_rows], done[src_rows], n_tok[src_rows]
        dec.take_rows(src_rows, states_only=True)
        n_tok += ~done
        hist[:, t] = np.where(done, eos, prev)
        done = done | (prev == eos)
        if done.all():
            break
    final = score / np.maximum(n_tok.reshape(B, K), 1.0) ** alpha if alpha else score
    best = final.argmax(axis=1)
    pick = np.arange(B) * K + best
    return _trim(hist[pick], eos), score[np.arange(B), best]


def sequence_log_prob(model: Seq2SeqModel | Sequence[Seq2SeqModel], src: ArrayLike, src_lengths: ArrayLike | None,
                      tgt: list, *, bos: int = 1, eos: int = 2, pad: int = 0,
                      n_threads: int | None = None) -> np.ndarray:
    """Log-probability of each given output under the model (``eos`` appended), in eval mode.

    Parameters
    ----------
    model : Seq2SeqModel, or a list of them (an ensemble, as in :func:`greedy_decode`)
    src, src_lengths : as :func:`greedy_decode`
    tgt : list of B lists of int
        Outputs without ``bos`` / ``eos``.

    Returns
    -------
    ndarray (B,)
    """
    models = _members(model)
    full = [[bos] + list(t) + [eos] for t in tgt]
    T = max(len(f) for f in full)
    ids = np.full((len(full), T), pad, np.int64)
    for i, f in enumerate(full):
        ids[i, :len(f)] = f
    tlen = np.array([len(f) - 1 for f in full])
    gold = []
    for m in models:
        m.eval()
        logp = _log_softmax(m(src, src_lengths, ids[:, :-1], tlen, n_threads).astype(np.float64))
        gold.append(np.take_along_axis(logp, ids[:, 1:, None], 2)[..., 0])
    step = gold[0] if len(gold) == 1 else np.logaddexp.reduce(np.stack(gold), axis=0) - np.log(len(gold))
    return np.where(np.arange(T - 1)[None] < tlen[:, None], step, 0.0).sum(axis=1)
