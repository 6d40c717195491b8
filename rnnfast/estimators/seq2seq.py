"""``rf.Seq2Seq``: a sequence-to-sequence estimator (encoder-decoder with attention) on lists of token
sequences, trained with teacher forcing through :class:`rnnfast.train.Trainer`.

The network is :class:`rnnfast.nn.seq2seq.Seq2SeqModel`; decoding is :func:`~rnnfast.nn.seq2seq.greedy_decode`
or :func:`~rnnfast.nn.seq2seq.beam_decode`, batched over sequences. Tokens are any hashable values; the
vocabularies (ids 0-3 are ``<pad>``, ``<s>``, ``</s>``, ``<unk>``) are built by ``fit``.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any, Hashable, Optional, Sequence, Union

import numpy as np

from rnnfast._fpu import flush_denormals
from rnnfast._validation import (THREADS, AnyOf, Boolean, FloatDtype, Integer, Options, Real, check_int,
                                 validate_params)
from rnnfast.estimators.base import EstimatorBase
from rnnfast.estimators.params import jsonable
from rnnfast.nn.seq2seq import ATTENTION_KINDS, Seq2SeqModel, beam_decode, greedy_decode
from rnnfast.quantize import refuse_training
from rnnfast.train.callbacks import EarlyStopping
from rnnfast.train.data import SequenceDataset, pad_sequences
from rnnfast.train.losses import CrossEntropy
from rnnfast.train.metrics import bleu
from rnnfast.train.optimizers import Adam
from rnnfast.train.trainer import Batch, Trainer

__all__ = ["Seq2Seq", "Seq2SeqEnsemble"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
N_SPECIAL = 4
PathLike = Union[str, "os.PathLike[str]"]

#: The constructor's parameters (rnnfast._validation: TypeError for a wrong type, ValueError for a bad value).
PARAMETERS = {
    "hidden_size": Integer(1), "num_layers": Integer(1), "cell": Options("lstm", "gru"),
    "bidirectional_encoder": Boolean(), "attention": Options(*[k for k in ATTENTION_KINDS if k], allow_none=True),
    "embedding_dim": Integer(1), "dropout": Real(0.0, 1.0, closed="left"),
    "label_smoothing": Real(0.0, 1.0, closed="left"), "epochs": Integer(0),
    "batch_size": Integer(1), "lr": Real(0.0, closed="right"), "clip_norm": Real(0.0, closed="neither", allow_none=True),
    "beam_size": Integer(1), "length_penalty": Real(0.0), "max_length": Integer(1, allow_none=True),
    "validation_split": Real(0.0, 1.0, closed="left"), "early_stopping": Boolean(), "patience": Integer(0),
    "monitor": Options("bleu", "exact", "loss"), "random_state": Integer(0, allow_none=True),
    "verbose": AnyOf(Boolean(), Integer(0, 2)), "dtype": FloatDtype(), "n_threads": THREADS,
}
#: What a saved file's vocabularies may hold: JSON scalars, by a one-letter tag.
_TOKEN_TYPES = {"s": str, "i": int, "f": float, "b": bool}


# ---------------------------------------------------------------------------------------- vocabularies
def _sequences(data: Any, name: str, allow_empty: bool) -> list:
    """``data`` as a list of token lists (a string is a sequence of characters)."""
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__") or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be a list of token sequences, got {type(data).__name__}")
    out = []
    for i, seq in enumerate(data):
        if not hasattr(seq, "__iter__") or isinstance(seq, bytes):
            raise TypeError(f"{name}[{i}] must be a sequence of tokens (a list, tuple, array or string), "
                            f"got {type(seq).__name__}")
        toks = list(seq.tolist() if isinstance(seq, np.ndarray) else seq)
        if not toks and not allow_empty:
            raise ValueError(f"{name}[{i}] is empty; every input sequence needs at least one token")
        try:
            set(toks)
        except TypeError:
            bad = next(t for t in toks if not isinstance(t, Hashable))
            raise TypeError(f"{name}[{i}] holds a token of type {type(bad).__name__}; tokens must be hashable "
                            "(strings, ints, ...)") from None
        out.append(toks)
    if not out:
        raise ValueError(f"{name} holds no sequences")
    return out


def _vocabulary(seqs: list) -> list:
    """The distinct tokens in order of first appearance."""
    return list(dict.fromkeys(t for s in seqs for t in s))


def _encode(seqs: list, index: dict, bos_eos: bool = False) -> list:
    ids = [[index.get(t, UNK) for t in s] for s in seqs]
    return [[BOS] + s + [EOS] for s in ids] if bos_eos else ids


def _strip(ids: Sequence[int]) -> list:
    return [int(i) for i in ids if i >= N_SPECIAL or i == UNK]


# ---------------------------------------------------------------------------------------- training
class _ShiftedCrossEntropy(CrossEntropy):
    """Cross-entropy of the logits at step t against the target's token t + 1 (the full target is
    ``<s> ... </s>`` padded): the teacher-forcing loss; padding is ignored."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__(ignore_index=PAD, label_smoothing=label_smoothing)

    def __call__(self, pred, target, mask=None, sample_weight=None):
        return super().__call__(pred, target[:, 1:pred.shape[1] + 1], None, sample_weight)


