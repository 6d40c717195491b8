"""Keras 3 in and out: :func:`from_keras`, :func:`to_keras`, and the array-level :func:`keras_weights` /
:func:`load_keras_weights` (no Keras needed).

How rnnfast layers map to Keras layers
--------------------------------------
A Keras recurrent layer is one level of one stack: ``LSTM`` / ``GRU`` / ``SimpleRNN``, or a
``Bidirectional`` wrapper (``merge_mode="concat"``) around one. An rnnfast layer with ``num_layers=L`` is
L such Keras layers in a row, the bidirectional ones wrapped. The arrays of an rnnfast layer are therefore
the concatenation of the ``get_weights()`` lists of those Keras layers, level by level, the forward
direction before the reverse one (the order of ``Bidirectional.get_weights()``)::

    [kernel_l0, recurrent_kernel_l0, bias_l0, (kernel_l0_rev, recurrent_kernel_l0_rev, bias_l0_rev,) kernel_l1, ...]

so ``keras_weights(layer) == keras.Sequential(levels).get_weights()``; a :class:`rnnfast.nn.Sequential` (or a
fitted estimator's network) gives the concatenation over its layers, as a Keras ``Sequential`` does.

Per direction, with H units and G gates (LSTM i, f, c, o; GRU z, r, h; SimpleRNN one):

- ``kernel`` (I, G*H) = ``weight_ih`` transposed, ``recurrent_kernel`` (H, G*H) = ``weight_hh`` transposed,
  blocks in Keras's gate order;
- ``bias``: LSTM and SimpleRNN (G*H,) = ``bias_ih + bias_hh`` (loaded back as ``bias_ih``, ``bias_hh = 0``);
  GRU ``reset_after=True`` (2, 3H) = [input bias; recurrent bias]; GRU ``reset_after=False`` (3H,) (the
  input bias; the recurrent bias loads as zero). No bias array when the layer has ``bias=False``.

``Linear`` is a ``Dense`` kernel (in, out) = ``weight`` transposed, then ``bias``; ``Embedding`` is its
``(num_embeddings, embedding_dim)`` matrix; ``Dropout`` and the pooling layers have no arrays.

In :func:`from_keras`, consecutive recurrent levels of the same kind, width, direction and options, all but
the last returning sequences, become one rnnfast layer with ``num_layers`` levels; a level with
``return_sequences=False`` is followed by :class:`rnnfast.nn.LastStep` (``bidirectional=True`` after a
``Bidirectional``: the forward half at the last step, the reverse half at step 0, which is what Keras returns).
:func:`to_keras` does the reverse; a stacked layer's ``dropout`` becomes Keras ``Dropout`` layers between its
levels (which :func:`from_keras` keeps as rnnfast Dropout layers between one-level layers), its
``recurrent_dropout`` each level's ``recurrent_dropout`` (:func:`from_keras` does not carry a Keras layer's
``dropout`` / ``recurrent_dropout``: it warns), an LSTM with ``proj_size`` is refused (Keras has no
projection), and an
Embedding's ``padding_idx`` has no Keras form (its row, zero, is carried as a weight).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rnnfast.interop._gates import from_order, to_order
from rnnfast.interop._network import cell_of, float_dtype, layers_of, network, refuse_layer_norm, reset_after

__all__ = ["keras_weights", "load_keras_weights", "from_keras", "to_keras"]

# --------------------------------------------------------------------------------------------- array level


def _suffixes(layer: Any):
    """The state-dict suffix of each (level, direction) of a recurrent layer, in Keras's order."""
    for level in range(layer.num_layers):
        for d in range(2 if layer.bidirectional else 1):
            yield f"_l{level}" + ("_reverse" if d else "")


def _direction_arrays(sd: dict, cell: str, sfx: str, bias: bool, after: bool) -> list[np.ndarray]:
    kernel = np.ascontiguousarray(to_order(sd["weight_ih" + sfx], "keras", cell).T)
    recurrent = np.ascontiguousarray(to_order(sd["weight_hh" + sfx], "keras", cell).T)
    if not bias:
        return [kernel, recurrent]
    b_ih = to_order(sd["bias_ih" + sfx], "keras", cell)
    b_hh = to_order(sd["bias_hh" + sfx], "keras", cell)
    if cell == "gru" and after:
        return [kernel, recurrent, np.stack([b_ih, b_hh])]
    return [kernel, recurrent, b_ih + b_hh]


