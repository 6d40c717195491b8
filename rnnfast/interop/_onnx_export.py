"""ONNX export: :func:`to_onnx` for recurrent layers, :class:`rnnfast.nn.Sequential` models and fitted estimators.

The graph keeps rnnfast's semantics: batch and time axes are dynamic, ``lengths`` becomes the recurrent
nodes' ``sequence_lens`` (outputs zero past each length, final states at each sequence's last step, the
reverse direction starting at each sequence's own end) and the pooling layers build their masks from it.
Weights are stored as float32: ONNX Runtime runs LSTM, GRU and RNN nodes in float32 only.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import numpy as np

from rnnfast import __version__, nn
from rnnfast.interop._gates import to_order
from rnnfast.nn.stateful import unwrap

__all__ = ["to_onnx", "onnx_module", "recurrent_kind"]

ONNX_HINT = 'ONNX export and import need the onnx package: pip install "rnnfast[onnx]"'
MIN_OPSET = 13  # Squeeze / Unsqueeze / ReduceSum take their axes as inputs from opset 13 on
_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_FLOAT = np.float32


def onnx_module():
    """The ``onnx`` package, imported on first use (ImportError with the install hint when missing)."""
    try:
        import onnx
    except ImportError:
        raise ImportError(ONNX_HINT) from None
    return onnx


def recurrent_kind(layer: Any) -> Optional[str]:
    """"lstm", "gru" or "rnn" for an :class:`rnnfast.nn.LSTM` / ``GRU`` / ``RNN``, else None."""
    for kind, cls in (("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)):
        if isinstance(layer, cls):
            return kind
    return None


# ---------------------------------------------------------------------------------------- the graph
class _Graph:
    """Nodes, initializers, inputs and outputs of the graph being built; fresh names for everything."""

    def __init__(self, opset: int) -> None:
        self.onnx = onnx_module()
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0
        self.memo: dict = {}  # values built once per graph (the lengths as int64, the time mask)

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, value: Any, base: str = "const") -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list, n_out: int = 1, **attrs: Any):
        """Add a node; returns its output name (a list of names when ``n_out`` > 1)."""
        while inputs and inputs[-1] == "":  # omitted optional inputs at the end are left out
            inputs = inputs[:-1]
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=self.fresh(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def reduce(self, op_type: str, x: str, axis: int) -> str:
        """``op_type`` (ReduceMean / ReduceMax / ReduceSum) over ``axis``, dropping it."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const(np.array([axis], np.int64), "axes")], keepdims=0)
        return self.op(op_type, [x], axes=[axis], keepdims=0)

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", [x, self.const(np.array([axis], np.int64), "axes")])

    def squeeze(self, x: str, axis: int) -> str:
        return self.op("Squeeze", [x, self.const(np.array([axis], np.int64), "axes")])

    def add_input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def add_output(self, name: str, value: str, shape: Optional[list] = None) -> None:
        self.nodes.append(self.onnx.helper.make_node("Identity", [value], [name], name=self.fresh("Output")))
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, shape))

    def model(self, doc: str, metadata: dict):
        h = self.onnx.helper
        graph = h.make_graph(self.nodes, "rnnfast", self.inputs, self.outputs, initializer=self.inits)
        opsets = [h.make_opsetid("", self.opset)]
        model = h.make_model(graph, opset_imports=opsets, producer_name="rnnfast", producer_version=__version__,
                             doc_string=doc)
        model.ir_version = h.find_min_ir_version_for(opsets)
        h.set_model_props(model, {k: str(v) for k, v in metadata.items()})
        # outputs declared without a shape get the one ONNX's shape inference finds (symbolic batch and time)
        inferred = self.onnx.shape_inference.infer_shapes(model).graph.output
        for out, found in zip(model.graph.output, inferred):
            if not out.type.tensor_type.HasField("shape"):
                out.CopyFrom(found)
        self.onnx.checker.check_model(model)
        return model


