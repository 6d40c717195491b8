import numpy as np
import pytest

from rnnfast.interop._gates import ORDER, from_order, to_order


@pytest.mark.parametrize("framework", sorted(ORDER))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_round_trip_and_blocks(framework, cell):
    G, H = len(ORDER[framework][cell]), 3
    a = np.arange(G * H * 2, dtype=np.float64).reshape(G * H, 2)
    b = to_order(a, framework, cell)
    for pos, k in enumerate(ORDER[framework][cell]):
        np.testing.assert_array_equal(b[pos * H:(pos + 1) * H], a[k * H:(k + 1) * H])
    np.testing.assert_array_equal(from_order(b, framework, cell), a)


def test_onnx_lstm_is_iofc():
    # PyTorch i, f, g, o -> ONNX i, o, f, c
    a = np.array([0, 1, 2, 3])  # i f g o, H = 1
    assert list(to_order(a, "onnx", "lstm")) == [0, 3, 1, 2]
