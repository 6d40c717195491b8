"""Callbacks: early stopping with best weights, checkpoints, schedules, CSV log, NaN stop, time limit, progress."""
import io
import math

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _threads, nn
from rnnfast.io import load_archive
from rnnfast.train import (SGD, Adam, Callback, CosineAnnealingLR, CrossEntropy, CSVLogger, EarlyStopping,
                           LearningRateScheduler, ModelCheckpoint, ProgressBar, StepLR, TerminateOnNaN,
                           TimeLimit, callbacks, fit)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes: one kernel thread (restored afterwards)."""
    before = _threads._num_threads
    rf.set_num_threads(1)
    yield
    rf.set_num_threads(before)


def model():
    return nn.Sequential(nn.LSTM(3, 6, seed=1, dtype=np.float64), nn.LastStep(),
                         nn.Linear(6, 2, seed=2, dtype=np.float64))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 6, 3)), rng.integers(0, 2, 32)


class Scripted(Callback):
    """Logs a scripted value as "score" each epoch and remembers the weights after each epoch."""

    def __init__(self, values):
        self.values, self.weights = list(values), []

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]
        self.weights.append(self.trainer.model.state_dict())


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_early_stopping_restores_best_weights(data):
    X, y = data
    script = Scripted([3.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0])
    es = EarlyStopping(monitor="score", patience=2, restore_best_weights=True, mode="min")
    assert EarlyStopping(monitor="score").mode == "max"  # "auto": scores grow
    m = model()
    h = fit(m, CrossEntropy(), Adam(m, lr=0.05), X, y, epochs=7, batch_size=8, seed=0, callbacks=[script, es])
    assert h.epoch == [0, 1, 2, 3] and h.stop_reason == "callback"
    assert es.best_epoch == 1 and es.stopped_epoch == 3 and es.best == 1.0
    assert same(m.state_dict(), script.weights[1])
    assert not same(m.state_dict(), script.weights[3])


def test_early_stopping_modes_and_missing_monitor(data):
    X, y = data
    es = EarlyStopping(monitor="val_accuracy")
    assert es.mode == "max"
    m = model()
    with pytest.warns(RuntimeWarning, match="'val_loss' is not logged"):
        h = fit(m, CrossEntropy(), Adam(m), X, y, epochs=2, batch_size=8, callbacks=[EarlyStopping()])
    assert h.epoch == [0, 1]
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")


def test_checkpoint_writes_bare_model_files(data, tmp_path):
    X, y = data
    script = Scripted([3.0, 1.0, 2.0, 0.5])
    ck = ModelCheckpoint(tmp_path / "ck-{epoch:02d}-{score:.1f}.rnnfast", monitor="score", save_best_only=True,
                         mode="min")
    every = ModelCheckpoint(tmp_path / "all-{epoch}.rnnfast")
    m = model()
    fit(m, CrossEntropy(), Adam(m), X, y, epochs=4, batch_size=8, callbacks=[script, ck, every])
    assert [p.split("/")[-1] for p in ck.saved] == ["ck-01-3.0.rnnfast", "ck-02-1.0.rnnfast", "ck-04-0.5.rnnfast"]
    assert len(every.saved) == 4
    kind, _, arrays, extra = load_archive(ck.saved[-1])
    assert kind == "nn.Sequential" and extra["epoch"] == 4
    assert same(arrays, m.state_dict())
    assert same(rf.load(ck.saved[-1]).state_dict(), m.state_dict())


def test_checkpoint_saves_the_estimator(data, tmp_path):
    X, y = data
    ck = ModelCheckpoint(tmp_path / "est.rnnfast", monitor="loss", save_best_only=True)
    est = rf.LSTM(hidden_size=6, epochs=3, random_state=0, n_threads=1).fit(X.astype(np.float32), y, callbacks=[ck])
    assert ck.saved
    loaded = rf.load(ck.saved[-1])
    assert loaded.n_epochs_ >= 1 and loaded.history_["loss"] == est.history_["loss"][:loaded.n_epochs_]


def test_csv_logger(data, tmp_path):
    X, y = data
    path = tmp_path / "log.csv"
    m = model()
    h = fit(m, CrossEntropy(), Adam(m), X, y, epochs=3, batch_size=8, metrics=["accuracy"],
            validation_data=(X[:8], y[:8]), callbacks=[CSVLogger(path)])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,accuracy,loss,lr,val_accuracy,val_loss"
    assert len(lines) == 4
    for i, line in enumerate(lines[1:]):
        row = dict(zip(lines[0].split(","), line.split(",")))
        assert int(row["epoch"]) == i + 1
        for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(row[k]) == h.history[k][i]  # repr round-trips exactly
    fit(m, CrossEntropy(), Adam(m), X, y, epochs=1, batch_size=8, metrics=["accuracy"],
        validation_data=(X[:8], y[:8]), callbacks=[CSVLogger(path, append=True)])
    assert len(path.read_text().splitlines()) == 5


def test_terminate_on_nan_metric(data):
    X, y = data

    def bad_metric(out, target, mask, sw):
        return math.nan, 1.0

    m = model()
    with pytest.warns(RuntimeWarning, match="non-finite bad"):
        h = fit(m, CrossEntropy(), Adam(m), X, y, epochs=3, batch_size=8, metrics={"bad": bad_metric},
                callbacks=[TerminateOnNaN()])
    assert h.stop_reason == "nan" and h.optimizer_steps == 1


def test_schedules(data):
    X, y = data
    m = model()
    opt = SGD(m, lr=1.0)
    h = fit(m, CrossEntropy(), opt, X, y, epochs=4, batch_size=8, schedule=StepLR(opt, step_size=2, gamma=0.5))
    assert h.history["lr"] == [1.0, 1.0, 0.5, 0.5]
    m = model()
    opt = SGD(m, lr=1.0)
    h = fit(m, CrossEntropy(), opt, X, y, epochs=3, batch_size=8,
            callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 * (epoch + 1))])
    assert h.history["lr"] == pytest.approx([0.1, 0.2, 0.3])
    m = model()
    opt = SGD(m, lr=1.0)
    h = fit(m, CrossEntropy(), opt, X, y, epochs=3, batch_size=8,
            callbacks=[LearningRateScheduler(CosineAnnealingLR, T_max=2)])
    assert h.history["lr"] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)


def test_reduce_lr_on_plateau_callback(data):
    X, y = data
    script = Scripted([1.0, 1.0, 1.0, 1.0, 1.0])
    plateau = callbacks.ReduceLROnPlateau(monitor="score", factor=0.5, patience=1, mode="min")
    m = model()
    h = fit(m, CrossEntropy(), SGD(m, lr=1.0), X, y, epochs=5, batch_size=8, callbacks=[script, plateau])
    assert h.history["lr"] == [1.0, 1.0, 1.0, 0.5, 0.5]


def test_time_limit(data):
    X, y = data
    m = model()
    h = fit(m, CrossEntropy(), Adam(m), X, y, epochs=1000, batch_size=8, callbacks=[TimeLimit(0.2)])
    assert h.stop_reason == "time_limit" and len(h.epoch) < 1000


def test_progress_bar_plain_output(data):
    X, y = data
    buf = io.StringIO()
    m = model()
    fit(m, CrossEntropy(), Adam(m), X, y, epochs=2, batch_size=8, metrics=["accuracy"], validation_split=0.25,
        callbacks=[ProgressBar(file=buf, use_tqdm=False)])
    out = buf.getvalue().splitlines()
    assert len(out) == 2
    assert out[0].startswith("Epoch 1/2 [3 steps] loss=") and "val_accuracy=" in out[0] and "seq/s" in out[0]


def test_progress_bar_tqdm(data):
    pytest.importorskip("tqdm")
    X, y = data
    buf = io.StringIO()
    m = model()
    fit(m, CrossEntropy(), Adam(m), X, y, epochs=1, batch_size=8, callbacks=[ProgressBar(file=buf, use_tqdm=True)])
    assert "Epoch 1/1" in buf.getvalue() and "seq/s" in buf.getvalue()


# ----------------------------------------------------------------------------------------- WeightAveraging
class Recorder(Callback):
    """The weights after every step, and what each hook saw (listed before the callback under test)."""

    def on_train_begin(self, logs=None):
        self.steps, self.tests, self.epoch_ends = [], [], []

    def on_batch_end(self, batch, logs=None):
        self.steps.append(self.trainer.model.state_dict())

    def on_test_begin(self, logs=None):
        self.tests.append("begin")

    def on_test_end(self, logs=None):
        self.tests.append(("end", dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self.trainer.model.state_dict())


def ema(steps, decay, first=0):
    """The EMA of the recorded weights from step ``first`` on, in float64 with the callback's lerp."""
    avg = {k: v.copy() for k, v in steps[first].items()}
    for s in steps[first + 1:]:
        for k in avg:
            avg[k] += (1.0 - decay) * (s[k] - avg[k])
    return avg