class Seq2SeqTrainer(Trainer):
    """The :class:`~rnnfast.train.Trainer` for a :class:`~rnnfast.nn.seq2seq.Seq2SeqModel`: a batch's ``x``
    are the padded sources and ``y`` the padded targets ``<s> ... </s>``; the forward pass feeds the target
    (its last token excluded) to the decoder. With ``decode_metrics`` (a function of a validation
    :class:`~rnnfast.train.SequenceDataset` returning a dict, e.g. ``{"val_bleu": ..., "val_exact": ...}``),
    every epoch's logs get those figures too."""

    def __init__(self, model: Seq2SeqModel, optimizer: Any, decode_metrics: Any = None,
                 label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, _ShiftedCrossEntropy(label_smoothing), optimizer, **kwargs)
        self.decode_metrics = decode_metrics

    @staticmethod
    def _teacher(y: np.ndarray) -> tuple:
        """The decoder's inputs (``<s>`` and the target, not ``</s>``), their lengths, and its targets."""
        tlen = (y != PAD).sum(axis=1) - 1
        T = int(tlen.max())
        return y[:, :T], tlen, y[:, 1:T + 1]

    def forward(self, batch: Batch) -> np.ndarray:
        tgt_in, tlen, _ = self._teacher(batch.y)
        return self.model(batch.x, batch.lengths, tgt_in, tlen, self.n_threads)

    def train_step(self, batch: Batch) -> Optional[float]:
        """The output layer and the loss fused, on the non-padded target steps only (Seq2SeqModel.forward_loss);
        the generic step (full logits) with sample weights, metrics or data-parallel training."""
        if batch.sample_weight is not None or self.metrics or self.distributed is not None:
            return super().train_step(batch)
        self.model.zero_grad()
        tgt_in, tlen, tgt_out = self._teacher(batch.y)
        value = self.model.forward_loss(batch.x, batch.lengths, tgt_in, tlen, tgt_out, ignore_index=PAD,
                                        label_smoothing=self.loss.label_smoothing, n_threads=self.n_threads)
        if not math.isfinite(value):
            return value
        self.model.backward(n_threads=self.n_threads)
        if not self.apply_gradients():
            return math.nan
        self.update_metrics(value, None, batch)
        return value

    def _epoch_logs(self, val: Optional[SequenceDataset], batch_size: int) -> dict:
        logs = super()._epoch_logs(val, batch_size)
        if val is not None and self.decode_metrics is not None:
            logs.update(self.decode_metrics(val))
            self.model.train()
        return logs


