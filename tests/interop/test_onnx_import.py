"""rnnfast.interop.from_onnx: round trips of to_onnx exact, torch.onnx.export's graphs against PyTorch, and
clear refusals of what rnnfast cannot run."""
import numpy as np
import pytest

from rnnfast import nn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rnnfast.interop import from_onnx, to_onnx  # noqa: E402

TOL = 1e-5


def same_layer(a, b):
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-relu"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_layer_round_trip_is_exact(cell, layers, bidirectional, batch_first):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "rnn-relu": nn.RNN}[cell]
    kw = {"nonlinearity": "relu"} if cell == "rnn-relu" else {}
    layer = cls(3, 4, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, seed=0, **kw).eval()
    for initial_state in (False, True):
        back = from_onnx(to_onnx(layer, initial_state=initial_state))
        same_layer(back, layer)


def test_layer_without_bias_round_trips():
    layer = nn.GRU(3, 4, bias=False, seed=0).eval()
    same_layer(from_onnx(to_onnx(layer)), layer)


def test_gru_reset_before_round_trips():
    layer = nn.GRU(3, 4, bidirectional=True, reset_after=False, seed=0).eval()
    back = from_onnx(to_onnx(layer))
    assert back.reset_after is False
    same_layer(back, layer)


def test_gru_linear_before_reset_0_imports_as_reset_before():
    proto = to_onnx(nn.GRU(3, 4, seed=0))
    for n in proto.graph.node:
        if n.op_type == "GRU":
            for a in n.attribute:
                if a.name == "linear_before_reset":
                    a.i = 0
    back = from_onnx(proto)
    assert back.reset_after is False


POOLS = [nn.LastStep, lambda: nn.LastStep(bidirectional=True), nn.MeanPool, nn.MaxPool]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("lengths", [True, False])
def test_sequential_round_trip(pool, lengths):
    model = nn.Sequential(nn.Embedding(9, 3, seed=0), nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0),
                          nn.Dropout(0.2), pool(), nn.Linear(8, 2, seed=0), nn.Linear(2, 3, bias=False, seed=1))
    model.train(False)
    back = from_onnx(to_onnx(model, lengths=lengths))
    kept = [layer for layer in model.layers if not isinstance(layer, nn.Dropout)]  # identity at inference
    assert [repr(a) for a in back.layers] == [repr(b) for b in kept]
    ids = np.random.default_rng(0).integers(1, 9, (3, 5))
    lens = np.array([5, 2, 4])
    np.testing.assert_array_equal(back(ids, lengths=lens), model(ids, lengths=lens))


# ---------------------------------------------------------------------------------------- from PyTorch
torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    return torch


def _export(module, x, tmp_path):
    path = tmp_path / "m.onnx"
    module.eval()
    _torch().onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"],
                         dynamic_axes={"x": {0: "a", 1: "b"}}, opset_version=17)
    with torch.no_grad():
        want = module(torch.from_numpy(x))
    return path, (want[0] if isinstance(want, tuple) else want).numpy()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first,layers,bidirectional", [(True, 1, False), (False, 2, True)])
def test_torch_recurrent_module(kind, batch_first, layers, bidirectional, tmp_path):
    t = _torch()
    t.manual_seed(0)
    kw = {"nonlinearity": "relu"} if kind == "RNN" and bidirectional else {}
    module = getattr(t.nn, kind)(3, 4, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    path, want = _export(module, x, tmp_path)
    layer = from_onnx(path)
    assert type(layer).__name__ == kind and layer.batch_first == batch_first and layer.num_layers == layers
    out = layer(x)[0]
    np.testing.assert_allclose(out, want, atol=TOL)


@pytest.mark.filterwarnings("ignore")
def test_torch_sequential_like_with_linear_head(tmp_path):
    t = _torch()

    class Classifier(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = t.nn.Embedding(10, 3)
            self.rnn = t.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.head = t.nn.Linear(8, 2)

        def forward(self, ids):
            y, _ = self.rnn(self.emb(ids))
            return self.head(y[:, -1])

    t.manual_seed(0)
    ids = np.random.default_rng(1).integers(0, 10, (3, 6))
    path, want = _export(Classifier(), ids, tmp_path)
    model = from_onnx(path)
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "GRU", "LastStep", "Linear"]
    np.testing.assert_allclose(model(ids), want, atol=TOL)
    per_step = t.nn.Sequential(t.nn.Linear(3, 5), t.nn.Tanh())
    x = np.zeros((2, 4, 3), np.float32)
    path, _ = _export(per_step, x, tmp_path)
    with pytest.raises(ValueError, match="Tanh"):
        from_onnx(path)


# ---------------------------------------------------------------------------------------- refusals
def _graph(op, attrs=None, extra_nodes=(), D=1, H=2, I=3):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    inits = [numpy_helper.from_array(np.ones((D, G * H, I), np.float32), "W"),
             numpy_helper.from_array(np.ones((D, G * H, H), np.float32), "R")]
    nodes = [helper.make_node(op, ["x", "W", "R"], ["y"], hidden_size=H, **(attrs or {}))] + list(extra_nodes)
    out = extra_nodes[-1].output[0] if extra_nodes else "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, I])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op,attrs,match", [
    ("LSTM", {"clip": 3.0}, "clip"),
    ("LSTM", {"input_forget": 1}, "input_forget"),
    ("GRU", {"activations": ["Sigmoid", "Relu"]}, r"activations \['Sigmoid', 'Relu'\]"),
    ("RNN", {"activations": ["Sigmoid"]}, "Sigmoid"),
    ("LSTM", {"direction": "reverse"}, "reverse"),
])
def test_refuses_options_rnnfast_lacks(op, attrs, match):
    with pytest.raises(ValueError, match=match):
        from_onnx(_graph(op, attrs))


def test_relu_rnn_maps():
    model = _graph("RNN", {"activations": ["Relu"]})
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    model.graph.node.append(helper.make_node("Squeeze", ["y", "axes"], ["out"]))
    model.graph.output[0].name = "out"
    layer = from_onnx(model.SerializeToString())
    assert isinstance(layer, nn.RNN) and layer.nonlinearity == "relu" and not layer.batch_first


def test_refuses_unsupported_operators_by_name():
    model = _graph("LSTM", extra_nodes=[helper.make_node("Softmax", ["y"], ["s"]),
                                        helper.make_node("Tanh", ["s"], ["t"])])
    with pytest.raises(ValueError, match="does not read: Softmax, Tanh"):
        from_onnx(model)


def test_estimator_graph_is_refused_clearly():
    import rnnfast as rf
    rng = np.random.default_rng(0)
    est = rf.LSTMClassifier(hidden_size=3, epochs=1, random_state=0).fit(rng.standard_normal((8, 4, 2)), np.arange(8) % 2)
    with pytest.raises(ValueError, match="Softmax"):
        from_onnx(to_onnx(est))
    back = from_onnx(to_onnx(est.model_))  # the network itself imports
    assert isinstance(back, nn.Sequential)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="model_or_path"):
        from_onnx(3)
    with pytest.raises(FileNotFoundError):
        from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01not a model")
    with pytest.raises(ValueError):
        from_onnx(tmp_path / "bad.onnx")