def close(a, b, tol=1e-12):
    return all(np.allclose(a[k], b[k], rtol=tol, atol=tol) for k in a)


def test_weight_averaging_is_the_ema_and_the_final_weights(data):
    X, y = data
    rec, wa = Recorder(), rf.train.WeightAveraging(decay=0.8)
    m = model()
    fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=3, batch_size=8, seed=0, callbacks=[rec, wa])
    assert wa.updates == len(rec.steps) == 12 and rec.tests == []  # no validation data: the hooks never run
    want = ema(rec.steps, 0.8)
    assert close(m.state_dict(), want) and close(wa.averaged_weights, want)
    assert not same(m.state_dict(), rec.steps[-1])


def test_weight_averaging_validates_the_average_and_trains_on(data):
    X, y = data
    Xv, yv = X[:8] + 0.1, y[:8]
    plain, rec = model(), Recorder()
    fit(plain, CrossEntropy(), SGD(plain, lr=0.5), X, y, epochs=3, batch_size=8, seed=0, callbacks=[rec])
    raw_steps = rec.steps
    m, rec, wa = model(), Recorder(), rf.train.WeightAveraging(decay=0.7)
    h = fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=3, batch_size=8, seed=0, callbacks=[rec, wa],
            validation_data=(Xv, yv))
    # training goes on from the raw weights: the steps are those of a fit without the callback
    assert all(same(a, b) for a, b in zip(rec.steps, raw_steps))
    # each validation ran on the average so far, which the model holds through on_epoch_end
    assert [t for t in rec.tests if t == "begin"] == ["begin"] * 3
    for e in range(3):
        avg = ema(raw_steps[:4 * (e + 1)], 0.7)
        assert close(rec.epoch_ends[e], avg)
        check = model()
        check.load_state_dict(avg)
        want = rf.train.evaluate(check, CrossEntropy(), Xv, yv)["loss"]
        assert h.history["val_loss"][e] == pytest.approx(want, rel=1e-12)
        assert rec.tests[2 * e + 1][1]["val_loss"] == h.history["val_loss"][e]
    assert close(m.state_dict(), ema(raw_steps, 0.7))


