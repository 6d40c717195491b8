"""Estimators ``rnnfast.LSTM``, ``rnnfast.GRU`` and ``rnnfast.RNN``: scikit-learn conventions over the fit loop.

::

    model = rf.LSTM(hidden_size=64, epochs=20, random_state=0).fit(X, y)
    model.predict(X); model.predict_proba(X); model.score(X, y); model.history_
    model.save("model.rnnfast"); rf.load("model.rnnfast")

The task follows from ``y`` (see :class:`LSTM`); inside, the model is an :class:`rnnfast.nn.Sequential` of
[``Embedding``] -> recurrent layer -> [``LastStep`` / ``MeanPool`` / ``MaxPool``] -> [``Dropout``] -> ``Linear``,
trained by :func:`rnnfast.train.fit`.

scikit-learn conventions, without importing scikit-learn: ``__init__`` only stores its arguments,
``get_params``/``set_params`` read and write them (unknown names are refused), everything learnt ends
in ``_`` and is set by ``fit``; so ``sklearn.base.clone``, ``Pipeline`` and ``GridSearchCV`` work.
"""
import inspect
import math
import numbers
import warnings

import numpy as np

from rnnfast import __version__ as _VERSION
from rnnfast import nn
from rnnfast.io import FormatError, load_archive, save_archive
from rnnfast.nn.module import to_numpy
from rnnfast.train import fit as _fit_loop
from rnnfast.train import predict as _predict_loop
from rnnfast.train.callbacks import Callback, EarlyStopping
from rnnfast.train.data import SequenceDataset, pad_sequences
from rnnfast.train.fit import Stateful
from rnnfast.train.losses import MAE, MSE, CrossEntropy, Huber
from rnnfast.train.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["LSTM", "GRU", "RNN", "load", "NotFittedError"]

_OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}
_REGRESSION_LOSSES = {"mse": MSE, "mae": MAE, "huber": Huber}
_POOLING = ("last", "mean", "max")
# Parameters that shape the network: changing one makes a warm start impossible.
_ARCH = ("hidden_size", "num_layers", "bidirectional", "dropout", "pooling", "embedding_dim", "dtype",
         "nonlinearity")