def _direction_state(arrays: list, cell: str, sfx: str, bias: bool, after: bool) -> dict:
    sd = {"weight_ih" + sfx: from_order(arrays[0].T, "keras", cell),
          "weight_hh" + sfx: from_order(arrays[1].T, "keras", cell)}
    if bias:
        b = arrays[2]
        b_ih, b_hh = (b[0], b[1]) if cell == "gru" and after else (b, np.zeros_like(b))
        sd["bias_ih" + sfx] = from_order(b_ih, "keras", cell)
        sd["bias_hh" + sfx] = from_order(b_hh, "keras", cell)
    return sd


def _arrays(layer: Any) -> list[np.ndarray]:
    """The Keras arrays of one rnnfast layer (the module docstring gives the layout)."""
    from rnnfast.nn import Dropout, Embedding, LastStep, Linear, MaxPool, MeanPool

    cell = cell_of(layer)
    if cell is not None:
        refuse_layer_norm(layer, "Keras")
        _refuse_projection(layer)
        sd = layer.state_dict()
        return [a for sfx in _suffixes(layer)
                for a in _direction_arrays(sd, cell, sfx, layer.bias, reset_after(layer))]
    if isinstance(layer, Linear):
        sd = layer.state_dict()
        return [np.ascontiguousarray(sd["weight"].T)] + ([sd["bias"]] if layer.bias else [])
    if isinstance(layer, Embedding):
        return [layer.state_dict()["weight"]]
    if isinstance(layer, (Dropout, LastStep, MeanPool, MaxPool)):
        return []
    raise TypeError(f"no Keras weights for a {type(layer).__name__}: keras_weights takes rnnfast LSTM, GRU, RNN, "
                    "Linear, Embedding, Dropout, LastStep, MeanPool, MaxPool, a Sequential of them or an estimator")


def _state(layer: Any, arrays: list) -> dict:
    """The state dict of one rnnfast layer from its Keras arrays (already checked against ``_arrays``)."""
    from rnnfast.nn import Embedding, Linear

    cell = cell_of(layer)
    if cell is not None:
        per = 3 if layer.bias else 2
        sd = {}
        for k, sfx in enumerate(_suffixes(layer)):
            sd.update(_direction_state(arrays[k * per:(k + 1) * per], cell, sfx, layer.bias, reset_after(layer)))
        return sd
    if isinstance(layer, Linear):
        return dict(zip(("weight", "bias"), [arrays[0].T] + arrays[1:]))
    if isinstance(layer, Embedding):
        return {"weight": arrays[0]}
    return {}


def _shape_hint(layer: Any, want: tuple, got: tuple) -> str:
    if cell_of(layer) == "gru" and {len(want), len(got)} == {1, 2} and want[-1] == got[-1]:
        if len(got) == 2:
            return (" (a (2, 3H) bias is a Keras GRU with reset_after=True; this layer has reset_after=False)")
        return (" (a (3H,) bias is a Keras GRU with reset_after=False: load it into "
                "rf.nn.GRU(..., reset_after=False))")
    return ""


def keras_weights(layer: Any) -> list[np.ndarray]:
    """An rnnfast model's weights as Keras 3's ``get_weights()`` lists them (no Keras needed).

    Parameters
    ----------
    layer : rnnfast.nn.LSTM, GRU, RNN, Linear, Embedding, Dropout, LastStep, MeanPool, MaxPool, a
        :class:`rnnfast.nn.Sequential` of them, or a fitted estimator (its network)

    Returns
    -------
    list of numpy.ndarray
        In the order of the equivalent Keras layers' ``get_weights()``, concatenated (module docstring):
        ``to_keras(layer).get_weights()`` holds the same arrays.

    Examples
    --------
    >>> import rnnfast as rf
    >>> [w.shape for w in keras_weights(rf.nn.GRU(3, 4))]
    [(3, 12), (4, 12), (2, 12)]
    """
    return [a for part in layers_of(layer) for a in _arrays(part)]


