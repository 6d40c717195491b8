"""``layer_norm`` on the estimators: the network's cells, save / load, old files, the RNN refusal."""
import numpy as np
import pytest

import rnnfast as rf
from _io_craft import edit_index


def _seqs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 2)).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


@pytest.mark.parametrize("cls, layer", [(rf.LSTM, rf.nn.LSTM), (rf.GRUClassifier, rf.nn.GRU),
                                        (rf.LSTMRegressor, rf.nn.LSTM)])
def test_estimators_take_layer_norm_and_save_it(cls, layer, tmp_path):
    X, y = _seqs()
    est = cls(hidden_size=4, epochs=2, batch_size=8, layer_norm=True, random_state=0).fit(X, y)
    assert est.model_.find(layer).layer_norm is True and est.get_params()["layer_norm"] is True
    path = tmp_path / "m.rnnfast"
    est.save(path)
    back = rf.load(path)
    assert back.layer_norm is True and back.model_.find(layer).layer_norm is True
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    y0, state = back.predict_step(X[:2, 0])
    assert len(y0) == 2
    with pytest.raises(ValueError, match="layer_norm changed"):
        est.set_params(layer_norm=False, warm_start=True).fit(X, y)
    with pytest.raises(TypeError, match="layer_norm"):
        cls(layer_norm="yes", epochs=1).fit(X, y)


def test_old_estimator_files_without_layer_norm_load_as_plain(tmp_path):
    X, y = _seqs()
    est = rf.LSTM(hidden_size=4, epochs=1, batch_size=8, random_state=0).fit(X, y)
    path, old = tmp_path / "m.rnnfast", tmp_path / "old.rnnfast"
    est.save(path)

    def drop(index):  # what a file written before layer_norm existed holds
        del index["config"]["layer_norm"]
        del index["extra"]["fitted"]["arch"]["layer_norm"]

    edit_index(path, old, drop)
    loaded = rf.load(old)
    assert loaded.layer_norm is False and loaded.model_.find(rf.nn.LSTM).layer_norm is False
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_rnn_estimator_refuses_layer_norm():
    X, y = _seqs()
    with pytest.raises(ValueError, match="LSTM and GRU"):
        rf.RNN(layer_norm=True, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="reset_after"):
        rf.GRU(layer_norm=True, reset_after=False, epochs=1).fit(X, y)