def test_weight_averaging_with_early_stopping_keeps_the_best_average(data):
    X, y = data
    for first in (True, False):  # (the average's place in the list does not matter)
        rec, wa = Recorder(), rf.train.WeightAveraging(decay=0.5)
        script = Scripted([3.0, 1.0, 2.0, 4.0, 5.0])
        es = EarlyStopping(monitor="score", patience=2, restore_best_weights=True, mode="min")
        m = model()
        fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=5, batch_size=8, seed=0,
            callbacks=[wa, rec, script, es] if first else [rec, script, es, wa],
            validation_data=(X[:8], y[:8]))
        assert es.best_epoch == 1
        assert close(m.state_dict(), ema(rec.steps[:8], 0.5)) and same(m.state_dict(), script.weights[1])


def test_weight_averaging_start_epoch(data):
    X, y = data
    rec, wa = Recorder(), rf.train.WeightAveraging(decay=0.9, start_epoch=2)
    m = model()
    fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=3, batch_size=8, seed=0, callbacks=[rec, wa],
        validation_data=(X[:8], y[:8]))
    assert wa.updates == 4
    assert same(rec.epoch_ends[0], rec.steps[3]) and same(rec.epoch_ends[1], rec.steps[7])  # raw until then
    assert close(m.state_dict(), ema(rec.steps, 0.9, first=8))