def _check_arrays(parts: list, arrays: Any) -> list[list[np.ndarray]]:
    """``arrays`` split per layer, each checked against the layer's own Keras arrays (count, shape)."""
    if isinstance(arrays, (str, bytes, dict)) or not isinstance(arrays, Sequence):
        raise TypeError(f"arrays must be a list of arrays (Keras get_weights()), got {type(arrays).__name__}")
    expected = [_arrays(p) for p in parts]
    n = sum(len(e) for e in expected)
    if len(arrays) != n:
        raise ValueError(f"{n} arrays expected ({', '.join(type(p).__name__ for p in parts)}), got {len(arrays)}")
    out, k = [], 0
    for part, want in zip(parts, expected):
        mine = []
        for w in want:
            a = np.asarray(arrays[k])
            if a.dtype.kind not in "fiu":
                raise TypeError(f"arrays[{k}] must be a real numeric array, got dtype {a.dtype}")
            if a.shape != w.shape:
                raise ValueError(f"arrays[{k}] ({type(part).__name__}) must have shape {w.shape}, got "
                                 f"{a.shape}{_shape_hint(part, w.shape, a.shape)}")
            mine.append(a)
            k += 1
        out.append(mine)
    return out


def load_keras_weights(layer: Any, arrays: Sequence[Any]) -> None:
    """Load Keras 3 weight arrays into an rnnfast model (no Keras needed); the inverse of :func:`keras_weights`.

    Parameters
    ----------
    layer : as :func:`keras_weights`; built with the Keras model's sizes (GRU ``reset_after`` included)
    arrays : list of arrays
        ``keras_model.get_weights()`` of the equivalent Keras layers (module docstring). An LSTM or
        SimpleRNN bias loads into ``bias_ih`` with ``bias_hh`` zero.

    Raises
    ------
    TypeError
        ``arrays`` is not a list of numeric arrays, or ``layer`` is not an rnnfast layer.
    ValueError
        Wrong number of arrays or a wrong shape (nothing is loaded then).
    """
    from rnnfast.nn import Sequential

    net = network(layer)
    parts = layers_of(net)
    states = [_state(p, a) for p, a in zip(parts, _check_arrays(parts, arrays))]
    if isinstance(net, Sequential):
        net.load_state_dict({f"{i}.{k}": v for i, sd in enumerate(states) for k, v in sd.items()})
    elif states[0]:
        net.load_state_dict(states[0])


# ------------------------------------------------------------------------------------------------ Keras


def _keras() -> Any:
    try:
        import keras
    except ImportError as e:
        raise ImportError("Keras 3 and one of its backends (torch, jax or tensorflow, named by KERAS_BACKEND "
                          f"before keras is imported) are needed for this conversion: {e}") from e
    if int(keras.__version__.split(".")[0]) < 3:
        raise ImportError(f"Keras 3 is needed, found keras {keras.__version__}")
    return keras


def _name(value: Any) -> str:
    """An activation's name from a Keras config entry (a string, or a serialized dict)."""
    if isinstance(value, dict):
        return str(value.get("config", value).get("name", value))
    return str(getattr(value, "__name__", value))


@dataclass
class _Level:
    """One Keras recurrent layer (a level of a stack), its checked options and weights."""

    cell: str
    units: int
    input_dim: int
    bidirectional: bool
    bias: bool
    after: bool
    nonlinearity: str
    return_sequences: bool
    dtype: np.dtype
    weights: list = field(repr=False)

    def joins(self, nxt: "_Level") -> bool:
        """Whether ``nxt`` is the next level of the same rnnfast layer."""
        same = ("cell", "units", "bidirectional", "bias", "after", "nonlinearity", "dtype")
        return self.return_sequences and all(getattr(self, k) == getattr(nxt, k) for k in same)


_RECURRENT_KEYS = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "return_sequences")