# ---------------------------------------------------------------------------------------- estimator
class Seq2Seq(EstimatorBase):
    """Sequence-to-sequence estimator: bidirectional LSTM/GRU encoder, attention decoder, teacher forcing,
    greedy or beam decoding; scored with corpus BLEU.

    Parameters
    ----------
    hidden_size : int, default 128
        Decoder units, and units of each encoder direction.
    num_layers : int, default 1
        Layers of the encoder and of the decoder.
    cell : {"lstm", "gru"}, default "lstm"
    bidirectional_encoder : bool, default True
    attention : {"luong", "bahdanau", "general", "dot", "additive", None}, default "luong"
        See :class:`rnnfast.nn.seq2seq.AttentionDecoder`.
    embedding_dim : int, default 64
    dropout : float in [0, 1), default 0
    label_smoothing : float in [0, 1), default 0
        The training loss's target distribution puts ``1 - label_smoothing`` on the next token and spreads the
        rest evenly over the target vocabulary (PyTorch's ``CrossEntropyLoss(label_smoothing=...)``); the
        validation loss is the same smoothed loss.
    epochs, batch_size : int, default 10, 64
    lr : float, default 2e-3
        Adam's learning rate.
    clip_norm : float or None, default 5
        Gradient clipping by global norm.
    beam_size : int, default 1
        Beam width of ``predict`` (1: greedy).
    length_penalty : float, default 0
        Beam hypotheses are ranked by log-probability / length ** length_penalty.
    max_length : int, optional
        Longest output; default twice the longest training target plus 5.
    validation_split : float in [0, 1), default 0
        The last fraction of the training pairs is held out; each epoch logs ``val_loss``, ``val_bleu`` and
        ``val_exact``.
    early_stopping : bool, default False
        Stop when the monitored validation figure has not improved for ``patience`` epochs, and keep the best
        epoch's weights (needs validation data).
    patience : int, default 3
    monitor : {"bleu", "exact", "loss"}, default "bleu"
        The validation figure of early stopping: corpus BLEU or exact-match rate (the fraction of sequences
        decoded exactly, 1 - word error rate in grapheme-to-phoneme terms) of greedy decoding, or the loss.
    random_state : int, optional
        Same value, same results (same machine and threads).
    verbose : {0, 1, 2}, default 0
    dtype : float32 (default) or float64
    n_threads : int, optional

    Attributes
    ----------
    model_ : rnnfast.nn.seq2seq.Seq2SeqModel
    source_tokens_, target_tokens_ : list
        The vocabularies (ids from 4 on).
    history_ : dict of str to list of float
        Per epoch: ``loss``, ``lr``, and with validation ``val_loss``, ``val_bleu``, ``val_exact``.

    Examples
    --------
    >>> X = [list("abc"), list("ba"), list("cab")] * 30
    >>> model = Seq2Seq(hidden_size=32, embedding_dim=16, epochs=20, random_state=0).fit(X, [x[::-1] for x in X])
    >>> model.predict([list("abc")])  # doctest: +SKIP
    [['c', 'b', 'a']]
    """

    def __init__(self, hidden_size: int = 128, num_layers: int = 1, cell: str = "lstm",
                 bidirectional_encoder: bool = True, attention: Optional[str] = "luong", embedding_dim: int = 64,
                 dropout: float = 0.0, label_smoothing: float = 0.0, epochs: int = 10, batch_size: int = 64,
                 lr: float = 2e-3, clip_norm: Optional[float] = 5.0, beam_size: int = 1, length_penalty: float = 0.0,
                 max_length: Optional[int] = None, validation_split: float = 0.0, early_stopping: bool = False,
                 patience: int = 3, monitor: str = "bleu", random_state: Optional[int] = None, verbose: int = 0,
                 dtype: Any = "float32", n_threads: Optional[int] = None) -> None:
        self.hidden_size, self.num_layers, self.cell = hidden_size, num_layers, cell
        self.bidirectional_encoder, self.attention, self.embedding_dim = bidirectional_encoder, attention, embedding_dim
        self.dropout, self.epochs, self.batch_size, self.lr, self.clip_norm = dropout, epochs, batch_size, lr, clip_norm
        self.label_smoothing = label_smoothing
        self.beam_size, self.length_penalty, self.max_length = beam_size, length_penalty, max_length
        self.validation_split, self.early_stopping, self.patience = validation_split, early_stopping, patience
        self.monitor, self.random_state, self.verbose, self.dtype = monitor, random_state, verbose, dtype
        self.n_threads = n_threads

    def _validate_params(self) -> dict:
        return validate_params(self.get_params(), PARAMETERS)

    def _build(self, p: dict) -> Seq2SeqModel:
        return Seq2SeqModel(len(self.source_tokens_) + N_SPECIAL, len(self.target_tokens_) + N_SPECIAL,
                            p["hidden_size"], p["embedding_dim"], p["num_layers"], p["cell"],
                            p["bidirectional_encoder"], p["attention"], p["dropout"], PAD, p["dtype"],
                            p["random_state"])

    # ------------------------------------------------------------------ fit
    def _dataset(self, X: Any, Y: Any) -> SequenceDataset:
        src = _sequences(X, "X", allow_empty=False)
        tgt = _sequences(Y, "Y", allow_empty=True)
        if len(src) != len(tgt):
            raise ValueError(f"X has {len(src)} sequences, Y has {len(tgt)}")
        s_index = {t: i + N_SPECIAL for i, t in enumerate(self.source_tokens_)}
        t_index = {t: i + N_SPECIAL for i, t in enumerate(self.target_tokens_)}
        y, _ = pad_sequences(_encode(tgt, t_index, bos_eos=True), dtype=np.int64, value=PAD)
        return SequenceDataset([np.asarray(s, np.int64) for s in _encode(src, s_index)], y)

    def fit(self, X: Any, Y: Any, *, validation_data: Optional[tuple] = None, callbacks: Optional[list] = None
            ) -> "Seq2Seq":
        """Learn the vocabularies and train the network with teacher forcing.

        Parameters
        ----------
        X, Y : list of token sequences
            Sources (non-empty) and their targets; tokens are any hashable values (a string is a sequence
            of characters).
        validation_data : tuple (X_val, Y_val), optional
            Used instead of ``validation_split``.
        callbacks : list of rnnfast.train.callbacks.Callback, optional
            E.g. :class:`~rnnfast.train.TimeLimit` or a :class:`~rnnfast.train.LearningRateScheduler`.

        Returns
        -------
        self
        """
        refuse_training(self)
        p = self._validate_params()
        src, tgt = _sequences(X, "X", allow_empty=False), _sequences(Y, "Y", allow_empty=True)
        self.source_tokens_, self.target_tokens_ = _vocabulary(src), _vocabulary(tgt)
        self.max_target_length_ = max(len(t) for t in tgt)
        data = self._dataset(src, tgt)
        val = None if validation_data is None else self._dataset(*validation_data)
        self.model_ = model = self._build(p)
        self.optimizer_ = Adam(model, lr=p["lr"])
        cbs = list(callbacks or [])
        if p["early_stopping"]:
            if val is None and not p["validation_split"]:
                raise ValueError("early_stopping needs validation data (validation_split > 0 or validation_data)")
            cbs.append(EarlyStopping("val_" + p["monitor"], patience=p["patience"], restore_best_weights=True,
                                     mode="min" if p["monitor"] == "loss" else "max"))
        trainer = Seq2SeqTrainer(model, self.optimizer_, decode_metrics=self._val_metrics,
                                 label_smoothing=p["label_smoothing"], callbacks=cbs,
                                 clip_norm=p["clip_norm"], n_threads=p["n_threads"], verbose=int(p["verbose"]))
        hist = trainer.fit(data, epochs=p["epochs"], batch_size=p["batch_size"], validation_data=val,
                           validation_split=p["validation_split"] if val is None else 0.0, seed=p["random_state"])
        self.history_ = hist.history
        self.n_epochs_ = len(hist.epoch)
        model.eval()
        return self

    def _val_metrics(self, val: SequenceDataset) -> dict:
        """Corpus BLEU and exact-match rate of greedy decoding on a validation dataset of ids."""
        refs = [_strip(r) for r in val.y]
        hyps = self._decode_ids([x[:n] for x, n in zip(val.X, val.lengths)], 1)
        return {"val_bleu": bleu(refs, hyps), "val_exact": float(np.mean([h == r for h, r in zip(hyps, refs)]))}

    # ------------------------------------------------------------------ predict
    def _decode_ids(self, src: list, beam_size: int, batch_size: int = 256, models: Optional[list] = None,
                    max_target_length: Optional[int] = None) -> list:
        """Output id lists (specials removed) for source id lists, decoded in batches of similar length; by
        ``models`` (an ensemble with this estimator's vocabularies, whose longest training target was
        ``max_target_length``) instead of ``model_`` when given."""
        p = self._validate_params()
        max_len = p["max_length"] or 2 * (max_target_length or self.max_target_length_) + 5
        out: list = [None] * len(src)
        order = np.argsort([-len(s) for s in src], kind="stable")
        rows = max(1, batch_size // beam_size)
        net = self.model_ if models is None else models
        for i in range(0, len(src), rows):
            idx = order[i:i + rows]
            x, lengths = pad_sequences([np.asarray(src[j], np.int64) for j in idx], dtype=np.int64, value=PAD)
            kw = dict(bos=BOS, eos=EOS, max_length=max_len, n_threads=p["n_threads"])
            if beam_size > 1:
                ids, _ = beam_decode(net, x, lengths, beam_size=beam_size, length_penalty=p["length_penalty"], **kw)
            else:
                ids, _ = greedy_decode(net, x, lengths, **kw)
            for j, seq in zip(idx, ids):
                out[j] = _strip(seq)
        return out

    def predict(self, X: Any, beam_size: Optional[int] = None) -> list:
        """Output token lists for the source sequences ``X``.

        Parameters
        ----------
        X : list of token sequences
            Tokens not seen in training count as unknown.
        beam_size : int, optional
            Overrides the estimator's ``beam_size`` (1: greedy).

        Returns
        -------
        list of lists of target tokens (an unknown token can not be produced)
        """
        self._check_fitted()
        return self._predict_tokens(X, beam_size)

    def _predict_tokens(self, X: Any, beam_size: Optional[int], models: Optional[list] = None,
                        max_target_length: Optional[int] = None) -> list:
        beam = check_int(self.beam_size if beam_size is None else beam_size, "beam_size", 1)
        src = _encode(_sequences(X, "X", allow_empty=False), {t: i + N_SPECIAL for i, t in
                                                               enumerate(self.source_tokens_)})
        itos = self.target_tokens_
        with flush_denormals():  # (a confident model's attention and softmax underflow: see rnnfast._fpu)
            ids = self._decode_ids(src, beam, models=models, max_target_length=max_target_length)
        return [[itos[i - N_SPECIAL] for i in seq if i >= N_SPECIAL] for seq in ids]

    def score(self, X: Any, Y: Any) -> float:
        """Corpus BLEU (0-100, :func:`rnnfast.train.metrics.bleu`) of ``predict(X)`` against ``Y`` (one
        reference per sequence, or a list of references)."""
        return _bleu_of(self.predict(X), Y)

    # ------------------------------------------------------------------ saving
    def save(self, path: PathLike) -> None:
        """Write the fitted estimator to ``path`` in rnnfast's pickle-free format (:func:`rnnfast.load` reads
        it). Tokens must be strings, ints, floats or bools (TypeError otherwise)."""
        from rnnfast.io import save_archive
        self._check_fitted()
        config = {k: jsonable(v) for k, v in self.get_params().items()}
        extra = {"source_tokens": _tokens_to_json(self.source_tokens_, "source"),
                 "target_tokens": _tokens_to_json(self.target_tokens_, "target"),
                 "max_target_length": self.max_target_length_, "history": self.history_,
                 "n_epochs": self.n_epochs_}
        arrays = {f"model/{k}": v for k, v in self.model_.state_dict().items()}
        save_archive(path, "estimator.Seq2Seq", config, arrays, extra,
                     precision=getattr(self, "precision_", None))  # rnnfast.quantize: rf.load quantizes again


def _bleu_of(hyps: list, Y: Any) -> float:
    if len(Y) != len(hyps):
        raise ValueError(f"X has {len(hyps)} sequences, Y has {len(Y)}")
    return bleu([list(y) if isinstance(y, str) else y for y in Y], hyps)


def _in_vocabulary_order(est: Seq2Seq, first: Seq2Seq, i: int) -> Seq2SeqModel:
    """``est``'s network with its token ids renumbered as ``first``'s (the same tokens met in another order
    give another numbering): a copy with the embedding and output rows permuted."""
    if est.source_tokens_ == first.source_tokens_ and est.target_tokens_ == first.target_tokens_:
        return est.model_
    if set(est.source_tokens_) != set(first.source_tokens_) or set(est.target_tokens_) != set(first.target_tokens_):
        raise ValueError(f"estimators[{i}] was trained on other tokens than estimators[0]; an ensemble's members "
                         "need the same source and target vocabularies")
    order = {}
    for side, mine, theirs in (("source", est.source_tokens_, first.source_tokens_),
                               ("target", est.target_tokens_, first.target_tokens_)):
        index = {t: k + N_SPECIAL for k, t in enumerate(mine)}
        order[side] = np.array(list(range(N_SPECIAL)) + [index[t] for t in theirs])
    state = est.model_.state_dict()
    rows = {"encoder.embedding.weight": "source", "decoder.embedding.weight": "target",
            "decoder.out.weight": "target", "decoder.out.bias": "target"}
    model = copy.deepcopy(est.model_)
    model.load_state_dict({k: v[order[rows[k]]] if k in rows else v for k, v in state.items()})
    return model


class Seq2SeqEnsemble:
    """Decode with several fitted :class:`Seq2Seq` estimators at once: every step's next-token distribution is
    the mean of the members' probabilities (fairseq's ``EnsembleModel``, ``fairseq-generate --path a:b``), in
    greedy or beam search.

    Parameters
    ----------
    estimators : sequence of fitted Seq2Seq
        Trained on the same source and target tokens (in any order); sizes, cells and attention may
        differ. Decoding settings (``beam_size``, ``length_penalty``, ``max_length``,
        ``n_threads``) are the first estimator's; ``max_length`` defaults to the longest of the members'.

    Examples
    --------
    >>> ens = Seq2SeqEnsemble([rf.load("a.rnnfast"), rf.load("b.rnnfast")])  # doctest: +SKIP
    >>> ens.predict([list("hello")], beam_size=5)  # doctest: +SKIP
    """

    def __init__(self, estimators: Sequence[Seq2Seq]) -> None:
        members = list(estimators) if isinstance(estimators, (list, tuple)) else None
        if not members:
            raise ValueError("estimators must be a non-empty list of fitted Seq2Seq estimators")
        for i, e in enumerate(members):
            if not isinstance(e, Seq2Seq):
                raise TypeError(f"estimators[{i}] is a {type(e).__name__}, not a Seq2Seq")
            e._check_fitted()
        self.estimators = members
        self.models_ = [_in_vocabulary_order(e, members[0], i) for i, e in enumerate(members)]

    def __repr__(self) -> str:
        return f"Seq2SeqEnsemble({len(self.estimators)} estimators)"

    def predict(self, X: Any, beam_size: Optional[int] = None) -> list:
        """Output token lists for the source sequences ``X``, as :meth:`Seq2Seq.predict`."""
        return self.estimators[0]._predict_tokens(X, beam_size, models=self.models_,
                                                  max_target_length=max(e.max_target_length_ for e in self.estimators))

    def score(self, X: Any, Y: Any) -> float:
        """Corpus BLEU of :meth:`predict` against ``Y``, as :meth:`Seq2Seq.score`."""
        return _bleu_of(self.predict(X), Y)


def _tokens_to_json(tokens: list, which: str) -> list:
    out = []
    for t in tokens:
        t = t.item() if isinstance(t, np.generic) else t
        tag = next((k for k, cls in _TOKEN_TYPES.items() if type(t) is cls), None)
        if tag is None or (tag == "f" and not math.isfinite(t)):
            raise TypeError(f"cannot save a {which} token of type {type(t).__name__} ({t!r:.40}): saved tokens "
                            "must be strings, ints, finite floats or bools")
        out.append([tag, t])
    return out


def _tokens_from_json(items: Any, ar: Any, which: str) -> list:
    if not isinstance(items, list):
        raise ar.fail(f"bad {which} vocabulary")
    out = []
    for it in items:
        ok = isinstance(it, list) and len(it) == 2 and it[0] in _TOKEN_TYPES
        if not ok or not (type(it[1]) is _TOKEN_TYPES[it[0]] or (it[0] == "f" and type(it[1]) is int)):
            raise ar.fail(f"bad token in the {which} vocabulary: {it!r:.60}")
        out.append(_TOKEN_TYPES[it[0]](it[1]))
    if len(set(out)) != len(out):
        raise ar.fail(f"repeated tokens in the {which} vocabulary")
    return out


def from_archive(ar: Any) -> Seq2Seq:
    """The :class:`Seq2Seq` an open ``estimator.Seq2Seq`` archive holds (FormatError when anything does not fit)."""
    names = set(Seq2Seq._get_param_names())
    if not isinstance(ar.config, dict) or set(ar.config) != names:
        raise ar.fail("the saved parameters do not match Seq2Seq's")
    with ar.reading("the estimator's parameters"):
        est = Seq2Seq(**ar.config)
        p = est._validate_params()
    extra = ar.extra
    est.source_tokens_ = _tokens_from_json(extra.get("source_tokens"), ar, "source")
    est.target_tokens_ = _tokens_from_json(extra.get("target_tokens"), ar, "target")
    mtl, history, n_epochs = extra.get("max_target_length"), extra.get("history", {}), extra.get("n_epochs", 0)
    if type(mtl) is not int or not 0 <= mtl <= 10**7 or type(n_epochs) is not int or n_epochs < 0:
        raise ar.fail("bad max_target_length or n_epochs")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ar.fail("bad history")
    est.max_target_length_, est.history_, est.n_epochs_ = mtl, history, n_epochs
    with ar.reading("the network's sizes"):
        model = est._build(p)
    expected = {f"model/{k}": v for k, v in model.named_parameters()}
    for name, d in ar.declared.items():
        if name not in expected or d.shape != expected[name].shape:
            raise ar.fail(f"array {name!r} does not fit the network")
    if set(expected) != set(ar.declared):
        raise ar.fail(f"arrays missing: {sorted(set(expected) - set(ar.declared))[:3]}")
    model.load_state_dict({k[len("model/"):]: ar.read(k) for k in expected})
    est.model_ = model.eval()
    est.optimizer_ = Adam(model, lr=p["lr"])
    return est
