"""BatchNorm and LayerNorm through the converters: ONNX export (LayerNormalization, eval-mode BatchNorm as
Mul/Add, padded steps zero) run by ONNX Runtime; to_torch / from_torch of layers, Sequentials and estimators;
clear refusals where a format has no such layer."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import GRU, LSTM, BatchNorm, LastStep, LayerNorm, Linear, MeanPool, Sequential

LENGTHS = np.array([5, 2, 3, 4])


def batch(seed=0):
    return np.random.default_rng(seed).standard_normal((4, 5, 3)).astype(np.float32)


def trained_model():
    """A Sequential with every kind of norm, its BatchNorm statistics moved by three training forwards."""
    model = Sequential(LSTM(3, 8, seed=0), LayerNorm(8), BatchNorm(8, momentum=None),
                       GRU(8, 6, bidirectional=True, seed=2), BatchNorm(12), MeanPool(), LayerNorm(12, bias=False),
                       BatchNorm(12, affine=False), Linear(12, 2, seed=1))
    for seed in range(3):
        model(batch(seed) * 2 + 1, lengths=LENGTHS)
    return model


# ---------------------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def run(ort, proto, x, lengths=None):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": x} if lengths is None else {"x": x, "lengths": lengths.astype(np.int32)}
    return sess.run(None, feed)[0]


def test_onnx_export_of_a_sequential_with_norms(ort):
    model = trained_model().eval()
    proto = rf.interop.to_onnx(model)
    ops = {n.op_type for n in proto.graph.node}
    assert "LayerNormalization" in ops and "BatchNormalization" not in ops
    x = batch(5)
    np.testing.assert_allclose(run(ort, proto, x, LENGTHS), model(x, lengths=LENGTHS), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(ort, rf.interop.to_onnx(model, lengths=False), x), model(x), rtol=1e-5, atol=1e-5)


def test_onnx_sequence_output_is_zero_at_padded_steps(ort):
    model = Sequential(LSTM(3, 8, seed=0), LayerNorm(8), BatchNorm(8)).eval()
    y = run(ort, rf.interop.to_onnx(model), batch(), LENGTHS)
    np.testing.assert_allclose(y, model(batch(), lengths=LENGTHS), rtol=1e-5, atol=1e-5)
    assert not np.any(y[np.arange(5)[None, :] >= LENGTHS[:, None]])


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_onnx_export_of_an_estimator_with_normalization(ort, norm):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    est = rf.LSTMClassifier(hidden_size=6, num_layers=2, epochs=2, random_state=0, normalization=norm).fit(X, y)
    got = run(ort, rf.interop.to_onnx(est), X, np.full(40, 6))
    np.testing.assert_allclose(got, est.predict_proba(X), rtol=1e-5, atol=1e-5)


def test_onnx_refusals(ort):
    with pytest.raises(ValueError, match="opset 17"):
        rf.interop.to_onnx(Sequential(LSTM(3, 4), LayerNorm(4)), opset=16)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        rf.interop.to_onnx(Sequential(LSTM(3, 4), BatchNorm(4, track_running_stats=False)))
    with pytest.raises(ValueError, match="LayerNormalization"):  # the importer names what it cannot read
        rf.interop.from_onnx(rf.interop.to_onnx(Sequential(LSTM(3, 4), LayerNorm(4))))
    model = Sequential(LSTM(3, 4, seed=0), BatchNorm(4)).eval()  # BatchNorm needs no recent opset
    np.testing.assert_allclose(run(ort, rf.interop.to_onnx(model, opset=13), batch(), LENGTHS),
                               model(batch(), lengths=LENGTHS), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- PyTorch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_to_torch_trains_and_infers_as_rnnfast(torch):
    model = Sequential(LSTM(3, 8, seed=0), LayerNorm(8), BatchNorm(8, momentum=None),
                       GRU(8, 6, bidirectional=True, seed=2), BatchNorm(12), MeanPool(), LayerNorm(12, bias=False),
                       BatchNorm(12, affine=False), Linear(12, 2, seed=1))
    module = rf.interop.to_torch(model)
    assert module.training
    for seed in range(3):  # training mode: batch statistics over the valid steps, the same running updates
        x = batch(seed) * 2 + 1
        np.testing.assert_allclose(module(torch.from_numpy(x), LENGTHS).detach().numpy(),
                                   model(x, lengths=LENGTHS), rtol=1e-5, atol=1e-5)
    sd = model.state_dict()
    for k, v in module.state_dict().items():
        np.testing.assert_allclose(v.numpy(), sd[k.removeprefix("layers.")], rtol=1e-5, atol=1e-6)
    model.eval(), module.eval()
    x = batch(7)
    np.testing.assert_allclose(module(torch.from_numpy(x), LENGTHS).detach().numpy(), model(x, lengths=LENGTHS),
                               rtol=1e-5, atol=1e-5)
    back = rf.interop.from_torch(module)
    assert [type(layer).__name__ for layer in back] == [type(layer).__name__ for layer in model]
    assert not back.training
    np.testing.assert_allclose(back(x, lengths=LENGTHS), model(x, lengths=LENGTHS), rtol=1e-5, atol=1e-6)


def test_layers_and_torch_own_norms_convert(torch):
    bn = rf.interop.to_torch(BatchNorm(4, dtype=np.float64).eval())
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.weight.dtype == torch.float64 and not bn.training
    ln = rf.interop.from_torch(torch.nn.LayerNorm((2, 3), eps=1e-3).double())
    assert ln.normalized_shape == (2, 3) and ln.eps == 1e-3 and ln.dtype == np.float64
    tb = torch.nn.BatchNorm1d(4, momentum=0.3)
    tb(torch.randn(16, 4) * 2 + 1)
    rb = rf.interop.from_torch(tb.eval())
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(rb(x), tb(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert rb.momentum == 0.3 and int(rb.state_dict()["num_batches_tracked"]) == 1


def test_torch_refusals(torch):
    with pytest.raises(ValueError, match="bias=False"):
        rf.interop.from_torch(torch.nn.BatchNorm1d(4, bias=False))
    with pytest.raises(ValueError, match="unsupported torch module"):
        rf.interop.from_torch(torch.nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="no Keras weights for a BatchNorm"):
        rf.interop.keras_weights(Sequential(LSTM(3, 4), BatchNorm(4), LastStep()))