# ---------------------------------------------------------------------------------------- lengths and masks
def _lengths64(g: _Graph, lengths: str) -> str:
    """The (B,) lengths as int64 (built once)."""
    if "len64" not in g.memo:
        g.memo["len64"] = g.op("Cast", [lengths], to=g.onnx.TensorProto.INT64)
    return g.memo["len64"]


def _time_mask(g: _Graph, x: str, lengths: str) -> str:
    """(B, T) bool, true at the valid steps of the batch-first sequence ``x`` (built once: T is shared)."""
    if "mask" not in g.memo:
        T = g.op("Gather", [g.op("Shape", [x]), g.const(np.array(1, np.int64), "one")], axis=0)
        steps = g.op("Range", [g.const(np.array(0, np.int64), "zero"), T, g.const(np.array(1, np.int64), "one")])
        g.memo["mask"] = g.op("Less", [g.unsqueeze(steps, 0), g.unsqueeze(_lengths64(g, lengths), 1)])
    return g.memo["mask"]


# ---------------------------------------------------------------------------------------- recurrent layers
def _check_recurrent(layer: Any, where: str) -> str:
    kind = recurrent_kind(layer)
    if kind is None:
        raise TypeError(f"{where}: {type(layer).__name__} is not an rnnfast.nn.LSTM, GRU or RNN")
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"{where}: LSTM with proj_size={layer.proj_size} cannot be exported: ONNX's LSTM has "
                         "no projection")
    for flag in ("layer_norm",):
        if getattr(layer, flag, False):
            raise ValueError(f"{where}: {type(layer).__name__} with {flag}=True cannot be exported: ONNX's "
                             f"{_OPS[kind]} has no such option")
    return kind


def _direction_weights(sd: dict, kind: str, sfx: str, bias: bool):
    """One direction's W, R and B in ONNX's gate order."""
    W = to_order(sd["weight_ih" + sfx], "onnx", kind)
    R = to_order(sd["weight_hh" + sfx], "onnx", kind)
    if not bias:
        return W, R, None
    return W, R, np.concatenate([to_order(sd["bias_ih" + sfx], "onnx", kind),
                                 to_order(sd["bias_hh" + sfx], "onnx", kind)])


def _layer_weights(g: _Graph, sd: dict, kind: str, layer: int, D: int, bias: bool) -> list:
    """Initializer names of W (D, G*H, F), R (D, G*H, H) and B (D, 2*G*H) ("" without bias) of one layer."""
    parts = [_direction_weights(sd, kind, f"_l{layer}" + ("_reverse" if d else ""), bias) for d in range(D)]
    names = [g.const(np.stack([p[0] for p in parts]).astype(_FLOAT), f"W{layer}"),
             g.const(np.stack([p[1] for p in parts]).astype(_FLOAT), f"R{layer}")]
    names.append(g.const(np.stack([p[2] for p in parts]).astype(_FLOAT), f"B{layer}") if bias else "")
    return names


def _slice0(g: _Graph, s: str, start: int, stop: int) -> str:
    """``s[start:stop]`` along axis 0."""
    return g.op("Slice", [s, g.const(np.array([start], np.int64), "starts"),
                          g.const(np.array([stop], np.int64), "ends"), g.const(np.array([0], np.int64), "axes")])


def _recurrent(g: _Graph, layer: Any, x: str, lengths: str = "", h0: str = "", c0: str = "",
               where: str = "model"):
    """The nodes of a recurrent layer on ``x`` (the layer's layout); returns (out, h_n, c_n or None)."""
    kind = _check_recurrent(layer, where)
    H, L, D = layer.hidden_size, layer.num_layers, 2 if layer.bidirectional else 1
    attrs: dict = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if kind == "gru":
        attrs["linear_before_reset"] = int(bool(getattr(layer, "reset_after", True)))
    if kind == "rnn" and layer.nonlinearity == "relu":
        attrs["activations"] = ["Relu"] * D
    sd = layer.state_dict()
    X = g.op("Transpose", [x], perm=[1, 0, 2]) if layer.batch_first else x  # (T, B, F)
    hs, cs = [], []
    for i in range(L):
        init_h = _slice0(g, h0, i * D, (i + 1) * D) if h0 else ""
        init_c = _slice0(g, c0, i * D, (i + 1) * D) if c0 and kind == "lstm" else ""
        ins = [X] + _layer_weights(g, sd, kind, i, D, layer.bias) + [lengths, init_h]
        outs = g.op(_OPS[kind], ins + ([init_c] if kind == "lstm" else []), n_out=3 if kind == "lstm" else 2,
                    **attrs)
        hs.append(outs[1])
        if kind == "lstm":
            cs.append(outs[2])
        # Y (T, D, B, H) -> (T, B, D * H)
        X = g.op("Reshape", [g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3]),
                             g.const(np.array([0, 0, -1], np.int64), "shape")])
    out = g.op("Transpose", [X], perm=[1, 0, 2]) if layer.batch_first else X

    def stack(parts: list) -> str:
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=0)

    return out, stack(hs), (stack(cs) if cs else None)