def _recurrent_options(kl: Any, cell: str) -> str:
    """Refuse what rnnfast does not compute; returns the activation name."""
    cfg = kl.get_config()
    what = f"Keras {type(kl).__name__} {kl.name!r}"
    act = _name(cfg["activation"])
    allowed = ("tanh", "relu") if cell == "rnn" else ("tanh",)
    if act not in allowed:
        raise ValueError(f"{what}: activation={act!r} is not supported (rnnfast's {cell.upper()} uses "
                         f"{' or '.join(allowed)})")
    if cell != "rnn" and _name(cfg["recurrent_activation"]) != "sigmoid":
        raise ValueError(f"{what}: recurrent_activation={_name(cfg['recurrent_activation'])!r} is not supported "
                         "(rnnfast's gates use sigmoid, the Keras 3 default)")
    if cfg.get("stateful"):
        raise ValueError(f"{what}: stateful=True is not converted (rnnfast carries a state from call to call "
                         "with rnnfast.nn.Stateful); convert a stateful=False copy")
    if cfg.get("dropout") or cfg.get("recurrent_dropout"):
        warnings.warn(f"{what}: dropout / recurrent_dropout act in training only and are not carried over",
                      UserWarning, stacklevel=4)
    return act


def _level(kl: Any, cell: str, bidirectional: bool) -> _Level:
    inner = kl.forward_layer if bidirectional else kl
    act = _recurrent_options(inner, cell)
    weights = _weights(kl)
    cfg = inner.get_config()
    return _Level(cell, int(cfg["units"]), weights[0].shape[0], bidirectional, bool(cfg["use_bias"]),
                  bool(cfg.get("reset_after", True)), act, bool(cfg["return_sequences"]),
                  float_dtype(weights[0].dtype, f"Keras layer {kl.name!r}"), weights)


def _bidirectional_level(kl: Any, cells: dict) -> _Level:
    if kl.merge_mode != "concat":
        raise ValueError(f"Keras Bidirectional {kl.name!r}: merge_mode={kl.merge_mode!r} is not supported; only "
                         "'concat' ([forward | reverse], rnnfast's output layout)")
    fwd, bwd = kl.forward_layer, kl.backward_layer
    cell = next((c for cls, c in cells.items() if type(fwd) is cls), None)
    if cell is None:
        raise ValueError(f"Keras Bidirectional {kl.name!r} wraps a {type(fwd).__name__}; only LSTM, GRU and "
                         "SimpleRNN convert")
    if fwd.go_backwards or not bwd.go_backwards or type(bwd) is not type(fwd):
        raise ValueError(f"Keras Bidirectional {kl.name!r}: the backward layer must be the forward layer's "
                         "kind run with go_backwards=True (and the forward one with go_backwards=False)")
    fc, bc = fwd.get_config(), bwd.get_config()
    differ = [k for k in _RECURRENT_KEYS if fc.get(k) != bc.get(k)]
    if differ:
        raise ValueError(f"Keras Bidirectional {kl.name!r}: the two directions differ in {differ}")
    _recurrent_options(bwd, cell)
    return _level(kl, cell, True)


def _piece(keras: Any, kl: Any) -> Any:
    """One Keras layer as a :class:`_Level` (recurrent) or a built rnnfast layer."""
    from rnnfast import nn

    L = keras.layers
    cells = {L.LSTM: "lstm", L.GRU: "gru", L.SimpleRNN: "rnn"}
    if isinstance(kl, L.Bidirectional):
        return _bidirectional_level(kl, cells)
    cell = cells.get(type(kl))
    if cell is not None:
        if kl.go_backwards:
            raise ValueError(f"Keras {type(kl).__name__} {kl.name!r}: go_backwards=True alone returns the sequence "
                             "reversed in time, which rnnfast does not; use Bidirectional, or reverse the input")
        return _level(kl, cell, False)
    if isinstance(kl, L.Dense):
        return _dense(kl)
    if isinstance(kl, L.Embedding):
        return _embedding(kl)
    if isinstance(kl, L.Dropout):
        if kl.get_config().get("noise_shape") is not None:
            raise ValueError(f"Keras Dropout {kl.name!r}: noise_shape is not supported")
        return nn.Dropout(float(kl.rate))
    pools = {L.GlobalAveragePooling1D: nn.MeanPool, L.GlobalMaxPooling1D: nn.MaxPool}
    if type(kl) in pools:
        cfg = kl.get_config()
        if cfg.get("keepdims") or cfg.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"Keras {type(kl).__name__} {kl.name!r}: only data_format='channels_last', "
                             "keepdims=False convert")
        return pools[type(kl)]()
    if isinstance(kl, L.Masking):
        raise ValueError(f"Keras Masking {kl.name!r} is not converted: rnnfast takes lengths= (valid steps of each "
                         "right-padded sequence) in place of a mask")
    raise ValueError(f"unsupported Keras layer {type(kl).__name__} ({kl.name!r}); from_keras converts LSTM, GRU, "
                     "SimpleRNN, Bidirectional, Dense, Embedding, Dropout, GlobalAveragePooling1D, "
                     "GlobalMaxPooling1D and Sequential models of them")


