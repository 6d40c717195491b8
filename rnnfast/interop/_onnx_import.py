"""ONNX import: :func:`from_onnx` builds rnnfast layers from graphs of LSTM / GRU / RNN nodes and the nodes
that ``torch.onnx.export`` and :func:`rnnfast.interop.to_onnx` put around them.

The graph is read by abstract interpretation: every value is a constant (an initializer or folded from
constants), an auxiliary value computed from shapes, ``lengths`` or initial-state inputs (masks, the zero
initial state), or data on the chain from the input ``x``. Each node that touches data either relabels
its axes (Transpose, Reshape, Squeeze of a recurrent node's output) or applies one rnnfast layer at the end
of the chain; anything else is refused, naming the node.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

import numpy as np

from rnnfast import nn
from rnnfast.interop._gates import from_order
from rnnfast.interop._onnx_export import onnx_module

__all__ = ["from_onnx", "SUPPORTED_OPS"]

_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
#: Operators from_onnx reads (in the patterns described in the module docstring).
SUPPORTED_OPS = frozenset(_RECURRENT) | {
    "Transpose", "Gather", "GatherElements", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Squeeze", "Unsqueeze",
    "Slice", "Concat", "Shape", "Constant", "ConstantOfShape", "Reshape", "Identity", "Cast", "Range", "Less",
    "Where", "Expand", "Split", "ReduceSum", "ReduceMean", "ReduceMax"}
_DEFAULT_ACTIVATIONS = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"], "rnn": ["Tanh"]}
_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


# ---------------------------------------------------------------------------------------- abstract values
@dataclasses.dataclass(frozen=True)
class _Aux:
    """A value computed without the data: from shapes, ``lengths`` or the initial-state inputs."""

    zeros: bool = False  # known to be all zeros (the zero initial state)
    lengths: bool = False  # the ``lengths`` graph input itself (or a cast of it)
    state: bool = False  # an initial-state graph input, or a slice of one


@dataclasses.dataclass(frozen=True)
class _Data:
    """A tensor on the chain from ``x``: ``depth`` layers applied; ``layout`` names its axes (B batch, T time,
    F features, D directions, H hidden, 1 a unit axis); ``native`` is the layout of rnnfast's own tensor at
    that depth; ``form`` marks a pattern in progress ("" none); ``group`` the recurrent layer behind it."""

    depth: int
    layout: str
    native: str
    form: str = ""
    group: Any = None

    def is_native(self) -> bool:
        return self.form in ("", "matmul") and self.layout == self.native


@dataclasses.dataclass
class _Group:
    """One rnnfast recurrent layer, from one or more stacked ONNX nodes of the same kind and options."""

    kind: str
    hidden_size: int
    input_size: int
    bidirectional: bool
    batch_first: bool
    options: dict
    weights: list = dataclasses.field(default_factory=list)  # per stacked node: (W, R, B or None)

    def compatible(self, kind: str, hidden_size: int, bidirectional: bool, options: dict) -> bool:
        return (kind, hidden_size, bidirectional, options) == (self.kind, self.hidden_size, self.bidirectional,
                                                              self.options)

    def build(self) -> Any:
        kw: dict = dict(num_layers=len(self.weights), bias=any(w[2] is not None for w in self.weights),
                        batch_first=self.batch_first, bidirectional=self.bidirectional, dtype=np.float32)
        if self.kind == "rnn":
            kw["nonlinearity"] = self.options["nonlinearity"]
        if self.kind == "gru" and not self.options["reset_after"]:
            kw["reset_after"] = False
        layer = _CLASSES[self.kind](self.input_size, self.hidden_size, **kw)
        layer.load_state_dict(self._state_dict(kw["bias"]))
        layer.eval()
        return layer

    def _state_dict(self, bias: bool) -> dict:
        sd, GH = {}, (4 if self.kind == "lstm" else 3 if self.kind == "gru" else 1) * self.hidden_size
        for i, (W, R, B) in enumerate(self.weights):
            for d in range(2 if self.bidirectional else 1):
                sfx = f"_l{i}" + ("_reverse" if d else "")
                sd["weight_ih" + sfx] = from_order(W[d], "onnx", self.kind)
                sd["weight_hh" + sfx] = from_order(R[d], "onnx", self.kind)
                if bias:
                    b = np.zeros(2 * GH, np.float32) if B is None else B[d]
                    sd["bias_ih" + sfx] = from_order(b[:GH], "onnx", self.kind)
                    sd["bias_hh" + sfx] = from_order(b[GH:], "onnx", self.kind)
        return sd


def _attrs(node: Any) -> dict:
    onnx = onnx_module()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _drop_axis(layout: str, axis: int) -> str:
    return layout[:axis] + layout[axis + 1:]


# ---------------------------------------------------------------------------------------- the reader
class _Reader:
    """Reads a graph node by node (see the module docstring); ``layers`` is the chain found so far."""

    def __init__(self, graph: Any) -> None:
        self.onnx = onnx_module()
        self.values: dict = {"": None}
        self.layers: list = []  # rnnfast layers, or _Group for a recurrent layer
        for init in graph.initializer:
            self.values[init.name] = self.onnx.numpy_helper.to_array(init)
        inputs = [i for i in graph.input if i.name not in self.values]
        if not inputs:
            raise ValueError("the graph has no input")
        self.values[inputs[0].name] = self._x_value(inputs[0])
        for extra in inputs[1:]:
            elem = extra.type.tensor_type.elem_type
            ints = elem in (self.onnx.TensorProto.INT32, self.onnx.TensorProto.INT64)
            self.values[extra.name] = _Aux(lengths=ints, state=not ints)

    def _x_value(self, inp: Any) -> _Data:
        tt = inp.type.tensor_type
        ints = tt.elem_type in (self.onnx.TensorProto.INT32, self.onnx.TensorProto.INT64)
        rank = len(tt.shape.dim) if tt.HasField("shape") else (2 if ints else 3)
        layout = {2: "BT", 3: "BTF"}.get(rank)
        if layout is None:
            raise ValueError(f"the input {inp.name!r} must be 2-D (token ids) or 3-D (sequences), got rank {rank}")
        return _Data(0, layout, layout)

    # ------------------------------------------------------------------ helpers
    def fail(self, node: Any, why: str) -> ValueError:
        return ValueError(f"cannot import node {node.name or node.op_type!r} ({node.op_type}): {why}")

    def const(self, node: Any, name: str, what: str) -> np.ndarray:
        v = self.values[name]
        if not isinstance(v, np.ndarray):
            raise self.fail(node, f"its {what} must be a constant")
        return v

    def axes(self, node: Any, attrs: dict, position: int) -> list:
        """A node's axes: the ``axes`` attribute (older opsets) or its input at ``position``."""
        if "axes" in attrs:
            return list(attrs["axes"])
        if len(node.input) > position and node.input[position]:
            return [int(a) for a in np.atleast_1d(self.const(node, node.input[position], "axes"))]
        raise self.fail(node, "it has no axes")

    def append(self, node: Any, data: _Data, layer: Any, layout: str) -> _Data:
        """Apply ``layer`` at the end of the chain, on rnnfast's own tensor ``data``."""
        if data.depth != len(self.layers):
            raise self.fail(node, "the graph branches: this layer does not follow the last one")
        if not data.is_native():
            raise self.fail(node, f"its input is laid out {data.layout} (form {data.form or '-'}), not as the "
                                  f"previous layer's output ({data.native})")
        self.layers.append(layer)
        return _Data(data.depth + 1, layout, layout)

    # ------------------------------------------------------------------ the graph
    def run(self, graph: Any) -> None:
        for node in graph.node:
            ins = [self.values.get(n, "missing") for n in node.input]
            if any(isinstance(v, str) for v in ins):
                raise self.fail(node, "an input is not computed before it (the graph is not sorted)")
            outs = self.node(node, ins, _attrs(node))
            for name, v in zip(node.output, outs if isinstance(outs, list) else [outs]):
                self.values[name] = v

    def node(self, node: Any, ins: list, attrs: dict):
        op = node.op_type
        if op == "Constant":
            return self.onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else self._constant(node, attrs)
        if op in _RECURRENT:
            return self.recurrent(node, ins, attrs)
        if not any(isinstance(v, _Data) for v in ins):
            return self.aux(node, ins, attrs)
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            raise self.fail(node, "this operator is supported only away from the data")
        return handler(node, ins, attrs)

    def _constant(self, node: Any, attrs: dict) -> np.ndarray:
        for key in ("value_float", "value_int"):
            if key in attrs:
                return np.array(attrs[key], np.float32 if key == "value_float" else np.int64)
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                return np.array(attrs[key], np.float32 if key == "value_floats" else np.int64)
        raise self.fail(node, "unsupported Constant form")

    def aux(self, node: Any, ins: list, attrs: dict):
        """A node away from the data: folded when its inputs are constants, else an auxiliary value."""
        op, n_out = node.op_type, len(node.output)
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            folded = _fold(op, ins, attrs)
            if folded is not None:
                return folded
        real = [v for v in ins if v is not None]
        zeros = all(isinstance(v, _Aux) and v.zeros or isinstance(v, np.ndarray) and not v.any() for v in real)
        if op == "ConstantOfShape":
            value = attrs.get("value")
            return _Aux(zeros=value is None or not self.onnx.numpy_helper.to_array(value).any())
        if op in ("Slice", "Identity", "Reshape", "Expand", "Squeeze", "Unsqueeze", "Transpose") and real:
            first = real[0]
            if isinstance(first, _Aux) and (first.state or first.lengths) and op in ("Slice", "Identity"):
                return first
            return _Aux(zeros=isinstance(first, _Aux) and first.zeros or isinstance(first, np.ndarray) and
                        not first.any())
        if op == "Concat":
            return _Aux(zeros=zeros)
        out = _Aux()
        return out if n_out == 1 else [out] * n_out

    # ------------------------------------------------------------------ recurrent nodes
    def _options(self, node: Any, kind: str, attrs: dict, D: int) -> dict:
        for name in ("clip", "activation_alpha", "activation_beta"):
            if name in attrs:
                raise self.fail(node, f"the attribute {name!r} has no rnnfast equivalent")
        if attrs.get("input_forget", 0):
            raise self.fail(node, "input_forget=1 (coupled input and forget gates) has no rnnfast equivalent")
        if attrs.get("layout", 0):
            raise self.fail(node, "layout=1 (batch-major recurrent node) is not supported")
        if attrs.get("direction", "forward") not in ("forward", "bidirectional"):
            raise self.fail(node, f"direction={attrs['direction']!r}: rnnfast runs forward or bidirectional")
        acts = attrs.get("activations", _DEFAULT_ACTIVATIONS[kind] * D)
        per_dir = len(acts) // D
        if acts[:per_dir] * D != list(acts):
            raise self.fail(node, f"activations {acts} differ between the directions")
        acts = list(acts[:per_dir])
        options: dict = {}
        if kind == "rnn" and acts in (["Tanh"], ["Relu"]):
            options["nonlinearity"] = acts[0].lower()
        elif acts != _DEFAULT_ACTIVATIONS[kind]:
            raise self.fail(node, f"activations {acts}: rnnfast's {kind.upper()} has {_DEFAULT_ACTIVATIONS[kind]}"
                                  + (" (or Relu)" if kind == "rnn" else ""))
        if kind == "gru":
            options["reset_after"] = bool(attrs.get("linear_before_reset", 0))
        return options

    def _check_aux_inputs(self, node: Any, ins: list) -> None:
        names = ("sequence_lens", "initial_h", "initial_c", "P")
        for name, v in zip(names, ins[4:]):
            if v is None:
                continue
            if name == "sequence_lens" and isinstance(v, _Aux) and v.lengths:
                continue
            if name in ("initial_h", "initial_c") and (isinstance(v, _Aux) and (v.zeros or v.state)
                                                       or isinstance(v, np.ndarray) and not v.any()):
                continue
            if name == "P" and isinstance(v, np.ndarray) and not v.any():
                continue
            why = {"sequence_lens": "must be the graph input lengths",
                   "P": "peepholes have no rnnfast equivalent"}.get(name, "must be zeros or a graph input")
            raise self.fail(node, f"its {name} {why}")

    def recurrent(self, node: Any, ins: list, attrs: dict) -> list:
        kind = _RECURRENT[node.op_type]
        W = self.const(node, node.input[1], "W").astype(np.float32)
        R = self.const(node, node.input[2], "R").astype(np.float32)
        B = ins[3] if len(ins) > 3 else None
        if B is not None:
            B = self.const(node, node.input[3], "B").astype(np.float32)
        self._check_aux_inputs(node, ins)
        D, H = W.shape[0], R.shape[2]
        options = self._options(node, kind, attrs, D)
        x = ins[0]
        if not isinstance(x, _Data) or len(x.layout) != 3 or x.form:
            raise self.fail(node, "its input X must be a (time, batch, features) sequence from the graph input")
        last = self.layers[-1] if self.layers else None
        if (isinstance(x.group, _Group) and x.group is last and x.depth == len(self.layers) and x.layout == "TBF"
                and last.compatible(kind, H, D == 2, options)):
            last.weights.append((W, R, B))  # a stacked layer of the same rnnfast layer
            group = last
        else:
            if x.depth != len(self.layers):
                raise self.fail(node, "the graph branches: this layer does not follow the last one")
            if x.layout == x.native:
                batch_first = False
            elif x.layout == x.native[1] + x.native[0] + x.native[2]:
                batch_first = True
            else:
                raise self.fail(node, f"its input is laid out {x.layout}, not the previous layer's output")
            group = _Group(kind, H, W.shape[2], D == 2, batch_first, options, [(W, R, B)])
            self.layers.append(group)
        native = "BTF" if group.batch_first else "TBF"
        y = _Data(len(self.layers), "TDBH", native, group=group)
        state = _Data(len(self.layers), "DBH", native, form="state")
        return [y] + [state] * (len(node.output) - 1)

    # ------------------------------------------------------------------ layout
    def op_Identity(self, node, ins, attrs):
        return ins[0]

    def op_Shape(self, node, ins, attrs):
        return _Aux()

    def op_Transpose(self, node, ins, attrs):
        x = ins[0]
        perm = attrs.get("perm", list(range(len(x.layout)))[::-1])
        return dataclasses.replace(x, layout="".join(x.layout[p] for p in perm))

    def op_Reshape(self, node, ins, attrs):
        x, shape = ins[0], self.const(node, node.input[1], "shape")
        if x.layout in ("TBDH", "BTDH") and list(shape[:2]) == [0, 0] and shape.size == 3:
            return dataclasses.replace(x, layout=x.layout[:2] + "F")
        raise self.fail(node, f"only (T, B, D, H) -> (T, B, D*H) reshapes are read, got {x.layout} to {shape}")

    def op_Squeeze(self, node, ins, attrs):
        x = ins[0]
        axes = [a % len(x.layout) for a in self.axes(node, attrs, 1)]
        if x.layout == "TDBH" and axes == [1] and not x.group.bidirectional:
            return dataclasses.replace(x, layout="TBF")
        if len(axes) == 1 and x.layout[axes[0]] == "1":
            return dataclasses.replace(x, layout=_drop_axis(x.layout, axes[0]),
                                       native=_drop_axis(x.native, axes[0]) if x.native == x.layout else x.native)
        raise self.fail(node, f"squeezing axes {axes} of a {x.layout} tensor is not read")

    # ------------------------------------------------------------------ feed-forward layers
    def op_Gather(self, node, ins, attrs):
        data, idx = ins
        axis = attrs.get("axis", 0)
        if isinstance(data, np.ndarray) and isinstance(idx, _Data) and axis == 0 and data.ndim == 2:
            emb = nn.Embedding(*data.shape, dtype=np.float32)
            emb.load_state_dict({"weight": data.astype(np.float32)})
            return self.append(node, idx, emb, idx.layout + "F")
        if isinstance(data, _Data) and isinstance(idx, np.ndarray) and idx.ndim == 0 and len(data.layout) == 3:
            axis %= 3
            if axis == 1 and int(idx) == -1:
                return self.append(node, data, nn.LastStep(), _drop_axis(data.layout, 1))
            if axis == 1 and int(idx) == 0 and data.is_native():
                return dataclasses.replace(data, layout=_drop_axis(data.layout, 1), form="first")
        raise self.fail(node, "only an Embedding lookup or the last (or first) time step is read")

    def op_GatherElements(self, node, ins, attrs):
        data, idx = ins
        if isinstance(idx, _Aux) and attrs.get("axis", 0) % 3 == 1:  # the step at lengths - 1
            return self.append(node, data, nn.LastStep(), data.layout[0] + "1" + data.layout[2])
        raise self.fail(node, "only the step at each sequence's length is read")

    def _linear(self, node: Any, x: _Data, weight: np.ndarray, bias: Optional[np.ndarray]) -> _Data:
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=np.float32)
        lin.load_state_dict({"weight": weight} if bias is None else {"weight": weight, "bias": bias})
        return self.append(node, x, lin, x.layout)

    def op_MatMul(self, node, ins, attrs):
        if not isinstance(ins[1], np.ndarray) or ins[1].ndim != 2:
            raise self.fail(node, "only data times a constant matrix is read")
        return dataclasses.replace(self._linear(node, ins[0], ins[1].T.astype(np.float32), None), form="matmul")

    def op_Gemm(self, node, ins, attrs):
        x, w = ins[0], self.const(node, node.input[1], "B").astype(np.float32)
        if attrs.get("transA", 0):
            raise self.fail(node, "transA=1 is not read")
        w = (w if attrs.get("transB", 0) else w.T) * np.float32(attrs.get("alpha", 1.0))
        bias = None
        if len(ins) > 2 and ins[2] is not None:
            bias = np.broadcast_to(self.const(node, node.input[2], "C").astype(np.float32) *
                                   np.float32(attrs.get("beta", 1.0)), (w.shape[0],)).copy()
        return self._linear(node, x, w, bias)

    def op_Add(self, node, ins, attrs):
        x, b = (ins[0], ins[1]) if isinstance(ins[0], _Data) else (ins[1], ins[0])
        lin = self.layers[-1] if self.layers else None
        if x.form == "matmul" and isinstance(b, np.ndarray) and isinstance(lin, nn.Linear) and x.depth == len(
                self.layers):
            bias = np.broadcast_to(b.astype(np.float32), (lin.out_features,)).copy()
            with_bias = nn.Linear(lin.in_features, lin.out_features, dtype=np.float32)
            with_bias.load_state_dict({"weight": lin.state_dict()["weight"], "bias": bias})
            self.layers[-1] = with_bias
            return dataclasses.replace(x, form="")
        raise self.fail(node, "only the bias of a MatMul is read")

    # ------------------------------------------------------------------ pooling
    def op_Mul(self, node, ins, attrs):
        x, m = (ins[0], ins[1]) if isinstance(ins[0], _Data) else (ins[1], ins[0])
        if isinstance(m, _Aux) and x.is_native() and len(x.layout) == 3:
            return dataclasses.replace(x, form="masked")
        raise self.fail(node, "only a sequence times its time mask is read")

    def op_Where(self, node, ins, attrs):
        cond, x, other = ins
        if (isinstance(cond, _Aux) and isinstance(x, _Data) and x.is_native() and isinstance(other, np.ndarray)
                and other.size == 1 and np.isneginf(other).all()):
            return dataclasses.replace(x, form="maxmasked")
        raise self.fail(node, "only a sequence masked with -inf is read")

    def _reduce(self, node: Any, x: _Data, attrs: dict) -> int:
        axes = [a % len(x.layout) for a in self.axes(node, attrs, 1)]
        if axes != [1] or attrs.get("keepdims", 1) != 0:
            raise self.fail(node, "only a reduction over the time axis (axis 1, keepdims=0) is read")
        return 1

    def op_ReduceSum(self, node, ins, attrs):
        x = ins[0]
        self._reduce(node, x, attrs)
        if x.form != "masked":
            raise self.fail(node, "only the sum of a masked sequence (MeanPool) is read")
        return dataclasses.replace(x, layout=_drop_axis(x.layout, 1), form="masked_sum")

    def op_Div(self, node, ins, attrs):
        x = ins[0]
        if isinstance(x, _Data) and x.form == "masked_sum" and isinstance(ins[1], _Aux):
            return self.append(node, dataclasses.replace(x, form="", layout=x.native), nn.MeanPool(), x.layout)
        raise self.fail(node, "only a masked sum over the lengths (MeanPool) is read")

    def op_ReduceMean(self, node, ins, attrs):
        x = ins[0]
        self._reduce(node, x, attrs)
        return self.append(node, x, nn.MeanPool(), _drop_axis(x.layout, 1))

    def op_ReduceMax(self, node, ins, attrs):
        x = ins[0]
        self._reduce(node, x, attrs)
        if x.form == "maxmasked":
            x = dataclasses.replace(x, form="")
        return self.append(node, x, nn.MaxPool(), _drop_axis(x.layout, 1))

    def op_Split(self, node, ins, attrs):
        x = ins[0]
        if len(node.output) == 2 and attrs.get("axis", 0) % 2 == 1 and len(x.layout) == 2 and x.form in ("", "first"):
            return [dataclasses.replace(x, form=f"{x.form}half{i}") for i in range(2)]
        raise self.fail(node, "only halving a pooled (B, F) tensor into its directions is read")

    def op_Concat(self, node, ins, attrs):
        if all(isinstance(v, _Data) and v.form == "state" for v in ins):
            return ins[0]
        if len(ins) == 2 and [getattr(v, "form", None) for v in ins] == ["half0", "firsthalf1"]:
            last = self.layers[ins[0].depth - 1] if ins[0].depth == len(self.layers) else None
            if isinstance(last, nn.LastStep) and ins[1].depth == ins[0].depth - 1:
                self.layers[-1] = nn.LastStep(bidirectional=True)
                return dataclasses.replace(ins[0], form="")
        raise self.fail(node, "only the final states, or the two directions of a LastStep, are concatenated")