# ---------------------------------------------------------------------------------------- other layers
def _last_step(g: _Graph, layer: Any, x: str, lengths: str) -> str:
    """LastStep: each sequence's output at its last valid step (the reverse half at step 0)."""
    if lengths:
        idx = g.op("Reshape", [g.op("Sub", [_lengths64(g, lengths), g.const(np.array(1, np.int64), "one")]),
                               g.const(np.array([-1, 1, 1], np.int64), "shape")])
        shape = g.op("Shape", [x])
        target = g.op("Concat", [_slice0(g, shape, 0, 1), g.const(np.array([1], np.int64), "one"),
                                 _slice0(g, shape, 2, 3)], axis=0)
        last = g.squeeze(g.op("GatherElements", [x, g.op("Expand", [idx, target])], axis=1), 1)
    else:
        last = g.op("Gather", [x, g.const(np.array(-1, np.int64), "last")], axis=1)
    if not layer.bidirectional:
        return last
    first = g.op("Gather", [x, g.const(np.array(0, np.int64), "first")], axis=1)
    split = {"num_outputs": 2} if g.opset >= 18 else {}
    fwd, _ = g.op("Split", [last], n_out=2, axis=1, **split)
    _, rev = g.op("Split", [first], n_out=2, axis=1, **split)
    return g.op("Concat", [fwd, rev], axis=1)


def _valid_steps(g: _Graph, x: str, lengths: str, feature_axes: int = 1) -> str:
    """float (B, T, 1, ...): 1 at the valid steps of the sequence ``x``, with ``feature_axes`` trailing ones."""
    axes = g.const(np.arange(2, 2 + feature_axes, dtype=np.int64), "axes")
    return g.op("Cast", [g.op("Unsqueeze", [_time_mask(g, x, lengths), axes])], to=g.onnx.TensorProto.FLOAT)


def _mean_pool(g: _Graph, x: str, lengths: str) -> str:
    if not lengths:
        return g.reduce("ReduceMean", x, 1)
    valid = _valid_steps(g, x, lengths)
    total = g.reduce("ReduceSum", g.op("Mul", [x, valid]), 1)
    count = g.op("Cast", [g.unsqueeze(_lengths64(g, lengths), 1)], to=g.onnx.TensorProto.FLOAT)
    return g.op("Div", [total, count])


def _max_pool(g: _Graph, x: str, lengths: str) -> str:
    if lengths:
        x = g.op("Where", [g.unsqueeze(_time_mask(g, x, lengths), 2), x,
                          g.const(np.array(-np.inf, _FLOAT), "neg_inf")])
    return g.reduce("ReduceMax", x, 1)


def _linear(g: _Graph, layer: Any, x: str) -> str:
    sd = layer.state_dict()
    y = g.op("MatMul", [x, g.const(np.ascontiguousarray(sd["weight"].T).astype(_FLOAT), "weight")])
    return g.op("Add", [y, g.const(sd["bias"].astype(_FLOAT), "bias")]) if layer.bias else y