def _weights(kl: Any) -> list[np.ndarray]:
    weights = [np.asarray(w) for w in kl.get_weights()]
    if not weights:
        raise ValueError(f"Keras layer {kl.name!r} is not built: call the model on data or give it an Input first")
    return weights


def _dense(kl: Any) -> Any:
    from rnnfast import nn

    act = _name(kl.get_config()["activation"])
    if act != "linear":
        raise ValueError(f"Keras Dense {kl.name!r}: activation={act!r} has no rnnfast layer (rnnfast.nn has no "
                         "activation layers; Linear is affine): build the Dense with activation=None and apply "
                         f"{act} to the outputs (the estimators' predict_proba applies softmax)")
    w = _weights(kl)
    lin = nn.Linear(w[0].shape[0], w[0].shape[1], bias=bool(kl.use_bias),
                    dtype=float_dtype(w[0].dtype, f"Keras layer {kl.name!r}"))
    load_keras_weights(lin, w)
    return lin


def _embedding(kl: Any) -> Any:
    from rnnfast import nn

    if kl.get_config().get("mask_zero"):
        raise ValueError(f"Keras Embedding {kl.name!r}: mask_zero=True is not converted: rnnfast takes lengths= "
                         "(valid steps of each right-padded sequence) in place of a mask; convert a mask_zero=False "
                         "copy and pass lengths")
    w = _weights(kl)
    emb = nn.Embedding(w[0].shape[0], w[0].shape[1], dtype=float_dtype(w[0].dtype, f"Keras layer {kl.name!r}"))
    load_keras_weights(emb, w)
    return emb


def _recurrent_layer(run: list[_Level]) -> Any:
    """One rnnfast layer from consecutive Keras levels."""
    from rnnfast import nn

    lv = run[0]
    kw: dict = dict(num_layers=len(run), bias=lv.bias, bidirectional=lv.bidirectional, dtype=lv.dtype)
    if lv.cell == "rnn":
        kw["nonlinearity"] = lv.nonlinearity
    if lv.cell == "gru" and not lv.after:
        kw["reset_after"] = False
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[lv.cell]
    layer = cls(lv.input_dim, lv.units, **kw)
    load_keras_weights(layer, [w for level in run for w in level.weights])
    return layer


def _assemble(pieces: list) -> list:
    """rnnfast layers from the pieces: runs of joinable levels merge, return_sequences=False adds LastStep."""
    from rnnfast import nn

    out: list = []
    run: list[_Level] = []

    def flush() -> None:
        if run:
            out.append(_recurrent_layer(run))
            if not run[-1].return_sequences:
                out.append(nn.LastStep(bidirectional=run[-1].bidirectional))
            run.clear()

    for piece in pieces:
        if isinstance(piece, _Level):
            if not (run and run[-1].joins(piece)):
                flush()
            run.append(piece)
        else:
            flush()
            out.append(piece)
    flush()
    return out


def _flat_layers(keras: Any, model: Any) -> list:
    if isinstance(model, keras.Sequential):
        return [kl for inner in model.layers for kl in _flat_layers(keras, inner)]
    if isinstance(model, keras.Model):
        raise ValueError(f"only Keras Sequential models convert, not a functional or subclassed "
                         f"{type(model).__name__} ({model.name!r})")
    if isinstance(model, keras.layers.InputLayer):
        return []
    if isinstance(model, keras.layers.Layer):
        return [model]
    raise TypeError(f"from_keras takes a Keras 3 layer or Sequential model, got {type(model).__name__}")


