"""The Trainer: fit/evaluate/predict, overridable steps, the CallbackList, the same numbers as train.fit."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _threads, nn
from rnnfast.train import (Adam, Callback, CallbackList, CrossEntropy, History, Trainer, evaluate, fit, metrics,
                           predict)


@pytest.fixture(autouse=True)
def one_thread():
    before = _threads._num_threads
    rf.set_num_threads(1)
    yield
    rf.set_num_threads(before)


def model():
    return nn.Sequential(nn.LSTM(3, 6, seed=1, dtype=np.float64), nn.LastStep(), nn.Dropout(0.2, seed=5),
                         nn.Linear(6, 3, seed=2, dtype=np.float64))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 8, 3)), rng.integers(0, 3, 40), rng.integers(1, 9, 40)


def test_trainer_equals_the_function_form(data):
    X, y, lengths = data
    m1, m2 = model(), model()
    h1 = fit(m1, CrossEntropy(), Adam(m1), X, y, lengths, epochs=2, batch_size=8, seed=0, metrics=["accuracy"],
             validation_split=0.2)
    t = Trainer(m2, CrossEntropy(), Adam(m2), metrics=["accuracy"])
    h2 = t.fit(X, y, lengths, epochs=2, batch_size=8, seed=0, validation_split=0.2)
    assert isinstance(h2, History) and h1.history == h2.history and t.history is h2
    assert all(np.array_equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    ev = t.evaluate(X, y, lengths)
    assert ev == evaluate(m1, CrossEntropy(), X, y, lengths, metrics=["accuracy"])
    np.testing.assert_array_equal(t.predict(X, lengths), predict(m1, X, lengths))
    assert set(h2.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}


def test_override_train_step(data):
    """A subclass changes the step (here: a per-step learning-rate warm-up) and still gets the loop."""
    X, y, lengths = data
    lrs = []

    class WarmUp(Trainer):
        def train_step(self, batch):
            self.optimizer.lr = 0.01 * min(1.0, (self.history.optimizer_steps + 1) / 4)
            lrs.append(self.optimizer.lr)
            return super().train_step(batch)

    m = model()
    h = WarmUp(m, CrossEntropy(), Adam(m)).fit(X, y, lengths, epochs=1, batch_size=8, seed=0)
    assert lrs == [0.0025, 0.005, 0.0075, 0.01, 0.01] and h.optimizer_steps == 5


def test_override_test_step_and_update_metrics(data):
    X, y, lengths = data
    seen = []

    class Counting(Trainer):
        def test_step(self, batch):
            seen.append(batch.x.shape[0])
            return super().test_step(batch)

    m = model()
    res = Counting(m, CrossEntropy(), metrics=[metrics.Accuracy(from_logits=True)]).evaluate(
        X, y, lengths, batch_size=16)
    assert seen == [16, 16, 8] and 0 <= res["accuracy"] <= 1


def test_batch_begin_and_hooks_called_only_when_overridden(data):
    X, y, lengths = data
    order = []

    class Both(Callback):
        def on_batch_begin(self, batch, logs=None):
            order.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            order.append(("end", batch))

    m = model()
    Trainer(m, CrossEntropy(), Adam(m), callbacks=[Both()]).fit(X, y, lengths, epochs=1, batch_size=16, seed=0)
    assert order == [("begin", 0), ("end", 0), ("begin", 1), ("end", 1), ("begin", 2), ("end", 2)]
    cbl = CallbackList([Both(), Callback()], trainer=None)
    assert len(cbl._hooks["on_batch_end"]) == 1 and not cbl._hooks["on_epoch_end"]
    with pytest.raises(TypeError, match="Callback"):
        CallbackList([object()], trainer=None)


def test_callbacks_see_the_trainer(data):
    X, y, lengths = data
    got = {}

    class Look(Callback):
        def on_train_begin(self, logs=None):
            got["trainer"] = self.trainer
            got["params"] = dict(self.trainer.params)

    m = model()
    t = Trainer(m, CrossEntropy(), Adam(m), callbacks=[Look()])
    t.fit(X, y, lengths, epochs=2, batch_size=16, seed=0)
    assert got["trainer"] is t and got["params"]["epochs"] == 2 and got["params"]["samples"] == 40


def test_seeded_dropout_restarts_each_epoch_through_reseed(data):
    """Resuming at epoch 1 repeats epoch 1 of an uninterrupted run (the dropout streams are reseeded)."""
    X, y, lengths = data
    m1 = model()
    opt1 = Adam(m1)
    full = Trainer(m1, CrossEntropy(), opt1).fit(X, y, lengths, epochs=2, batch_size=8, seed=4)
    m2 = model()
    opt2 = Adam(m2)
    t = Trainer(m2, CrossEntropy(), opt2)
    t.fit(X, y, lengths, epochs=1, batch_size=8, seed=4)
    m2.layers[2].reseed(123)  # a stray stream: the next epoch starts from (seed, epoch) again
    h = t.fit(X, y, lengths, epochs=1, batch_size=8, seed=4, initial_epoch=1)
    assert h.history["loss"] == full.history["loss"][1:]


def test_bad_trainer_arguments():
    m = model()
    with pytest.raises(ValueError, match="clip_norm"):
        Trainer(m, CrossEntropy(), Adam(m), clip_norm=-1.0)
    with pytest.raises(ValueError, match="verbose"):
        Trainer(m, CrossEntropy(), Adam(m), verbose=3)
    with pytest.raises(ValueError, match="unknown metric"):
        Trainer(m, CrossEntropy(), Adam(m), metrics=["nope"])