def _norm(g: _Graph, layer: Any, x: str, lengths: str, where: str) -> str:
    """LayerNorm as ONNX's LayerNormalization (opset 17 on); BatchNorm with its running statistics (what eval
    mode computes) as ``x * scale + shift``; the padded steps of a sequence zeroed, as rnnfast does."""
    sd, k = layer.state_dict(), len(getattr(layer, "normalized_shape", (1,)))
    if isinstance(layer, nn.LayerNorm):
        if g.opset < 17:
            raise ValueError(f"{where} (LayerNorm) needs opset 17 or newer (ONNX's LayerNormalization), got {g.opset}")
        scale = sd.get("weight", np.ones(layer.normalized_shape))
        bias = g.const(sd["bias"].astype(_FLOAT), "bias") if "bias" in sd else ""
        y = g.op("LayerNormalization", [x, g.const(scale.astype(_FLOAT), "scale"), bias], axis=-k,
                 epsilon=float(layer.eps))
    else:
        if not layer.track_running_stats:
            raise ValueError(f"{where} (BatchNorm with track_running_stats=False) cannot be exported: it normalizes "
                             "with each batch's own statistics, also at inference")
        scale = 1.0 / np.sqrt(sd["running_var"].astype(np.float64) + layer.eps) * sd.get("weight", 1.0)
        shift = sd.get("bias", 0.0) - sd["running_mean"] * scale
        y = g.op("Add", [g.op("Mul", [x, g.const(scale.astype(_FLOAT), "scale")]),
                         g.const(shift.astype(_FLOAT), "shift")])
    return g.op("Mul", [y, _valid_steps(g, x, lengths, k)]) if lengths else y


def _layer(g: _Graph, layer: Any, x: str, lengths: str, where: str) -> str:
    """The nodes of one layer of a Sequential (batch-first, as the layer itself computes)."""
    layer = unwrap(layer)
    if recurrent_kind(layer) is not None:
        return _recurrent(g, layer, x, lengths, where=where)[0]
    if isinstance(layer, nn.Embedding):
        return g.op("Gather", [g.const(layer.state_dict()["weight"].astype(_FLOAT), "embedding"), x], axis=0)
    if isinstance(layer, nn.Linear):
        return _linear(g, layer, x)
    if isinstance(layer, nn.Dropout):
        return x  # identity at inference
    if isinstance(layer, nn.LastStep):
        return _last_step(g, layer, x, lengths)
    if isinstance(layer, nn.MeanPool):
        return _mean_pool(g, x, lengths)
    if isinstance(layer, nn.MaxPool):
        return _max_pool(g, x, lengths)
    if isinstance(layer, (nn.BatchNorm, nn.LayerNorm)):
        return _norm(g, layer, x, lengths, where)
    raise ValueError(f"{where} ({type(layer).__name__}) cannot be exported to ONNX: supported are LSTM, GRU, "
                     "RNN, Embedding, Linear, Dropout, LastStep, MeanPool, MaxPool, BatchNorm and LayerNorm")


def _sequential(g: _Graph, model: Any, x: str, lengths: str) -> str:
    for i, layer in enumerate(model.layers):
        x = _layer(g, layer, x, lengths, f"layer {i}")
        if isinstance(unwrap(layer), (nn.LastStep, nn.MeanPool, nn.MaxPool)):
            lengths = ""  # x is (batch, features) from here on
    return x


# ---------------------------------------------------------------------------------------- graph inputs
def _x_input(g: _Graph, first: Any, batch_first: bool = True) -> str:
    """Graph input ``x``: int64 ids (batch, time) before an Embedding, else float (batch, time, features)."""
    first = unwrap(first)
    tp = g.onnx.TensorProto
    if isinstance(first, nn.Embedding):
        return g.add_input("x", tp.INT64, ["batch", "time"])
    feats = (getattr(first, "input_size", None) or getattr(first, "in_features", None)
             or getattr(first, "num_features", None) or "features")
    return g.add_input("x", tp.FLOAT, ["batch", "time", feats] if batch_first else ["time", "batch", feats])


def _lengths_input(g: _Graph) -> str:
    return g.add_input("lengths", g.onnx.TensorProto.INT32, ["batch"])