_OPT = ("optimizer", "weight_decay", "momentum")


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (scikit-learn's exception of the same name and bases)."""


# ---------------------------------------------------------------------------------------- checks
def _int_param(v, name, lo, none=False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}{' or None' if none else ''}, got {v!r}")
    return int(v)


def _float_param(v, name, lo=0.0, hi=math.inf, lo_open=False, hi_open=False, none=False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v) \
            or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be a number in {lb}{lo}, {hi}{rb}{' or None' if none else ''}, got {v!r}")
    return float(v)


def _choice(v, name, options):
    if v not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {v!r}")
    return v


def _bool_param(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def _is_ragged(obj):
    """A list/tuple (or object array) of sequences rather than a plain array of scalars."""
    if isinstance(obj, np.ndarray):
        return obj.dtype == object and obj.ndim == 1 and obj.size > 0 and isinstance(obj[0], (list, tuple, np.ndarray))
    if isinstance(obj, (list, tuple)):
        # numpy scalars have __array__ too: a sequence needs at least one axis
        return len(obj) > 0 and (isinstance(obj[0], (list, tuple)) or
                                 (hasattr(obj[0], "__array__") and np.ndim(obj[0]) >= 1))
    return False


def _jsonable(v):
    """A parameter value as JSON: numpy scalars become Python numbers, dtypes their names."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (np.dtype, type)):
        return np.dtype(v).name
    return v


class _EpochCounter(Callback):
    """Counts the estimator's completed epochs as they end, so a checkpoint saved by a later callback
    of the same epoch resumes after it."""

    def __init__(self, estimator):
        self.estimator = estimator

    def on_epoch_end(self, epoch, logs=None):
        self.estimator.n_epochs_ = epoch + 1


# ---------------------------------------------------------------------------------------- estimator
class _RecurrentEstimator:
    """Shared implementation of :class:`LSTM`, :class:`GRU` and :class:`RNN` (see :class:`LSTM`)."""

    _layer_cls = None

    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0, pooling="last",
                 return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto", clip_norm=None,
                 clip_value=None, validation_split=0.0, shuffle=True, bucket=True, early_stopping=False,
                 patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0, dtype="float32",
                 n_threads=None):
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

    # ------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD)

    def get_params(self, deep=True):
        """The constructor arguments.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn compatibility (there are no nested estimators).

        Returns
        -------
        dict of str to object
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor arguments (validated when fitting).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For a name that is not a parameter of this estimator.
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}(). "
                                 f"Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
                    if p.name != "self"}
        changed = []
        for k, v in self.get_params().items():
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = v is d or (type(v) is type(d) and v == d)
            except Exception:
                same = False
            if not same:
                changed.append(f"{k}={_jsonable(v)!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so importing it here adds no dependency. The estimator is both a
        # classifier and a regressor (the task follows y), so it declares neither.
        from sklearn.utils import InputTags, Tags, TargetTags
        try:
            tags = Tags(estimator_type=None, target_tags=TargetTags(required=True))
        except TypeError:  # releases whose Tags has no estimator_type
            tags = Tags(target_tags=TargetTags(required=True))
        tags.input_tags = InputTags(two_d_array=False, three_d_array=True)
        tags.non_deterministic = self.random_state is None
        return tags

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                 "appropriate arguments before using this estimator.")

    # ------------------------------------------------------------------ parameters
    def _validated(self):
        """The parameters, checked, as a dict (raises ValueError naming the bad one)."""
        p = self.get_params()
        v = {}
        v["hidden_size"] = _int_param(p["hidden_size"], "hidden_size", 1)
        v["num_layers"] = _int_param(p["num_layers"], "num_layers", 1)
        v["bidirectional"] = _bool_param(p["bidirectional"], "bidirectional")
        v["dropout"] = _float_param(p["dropout"], "dropout", 0.0, 1.0, hi_open=True)
        v["pooling"] = _choice(p["pooling"], "pooling", _POOLING)
        rs = p["return_sequences"]
        if rs != "auto" and not isinstance(rs, (bool, np.bool_)):
            raise ValueError(f"return_sequences must be 'auto', True or False, got {rs!r}")
        v["return_sequences"] = rs if rs == "auto" else bool(rs)
        v["embedding_dim"] = _int_param(p["embedding_dim"], "embedding_dim", 1)
        v["vocab_size"] = _int_param(p["vocab_size"], "vocab_size", 2, none=True)
        v["epochs"] = _int_param(p["epochs"], "epochs", 0)
        v["batch_size"] = _int_param(p["batch_size"], "batch_size", 1)
        v["optimizer"] = _choice(p["optimizer"], "optimizer", _OPTIMIZERS)
        v["lr"] = _float_param(p["lr"], "lr", 0.0, lo_open=True)
        v["weight_decay"] = _float_param(p["weight_decay"], "weight_decay")
        v["momentum"] = _float_param(p["momentum"], "momentum", 0.0, 1.0, hi_open=True)
        if v["momentum"] and v["optimizer"] not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to optimizer='sgd' or 'rmsprop', not {v['optimizer']!r}")
        v["loss"] = _choice(p["loss"], "loss", ("auto", "cross_entropy") + tuple(_REGRESSION_LOSSES))
        v["clip_norm"] = _float_param(p["clip_norm"], "clip_norm", 0.0, lo_open=True, none=True)
        v["clip_value"] = _float_param(p["clip_value"], "clip_value", 0.0, lo_open=True, none=True)
        v["validation_split"] = _float_param(p["validation_split"], "validation_split", 0.0, 1.0, hi_open=True)
        v["shuffle"] = _bool_param(p["shuffle"], "shuffle")
        v["bucket"] = _bool_param(p["bucket"], "bucket")
        v["early_stopping"] = _bool_param(p["early_stopping"], "early_stopping")
        v["patience"] = _int_param(p["patience"], "patience", 0)
        v["tbptt"] = _int_param(p["tbptt"], "tbptt", 1, none=True)
        if v["tbptt"] and v["bidirectional"]:
            raise ValueError("tbptt needs a unidirectional model: the reverse direction reads the whole sequence")
        v["warm_start"] = _bool_param(p["warm_start"], "warm_start")
        rs = p["random_state"]
        if rs is not None and (isinstance(rs, bool) or not isinstance(rs, numbers.Integral) or rs < 0):
            raise ValueError(f"random_state must be None or an int >= 0, got {rs!r}")
        v["random_state"] = None if rs is None else int(rs)
        if p["verbose"] not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2, got {p['verbose']!r}")
        v["verbose"] = int(p["verbose"])
        try:
            dt = np.dtype(p["dtype"])
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {p['dtype']!r}")
        v["dtype"] = dt
        v["n_threads"] = _int_param(p["n_threads"], "n_threads", 1, none=True)
        v["nonlinearity"] = p.get("nonlinearity", "tanh")
        _choice(v["nonlinearity"], "nonlinearity", ("tanh", "relu"))
        return v

    # ------------------------------------------------------------------ input
    def _prepare_X(self, X, spec=None):
        """X -> (padded array, lengths (N,), from_list). With ``spec`` (a fitted model), X is checked
        against it; without, the returned dict describes it."""
        from_list = _is_ragged(X)
        if from_list:
            seqs = [np.asarray(to_numpy(s)) for s in X]
            ndims = {s.ndim for s in seqs}
            if len(ndims) != 1:
                raise ValueError("the sequences of X must all be 1-D token ids or all 2-D (T_i, F) features")
            nd = ndims.pop()
            kinds = {s.dtype.kind for s in seqs}
            if nd == 1:
                if not kinds <= set("iu"):
                    raise ValueError("1-D sequences must hold integer token ids; for one feature per step pass "
                                     "(T_i, 1) arrays")
                kind = "tokens"
            elif nd == 2:
                if not kinds <= set("iufb"):
                    bad = sorted({str(s.dtype) for s in seqs})
                    raise ValueError(f"X's sequences must be numeric, got dtypes {bad}")
                kind = "features"
            else:
                raise ValueError(f"each sequence of X must be (T_i,) token ids or (T_i, F) features, got {nd}-D")
            try:
                Xp, lengths = pad_sequences(seqs, dtype=np.int64 if kind == "tokens" else None)
            except ValueError as e:
                raise ValueError(f"X: {e}") from None
        else:
            if isinstance(X, (list, tuple)) and len(X) == 0:
                raise ValueError("X is empty (0 sequences)")
            try:
                Xp = np.asarray(to_numpy(X))
            except ValueError as e:
                raise ValueError(f"X must be an array or a list of sequences: {e}") from None
            if Xp.dtype.kind not in "iufb":
                raise ValueError(f"X must be numeric (float features or integer token ids), got dtype {Xp.dtype}")
            if Xp.ndim == 2 and Xp.dtype.kind in "iu":
                kind = "tokens"
            elif Xp.ndim == 3:
                kind = "features"
            elif Xp.ndim == 2:
                raise ValueError(f"X has shape {Xp.shape} of {Xp.dtype}: pass (N, T, F) features (for one feature "
                                 "per step, X[..., None]) or integer token ids (N, T)")
            else:
                raise ValueError(f"X must be 3-D (N, T, F) features or 2-D (N, T) token ids, got shape {Xp.shape}")
            if Xp.shape[0] == 0:
                raise ValueError("X is empty (0 sequences)")
            if Xp.shape[1] == 0:
                raise ValueError(f"X has sequences of length 0 (shape {Xp.shape})")
            lengths = None
        N, T = Xp.shape[:2]
        if kind == "tokens":
            Xp = Xp.astype(np.int64, copy=False)
            if Xp.min() < 0:
                raise ValueError(f"token ids must be >= 0, got {Xp.min()}")
            nz = Xp != 0
            if from_list:
                valid = np.arange(T)[None, :] < lengths[:, None]
                if np.any(~nz & valid):
                    i = int(np.flatnonzero((~nz & valid).any(axis=1))[0])
                    raise ValueError(f"sequence {i} holds token id 0, which is reserved for padding; "
                                     "shift the ids by 1")
            else:
                has = nz.any(axis=1)
                if not has.all():
                    raise ValueError(f"sequence {int(np.flatnonzero(~has)[0])} of X holds only padding (token 0)")
                lengths = T - np.argmax(nz[:, ::-1], axis=1).astype(np.int64)
                inner = ~nz & (np.arange(T)[None, :] < lengths[:, None])
                if inner.any():
                    i = int(np.flatnonzero(inner.any(axis=1))[0])
                    raise ValueError(f"sequence {i} of X holds token id 0 before its end; 0 is reserved for "
                                     "trailing padding (shift the ids by 1)")
            n_feat = 1
            max_id = int(Xp.max())
        else:
            dt = spec["dtype"] if spec is not None else np.dtype(self.dtype)
            Xp = Xp.astype(dt, copy=False)
            if not np.all(np.isfinite(Xp)):
                raise ValueError("X contains NaN or infinity")
            n_feat = Xp.shape[2]
            max_id = None
        if lengths is not None and np.all(lengths == T):
            lengths = None
        if spec is not None:
            if kind != spec["input_kind"]:
                raise ValueError(f"X holds {kind}, but {type(self).__name__} was fitted on {spec['input_kind']}")
            if kind == "features" and n_feat != spec["n_features_in"]:
                raise ValueError(f"X has {n_feat} features, but {type(self).__name__} is expecting "
                                 f"{spec['n_features_in']} features as input")
            if kind == "tokens" and max_id >= spec["vocab_size"]:
                raise ValueError(f"X holds token id {max_id}, outside the vocabulary of the fitted model "
                                 f"(vocab_size_={spec['vocab_size']}); set vocab_size when fitting")
            return Xp, lengths, from_list, None
        info = {"input_kind": kind, "n_features_in": n_feat, "max_id": max_id}
        return Xp, lengths, from_list, info

    def _prepare_y(self, y, N, T, lengths, return_sequences, spec=None, classes=None):
        """y -> (encoded targets for the loss, info). Classification targets become class indices,
        regression targets standardised floats; padded steps hold zeros."""
        if y is None:
            raise ValueError("y is required")
        ragged = _is_ragged(y)
        if ragged:
            try:
                ya, ylen = pad_sequences([np.asarray(to_numpy(s)) for s in y], max_length=T)
            except ValueError as e:
                raise ValueError(f"y: {e}") from None
            if ya.shape[0] != N:
                raise ValueError(f"X has {N} sequences but y has {ya.shape[0]} targets (lengths differ)")
            lx = lengths if lengths is not None else np.full(N, T)
            if not np.array_equal(ylen, lx):
                i = int(np.flatnonzero(ylen != lx)[0])
                raise ValueError(f"y[{i}] has {ylen[i]} steps but X[{i}] has {lx[i]}: per-step targets need one "
                                 "target per time step")
        else:
            if isinstance(y, (list, tuple)) and len(y) == 0:
                raise ValueError(f"y is empty, X has {N} sequences")
            ya = np.asarray(to_numpy(y))
            if ya.ndim == 0:
                raise ValueError("y must be an array of targets, got a scalar")
            if ya.shape[0] != N:
                raise ValueError(f"X has {N} sequences but y has {ya.shape[0]} targets (lengths differ)")
        if ya.size == 0:
            raise ValueError("y is empty")
        if spec is not None:
            per_step = spec["per_step"]
        elif return_sequences == "auto":
            per_step = ragged or (ya.ndim >= 2 and ya.shape[1] == T)
        else:
            per_step = return_sequences
        if per_step and (ya.ndim < 2 or ya.shape[1] != T):
            raise ValueError(f"per-step targets need shape ({N}, {T}) (one per time step of X), got {ya.shape}")
        mask = None
        if per_step and lengths is not None:
            mask = np.arange(T)[None, :] < lengths[:, None]
        task = "regression" if ya.dtype.kind == "f" else "classification"
        if ya.dtype.kind not in "biufUSO":
            raise ValueError(f"y must hold labels or numbers, got dtype {ya.dtype}")
        if spec is not None and task != spec["task"]:
            raise ValueError(f"y holds {'floats' if task == 'regression' else 'labels'} ({ya.dtype}), but "
                             f"{type(self).__name__} was fitted for {spec['task']}; pass "
                             f"{'labels (ints or strings)' if spec['task'] == 'classification' else 'floats'}")
        info = {"per_step": bool(per_step), "task": task}
        if task == "classification":
            if ya.ndim == 2 and not per_step and ya.shape[1] == 1:
                ya = ya[:, 0]
            if ya.ndim != (2 if per_step else 1):
                raise ValueError(f"class labels must have shape ({N},){' or (N, T)' if per_step else ''}, "
                                 f"got {ya.shape}; multi-output classification is not supported")
            valid = ya if mask is None else ya[mask]
            if ya.dtype == object:
                if any(isinstance(v, float) and v != v for v in valid.ravel()) or any(v is None for v in valid.ravel()):
                    raise ValueError("y contains NaN or None labels")
            if spec is not None:
                cls = spec["classes"]
            elif classes is not None:
                cls = np.asarray(classes)
                if cls.ndim != 1 or cls.size < 2:
                    raise ValueError("classes must be a 1-D list of at least 2 labels")
                if np.unique(cls).size != cls.size:
                    raise ValueError("classes holds duplicates")
                cls = np.unique(cls)
            else:
                try:
                    cls = np.unique(valid)
                except TypeError as e:
                    raise ValueError(f"the labels in y cannot be sorted (mixed types?): {e}") from None
                if cls.size < 2:
                    raise ValueError(f"y holds a single class ({_jsonable(cls[0])!r}); classification needs at least 2 "
                                     "(float y means regression)")
            try:
                codes = np.searchsorted(cls, ya)
            except TypeError as e:
                raise ValueError(f"the labels of y do not match the classes' type: {e}") from None
            codes = np.minimum(codes, cls.size - 1)
            ok = cls[codes] == ya
            if mask is not None:
                ok |= ~mask
            if not np.all(ok):
                bad = _jsonable(ya[~ok].ravel()[0])
                raise ValueError(f"y contains the label {bad!r}, not among the classes {cls.tolist()[:20]}")
            if mask is not None:
                codes = np.where(mask, codes, 0)
            info.update(classes=cls, n_outputs=int(cls.size), y_1d=True)
            return codes.astype(np.intp), info
        # regression
        ya = ya.astype(np.float64)
        if ya.ndim > (3 if per_step else 2):
            raise ValueError(f"regression targets must be (N,) or (N, k){' or (N, T[, k])' if per_step else ''}, "
                             f"got {ya.shape}")
        base = 2 if per_step else 1
        y_1d = ya.ndim == base
        yk = ya[..., None] if y_1d else ya
        valid = yk if mask is None else yk[mask]
        if not np.all(np.isfinite(valid)):
            raise ValueError("y contains NaN or infinity")
        k = yk.shape[-1]
        if spec is not None:
            if k != spec["n_outputs"]:
                raise ValueError(f"y has {k} outputs, the fitted model {spec['n_outputs']}")
            mean, scale = spec["y_mean"], spec["y_scale"]
        else:
            flat = valid.reshape(-1, k)
            mean = flat.mean(axis=0)
            scale = flat.std(axis=0)
            scale[scale == 0] = 1.0
        dt = spec["dtype"] if spec is not None else np.dtype(self.dtype)
        enc = (yk - mean) / scale
        if mask is not None:
            enc[~mask] = 0.0  # padded steps may hold anything (NaN): a masked NaN would still poison the sum
        info.update(n_outputs=int(k), y_1d=bool(y_1d), y_mean=mean, y_scale=scale)
        return enc.astype(dt), info

    def _prepare_weights(self, sample_weight, N):
        if sample_weight is None:
            return None
        sw = np.asarray(to_numpy(sample_weight))
        if sw.dtype.kind not in "iufb":
            raise ValueError(f"sample_weight must be numeric, got dtype {sw.dtype}")
        sw = sw.astype(np.float64)
        if sw.shape != (N,):
            raise ValueError(f"sample_weight must have shape ({N},), got {sw.shape}")
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError("sample_weight must be finite and non-negative")
        if not np.any(sw > 0):
            raise ValueError("sample_weight is zero everywhere")
        return sw

    def _spec(self):
        return {"input_kind": self.input_kind_, "n_features_in": self.n_features_in_,
                "vocab_size": getattr(self, "vocab_size_", None), "task": self.task_, "per_step": self.per_step_,
                "classes": getattr(self, "classes_", None), "n_outputs": self.n_outputs_,
                "y_mean": getattr(self, "y_mean_", None), "y_scale": getattr(self, "y_scale_", None),
                "dtype": np.dtype(self._arch_["dtype"])}

    def _dataset(self, X, y, sample_weight, p, spec=None, classes=None):
        """Validate and encode one (X, y, sample_weight); returns (dataset, spec)."""
        Xp, lengths, _, xinfo = self._prepare_X(X, spec)
        N, T = Xp.shape[:2]
        yenc, yinfo = self._prepare_y(y, N, T, lengths, p["return_sequences"], spec, classes)
        sw = self._prepare_weights(sample_weight, N)
        if spec is None:
            spec = dict(xinfo, **yinfo)
            spec["dtype"] = p["dtype"]
            if spec["input_kind"] == "tokens":
                vs = p["vocab_size"]
                if vs is not None and vs <= spec["max_id"]:
                    raise ValueError(f"X holds token id {spec['max_id']} but vocab_size={vs}")
                spec["vocab_size"] = vs if vs is not None else spec["max_id"] + 1
            else:
                spec["vocab_size"] = None
        return SequenceDataset(Xp, yenc, lengths, sw, per_step=spec["per_step"]), spec

    # ------------------------------------------------------------------ building
    def _seed_seq(self, *key):
        return np.random.SeedSequence(self.seed_, spawn_key=key)

    def _build_model(self, p, spec):
        dt = p["dtype"]
        gens = [np.random.default_rng(s) for s in self._seed_seq(0).spawn(4)]
        layers = []
        if spec["input_kind"] == "tokens":
            layers.append(nn.Embedding(spec["vocab_size"], p["embedding_dim"], padding_idx=0, dtype=dt, seed=gens[0]))
            in_size = p["embedding_dim"]
        else:
            in_size = spec["n_features_in"]
        kw = dict(num_layers=p["num_layers"], dropout=p["dropout"] if p["num_layers"] > 1 else 0.0,
                  bidirectional=p["bidirectional"], dtype=dt, seed=gens[1])
        if self._layer_cls is nn.RNN:
            kw["nonlinearity"] = p["nonlinearity"]
        layers.append(Stateful(self._layer_cls(in_size, p["hidden_size"], **kw)))
        width = p["hidden_size"] * (2 if p["bidirectional"] else 1)
        if not spec["per_step"]:
            layers.append({"last": lambda: nn.LastStep(bidirectional=p["bidirectional"]),
                           "mean": nn.MeanPool, "max": nn.MaxPool}[p["pooling"]]())
        if p["dropout"] > 0:
            layers.append(nn.Dropout(p["dropout"], seed=gens[2]))
        layers.append(nn.Linear(width, spec["n_outputs"], dtype=dt, seed=gens[3]))
        return nn.Sequential(*layers)

    def _build_optimizer(self, p):
        name = p["optimizer"]
        kw = {"lr": p["lr"], "weight_decay": p["weight_decay"]}
        if name in ("sgd", "rmsprop"):
            kw["momentum"] = p["momentum"]
        return _OPTIMIZERS[name](self.model_, **kw)

    def _loss_fn(self, p, class_weight):
        if self.task_ == "classification":
            if p["loss"] not in ("auto", "cross_entropy"):
                raise ValueError(f"loss={p['loss']!r} is for regression; classification uses cross-entropy")
            return CrossEntropy(weight=self._class_weights(class_weight))
        if class_weight is not None:
            raise ValueError("class_weight is for classification; this is a regression task")
        if p["loss"] == "cross_entropy":
            raise ValueError("loss='cross_entropy' needs class labels in y (got floats: regression)")
        return _REGRESSION_LOSSES["mse" if p["loss"] == "auto" else p["loss"]]()

    def _class_weights(self, class_weight):
        if class_weight is None:
            return None
        C = self.classes_.size
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {class_weight!r}")
            d = self._last_data
            codes = d.y if not d.per_step else d.y[np.arange(d.T)[None, :] < d.lengths[:, None]]
            counts = np.bincount(codes.ravel(), minlength=C).astype(np.float64)
            w = np.where(counts > 0, counts.sum() / (C * np.maximum(counts, 1)), 0.0)
            return w
        if not isinstance(class_weight, dict):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {type(class_weight).__name__}")
        w = np.ones(C)
        labels = self.classes_.tolist()
        for label, weight in class_weight.items():
            key = label.item() if isinstance(label, np.generic) else label
            if key not in labels:
                raise ValueError(f"class_weight names the label {label!r}, not among the classes {labels[:20]}")
            weight = _float_param(weight, f"class_weight[{label!r}]")
            w[labels.index(key)] = weight
        return w

    def _set_fitted(self, spec, p):
        self.input_kind_ = spec["input_kind"]
        self.n_features_in_ = spec["n_features_in"]
        if spec["vocab_size"] is not None:
            self.vocab_size_ = spec["vocab_size"]
        self.task_ = spec["task"]
        self.per_step_ = spec["per_step"]
        self.n_outputs_ = spec["n_outputs"]
        self._y_1d = spec["y_1d"]
        if spec["task"] == "classification":
            self.classes_ = spec["classes"]
        else:
            self.y_mean_ = np.asarray(spec["y_mean"], dtype=np.float64)
            self.y_scale_ = np.asarray(spec["y_scale"], dtype=np.float64)
        self._arch_ = {k: (p[k].name if k == "dtype" else p[k]) for k in _ARCH}
        self._opt_ = {k: p[k] for k in _OPT + ("lr",)}

    def _clear_fitted(self):
        for name in ("model_", "optimizer_", "classes_", "vocab_size_", "y_mean_", "y_scale_"):
            self.__dict__.pop(name, None)

    def _initialize(self, spec, p):
        self._clear_fitted()
        rs = p["random_state"]
        self.seed_ = rs if rs is not None else int(np.random.SeedSequence().entropy)
        self._set_fitted(spec, p)
        self.model_ = self._build_model(p, spec)
        self.optimizer_ = self._build_optimizer(p)
        self.history_ = {}
        self.n_epochs_ = 0

    def _check_warm(self, p):
        """Apply parameter changes made since the last fit to a fitted model (warm start, partial_fit)."""
        for k in _ARCH:
            cur = p[k].name if k == "dtype" else p[k]
            if cur != self._arch_[k]:
                raise ValueError(f"{k} changed from {self._arch_[k]!r} to {cur!r} since the model was fitted; "
                                 "refit from scratch (warm_start=False) to change the network")
        if any(p[k] != self._opt_[k] for k in _OPT):
            warnings.warn("the optimizer settings changed: a new optimizer starts (its moments are lost)",
                          RuntimeWarning, stacklevel=3)
            self.optimizer_ = self._build_optimizer(p)
        elif p["lr"] != self._opt_["lr"]:
            self.optimizer_.lr = p["lr"]  # else the optimizer keeps its own (possibly scheduled) rate
        self._opt_ = {k: p[k] for k in _OPT + ("lr",)}

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, validation_data=None, class_weight=None, callbacks=None):
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
        p = self._validated()
        warm = p["warm_start"] and hasattr(self, "model_")
        data, spec = self._dataset(X, y, sample_weight, p, self._spec() if warm else None)
        if warm:
            self._check_warm(p)
        else:
            self._initialize(spec, p)
        self._last_data = data
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight)")
            val, _ = self._dataset(validation_data[0], validation_data[1],
                                   validation_data[2] if len(validation_data) == 3 else None, p, self._spec())
        elif p["validation_split"] > 0:
            data, val = self._split(data, p["validation_split"])
        try:
            self._run(data, val, p, p["epochs"], class_weight, callbacks, early=p["early_stopping"])
        finally:
            del self._last_data
        return self

    def _split(self, data, fraction):
        """A random validation subset (seeded from ``random_state``)."""
        n = len(data)
        n_val = int(round(n * fraction))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"validation_split={fraction} of {n} sequences leaves {n - n_val} for training and "
                             f"{n_val} for validation; both need at least one")
        perm = np.random.default_rng(self._seed_seq(3)).permutation(n)
        return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))

    def partial_fit(self, X, y, classes=None, sample_weight=None):
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
        p = self._validated()
        if hasattr(self, "model_"):
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                          getattr(self, "classes_", None)):
                raise ValueError("classes differs from the classes_ of the first call")
            data, _ = self._dataset(X, y, sample_weight, p, self._spec())
            self._check_warm(p)
        else:
            data, spec = self._dataset(X, y, sample_weight, p, None, classes)
            self._initialize(spec, p)
        self._last_data = data
        try:
            self._run(data, None, p, 1, None, None, early=False)
        finally:
            del self._last_data
        return self

    def _run(self, data, val, p, epochs, class_weight, callbacks, early):
        loss = self._loss_fn(p, class_weight)
        cbs = list(callbacks or [])
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be rnnfast.train.callbacks.Callback objects, got {type(cb).__name__}")
        if early:
            cbs.append(EarlyStopping(monitor="val_loss" if val is not None else "loss", patience=p["patience"],
                                     restore_best_weights=True))
        metrics = ["accuracy"] if self.task_ == "classification" else None
        cbs.insert(0, _EpochCounter(self))
        hist = _fit_loop(self.model_, loss, self.optimizer_, data, epochs=epochs, batch_size=p["batch_size"],
                         shuffle=p["shuffle"], bucket=p["bucket"], validation_data=val, clip_norm=p["clip_norm"],
                         clip_value=p["clip_value"], metrics=metrics, callbacks=cbs, tbptt=p["tbptt"],
                         seed=self.seed_, initial_epoch=self.n_epochs_, history=self.history_,
                         n_threads=p["n_threads"], verbose=p["verbose"], estimator=self)
        self.model_.eval()
        return hist

    # ------------------------------------------------------------------ prediction
    def _outputs(self, X):
        """Raw model outputs (padded per step) with the lengths and whether X was a list."""
        self._check_fitted()
        Xp, lengths, from_list, _ = self._prepare_X(X, self._spec())
        ds = SequenceDataset(Xp, lengths=lengths)
        p = self._validated()
        # inference holds no backward cache, so larger batches than training's are cheap
        out = _predict_loop(self.model_, ds, per_step=self.per_step_, batch_size=max(p["batch_size"], 256),
                            n_threads=p["n_threads"])
        return out, ds.lengths, from_list

    @staticmethod
    def _unpad(arr, lengths, from_list):
        if from_list:
            return [arr[i, :n] for i, n in enumerate(lengths)]
        return arr

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Returns
        -------
        numpy.ndarray (N, n_classes); per-step models (N, T, n_classes) (zeros past each sequence's end),
        or a list of (T_i, n_classes) arrays when ``X`` is a list.
        """
        self._check_fitted()
        if self.task_ != "classification":
            raise AttributeError(f"predict_proba is for classification; this {type(self).__name__} was fitted "
                                 "for regression")
        out, lengths, from_list = self._outputs(X)
        z = out - out.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        if self.per_step_:
            z[~(np.arange(z.shape[1])[None, :] < lengths[:, None])] = 0
            return self._unpad(z, lengths, from_list)
        return z

    def predict(self, X):
        """Predicted labels (classification) or values (regression).

        Returns
        -------
        numpy.ndarray (N,) or (N, k); per-step models (N, T[, k]) (entries past a sequence's end are
        meaningless), or a list of per-sequence arrays when ``X`` is a list.
        """
        out, lengths, from_list = self._outputs(X)
        if self.task_ == "classification":
            pred = self.classes_[out.argmax(axis=-1)]
        else:
            pred = out.astype(np.float64) * self.y_scale_ + self.y_mean_
            if self._y_1d:
                pred = pred[..., 0]
        return self._unpad(pred, lengths, from_list) if self.per_step_ else pred

    def score(self, X, y, sample_weight=None):
        """Accuracy (classification) or R^2 (regression, averaged over outputs); per-step models score
        every valid step.

        Returns
        -------
        float
        """
        out, lengths, from_list = self._outputs(X)
        N, T = out.shape[:2]
        sw = self._prepare_weights(sample_weight, N)
        if self.per_step_:
            if _is_ragged(y):
                ya, _ = pad_sequences([np.asarray(to_numpy(s)) for s in y], max_length=T)
            else:
                ya = np.asarray(to_numpy(y))
            if ya.shape[:2] != (N, T):
                raise ValueError(f"y must have one target per time step, shape ({N}, {T}), got {ya.shape}")
            mask = np.arange(T)[None, :] < lengths[:, None]
        else:
            ya = np.asarray(to_numpy(y))
            if ya.shape[0] != N:
                raise ValueError(f"X has {N} sequences but y has {ya.shape[0]} targets")
            mask = np.ones(N, bool)
        w = mask.astype(np.float64) if sw is None else mask * sw.reshape((-1,) + (1,) * (mask.ndim - 1))
        if self.task_ == "classification":
            pred = self.classes_[out.argmax(axis=-1)]
            if ya.ndim == pred.ndim + 1 and ya.shape[-1] == 1:
                ya = ya[..., 0]
            hit = pred == ya
            return float((hit * w).sum() / w.sum())
        pred = out.astype(np.float64) * self.y_scale_ + self.y_mean_
        yk = ya.astype(np.float64)
        if yk.ndim == pred.ndim - 1:
            yk = yk[..., None]
        if yk.shape != pred.shape:
            raise ValueError(f"y has shape {ya.shape}, predictions {pred.shape if not self._y_1d else pred.shape[:-1]}")
        wv = w[mask]
        yv, pv = yk[mask], pred[mask]
        mean = np.average(yv, axis=0, weights=wv)
        ss_res = (wv[:, None] * (yv - pv) ** 2).sum(axis=0)
        ss_tot = (wv[:, None] * (yv - mean) ** 2).sum(axis=0)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
        return float(r2.mean())

    # ------------------------------------------------------------------ saving
    def save(self, path):
        """Write the fitted estimator (parameters, weights, optimizer state, history) to ``path``.

        The file is rnnfast's pickle-free format (:mod:`rnnfast.io`), written atomically; read it back
        with :func:`rnnfast.load`, which can also continue training (``warm_start`` or ``partial_fit``)
        exactly where this one stopped.

        Parameters
        ----------
        path : str or os.PathLike
        """
        self._check_fitted()
        arrays = {f"model/{k}": v for k, v in self.model_.state_dict().items()}
        osd = self.optimizer_.state_dict()
        for pname, slots in osd["state"].items():
            for slot, a in slots.items():
                arrays[f"optimizer/{pname}/{slot}"] = a
        fitted = {"input_kind": self.input_kind_, "n_features_in": self.n_features_in_,
                  "vocab_size": getattr(self, "vocab_size_", None), "task": self.task_, "per_step": self.per_step_,
                  "n_outputs": self.n_outputs_, "y_1d": self._y_1d, "n_epochs": self.n_epochs_, "seed": self.seed_,
                  "arch": self._arch_, "opt": self._opt_}
        extra = {"rnnfast_version": _VERSION, "fitted": fitted, "history": self.history_,
                 "optimizer": {"class": osd["optimizer"], "hyper": osd["hyper"], "steps": osd["steps"]}}
        if self.task_ == "classification":
            c = self.classes_
            values = [v.decode("latin-1") for v in c.tolist()] if c.dtype.kind == "S" else c.tolist()
            extra["classes"] = {"values": values, "dtype": c.dtype.str}
        else:
            extra["y_mean"] = self.y_mean_.tolist()
            extra["y_scale"] = self.y_scale_.tolist()
        config = {k: _jsonable(v) for k, v in self.get_params().items()}
        save_archive(path, f"estimator.{type(self).__name__}", config, arrays, extra)

    def _restore(self, arrays, extra):
        """Rebuild the fitted state from :meth:`save`'s arrays and extra (raises on any mismatch)."""
        f = extra["fitted"]
        p = self._validated()
        spec = {"input_kind": _choice(f["input_kind"], "input_kind", ("features", "tokens")),
                "n_features_in": int(f["n_features_in"]), "vocab_size": f["vocab_size"],
                "task": _choice(f["task"], "task", ("classification", "regression")),
                "per_step": bool(f["per_step"]), "n_outputs": int(f["n_outputs"]), "y_1d": bool(f["y_1d"])}
        if spec["task"] == "classification":
            c = extra["classes"]
            dt = np.dtype(c["dtype"])
            if dt.kind not in "biufUSO":
                raise ValueError(f"unsupported class label dtype {dt}")
            values = [v.encode("latin-1") for v in c["values"]] if dt.kind == "S" else c["values"]
            spec["classes"] = np.array(values, dtype=dt)
            if spec["classes"].shape != (spec["n_outputs"],):
                raise ValueError("classes do not match the number of outputs")
        else:
            spec["y_mean"] = np.asarray(extra["y_mean"], dtype=np.float64)
            spec["y_scale"] = np.asarray(extra["y_scale"], dtype=np.float64)
            if spec["y_mean"].shape != (spec["n_outputs"],) or spec["y_scale"].shape != (spec["n_outputs"],):
                raise ValueError("y_mean / y_scale do not match the number of outputs")
        self.seed_ = int(f["seed"])
        self._set_fitted(spec, p)
        self._arch_ = {k: f["arch"][k] for k in _ARCH}
        self._opt_ = {k: f["opt"][k] for k in _OPT + ("lr",)}
        self.model_ = self._build_model(p, spec)
        sd = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
        self.model_.load_state_dict(sd)
        o = extra["optimizer"]
        opt_arrays = {}
        for k, a in arrays.items():
            if k.startswith("optimizer/"):
                pname, slot = k[len("optimizer/"):].rsplit("/", 1)
                opt_arrays.setdefault(pname, {})[slot] = a
        names = [n for n, _ in self.model_.named_parameters()]
        state = {n: opt_arrays.get(n, {}) for n in names}
        hyper = dict(o["hyper"])
        if "betas" in hyper and isinstance(hyper["betas"], list):
            hyper["betas"] = tuple(hyper["betas"])
        name = {cls.__name__: key for key, cls in _OPTIMIZERS.items()}.get(o["class"])
        if name is None:
            raise ValueError(f"unknown optimizer {o['class']!r}")
        p_opt = dict(p, optimizer=name)
        self.optimizer_ = self._build_optimizer(p_opt)
        self.optimizer_.load_state_dict({"optimizer": o["class"], "hyper": hyper, "steps": o["steps"], "state": state})
        history = extra.get("history", {})
        if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
            raise ValueError("history must map names to lists")
        self.history_ = {str(k): [float(x) for x in v] for k, v in history.items()}
        self.n_epochs_ = int(f["n_epochs"])
        self.model_.eval()


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
    loss : {"auto", "cross_entropy", "mse", "mae", "huber"}, default "auto"
        "auto": cross-entropy for classification, MSE for regression.
    clip_norm : float, optional
        Clip the gradients' global norm to this before each step.
    clip_value : float, optional
        Clip each gradient element to [-clip_value, clip_value].
    validation_split : float in [0, 1), default 0
        A random fraction of the training data (seeded by ``random_state``) held out and evaluated after
        every epoch; ignored when ``fit`` gets ``validation_data``.
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
    dtype : {"float32", "float64"}, default "float32"
    n_threads : int, optional
        Threads of the kernels (default :func:`rnnfast.get_num_threads`).

    Attributes
    ----------
    model_ : rnnfast.nn.Sequential
    optimizer_ : rnnfast.train.Optimizer
    classes_ : numpy.ndarray
        Classification: the sorted labels.
    n_features_in_ : int
        Features per step (1 for token ids).
    vocab_size_ : int
        Token input only.
    task_ : {"classification", "regression"}
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


class GRU(_RecurrentEstimator):
    """Gated recurrent unit network; the same parameters, attributes and methods as :class:`LSTM`."""

    _layer_cls = nn.GRU


class RNN(_RecurrentEstimator):
    """Simple (Elman) recurrent network; the parameters of :class:`LSTM` plus ``nonlinearity``
    ("tanh", the default, or "relu")."""

    _layer_cls = nn.RNN

    def __init__(self, hidden_size=64, num_layers=1, nonlinearity="tanh", bidirectional=False, dropout=0.0,
                 pooling="last", return_sequences="auto", embedding_dim=32, vocab_size=None, epochs=10,
                 batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, loss="auto",
                 clip_norm=None, clip_value=None, validation_split=0.0, shuffle=True, bucket=True,
                 early_stopping=False, patience=5, tbptt=None, warm_start=False, random_state=None, verbose=0,
                 dtype="float32", n_threads=None):
        super().__init__(hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dropout=dropout, pooling=pooling, return_sequences=return_sequences,
                         embedding_dim=embedding_dim, vocab_size=vocab_size, epochs=epochs, batch_size=batch_size,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, loss=loss,
                         clip_norm=clip_norm, clip_value=clip_value, validation_split=validation_split,
                         shuffle=shuffle, bucket=bucket, early_stopping=early_stopping, patience=patience,
                         tbptt=tbptt, warm_start=warm_start, random_state=random_state, verbose=verbose,
                         dtype=dtype, n_threads=n_threads)
        self.nonlinearity = nonlinearity


_ESTIMATORS = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


def load(path):
    """Load an estimator written by ``save`` (:meth:`LSTM.save`).

    Nothing in the file is executed: it is parsed as JSON and ``.npy`` arrays (no pickle), and checked.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    LSTM, GRU or RNN
        Fitted, in the state it was saved in (predictions are bit-identical; training can continue).

    Raises
    ------
    rnnfast.io.FormatError
        The file is damaged, truncated, not an rnnfast file, or holds something other than an estimator.
    FileNotFoundError
    """
    kind, config, arrays, extra = load_archive(path, kind=lambda k: k.startswith("estimator."))
    cls = _ESTIMATORS.get(kind.split(".", 1)[1])
    if cls is None:
        raise FormatError(f"{path}: holds an unknown estimator {kind!r}")
    names = set(cls._get_param_names())
    if set(config) != names:
        raise FormatError(f"{path}: the saved parameters do not match {cls.__name__}'s: missing "
                          f"{sorted(names - set(config))}, unexpected {sorted(set(config) - names)}")
    est = cls(**config)
    try:
        est._restore(arrays, extra)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise FormatError(f"{path}: damaged estimator state ({type(e).__name__}: {e})") from None
    return est
