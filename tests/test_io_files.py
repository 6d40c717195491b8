"""Model files: estimators without their optimizer, Sequential files and checkpoints rf.load reads, the
estimator's network as the loader derives it, and temporary files left by killed saves."""
import inspect
import os
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import io as rio
from rnnfast.estimators.params import validate
from rnnfast.estimators.persistence import network_descriptions
from rnnfast.nn import _serial



HERE = os.path.dirname(os.path.abspath(__file__))


def _shapes(model):
    return {k: (v.dtype, v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 6, 3)).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


# ---------------------------------------------------------------------------------------- include_optimizer
def test_save_without_optimizer(data, tmp_path):
    X, y = data
    est = rf.LSTM(hidden_size=16, epochs=2, batch_size=8, random_state=0, n_threads=1).fit(X, y)
    est.save(tmp_path / "full.rnnfast")
    est.save(tmp_path / "lean.rnnfast", include_optimizer=False)
    full, lean = (os.path.getsize(tmp_path / f) for f in ("full.rnnfast", "lean.rnnfast"))
    assert lean < 0.5 * full  # Adam keeps two moments per weight
    kind, _, arrays, extra = rio.load_archive(tmp_path / "lean.rnnfast")
    assert extra["optimizer"] is None and not [k for k in arrays if k.startswith("optimizer/")]
    loaded = rf.load(tmp_path / "lean.rnnfast")
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert loaded.history_ == est.history_ and loaded.n_epochs_ == 2
    # training after it starts a fresh optimizer: the same as a fresh Adam on the saved weights
    assert loaded.optimizer_.state_dict()["steps"] == 0
    loaded.set_params(warm_start=True, epochs=1).fit(X, y)
    assert loaded.optimizer_.state_dict()["steps"] == 4 and loaded.n_epochs_ == 3
    with pytest.raises(TypeError, match="include_optimizer"):
        est.save(tmp_path / "x.rnnfast", include_optimizer="no")


def test_optimizer_arrays_without_optimizer_state_are_refused(data, tmp_path):
    X, y = data
    est = rf.GRU(hidden_size=4, epochs=1, random_state=0, n_threads=1).fit(X, y)
    est.save(tmp_path / "m.rnnfast")
    kind, config, arrays, extra = rio.load_archive(tmp_path / "m.rnnfast")
    rio.save_archive(tmp_path / "bad.rnnfast", kind, config, arrays, dict(extra, optimizer=None))
    with pytest.raises(rio.FormatError, match="optimizer state"):
        rf.load(tmp_path / "bad.rnnfast")


# ---------------------------------------------------------------------------------------- Sequential files
def _all_layers():
    return rf.nn.Sequential(
        rf.nn.Embedding(20, 6, padding_idx=0, seed=0),
        rf.nn.Stateful(rf.nn.LSTM(6, 5, num_layers=2, bidirectional=True, dropout=0.1, seed=1)),
        rf.nn.GRU(10, 4, bias=False, seed=2), rf.nn.RNN(4, 3, nonlinearity="relu", seed=3),
        rf.nn.Dropout(0.3), rf.nn.LayerNorm(3), rf.nn.BatchNorm(3), rf.nn.MeanPool(), rf.nn.Linear(3, 7, seed=4),
        rf.nn.LayerNorm([7], bias=False), rf.nn.BatchNorm(7, momentum=None, track_running_stats=False),
        rf.nn.Linear(7, 2, bias=False, seed=5))


def test_sequential_round_trip(tmp_path):
    model = _all_layers()
    model(np.array([[3, 4, 5, 0], [7, 1, 0, 0]]), lengths=[3, 2])  # BatchNorm's running statistics move
    model.save(tmp_path / "seq.rnnfast")
    loaded = rf.load(tmp_path / "seq.rnnfast")
    assert type(loaded) is rf.nn.Sequential and not loaded.training
    assert _serial.describe_layers(loaded) == _serial.describe_layers(model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    ids = np.array([[3, 4, 5, 0], [7, 1, 0, 0]])
    np.testing.assert_array_equal(loaded(ids, lengths=[3, 2]), model.eval()(ids, lengths=[3, 2]))


class Double:
    """A layer of the user's own: forward and backward only."""

    def forward(self, x):
        return 2 * x

    def backward(self, d):
        return 2 * d


def test_sequential_with_other_layers_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="cannot describe a Double"):
        rf.nn.Sequential(Double()).save(tmp_path / "x.rnnfast")
    assert not os.listdir(tmp_path)


def test_checkpoint_of_other_models_is_a_state_dict_with_a_clear_message(tmp_path):
    model = rf.nn.Sequential(rf.nn.Linear(2, 2, seed=0), Double())
    assert _serial.save_checkpoint(model, tmp_path / "c.rnnfast", {"epoch": 1}) == "model.state_dict"
    with pytest.raises(rio.FormatError, match="holds only a state dict") as e:
        rf.load(tmp_path / "c.rnnfast")
    assert "<function" not in str(e.value) and "\n" not in str(e.value)
    assert rio.load_archive(tmp_path / "c.rnnfast")[2].keys() == model.state_dict().keys()


