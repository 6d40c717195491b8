"""Layer-normalized LSTM / GRU have no ONNX, PyTorch or Keras form: every exporter refuses them clearly."""
import pytest

import rnnfast as rf
from rnnfast import interop


@pytest.mark.parametrize("cls", [rf.nn.LSTM, rf.nn.GRU])
def test_exporters_refuse_layer_norm(cls):
    layer = cls(3, 4, layer_norm=True)
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="layer_norm=True"):
        interop.to_onnx(layer)
    with pytest.raises(ValueError, match="layer_norm=True has no Keras form"):
        interop.keras_weights(layer)
    model = rf.nn.Sequential(layer, rf.nn.LastStep())
    with pytest.raises(ValueError, match="layer_norm=True has no Keras form"):
        interop.keras_weights(model)
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="layer_norm=True has no PyTorch form"):
        interop.to_torch(layer)
