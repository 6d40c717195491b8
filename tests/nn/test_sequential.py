"""rnnfast.nn.Sequential: chaining, end-to-end gradients with padded sequences, state dicts, modes."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast.nn import GRU, LSTM, Dropout, Embedding, LastStep, Linear, MeanPool, Sequential

from gradcheck import assert_close, check_params, numeric_grad

LENGTHS = np.array([3, 1, 4])


def token_batch():
    ids = np.array([[1, 4, 2, 0], [3, 0, 0, 0], [5, 5, 1, 2]])  # 0 pads past each length; 6 is unused
    return ids


def text_model(dtype=np.float64):
    return Sequential(Embedding(7, 3, padding_idx=0, dtype=dtype, seed=0), LSTM(3, 4, dtype=dtype, seed=1),
                      LastStep(), Linear(4, 2, dtype=dtype, seed=2))


def test_embedding_lstm_laststep_linear_gradients():
    model = text_model()
    ids = token_batch()
    R = np.random.default_rng(0).standard_normal((3, 2))

    def objective():
        return float(np.sum(model(ids, lengths=LENGTHS) * R))

    out = model(ids, lengths=LENGTHS)
    assert out.shape == (3, 2)
    assert model.backward(R) is None  # an Embedding has no input gradient
    check_params(model, objective)
    # Tokens at padded steps never touch the loss: their embedding rows get no gradient.
    model.zero_grad()
    model(np.where(np.arange(4)[None] < LENGTHS[:, None], ids, 6), lengths=LENGTHS)
    model.backward(R)
    assert not np.any(model.grads["0.weight"][6])


def test_float_input_gradients_through_gru_meanpool():
    model = Sequential(GRU(2, 3, bidirectional=True, dtype=np.float64, seed=0), Dropout(0.0),
                       MeanPool(), Linear(6, 1, dtype=np.float64, seed=1))
    x = np.random.default_rng(1).standard_normal((3, 4, 2))
    R = np.random.default_rng(2).standard_normal((3, 1))
    model(x, lengths=LENGTHS)
    dx = model.backward(R)
    objective = lambda: float(np.sum(model(x, lengths=LENGTHS) * R))  # noqa: E731
    assert_close(dx, numeric_grad(objective, x))
    check_params(model, objective)


def test_state_dict_keys_like_torch_sequential():
    model = text_model(np.float32)
    keys = list(model.state_dict())
    assert keys[:2] == ["0.weight", "1.weight_ih_l0"]
    assert set(keys) == set(model.grads) == {n for n, _ in model.named_parameters()}
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Embedding(7, 3, padding_idx=0), torch.nn.LSTM(3, 4, batch_first=True),
                                 torch.nn.Identity(), torch.nn.Linear(4, 2))
    assert keys == list(tmodel.state_dict())
    model.load_state_dict(tmodel.state_dict())
    np.testing.assert_array_equal(model.state_dict()["3.bias"], tmodel[3].bias.detach().numpy())


def test_load_state_dict_validates_everything_first():
    model = text_model()
    before = model.state_dict()
    bad = dict(before)
    bad["3.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"3\.weight"):
        model.load_state_dict(bad)
    missing = dict(before)
    del missing["1.bias_hh_l0"]
    with pytest.raises(ValueError, match="missing keys"):
        model.load_state_dict(missing)
    bad = dict(before)
    bad["0.weight"] = np.full((7, 3), "x")
    with pytest.raises(TypeError):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    new = {k: v + 1 for k, v in before.items()}
    model.load_state_dict(new)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, new[k])


def test_modes_zero_grad_and_container():
    model = text_model()
    assert model.eval() is model
    assert not any(layer.training for layer in model)
    model(token_batch())
    with pytest.raises(rf.nn.BackwardStateError):
        model.backward(np.zeros((3, 2)))
    model.train()
    assert all(layer.training for layer in model)
    model(token_batch())
    model.backward(np.ones((3, 2)))
    assert any(np.any(g) for g in model.grads.values())
    model.zero_grad()
    assert not any(np.any(g) for g in model.grads.values())
    assert len(model) == 4 and isinstance(model[1], LSTM) and isinstance(model[1:], Sequential)
    assert "(1): LSTM" in repr(model)
    assert rf.Sequential is Sequential


def test_lengths_only_reach_layers_that_take_them():
    seen = {}

    class Probe:
        def forward(self, x):
            seen["probe"] = True
            return x

        def backward(self, d):
            return d

    model = Sequential(Probe(), LastStep())
    x = np.arange(12.0).reshape(1, 4, 3)
    np.testing.assert_array_equal(model(x, lengths=[2]), x[:, 1])
    assert seen["probe"] and model.state_dict() == {}


def test_bad_layers():
    with pytest.raises(TypeError, match=r"layer 1 \(object\) has no forward"):
        Sequential(Linear(2, 2), object())
    emb_emb = Sequential(Embedding(3, 2), Embedding(3, 2))
    with pytest.raises(TypeError, match="integers"):
        emb_emb(np.array([[1, 2]]))  # floats from the first embedding cannot be ids

    class NoInputGrad:
        def forward(self, x):
            return x

        def backward(self, d):
            return None

    model = Sequential(Linear(2, 2), NoInputGrad())
    model(np.ones((1, 2)))
    with pytest.raises(ValueError, match="no input gradient"):
        model.backward(np.ones((1, 2)))


def test_find_looks_inside_stateful_wrappers():
    from rnnfast.nn import Stateful
    lstm = LSTM(2, 3)
    heads = Linear(3, 3), Linear(3, 2)
    model = Sequential(Embedding(5, 2), Stateful(lstm), heads[0], Dropout(0.1), heads[1])
    assert model.find(LSTM) is lstm and model.find((GRU, LSTM)) is lstm
    assert model.find(Linear) is heads[0] and model.find(Linear, last=True) is heads[1]
    assert model.find(GRU) is None
