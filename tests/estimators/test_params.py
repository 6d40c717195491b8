"""The estimators' parameter table: every constructor argument is in it, and each refuses a wrong type
with TypeError and a bad value with ValueError."""
import inspect

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.estimators.params import PARAMETER_CONSTRAINTS, Params, validate

BAD = {  # name: (a wrong type, a bad value)
    "hidden_size": (2.0, 0), "num_layers": ("1", 0), "nonlinearity": (1, "sigmoid"), "bidirectional": (1, None),
    "dropout": ("0.1", 1.0), "pooling": (None, "sum"), "return_sequences": (1, "yes"), "embedding_dim": (1.5, 0),
    "vocab_size": (3.0, 1), "epochs": (True, -1), "batch_size": ("8", 0), "optimizer": (None, "adamm"),
    "lr": ("1e-3", 0.0), "weight_decay": (None, -1.0), "momentum": ("0", 1.0), "loss": (0, "l1"),
    "clip_norm": ("1", 0.0), "clip_value": ([1], -1.0), "validation_split": ("0.1", 1.0), "shuffle": (0, None),
    "bucket": ("no", None), "early_stopping": (1, None), "patience": (1.0, -1), "tbptt": (2.5, 0),
    "warm_start": (0, None), "random_state": (1.5, -1), "verbose": ("1", 3), "dtype": (object(), "float16"),
    "n_threads": (1.0, 0), "reset_after": (1, None),
    "distributed": (1, "horovod"), "normalization": (True, "group"),
    "layer_norm": (1, None),
    "recurrent_dropout": ("0.1", 1.0), "proj_size": (1.5, -1),
}


def test_the_table_covers_every_constructor_argument():
    names = set(rf.RNN().get_params())
    assert names | {"reset_after", "proj_size"} == set(PARAMETER_CONSTRAINTS) == set(BAD)
    assert {f.name for f in Params.__dataclass_fields__.values()} == names | {"reset_after", "proj_size"}
    assert set(inspect.signature(rf.LSTM).parameters) == (names - {"nonlinearity"}) | {"proj_size"}
    assert set(inspect.signature(rf.GRU).parameters) == (names - {"nonlinearity"}) | {"reset_after"}


def test_defaults_validate():
    p = validate(rf.RNN().get_params())
    assert p.dtype == np.float32 and p.verbose == 0 and p.nonlinearity == "tanh"
    assert validate(rf.LSTM().get_params()).nonlinearity == "tanh"
    assert p.arch()["dtype"] == "float32" and set(p.opt()) == {"optimizer", "weight_decay", "momentum", "lr"}


@pytest.mark.parametrize("name", sorted(BAD))
def test_wrong_type_and_bad_value(name):
    wrong, bad = BAD[name]
    params = rf.RNN().get_params()
    with pytest.raises(TypeError, match=name):
        validate(dict(params, **{name: wrong}))
    if bad is not None:
        with pytest.raises(ValueError, match=name):
            validate(dict(params, **{name: bad}))


def test_parameters_that_go_together():
    params = rf.LSTM().get_params()
    with pytest.raises(ValueError, match="momentum applies"):
        validate(dict(params, momentum=0.5))
    assert validate(dict(params, momentum=0.5, optimizer="sgd")).momentum == 0.5
    with pytest.raises(ValueError, match="unidirectional"):
        validate(dict(params, tbptt=4, bidirectional=True))
    with pytest.raises(ValueError, match="proj_size"):
        validate(dict(params, hidden_size=4, proj_size=4))


def test_numpy_scalars_are_accepted():
    p = validate(dict(rf.LSTM().get_params(), hidden_size=np.int32(5), lr=np.float32(0.5), shuffle=np.bool_(False)))
    assert (p.hidden_size, p.lr, p.shuffle) == (5, 0.5, False) and type(p.hidden_size) is int


def test_fit_reports_the_bad_parameter():
    X = np.zeros((4, 3, 1), np.float32)
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        rf.GRU(hidden_size="8").fit(X, [0, 1, 0, 1])


def test_checked_parameters_are_reused_until_one_changes():
    X, y = np.zeros((4, 3, 1), np.float32), [0, 1, 0, 1]
    est = rf.LSTMClassifier(hidden_size=4, epochs=1).fit(X, y)
    p = est._validate_params()
    assert est._validate_params() is p  # unchanged: not checked again
    est.set_params(lr=0.5)
    assert est._validate_params().lr == 0.5
    est.set_params(bidirectional=1)  # equal to True, but of the wrong type: checked again, and refused
    with pytest.raises(TypeError, match="bidirectional must be a bool"):
        est.predict(X)
    est.set_params(bidirectional=False, hidden_size=[4])  # unhashable: checked (and here refused) every call
    for _ in range(2):
        with pytest.raises(TypeError, match="hidden_size must be an int"):
            est.predict(X)