def test_weight_averaging_nan_stop_keeps_the_last_step(data):
    X, y = data
    X = X.copy()
    X[20] = np.nan  # (with shuffle off, the third batch of the second epoch)
    rec, wa = Recorder(), rf.train.WeightAveraging(decay=0.9)
    m = model()
    with pytest.warns(RuntimeWarning, match="last completed step"):
        h = fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=2, batch_size=8, seed=0, shuffle=False,
                callbacks=[rec, wa])
    assert h.stop_reason == "nan" and wa.updates == 2
    assert same(m.state_dict(), rec.steps[-1])


@pytest.mark.parametrize("kw", [{"decay": 0.0}, {"decay": 1.0}, {"decay": math.nan}, {"start_epoch": -1}])
def test_weight_averaging_refuses_bad_parameters(kw):
    with pytest.raises(ValueError):
        rf.train.WeightAveraging(**kw)
    with pytest.raises(TypeError):
        rf.train.WeightAveraging(decay="0.9")


def test_weight_averaging_through_an_estimator(data):
    """An estimator's fit takes the callback; with early stopping the kept weights are an average's."""
    X, y = data
    kw = dict(hidden_size=6, epochs=4, batch_size=8, validation_split=0.25, early_stopping=True, patience=1,
              random_state=0, n_threads=1)
    rec, wa = Recorder(), rf.train.WeightAveraging(decay=0.6)
    est = rf.LSTM(**kw).fit(X, y, callbacks=[rec, wa])
    plain = rf.LSTM(**kw).fit(X, y)
    assert wa.updates == len(rec.steps) > 0
    kept = est.model_.state_dict()
    assert any(close(kept, e) for e in rec.epoch_ends)  # a validated average, not a raw step's weights
    assert not any(same(kept, s) for s in rec.steps)
    assert not same(kept, plain.model_.state_dict())
    assert np.isfinite(est.predict_proba(X)).all()


def window_mean(states, dtype=np.float64):
    return {k: np.mean([s[k] for s in states], axis=0, dtype=np.float64).astype(dtype) for k in states[0]}


def test_epoch_averaging_without_validation_keeps_the_last_epochs_mean(data):
    X, y = data
    rec, ea = Recorder(), rf.train.EpochAveraging(window=2)
    m = model()
    fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=3, batch_size=8, seed=0, callbacks=[rec, ea])
    ends = [rec.steps[3], rec.steps[7], rec.steps[11]]  # the raw weights at each epoch's end
    assert ea.updates == 3 and same(rec.epoch_ends[2], ends[2])
    assert same(m.state_dict(), window_mean(ends[1:]))


def test_epoch_averaging_validates_the_window_and_trains_on(data):
    X, y = data
    Xv, yv = X[:8] + 0.1, y[:8]
    plain, rec0 = model(), Recorder()
    fit(plain, CrossEntropy(), SGD(plain, lr=0.5), X, y, epochs=4, batch_size=8, seed=0, callbacks=[rec0])
    m, rec, ea = model(), Recorder(), rf.train.EpochAveraging(window=3, start_epoch=1)
    h = fit(m, CrossEntropy(), SGD(m, lr=0.5), X, y, epochs=4, batch_size=8, seed=0, callbacks=[ea, rec],
            validation_data=(Xv, yv))
    assert all(same(a, b) for a, b in zip(rec.steps, rec0.steps))  # the same training
    ends = [rec0.steps[4 * e + 3] for e in range(4)]
    assert same(rec.epoch_ends[0], ends[0])  # before start_epoch: the raw weights, validated as they are
    for e, want in [(1, ends[1:2]), (2, ends[1:3]), (3, ends[1:4])]:
        avg = window_mean(want)
        assert same(rec.epoch_ends[e], avg)
        check = model()
        check.load_state_dict(avg)
        assert h.history["val_loss"][e] == pytest.approx(rf.train.evaluate(check, CrossEntropy(), Xv, yv)["loss"],
                                                         rel=1e-12)
    assert same(m.state_dict(), window_mean(ends[1:4])) and ea.updates == 3


@pytest.mark.parametrize("kw", [{"window": 0}, {"start_epoch": -1}])
def test_epoch_averaging_refuses_bad_parameters(kw):
    with pytest.raises(ValueError):
        rf.train.EpochAveraging(**kw)
    with pytest.raises(TypeError):
        rf.train.EpochAveraging(window=2.5)
