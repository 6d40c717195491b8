"""Interop of the cell variants: an LSTM with ``proj_size`` to and from PyTorch (layers and Sequentials over
ragged lengths, round trips), refused by ONNX and Keras; ``recurrent_dropout`` carried to Keras."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnfast as rf  # noqa: E402
from rnnfast.interop import from_torch, to_torch  # noqa: E402

I, H, P = 5, 6, 3
LENGTHS = np.array([3, 7, 1, 5])


def _close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_torch_and_back(dtype):
    torch.manual_seed(0)
    tmod = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, proj_size=P).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    rmod = from_torch(tmod)
    assert rmod.proj_size == P and rmod.dtype == dtype
    x = np.random.default_rng(1).standard_normal((4, 7, I)).astype(dtype)
    with torch.no_grad():
        ot, (hn, cn) = tmod(torch.from_numpy(x))
    out, (h, c) = rmod(x)
    _close(out, ot.numpy(), dtype)
    _close(h, hn.numpy(), dtype)
    _close(c, cn.numpy(), dtype)
    back = to_torch(rmod)
    assert back.proj_size == P and str(back) == str(tmod)
    for k, v in tmod.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_sequential_over_lengths():
    model = rf.nn.Sequential(rf.nn.LSTM(I, H, bidirectional=True, proj_size=P, seed=0),
                             rf.nn.LastStep(bidirectional=True), rf.nn.Linear(2 * P, 2, seed=1)).eval()
    x = np.random.default_rng(2).standard_normal((4, 7, I)).astype(np.float32)
    tm = to_torch(model)
    with torch.no_grad():
        got = tm(torch.from_numpy(x), torch.from_numpy(LENGTHS)).numpy()
    _close(got, model(x, lengths=LENGTHS), np.float32)
    back = from_torch(tm)
    np.testing.assert_array_equal(back(x, lengths=LENGTHS), model(x, lengths=LENGTHS))


def test_recurrent_dropout_to_torch_is_the_eval_layer():
    layer = rf.nn.GRU(I, H, recurrent_dropout=0.3, seed=0).eval()
    tm = to_torch(layer)
    x = np.random.default_rng(3).standard_normal((2, 4, I)).astype(np.float32)
    with torch.no_grad():
        _close(tm(torch.from_numpy(x))[0].numpy(), layer(x)[0], np.float32)


def test_onnx_refuses_projection():
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="proj_size"):
        rf.interop.to_onnx(rf.nn.LSTM(I, H, proj_size=P))


def test_keras_refuses_projection_and_carries_recurrent_dropout():
    with pytest.raises(ValueError, match="proj_size"):
        rf.interop.keras_weights(rf.nn.LSTM(I, H, proj_size=P))
    pytest.importorskip("keras")
    with pytest.raises(ValueError, match="proj_size"):
        rf.interop.to_keras(rf.nn.LSTM(I, H, proj_size=P))
    km = rf.interop.to_keras(rf.nn.Sequential(rf.nn.LSTM(I, H, num_layers=2, recurrent_dropout=0.25, seed=0)))
    rec = [layer for layer in km.layers if type(layer).__name__ == "LSTM"]
    assert len(rec) == 2 and all(layer.get_config()["recurrent_dropout"] == 0.25 for layer in rec)