def from_keras(layer_or_model: Any) -> Any:
    """An rnnfast model computing what a Keras 3 layer or ``Sequential`` model computes.

    Parameters
    ----------
    layer_or_model : keras layer or keras.Sequential, built
        ``LSTM``, ``GRU`` (``reset_after`` either way), ``SimpleRNN`` (tanh or relu), ``Bidirectional``
        (``merge_mode="concat"``) around one of those, ``Dense`` (linear), ``Embedding``, ``Dropout``,
        ``GlobalAveragePooling1D``, ``GlobalMaxPooling1D``, and Sequential models of them.

    Returns
    -------
    rnnfast layer or rnnfast.nn.Sequential
        A Sequential for a Keras Sequential, or when one Keras layer becomes two rnnfast layers (a recurrent
        layer with ``return_sequences=False`` is followed by :class:`rnnfast.nn.LastStep`); otherwise the
        rnnfast layer. Layers are batch-first, in training mode as rnnfast's are after construction
        (call ``.eval()`` for Dropout to be the identity). Stacked levels merge (module docstring).

    Raises
    ------
    TypeError
        Not a Keras layer or model.
    ValueError
        What rnnfast does not compute, named: other activations, ``go_backwards`` alone, ``stateful``,
        masking (``Masking``, ``mask_zero``; rnnfast takes ``lengths=``), ``merge_mode`` other than concat,
        Dense activations, functional models, unbuilt layers.

    Notes
    -----
    ``unroll`` (how Keras schedules the loop) and LSTM ``unit_forget_bias`` (how it initialises the forget
    bias) change no result and are accepted; ``dropout`` / ``recurrent_dropout`` inside a recurrent layer act
    in training only and are dropped with a warning.
    """
    from rnnfast import nn

    keras = _keras()
    pieces = [_piece(keras, kl) for kl in _flat_layers(keras, layer_or_model)]
    layers = _assemble(pieces)
    if isinstance(layer_or_model, keras.Sequential) or len(layers) != 1:
        return nn.Sequential(*layers)
    return layers[0]


# ------------------------------------------------------------------------------------------ to Keras


def _refuse_projection(layer: Any) -> None:
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"an LSTM with proj_size={layer.proj_size} has no Keras form (Keras's LSTM has no "
                         "projection); convert it to PyTorch (rnnfast.interop.to_torch) instead")


def _keras_levels(keras: Any, layer: Any, cell: str, last: bool, dtype: str) -> list:
    """The Keras layers of one rnnfast recurrent layer (one a level, Dropout between when it has one); the
    layer's ``recurrent_dropout`` is each level's (Keras applies it the same way)."""
    L = keras.layers
    out = []
    _refuse_projection(layer)
    for level in range(layer.num_layers):
        kw: dict = dict(return_sequences=not (last and level == layer.num_layers - 1), use_bias=layer.bias,
                        dtype=dtype)
        if getattr(layer, "recurrent_dropout", 0):
            kw["recurrent_dropout"] = layer.recurrent_dropout
        if cell == "rnn":
            k = L.SimpleRNN(layer.hidden_size, activation=layer.nonlinearity, **kw)
        elif cell == "gru":
            k = L.GRU(layer.hidden_size, reset_after=reset_after(layer), **kw)
        else:
            k = L.LSTM(layer.hidden_size, **kw)
        if layer.bidirectional:
            k = L.Bidirectional(k, merge_mode="concat", dtype=dtype)
        if level and layer.dropout > 0:
            out.append(L.Dropout(layer.dropout, dtype=dtype))
        out.append(k)
    return out