_SMALL_ARGS = {"LSTM": dict(input_size=3, hidden_size=4), "GRU": dict(input_size=3, hidden_size=4),
               "RNN": dict(input_size=3, hidden_size=4), "Embedding": dict(num_embeddings=5, embedding_dim=3),
               "Linear": dict(in_features=3, out_features=2), "Attention": dict(query_size=4, key_size=4),
               "Dropout": {}, "LastStep": {}, "MeanPool": {}, "MaxPool": {}, "BatchNorm": dict(num_features=3),
               "LayerNorm": dict(normalized_shape=3)}


@pytest.mark.parametrize("name", sorted(_serial.LAYERS))
def test_param_shapes_agree_with_every_layer(name):
    """The shapes a file's description implies are the layer's own, for every boolean argument both ways
    (arguments added later, such as GRU's reset_after, are covered as they appear)."""
    cls = _serial.LAYERS[name]
    assert name in _SMALL_ARGS, f"add {name}'s smallest arguments to _SMALL_ARGS"
    params = inspect.signature(cls.__init__).parameters
    flags = [n for n, p in params.items() if isinstance(p.default, bool)]
    variants = [{}] + [{f: not params[f].default} for f in flags]
    if name in ("LSTM", "GRU", "RNN"):
        variants += [{"num_layers": 3, "bidirectional": True}, {"dtype": np.float64}]
    if name == "Attention":
        variants += [{"kind": "general", "key_size": 6}, {"kind": "additive", "hidden_size": 5}, {"kind": "additive"}]
    if name in ("BatchNorm", "LayerNorm"):
        variants += [{"dtype": np.float64}, {"momentum": None} if name == "BatchNorm" else {"normalized_shape": (2, 3)}]
    for kw in variants:
        layer = cls(**dict(_SMALL_ARGS[name], **kw))
        desc = _serial.describe(layer)
        got = _serial.param_shapes([desc])
        assert got == {f"0.{k}": (v.dtype, v.shape) for k, v in layer.state_dict().items()}, (name, kw)
        assert _serial.describe(_serial.build(desc)) == desc


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, num_layers=2), dict(dropout=0.2, pooling="max"),
                                dict(embedding_dim=5), dict(return_sequences=True), dict(dtype="float64"),
                                dict(normalization="batch", num_layers=2, dropout=0.2),
                                dict(normalization="layer", bidirectional=True, return_sequences=True)])
@pytest.mark.parametrize("cls", [rf.LSTM, rf.GRU, rf.RNN])
def test_estimator_network_as_the_loader_derives_it(cls, kw):
    rng = np.random.default_rng(0)
    tokens = "embedding_dim" in kw
    X = rng.integers(1, 9, (6, 4)) if tokens else rng.standard_normal((6, 4, 2))
    y = rng.integers(0, 3, (6, 4)) if kw.get("return_sequences") else rng.integers(0, 3, 6)
    est = cls(hidden_size=3, epochs=0, random_state=0, **kw).fit(X, y)
    inputs, targets = est._specs
    p = validate(est.get_params())
    descs = network_descriptions(est._layer_cls.__name__, p, inputs, targets.per_step, targets.n_outputs)
    assert _serial.param_shapes(descs) == _shapes(est.model_)


# ---------------------------------------------------------------------------------------- temporary files
def _temporaries(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".tmp"))


def test_failed_save_leaves_no_temporary(tmp_path, monkeypatch):
    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(rio.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        rio.save_archive(tmp_path / "m.rnnfast", "k", {}, {"w": np.zeros(3)})
    assert os.listdir(tmp_path) == []


_KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from rnnfast import io as rio
    def stall(fd):  # the archive is written, not yet renamed: report and wait to be killed
        print("ready", flush=True)
        time.sleep(60)
    rio.os.fsync = stall
    rio.save_archive(sys.argv[1], "k", {}, {"w": np.zeros(1000)})
""")


def _killed_save(target):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(rf.__file__))), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(target)], stdout=subprocess.PIPE, env=env,
                            cwd=os.path.dirname(str(target)))  # outside the checkout (tests/_source_tree.py)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == b"ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    return proc.pid


def test_sigkill_during_save_leaves_a_temporary_the_next_save_removes(tmp_path):
    target = tmp_path / "model.rnnfast"
    first = _killed_save(target)
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".model.rnnfast.{rio._host()}.{first}.")
    second = _killed_save(target)  # its save removed the first one's leftover before it was killed
    left = _temporaries(tmp_path)
    assert len(left) == 1 and int(left[0].split(".")[-3]) == second != first
    # a temporary of a live process (this one) and another target's are kept
    mine = tmp_path / f".model.rnnfast.{rio._host()}.{os.getpid()}.abcd1234.tmp"
    other = tmp_path / f".other.rnnfast.{rio._host()}.{first}.abcd1234.tmp"
    mine.write_bytes(b"x")
    other.write_bytes(b"x")
    rio.save_archive(target, "k", {}, {"w": np.ones(3)})
    assert _temporaries(tmp_path) == sorted([mine.name, other.name])
    np.testing.assert_array_equal(rio.load_archive(target)[2]["w"], np.ones(3))
    assert rio.remove_stale_temporaries(tmp_path / "other.rnnfast") == [str(other)]