def _fold(op: str, ins: list, attrs: dict) -> Optional[np.ndarray]:
    """``op`` evaluated on constant inputs (the few that torch leaves unfolded), else None."""
    if op == "Identity":
        return ins[0]
    if op == "Transpose":
        return np.transpose(ins[0], attrs.get("perm"))
    if op == "Unsqueeze" and len(ins) > 1:
        return np.expand_dims(ins[0], tuple(int(a) for a in np.atleast_1d(ins[1])))
    if op == "Squeeze" and len(ins) > 1:
        return np.squeeze(ins[0], tuple(int(a) for a in np.atleast_1d(ins[1])))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in ins if v is not None], axis=attrs.get("axis", 0))
    if op == "Reshape" and 0 not in ins[1]:
        return ins[0].reshape(tuple(int(s) for s in ins[1]))
    return None


def _load(model_or_path: Any) -> Any:
    onnx = onnx_module()
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(model_or_path))
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        try:
            return onnx.load_model(path)
        except Exception as e:  # protobuf's DecodeError and friends: a file that is not ONNX
            raise ValueError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    raise TypeError(f"model_or_path must be an onnx.ModelProto, bytes or a path, got {type(model_or_path).__name__}")


def from_onnx(model_or_path: Union[Any, str, "os.PathLike[str]", bytes]) -> Any:
    """Build the rnnfast model an ONNX graph computes.

    Reads graphs made of LSTM / GRU / RNN nodes and what ``torch.onnx.export`` and
    :func:`rnnfast.interop.to_onnx` put around them: layout changes (Transpose, Reshape, Squeeze), the
    zero initial state (Shape, Gather, Unsqueeze, Concat, ConstantOfShape, Slice), Embedding lookups
    (Gather), Linear layers (Gemm, or MatMul and Add), the last step (Gather), and to_onnx's pooling with
    lengths (masks built with Cast, Range, Less, Where, Expand, GatherElements, ReduceSum / ReduceMean /
    ReduceMax, Split). Stacked recurrent nodes of the same kind and options become one multi-layer layer.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, bytes, or path of a ``.onnx`` file

    Returns
    -------
    rnnfast.nn.LSTM / GRU / RNN
        When the graph is one recurrent layer (one node, or stacked nodes) with only its layout
        transposes around it; the layer's ``batch_first`` follows the graph's input layout.
    rnnfast.nn.Sequential
        Otherwise: the layers in order. In both cases float32, in eval mode; a graph input ``lengths``
        feeding ``sequence_lens`` is the ``lengths`` argument of the rnnfast call, and initial-state graph
        inputs are its ``hx``.

    Raises
    ------
    ImportError
        The ``onnx`` package is missing.
    ValueError
        Operators outside the list above (all of them named), or a supported operator in a pattern that
        has no rnnfast layer (the node named): e.g. ``clip``, ``input_forget``, peepholes, activations
        rnnfast lacks, a reverse-only direction, a nonzero constant initial state, a softmax head.

    Examples
    --------
    >>> layer = rf.interop.from_onnx("lstm.onnx")          # doctest: +SKIP
    >>> out, (h_n, c_n) = layer(x, lengths=lengths)        # doctest: +SKIP
    """
    proto = _load(model_or_path)
    graph = proto.graph
    unsupported = sorted({n.op_type for n in graph.node if n.op_type not in SUPPORTED_OPS or n.domain not in
                          ("", "ai.onnx")})
    if unsupported:
        raise ValueError(f"the graph has operators from_onnx does not read: {', '.join(unsupported)} (supported: "
                         f"{', '.join(sorted(SUPPORTED_OPS))})")
    reader = _Reader(graph)
    reader.run(graph)
    out = reader.values.get(graph.output[0].name) if graph.output else None
    if not isinstance(out, _Data) or out.depth != len(reader.layers) or not out.is_native() or not reader.layers:
        raise ValueError("the graph's first output is not the end of a chain of layers from its input")
    layers = [g.build() if isinstance(g, _Group) else g for g in reader.layers]
    for layer in layers:
        layer.eval()
    if len(layers) == 1 and isinstance(reader.layers[0], _Group):
        return layers[0]
    return nn.Sequential(*layers).train(False)