def _lengths_from_ids(g: _Graph, ids: str) -> str:
    """(B,) int32: one past each row's last non-zero id (the estimators' rule: trailing zeros are padding)."""
    T = g.op("Gather", [g.op("Shape", [ids]), g.const(np.array(1, np.int64), "one")], axis=0)
    pos = g.op("Range", [g.const(np.array(1, np.int64), "one"), g.op("Add", [T, g.const(np.array(1, np.int64),
                                                                                          "one")]),
                         g.const(np.array(1, np.int64), "one")])
    nonzero = g.op("Not", [g.op("Equal", [ids, g.const(np.array(0, np.int64), "zero")])])
    last = g.reduce("ReduceMax", g.op("Where", [nonzero, g.unsqueeze(pos, 0), g.const(np.array(0, np.int64),
                                                                                       "zero")]), 1)
    return g.op("Cast", [last], to=g.onnx.TensorProto.INT32)


# ---------------------------------------------------------------------------------------- the three models
def _export_layer(g: _Graph, layer: Any, lengths: bool, initial_state: bool) -> dict:
    kind = _check_recurrent(layer, type(layer).__name__)
    LD, H = layer.num_layers * (2 if layer.bidirectional else 1), layer.hidden_size
    tp = g.onnx.TensorProto
    x = _x_input(g, layer, layer.batch_first)
    lens = _lengths_input(g) if lengths else ""
    h0 = g.add_input("h0", tp.FLOAT, [LD, "batch", H]) if initial_state else ""
    c0 = g.add_input("c0", tp.FLOAT, [LD, "batch", H]) if initial_state and kind == "lstm" else ""
    out, h_n, c_n = _recurrent(g, layer, x, lens, h0, c0, type(layer).__name__)
    width = (2 if layer.bidirectional else 1) * H
    g.add_output("y", out, ["batch", "time", width] if layer.batch_first else ["time", "batch", width])
    g.add_output("h_n", h_n, [LD, "batch", H])
    if c_n is not None:
        g.add_output("c_n", c_n, [LD, "batch", H])
    return {"rnnfast.model": type(layer).__name__}


def _export_sequential(g: _Graph, model: Any, lengths: bool) -> dict:
    if not model.layers:
        raise ValueError("an empty Sequential cannot be exported")
    x = _x_input(g, model.layers[0])
    g.add_output("y", _sequential(g, model, x, _lengths_input(g) if lengths else ""))
    return {"rnnfast.model": "Sequential"}


def _export_estimator(g: _Graph, est: Any, lengths: bool) -> dict:
    est._check_fitted()
    net = est.model_
    x = _x_input(g, net.layers[0])
    tokens = isinstance(unwrap(net.layers[0]), nn.Embedding)
    lens = _lengths_input(g) if lengths else (_lengths_from_ids(g, x) if tokens else "")
    y = _sequential(g, net, x, lens)
    spec = est._specs[1]
    meta: dict = {"rnnfast.model": type(est).__name__, "rnnfast.task": spec.task,
                  "rnnfast.per_step": json.dumps(bool(spec.per_step))}
    if spec.task == "classification":
        y = g.op("Softmax", [y], axis=-1)
        if spec.per_step and lens:  # zero past each sequence's end, as predict_proba
            y = g.op("Mul", [y, _valid_steps(g, y, lens)])
        c = spec.classes
        labels = [v.decode("latin-1") for v in c.tolist()] if c.dtype.kind == "S" else c.tolist()
        meta.update({"rnnfast.output": "predict_proba", "rnnfast.classes": json.dumps(labels)})
    else:
        y = g.op("Add", [g.op("Mul", [y, g.const(spec.y_scale.astype(_FLOAT), "y_scale")]),
                         g.const(spec.y_mean.astype(_FLOAT), "y_mean")])
        if spec.y_1d:
            y = g.squeeze(y, -1)
        meta["rnnfast.output"] = "predict"
    g.add_output("y", y)
    return meta


def _is_estimator(model: Any) -> bool:
    return hasattr(model, "get_params") and hasattr(model, "_layer_cls")