def _keras_layer(keras: Any, part: Any, dtype: str) -> Any:
    from rnnfast import nn

    L = keras.layers
    if isinstance(part, nn.Linear):
        return L.Dense(part.out_features, use_bias=part.bias, dtype=dtype)
    if isinstance(part, nn.Embedding):
        return L.Embedding(part.num_embeddings, part.embedding_dim, dtype=dtype)
    if isinstance(part, nn.Dropout):
        return L.Dropout(part.p, dtype=dtype)
    if isinstance(part, nn.MeanPool):
        return L.GlobalAveragePooling1D(dtype=dtype)
    if isinstance(part, nn.MaxPool):
        return L.GlobalMaxPooling1D(dtype=dtype)
    if isinstance(part, nn.LastStep):
        raise ValueError("LastStep converts to Keras only right after a recurrent layer (as that layer's "
                         "return_sequences=False)")
    raise TypeError(f"to_keras cannot convert a {type(part).__name__}: it takes rnnfast LSTM, GRU, RNN, Linear, "
                    "Embedding, Dropout, LastStep, MeanPool, MaxPool, a Sequential of them or a fitted estimator")


def _keras_layers(keras: Any, parts: list, dtype: str) -> list:
    from rnnfast import nn

    out: list = []
    i = 0
    while i < len(parts):
        part, cell = parts[i], cell_of(parts[i])
        if cell is None:
            out.append(_keras_layer(keras, part, dtype))
            i += 1
            continue
        if len(parts) > 1 and not part.batch_first:
            raise ValueError("a batch_first=False layer inside a Sequential does not convert: Keras is batch-major")
        last = i + 1 < len(parts) and isinstance(parts[i + 1], nn.LastStep)
        if last and parts[i + 1].bidirectional != part.bidirectional:
            raise ValueError(f"LastStep(bidirectional={parts[i + 1].bidirectional}) after a layer with "
                             f"bidirectional={part.bidirectional} has no Keras form (Keras's return_sequences="
                             "False takes the reverse direction at step 0)")
        out += _keras_levels(keras, part, cell, last, dtype)
        i += 2 if last else 1
    return out


def _input(keras: Any, parts: list) -> Any:
    """The Keras Input of a model whose first layers are ``parts``."""
    from rnnfast import nn

    sequences = any(cell_of(p) or isinstance(p, (nn.LastStep, nn.MeanPool, nn.MaxPool)) for p in parts)
    for p in parts:
        if isinstance(p, nn.Embedding):
            return keras.Input(shape=(None,), dtype="int32")
        size = p.input_size if cell_of(p) else getattr(p, "in_features", None)
        if size is not None:
            return keras.Input(shape=(None, size) if sequences else (size,), dtype=p.dtype.name)
    raise ValueError("the model has no layer that fixes its input size (Embedding, Linear or recurrent)")


def to_keras(model: Any) -> Any:
    """A built Keras 3 model (or layer) computing what an rnnfast model computes, with the same weights.

    Parameters
    ----------
    model : rnnfast layer, rnnfast.nn.Sequential or fitted estimator (its network)
        As :func:`keras_weights`; a LastStep must follow a recurrent layer directly (it becomes that
        layer's ``return_sequences=False``), MeanPool / MaxPool become Keras's global 1-D pooling.

    Returns
    -------
    keras.Layer or keras.Sequential
        One Keras layer for a one-level recurrent layer, a Linear, an Embedding or a Dropout; otherwise a
        ``keras.Sequential`` with an ``Input``. Keras is batch-major: a ``batch_first=False`` layer's Keras
        twin takes (B, T, F). Keras has no ``lengths``: the outputs equal rnnfast's for full-length input
        (and for estimators, the network's outputs: logits, or scaled regression values).

    Raises
    ------
    TypeError
        Not an rnnfast model.
    ValueError
        A structure Keras has no form for (LastStep not after a recurrent layer, batch_first=False inside
        a Sequential).
    """
    from rnnfast import nn

    keras = _keras()
    net = network(model)
    parts = layers_of(net)
    dtypes = [p.dtype.name for p in parts if hasattr(p, "dtype")]
    klayers = _keras_layers(keras, parts, dtypes[0] if dtypes else "float32")
    seq = keras.Sequential([_input(keras, parts)] + klayers)
    seq.set_weights(keras_weights(net))
    if not isinstance(net, nn.Sequential) and len(klayers) == 1:
        return klayers[0]
    return seq
