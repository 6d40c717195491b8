"""The estimators ``rnnfast.LSTM``, ``rnnfast.GRU`` and ``rnnfast.RNN``: the task follows from ``y``.

::

    model = rf.LSTM(hidden_size=64, epochs=20, random_state=0).fit(X, y)
    model.predict(X); model.predict_proba(X); model.score(X, y); model.history_
    model.save("model.rnnfast"); rf.load("model.rnnfast")
    y_t, state = model.predict_step(x_t, state)    # streaming, one step at a time
    model.release_memory()

Each method is a few calls to the modules of this package, one per job: :mod:`.params` (the parameter
table), :mod:`.inputs` (X), :mod:`.targets` (y, predictions and scores), :mod:`.network` (the network,
optimizer and loss), :mod:`.training` (validation set, warm start, the epochs), :mod:`.persistence`,
:mod:`.streaming` (``predict_step``) and :mod:`.memory` (``release_memory``, pickling).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from rnnfast import nn
from rnnfast.estimators import params as _params
from rnnfast.estimators.base import EstimatorBase
from rnnfast.estimators.ctc import decode_outputs, encode_label_sequences, score_sequences
from rnnfast.estimators.generation import GenerationMixin
from rnnfast.estimators.inputs import InputSpec, encode_inputs, input_spec
from rnnfast.estimators.memory import MemoryMixin
from rnnfast.estimators.streaming import StreamingMixin
from rnnfast.estimators.network import build_model, build_optimizer, make_loss
from rnnfast.estimators.persistence import save_estimator
from rnnfast.estimators.targets import (CLASSIFICATION, CTC, TargetSpec, check_sample_weight, encode_targets,
                                        predictions, probabilities, score_outputs, unpad)
from rnnfast.estimators.training import Encoded, apply_param_changes, run_epochs, split_validation
from rnnfast.quantize import refuse_training
from rnnfast.train import predict as predict_loop
from rnnfast.train.data import SequenceDataset

__all__ = ["LSTM", "GRU", "RNN"]

_FITTED = ("model_", "optimizer_", "classes_", "vocab_size_", "y_mean_", "y_scale_")


class _RecurrentEstimator(GenerationMixin, StreamingMixin, MemoryMixin, EstimatorBase):
    """Shared implementation of :class:`LSTM`, :class:`GRU` and :class:`RNN` (see :class:`LSTM`)."""

    _layer_cls: Any = None
    _task: Optional[str] = None  # fixed by *Classifier / *Regressor; None: from y

    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0, pooling="last",
                 return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto", clip_norm=None,
                 clip_value=None, validation_split=0.0, shuffle=True, bucket=True, early_stopping=False,
                 patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0, dtype="float32",
                 n_threads=None, distributed=None, normalization=None, layer_norm=False,
                 recurrent_dropout=0.0):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.pooling = pooling
        self.return_sequences = return_sequences
        self.embedding_dim = embedding_dim
        self.vocab_size = vocab_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.loss = loss
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.validation_split = validation_split
        self.shuffle = shuffle
        self.bucket = bucket
        self.early_stopping = early_stopping
        self.patience = patience
        self.tbptt = tbptt
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.dtype = dtype
        self.n_threads = n_threads
        self.distributed = distributed
        self.normalization = normalization
        self.layer_norm = layer_norm
        self.recurrent_dropout = recurrent_dropout

    # ------------------------------------------------------------------ fitted state
    def _validate_params(self) -> _params.Params:
        """The checked parameters. Kept with the values they were checked from (type included: True passes
        where 1 fails), so that ``predict`` on unchanged parameters does not check them again (a third of a
        one-sequence call's time)."""
        params = self.get_params()
        key = tuple((k, type(v), v) for k, v in params.items())
        try:
            hash(key)
        except TypeError:  # an unhashable value (a dict of class weights, ...): checked every time
            return _params.validate(params)
        cached = self.__dict__.get("_validated")
        if cached is not None and cached[0] == key:
            return cached[1]
        p = _params.validate(params)
        self.__dict__["_validated"] = (key, p)  # (one assignment: threads see the old pair or the new)
        return p

    def _set_specs(self, inputs: InputSpec, targets: TargetSpec) -> None:
        """Record what fitting learnt, and its public attributes."""
        self._specs = (inputs, targets)
        self.input_kind_ = inputs.kind
        self.n_features_in_ = inputs.n_features_in
        if inputs.vocab_size is not None:
            self.vocab_size_ = inputs.vocab_size
        self.task_ = targets.task
        self.per_step_ = targets.per_step
        self.n_outputs_ = targets.n_outputs
        self._y_1d = targets.y_1d
        if targets.task in (CLASSIFICATION, CTC):
            self.classes_ = targets.classes
        else:
            self.y_mean_ = np.asarray(targets.y_mean, dtype=np.float64)
            self.y_scale_ = np.asarray(targets.y_scale, dtype=np.float64)

    def _initialize(self, data: Encoded, p: _params.Params) -> None:
        """A new network and optimizer for ``data`` (a fresh fit or the first ``partial_fit``)."""
        for name in _FITTED:
            self.__dict__.pop(name, None)
        if p.random_state is not None:
            self.seed_ = p.random_state
        else:
            self.seed_ = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]  # an int when drawn
        if p.distributed is not None:  # every rank builds the same network and validation split
            from rnnfast.distributed.mpi import shared_seed
            self.seed_ = shared_seed(p.distributed, self.seed_)
        inputs, targets = input_spec(data.inputs, p.vocab_size), data.targets.spec
        self._set_specs(inputs, targets)
        self._arch_, self._opt_ = p.arch(), p.opt()
        self.model_ = build_model(self._layer_cls, p, inputs, targets.per_step, targets.n_outputs, self.seed_)
        self.optimizer_ = build_optimizer(self.model_, p)
        self.history_: dict = {}
        self.n_epochs_ = 0

    def _fitted_dtype(self) -> np.dtype:
        return np.dtype(self._arch_["dtype"])

    def _encode(self, X: Any, y: Any, sample_weight: Any, p: _params.Params, fitted: bool,
                classes: Any = None) -> Encoded:
        """Check and encode one ``(X, y, sample_weight)``; ``fitted``: against the fitted specs."""
        who = type(self).__name__
        specs = self._specs if fitted else (None, None)
        dtype = self._fitted_dtype() if fitted else p.dtype
        xs = encode_inputs(X, dtype, specs[0], who, univariate_2d=self._two_d_input)
        if p.loss == "ctc" or getattr(specs[1], "task", None) == CTC:
            if self._task is not None:
                raise ValueError(f"loss='ctc' is for rf.LSTM / rf.GRU / rf.RNN (label sequences), not {who}")
            lengths = xs.lengths if xs.lengths is not None else np.full(xs.n, xs.t)
            return Encoded(xs, encode_label_sequences(y, lengths, specs[1], who, p.loss),
                           check_sample_weight(sample_weight, xs.n))
        ys = encode_targets(y, xs.n, xs.t, xs.lengths, return_sequences=p.return_sequences, dtype=dtype,
                            spec=specs[1], classes=classes, task=self._task, who=who)
        return Encoded(xs, ys, check_sample_weight(sample_weight, xs.n))

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any, sample_weight: Any = None, validation_data: Optional[tuple] = None,
            class_weight: Any = None, callbacks: Optional[Sequence] = None) -> "_RecurrentEstimator":
        """Train on sequences ``X`` and targets ``y``.

        Parameters
        ----------
        X : array (N, T, F) of floats, list of (T_i, F) arrays, or integer token ids (N, T) / list of lists
            Token id 0 is padding (trailing zeros of an (N, T) array mark shorter sequences); an Embedding
            of ``embedding_dim`` is learnt for the ids 1 .. ``vocab_size - 1``.
        y : array (N,) of labels, (N,) or (N, k) of floats, or (N, T) / list of (T_i,) per-step targets
        sample_weight : array (N,), optional
            Weight of each sequence in the loss.
        validation_data : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy`` in ``history_``); replaces
            ``validation_split``.
        class_weight : dict label -> weight, or "balanced", optional
            Classification only: weights of the classes in the loss.
        callbacks : list of :class:`rnnfast.train.callbacks.Callback`, optional

        Returns
        -------
        self
        """
        refuse_training(self)
        p = self._validate_params()
        warm = p.warm_start and hasattr(self, "model_")
        data = self._encode(X, y, sample_weight, p, fitted=warm)
        if warm:
            apply_param_changes(self, p)
        else:
            self._initialize(data, p)
        train, val = self._validation_set(data.dataset(), validation_data, p)
        loss = make_loss(p, data.targets, class_weight)
        run_epochs(self, loss, train, val, p, p.epochs, callbacks, early=p.early_stopping)
        return self

    def _validation_set(self, train: SequenceDataset, validation_data: Optional[tuple], p: _params.Params):
        """(train, validation): ``validation_data`` encoded, or a random ``validation_split`` of ``train``."""
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)):
                raise TypeError("validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight), "
                                f"got {type(validation_data).__name__}")
            if len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight), "
                                 f"got {len(validation_data)} items")
            sw = validation_data[2] if len(validation_data) == 3 else None
            return train, self._encode(validation_data[0], validation_data[1], sw, p, fitted=True).dataset()
        if p.validation_split > 0:
            return split_validation(train, p.validation_split, self.seed_)
        return train, None

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> "_RecurrentEstimator":
        """One epoch over ``X``, ``y``, continuing from the current state (initialising it on the first call).

        The first call fixes what later calls must match: the classes (see ``classes``), the input kind
        and feature count, and for regression the mean and scale the targets are standardised with.
        ``validation_split`` and ``early_stopping`` do not apply. Repeated calls on the same data equal
        ``fit`` with that many ``epochs``.

        Parameters
        ----------
        X, y, sample_weight : as :meth:`fit`
        classes : array-like, optional
            All the class labels, on the first call, when ``y`` may not show every class.

        Returns
        -------
        self
        """
        refuse_training(self)
        p = self._validate_params()
        if hasattr(self, "model_"):
            fitted_classes = getattr(self, "classes_", None)
            if classes is not None and (fitted_classes is None or
                                        not np.array_equal(np.unique(np.asarray(classes)), fitted_classes)):
                raise ValueError("classes differs from the classes_ of the first call")
            data = self._encode(X, y, sample_weight, p, fitted=True)
            apply_param_changes(self, p)
        else:
            data = self._encode(X, y, sample_weight, p, fitted=False, classes=classes)
            self._initialize(data, p)
        run_epochs(self, make_loss(p, data.targets), data.dataset(), None, p, 1)
        return self

    # ------------------------------------------------------------------ prediction
    def _outputs(self, X: Any):
        """Raw model outputs (padded per step), the lengths, and whether X was a list."""
        self._check_fitted()
        xs = encode_inputs(X, self._fitted_dtype(), self._specs[0], type(self).__name__,
                           univariate_2d=self._two_d_input)
        ds = SequenceDataset(xs.X, lengths=xs.lengths)
        p = self._validate_params()
        # inference holds no backward cache, so larger batches than training's are cheap
        out = predict_loop(self.model_, ds, per_step=self.per_step_, batch_size=max(p.batch_size, 256),
                           n_threads=p.n_threads)
        return out, ds.lengths, xs.from_list

    def predict_proba(self, X: Any) -> Union[np.ndarray, list]:
        """Class probabilities, columns in the order of ``classes_``.

        Returns
        -------
        numpy.ndarray (N, n_classes); per-step models (N, T, n_classes) (zeros past each sequence's end),
        or a list of (T_i, n_classes) arrays when ``X`` is a list.
        """
        self._check_fitted()
        if self.task_ != CLASSIFICATION:
            raise AttributeError(f"predict_proba is for classification; this {type(self).__name__} was fitted "
                                 f"for {self.task_}")
        out, lengths, from_list = self._outputs(X)
        z = probabilities(out, lengths, self.per_step_)
        return unpad(z, lengths, from_list) if self.per_step_ else z

    def predict(self, X: Any, beam_size: int = 1) -> Union[np.ndarray, list]:
        """Predicted labels (classification), values (regression) or label sequences (``loss="ctc"``).

        Parameters
        ----------
        X : as :meth:`fit`
        beam_size : int, default 1
            ``loss="ctc"`` only: 1 decodes the best path, more runs a prefix beam search keeping that many
            prefixes (:func:`rnnfast.train.ctc_beam_decode`).

        Returns
        -------
        numpy.ndarray (N,) or (N, k); per-step models (N, T[, k]) (entries past a sequence's end are
        meaningless), or a list of per-sequence arrays when ``X`` is a list. ``loss="ctc"``: a list of N
        strings (``y`` held strings) or lists of labels.
        """
        out, lengths, from_list = self._outputs(X)
        if self.task_ == CTC:
            return decode_outputs(out, lengths, self._specs[1], beam_size)
        pred = predictions(out, self._specs[1])
        return unpad(pred, lengths, from_list) if self.per_step_ else pred

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R^2 (regression, averaged over outputs); per-step models score
        every valid step. ``loss="ctc"``: 1 - the label error rate of :meth:`predict` (edit distances over
        the reference labels; for strings, 1 - the character error rate).

        Returns
        -------
        float
        """
        out, lengths, _ = self._outputs(X)
        if self.task_ == CTC:
            return score_sequences(decode_outputs(out, lengths, self._specs[1]), y, sample_weight)
        return score_outputs(out, lengths, y, sample_weight, self._specs[1])

    # ------------------------------------------------------------------ saving
    def save(self, path: Union[str, "os.PathLike[str]"], include_optimizer: bool = True) -> None:
        """Write the fitted estimator (parameters, weights, optimizer state, history) to ``path``.

        The file is rnnfast's pickle-free format (:mod:`rnnfast.io`), written atomically; read it back
        with :func:`rnnfast.load`, which can also continue training (``warm_start`` or ``partial_fit``)
        exactly where this one stopped.

        Parameters
        ----------
        path : str or os.PathLike
            Its directory must exist.
        include_optimizer : bool, default True
            Save the optimizer's state too (Adam's two moments per weight: about 3x the weights' size).
            Without it the file is for inference: it loads and predicts the same, and training after it
            (``warm_start``, ``partial_fit``) starts a fresh optimizer, as Keras's
            ``save(..., include_optimizer=False)``.
        """
        self._check_fitted()
        save_estimator(self, path, include_optimizer)


class LSTM(_RecurrentEstimator):
    """Long short-term memory network for sequence classification, regression and per-step prediction.

    The task follows from ``y`` in :meth:`fit`:

    - labels of any type, shape (N,) (ints, strings, bools): classification with cross-entropy;
      ``predict`` returns the original labels, ``predict_proba`` columns follow ``classes_`` (two
      columns for two classes);
    - floats, shape (N,) or (N, k): regression (forecasting) with ``loss`` (MSE by default), on targets
      standardised per output (the logged loss is in those units; predictions are in the original ones);
    - shape (N, T) (or a list of (T_i,) arrays) matching X's time axis: one target per time step,
      classification for labels and regression for floats; padded steps are masked. ``(N, k)`` float
      targets with ``k == T`` count as per-step unless ``return_sequences=False``.

    ``X`` is a float array (N, T, F), a list of (T_i, F) arrays (variable lengths; batched by similar
    length), or integer token ids (N, T) or a list of lists (an Embedding is added; id 0 is padding).

    Float ``y`` whose values are all whole numbers (0.0 / 1.0 ...) is taken as regression, with a
    :class:`rnnfast.estimators.FloatLabelsWarning`; :class:`LSTMClassifier` and :class:`LSTMRegressor`
    fix the task instead (and are what scikit-learn sees as a classifier and a regressor).

    Parameters
    ----------
    hidden_size : int, default 64
    num_layers : int, default 1
    bidirectional : bool, default False
    dropout : float in [0, 1), default 0
        Dropout on the outputs of every recurrent layer (between stacked layers and before the output
        layer), in training only.
    pooling : {"last", "mean", "max"}, default "last"
        How a sequence becomes one vector for per-sequence targets: the output at its last valid step
        (for a bidirectional model: forward at the end, reverse at the start), or the mean / max over steps.
    return_sequences : {"auto", True, False}, default "auto"
        Per-step targets: decided from ``y``'s shape ("auto") or forced.
    embedding_dim : int, default 32
        For token ids: the size of the learnt embedding.
    vocab_size : int, optional
        For token ids: ids are in [0, vocab_size); default one more than the largest id seen in ``fit``.
    epochs : int, default 10
        Epochs per ``fit`` call (``partial_fit`` runs one).
    batch_size : int, default 32
    optimizer : {"adam", "adamw", "sgd", "rmsprop", "adagrad"}, default "adam"
    lr : float, default 1e-3
    weight_decay : float, default 0
        L2 penalty (decoupled for "adamw").
    momentum : float, default 0
        For "sgd" and "rmsprop".
    loss : {"auto", "cross_entropy", "mse", "mae", "huber", "ctc"}, default "auto"
        "auto": cross-entropy for classification, MSE for regression. "ctc": ``y`` is a label sequence
        per sequence of ``X``, of any length up to it (a list of strings, or of lists of int / str labels),
        trained with :class:`rnnfast.train.CTCLoss` over per-step outputs (the blank and the labels);
        ``predict`` returns label sequences (see :mod:`rnnfast.estimators.ctc`).
    clip_norm : float, optional
        Clip the gradients' global norm to this before each step.
    clip_value : float, optional
        Clip each gradient element to [-clip_value, clip_value].
    validation_split : float in [0, 1), default 0
        A random fraction of the training sequences (drawn with ``random_state``, the same on every fit
        and warm start) held out and evaluated after every epoch; ignored when ``fit`` gets
        ``validation_data``. Note: :func:`rnnfast.train.fit`'s ``validation_split`` takes the *last*
        fraction instead; each keeps its behaviour.
    shuffle : bool, default True
    bucket : bool, default True
        Batch variable-length sequences of similar length together (less padding).
    early_stopping : bool, default False
        Stop when the validation loss (the training loss without validation) has not improved for
        ``patience`` epochs, and keep the best epoch's weights.
    patience : int, default 5
    tbptt : int, optional
        Truncated backpropagation through time in chunks of this many steps (long sequences), the state
        carried between chunks; see :func:`rnnfast.train.fit`.
    warm_start : bool, default False
        ``fit`` continues from the fitted model (weights, optimizer state, epoch count) instead of
        starting again.
    random_state : int, optional
        Seeds everything random (initial weights, shuffling, dropout, the validation split): the same
        value gives bit-identical results on the same machine and thread count.
    verbose : {0, 1, 2}, default 0
        1: a progress bar per epoch (loss, metrics, sequences/s); 2: one line per epoch.
        The epoch lines and status messages are records of the ``rnnfast.train`` logger, shown on stderr
        while no logging is configured (see :mod:`rnnfast._logging`).
    dtype : {"float32", "float64"}, default "float32"
    n_threads : int, optional
        Threads of the kernels (default :func:`rnnfast.get_num_threads`).
    distributed : {None, "auto", "mpi"}, default None
        Data-parallel training over the ranks of an MPI job (``mpiexec -n N python script.py``; see
        :mod:`rnnfast.distributed.mpi`): the same results as one process with the same ``batch_size`` (the
        global batch), up to float rounding; rank 0 writes. ``"auto"``: when started by an MPI launcher.
    normalization : {None, "batch", "layer"}, default None
        A :class:`rnnfast.nn.BatchNorm` or :class:`rnnfast.nn.LayerNorm` after every recurrent layer (between
        stacked layers and before the pooling and output layers), over the valid steps. The ``num_layers``
        layers are then separate layers of the network (``dropout`` between them as without normalization).
    layer_norm : bool, default False
        Layer-normalized recurrent cells (:class:`rnnfast.nn.LSTM`'s ``layer_norm``; GRU likewise, not RNN).
        Kept by ``save``; files written before it load as False.
    recurrent_dropout : float in [0, 1), default 0
        Variational dropout on the recurrent connections in training (one mask per sequence on h_{t-1}, as
        Keras's ``recurrent_dropout``; see :class:`rnnfast.nn.LSTM`). All three estimators take it.
    proj_size : int, default 0
        LSTM only: PyTorch's projection of h to ``proj_size`` (< ``hidden_size``) units, see
        :class:`rnnfast.nn.LSTM`.

    Attributes
    ----------
    model_ : rnnfast.nn.Sequential
    optimizer_ : rnnfast.train.Optimizer
    classes_ : numpy.ndarray
        Classification: the sorted labels. ``loss="ctc"``: the sorted labels of the sequences (outputs
        1..K; output 0 is the blank).
    n_features_in_ : int
        Features per step (1 for token ids).
    vocab_size_ : int
        Token input only.
    task_ : {"classification", "regression", "ctc"}
    per_step_ : bool
    n_outputs_ : int
    history_ : dict of str to list of float
        Per epoch: ``loss``, ``accuracy`` (classification), ``val_loss``, ``val_accuracy``, ``lr``.
    n_epochs_ : int
        Epochs trained so far.

    Examples
    --------
    >>> import numpy as np, rnnfast as rf
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 12, 3)).astype(np.float32)
    >>> y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    >>> model = rf.LSTM(hidden_size=16, epochs=5, random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """

    _layer_cls = nn.LSTM

    # (the arguments added later come last: one given by position keeps its meaning from before them)
    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0, pooling="last",
                 return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto", clip_norm=None,
                 clip_value=None, validation_split=0.0, shuffle=True, bucket=True, early_stopping=False,
                 patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0, dtype="float32",
                 n_threads=None, distributed=None, normalization=None, layer_norm=False, recurrent_dropout=0.0,
                 proj_size=0):
        super().__init__(**_shared_args(locals()))
        self.proj_size = proj_size


def _shared_args(args: dict) -> dict:
    """Of a subclass constructor's ``locals()``, the arguments every recurrent estimator takes."""
    return {name: args[name] for name in _RecurrentEstimator._get_param_names()}


class GRU(_RecurrentEstimator):
    """Gated recurrent unit network; the parameters of :class:`LSTM` plus ``reset_after`` (True, the
    default: PyTorch's GRU, the reset gate applied after the recurrent product; False: Keras's
    ``reset_after=False`` / ONNX's ``linear_before_reset=0``, see :class:`rnnfast.nn.GRU`)."""

    _layer_cls = nn.GRU

    # (reset_after comes last: an argument given by position keeps its meaning from before it existed)
    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0, pooling="last",
                 return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto", clip_norm=None,
                 clip_value=None, validation_split=0.0, shuffle=True, bucket=True, early_stopping=False,
                 patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0, dtype="float32",
                 n_threads=None, distributed=None, reset_after=True, normalization=None, layer_norm=False,
                 recurrent_dropout=0.0):
        super().__init__(**_shared_args(locals()))
        self.reset_after = reset_after


class RNN(_RecurrentEstimator):
    """Simple (Elman) recurrent network; the parameters of :class:`LSTM` plus ``nonlinearity``
    ("tanh", the default, or "relu")."""

    _layer_cls = nn.RNN

    def __init__(self, hidden_size=64, num_layers=1, nonlinearity="tanh", bidirectional=False, dropout=0.0,
                 pooling="last", return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10,
                 batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto",
                 clip_norm=None, clip_value=None, validation_split=0.0, shuffle=True, bucket=True,
                 early_stopping=False, patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0,
                 dtype="float32", n_threads=None, distributed=None, normalization=None, layer_norm=False,
                 recurrent_dropout=0.0):
        super().__init__(**_shared_args(locals()))
        self.nonlinearity = nonlinearity