def to_onnx(model: Any, path: Union[str, "os.PathLike[str]", None] = None, *, opset: int = 17,
            lengths: bool = True, initial_state: bool = False):
    """Export a recurrent layer, a Sequential model or a fitted estimator to an ONNX model.

    Parameters
    ----------
    model : rnnfast.nn.LSTM / GRU / RNN, rnnfast.nn.Sequential, or a fitted estimator (``rnnfast.LSTM``,
        ``rnnfast.GRUClassifier``, ...)
        A Sequential may hold Embedding, Linear, Dropout (identity), recurrent layers (also inside ``Stateful``),
        LastStep / MeanPool / MaxPool, LayerNorm (opset 17 on) and BatchNorm (its running statistics, as in eval).
    path : str or os.PathLike, optional
        Also write the model to this file.
    opset : int, default 17
        The ONNX opset (13 or newer).
    lengths : bool, default True
        Add the graph input ``lengths`` (int32, shape (batch,)): each row's valid steps, which become the
        recurrent nodes' ``sequence_lens`` and the pooling layers' masks, so right-padded batches give
        rnnfast's answers. ONNX graph inputs cannot have defaults, so with ``lengths=True`` it must be fed
        (``np.full(B, T, np.int32)`` for full rows); ``lengths=False`` leaves it out (every row has T
        steps), except that an estimator over token ids then derives each row's length from its trailing
        zeros, as the estimator does.
    initial_state : bool, default False
        For a recurrent layer: add the inputs ``h0`` (and ``c0`` for LSTM), shaped
        (num_layers * num_directions, batch, hidden_size), which must then be fed.

    Returns
    -------
    onnx.ModelProto
        Inputs: ``x`` (float32 (batch, time, features), or (time, batch, features) for a layer with
        ``batch_first=False``; int64 (batch, time) token ids when the model starts with an Embedding),
        then ``lengths``, ``h0``, ``c0`` as asked. Outputs: for a layer ``y``, ``h_n`` (and ``c_n``)
        shaped as the layer returns them; for a Sequential ``y``, its output; for an estimator ``y``,
        ``predict_proba`` (classifiers, softmax over the classes) or ``predict`` (regressors, in the
        targets' units). Metadata (``metadata_props``): ``rnnfast.model``, and for estimators
        ``rnnfast.task``, ``rnnfast.output`` and ``rnnfast.classes`` (JSON list of the labels, in
        column order). Weights are stored as float32.

    Raises
    ------
    ImportError
        The ``onnx`` package is missing.
    TypeError
        ``model`` is not something this exports.
    ValueError
        A layer or option ONNX cannot express (named in the message), an unfitted estimator, or a bad opset.

    Examples
    --------
    >>> lstm = rf.nn.LSTM(8, 16, bidirectional=True)                      # doctest: +SKIP
    >>> proto = rf.interop.to_onnx(lstm, "lstm.onnx")                     # doctest: +SKIP
    >>> sess = onnxruntime.InferenceSession("lstm.onnx")                  # doctest: +SKIP
    >>> y, h_n, c_n = sess.run(None, {"x": x, "lengths": lengths})      # doctest: +SKIP
    """
    onnx = onnx_module()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset}")
    for flag, value in (("lengths", lengths), ("initial_state", initial_state)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__}")
    model = unwrap(model)
    g = _Graph(opset)
    if initial_state and recurrent_kind(model) is None:
        raise ValueError("initial_state=True is for a recurrent layer (a Sequential or estimator starts from zeros)")
    if recurrent_kind(model) is not None:
        meta = _export_layer(g, model, bool(lengths), bool(initial_state))
    elif isinstance(model, nn.Sequential):
        meta = _export_sequential(g, model, bool(lengths))
    elif _is_estimator(model):
        meta = _export_estimator(g, model, bool(lengths))
    else:
        raise TypeError("to_onnx takes an rnnfast.nn.LSTM / GRU / RNN, an rnnfast.nn.Sequential or a fitted "
                        f"estimator, got {type(model).__name__}")
    proto = g.model(f"rnnfast {meta['rnnfast.model']} exported by rnnfast.interop.to_onnx", meta)
    if path is not None:
        onnx.save_model(proto, os.fspath(path))
    return proto
