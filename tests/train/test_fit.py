"""The fit loop: learning, masking, weights, clipping, truncated BPTT, stateful training, stopping, resuming."""
import os
import signal
import warnings

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _threads, nn
from rnnfast.train import (SGD, Adam, Callback, CrossEntropy, SequenceDataset, Stateful, evaluate, fit,
                           predict)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes: one kernel thread (restored afterwards)."""
    before = _threads._num_threads
    rf.set_num_threads(1)
    yield
    rf.set_num_threads(before)


def model(F=3, H=8, C=3, per_step=False, dtype=np.float64, dropout=0.0):
    layers = [Stateful(nn.LSTM(F, H, seed=1, dtype=dtype))]
    if not per_step:
        layers.append(nn.LastStep())
    if dropout:
        layers.append(nn.Dropout(dropout, seed=3))
    layers.append(nn.Linear(H, C, seed=2, dtype=dtype))
    return nn.Sequential(*layers)


def weights(m):
    return m.state_dict()


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 12, 3))
    y = rng.integers(0, 3, (48, 12))
    lengths = rng.integers(1, 13, 48)
    return X, y, lengths


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kw)


# ---------------------------------------------------------------------------------------- learning
def test_fit_learns_and_reports():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 10, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    m = model(F=2, H=12, C=2, dtype=np.float32)
    h = fit(m, CrossEntropy(), Adam(m, lr=0.02), X, y, epochs=12, batch_size=32, seed=0, metrics=["accuracy"],
            validation_split=0.25, n_threads=1)
    assert h.stop_reason is None and h.epoch == list(range(12))
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert h.history["accuracy"][-1] > 0.9 and h.history["val_accuracy"][-1] > 0.85
    assert h.history["loss"][-1] < h.history["loss"][0]
    ev = evaluate(m, CrossEntropy(), X, y, metrics=["accuracy"])
    assert ev["accuracy"] > 0.9
    out = predict(m, X[:5])
    assert out.shape == (5, 2)


def test_same_seed_bit_identical(data):
    X, y, lengths = data
    runs = []
    for _ in range(2):
        m = model(per_step=True, dropout=0.3)
        h = fit(m, CrossEntropy(), Adam(m), X, y, lengths=lengths, per_step=True, epochs=2, batch_size=8, seed=5)
        runs.append((weights(m), h.history))
    assert same(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    m = model(per_step=True, dropout=0.3)
    fit(m, CrossEntropy(), Adam(m), X, y, lengths=lengths, per_step=True, epochs=2, batch_size=8, seed=6)
    assert not same(runs[0][0], weights(m))


def test_resume_at_initial_epoch_repeats_uninterrupted_run(data):
    X, y, lengths = data
    full = model(per_step=True, dropout=0.3)
    opt = Adam(full)
    fit(full, CrossEntropy(), opt, X, y, lengths=lengths, per_step=True, epochs=3, batch_size=8, seed=7)
    part = model(per_step=True, dropout=0.3)
    opt1 = Adam(part)
    h = fit(part, CrossEntropy(), opt1, X, y, lengths=lengths, per_step=True, epochs=1, batch_size=8, seed=7)
    resumed = model(per_step=True, dropout=0.3)
    resumed.load_state_dict(part.state_dict())
    opt2 = Adam(resumed)
    opt2.load_state_dict(opt1.state_dict())
    h = fit(resumed, CrossEntropy(), opt2, X, y, lengths=lengths, per_step=True, epochs=2, batch_size=8, seed=7,
            initial_epoch=1, history=h)
    assert same(weights(full), weights(resumed))
    assert h.epoch == [0, 1, 2]


# ---------------------------------------------------------------------------------------- masking, weights
def test_padded_steps_never_matter(data):
    X, y, lengths = data
    pad = np.arange(12)[None, :] >= lengths[:, None]
    results = []
    for fill in (0.0, 1e6):
        Xf, yf = X.copy(), y.copy()
        Xf[pad] = fill
        yf[pad] = 2 if fill else 0
        m = model(per_step=True)
        fit(m, CrossEntropy(), Adam(m), Xf, yf, lengths=lengths, per_step=True, epochs=1, batch_size=8, seed=0)
        results.append(weights(m))
    assert same(*results)


def test_sample_weight(data):
    X, y, _ = data
    y0 = y[:, 0]
    m1, m2 = model(), model()
    fit(m1, CrossEntropy(), Adam(m1), X, y0, epochs=1, batch_size=8, seed=0)
    fit(m2, CrossEntropy(), Adam(m2), X, y0, sample_weight=np.full(48, 2.0), epochs=1, batch_size=8, seed=0)
    assert same(weights(m1), weights(m2))  # a constant weight changes nothing (weighted mean)
    # zero-weighted sequences do not count: their targets are irrelevant
    sw = np.r_[np.ones(24), np.zeros(24)]
    y1 = y0.copy()
    y1[24:] = (y1[24:] + 1) % 3
    m3, m4 = model(), model()
    fit(m3, CrossEntropy(), Adam(m3), X, y0, sample_weight=sw, epochs=1, batch_size=8, seed=0)
    fit(m4, CrossEntropy(), Adam(m4), X, y1, sample_weight=sw, epochs=1, batch_size=8, seed=0)
    assert same(weights(m3), weights(m4))


def test_clip_value_bounds_each_sgd_step(data):
    X, y, _ = data
    m = model()
    before = weights(m)
    fit(m, CrossEntropy(), SGD(m, lr=1.0), X[:8], y[:8, 0], epochs=1, batch_size=8, clip_value=1e-3, seed=0)
    assert max(np.max(np.abs(weights(m)[k] - before[k])) for k in before) <= 1e-3 + 1e-12


def test_clip_norm_bounds_the_step(data):
    X, y, _ = data
    m = model()
    before = weights(m)
    fit(m, CrossEntropy(), SGD(m, lr=1.0), X[:8], y[:8, 0], epochs=1, batch_size=8, clip_norm=0.01, seed=0)
    total = np.sqrt(sum(np.sum((weights(m)[k] - before[k]) ** 2) for k in before))
    assert total <= 0.01 + 1e-9


# ---------------------------------------------------------------------------------------- truncated BPTT
@pytest.mark.parametrize("per_step", [True, False])
@pytest.mark.parametrize("tbptt", [None, 5, 2])
def test_tbptt_carries_the_state(data, per_step, tbptt):
    """With lr = 0 the chunked forward passes with carried state give exactly the full-sequence loss,
    also for variable lengths (rows leave the batch as their sequences end)."""
    X, y, lengths = data
    target = y if per_step else y[:, 0]
    m = model(per_step=per_step)
    h = fit(m, CrossEntropy(), SGD(m, lr=0.0), X, target, lengths=lengths, per_step=per_step, batch_size=16,
            tbptt=tbptt, seed=0)
    m0 = model(per_step=per_step)
    ref = evaluate(m0, CrossEntropy(), X, target, lengths, per_step=per_step)["loss"]
    assert h.history["loss"][0] == pytest.approx(ref, rel=1e-12)
    if tbptt == 2:
        assert h.optimizer_steps > 3 * 2  # one step per chunk (of those that carry a loss)


def test_tbptt_learns_across_chunk_boundaries():
    """A delayed copy (y_t = x_{t-2}) with chunks of 3 steps: only a carried state knows the tokens
    of the previous chunk."""
    rng = np.random.default_rng(0)
    X = rng.integers(1, 5, (128, 24))
    y = np.zeros_like(X)
    y[:, 2:] = X[:, :-2]
    m = nn.Sequential(nn.Embedding(5, 8, seed=0), Stateful(nn.LSTM(8, 24, seed=1)), nn.Linear(24, 5, seed=2))
    h = fit(m, CrossEntropy(), Adam(m, lr=0.02), X, y, per_step=True, epochs=12, batch_size=32, tbptt=3, seed=0,
            metrics=["accuracy"], n_threads=1)
    out = predict(m, X, per_step=True)
    acc = (out.argmax(-1)[:, 2:] == y[:, 2:]).mean()
    assert acc > 0.95, (acc, h.history["accuracy"])


def test_stateful_continues_rows_from_batch_to_batch(data):
    X, y, _ = data
    halves_X = np.concatenate([X[:8, :6], X[:8, 6:]])  # batch 2 row i continues batch 1 row i
    halves_y = np.concatenate([y[:8, :6], y[:8, 6:]])
    m = model(per_step=True)
    h = fit(m, CrossEntropy(), SGD(m, lr=0.0), halves_X, halves_y, per_step=True, batch_size=8, stateful=True,
            shuffle=False, seed=0)
    ref = evaluate(model(per_step=True), CrossEntropy(), X[:8], y[:8], per_step=True)["loss"]
    assert h.history["loss"][0] == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="shuffle=False"):
        fit(m, CrossEntropy(), SGD(m), halves_X, halves_y, per_step=True, batch_size=8, stateful=True)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        fit(m, CrossEntropy(), SGD(m), X[:10], y[:10], per_step=True, batch_size=8, stateful=True, shuffle=False)


def test_tbptt_needs_stateful_layer(data):
    X, y, _ = data
    m = nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 3))
    with pytest.raises(TypeError, match="Stateful"):
        fit(m, CrossEntropy(), SGD(m), X, y, per_step=True, tbptt=4)


def test_stateful_wrapper_is_transparent():
    inner = nn.GRU(3, 5, seed=0)
    w = Stateful(inner)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    out, h = w(x)
    np.testing.assert_array_equal(out, inner(x)[0])
    assert w.state_dict().keys() == inner.state_dict().keys() and w.hidden_size == 5
    w.hx = h
    out2, _ = w(x)
    np.testing.assert_array_equal(out2, inner(x, h)[0])
    assert w.eval() is w and not inner.training


# ---------------------------------------------------------------------------------------- stopping
class Snapshots(Callback):
    def __init__(self):
        self.w = []

    def on_batch_end(self, batch, logs=None):
        self.w.append(self.trainer.model.state_dict())


def test_nan_loss_stops_and_keeps_last_good_step(data):
    X, y, _ = data
    ce = CrossEntropy()
    calls = []

    def loss(out, target, mask=None, sample_weight=None):
        calls.append(1)
        v, g = ce(out, target, mask, sample_weight)
        return (float("nan") if len(calls) == 8 else v), g

    m = model()
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match="loss became nan"):
        h = fit(m, loss, Adam(m), X, y[:, 0], epochs=3, batch_size=8, seed=0, callbacks=[snaps])
    assert h.stop_reason == "nan" and h.epoch == [0]  # epoch 2 ended in NaN: not recorded
    assert same(weights(m), snaps.w[6])  # the 8th step was not applied
    assert all(np.all(np.isfinite(v)) for v in weights(m).values())


class InterruptAt(Callback):
    def __init__(self, step, real_signal=False):
        self.step, self.real_signal = step, real_signal

    def on_batch_end(self, batch, logs=None):
        if self.trainer.history.optimizer_steps == self.step:
            if self.real_signal:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: handled after the step, never inside it
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("real_signal", [False, True])
def test_ctrl_c_stops_cleanly(data, real_signal):
    X, y, _ = data
    if real_signal and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    before = signal.getsignal(signal.SIGINT)
    m = model()
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match="interrupted"):
        h = fit(m, CrossEntropy(), Adam(m), X, y[:, 0], epochs=3, batch_size=8, seed=0,
                callbacks=[snaps, InterruptAt(8, real_signal)])
    assert h.stop_reason == "interrupted" and h.epoch == [0] and h.optimizer_steps == 8
    assert same(weights(m), snaps.w[7])  # the weights of the last completed step
    assert signal.getsignal(signal.SIGINT) is before  # handler restored (SIG_IGN in a background job)
    assert predict(m, X).shape == (48, 3)


def test_callback_stop_finishes_the_epoch_record(data):
    X, y, _ = data

    class StopAt(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                self.trainer.stop("enough")

    m = model()
    h = fit(m, CrossEntropy(), Adam(m), X, y[:, 0], epochs=3, batch_size=8, seed=0, callbacks=[StopAt()])
    assert h.stop_reason == "callback" and h.epoch == [0] and h.optimizer_steps == 3


def test_bad_arguments(data):
    X, y, _ = data
    m = model()
    for kw, match in ((dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch_size"),
                      (dict(clip_norm=0.0), "clip_norm"), (dict(tbptt=0), "tbptt"),
                      (dict(metrics=["nope"]), "unknown metric"), (dict(callbacks=[object()]), "Callback")):
        with pytest.raises((ValueError, TypeError), match=match):
            fit(m, CrossEntropy(), Adam(m), X, y[:, 0], **kw)
    with pytest.raises(ValueError, match="48 sequences, y has 47"):
        fit(m, CrossEntropy(), Adam(m), X, y[:47, 0])
    with pytest.raises(ValueError, match="SequenceDataset"):
        fit(m, CrossEntropy(), Adam(m), SequenceDataset(X, y[:, 0]), y[:, 0])


def test_stateful_gradient_treats_the_carried_state_as_constant():
    """Finite differences: the gradient of a chunk's loss, with the state carried in from the previous
    chunk held fixed (truncation), is what backward through the Stateful layer accumulates."""
    from gradcheck import check_params
    rng = np.random.default_rng(0)
    m = nn.Sequential(Stateful(nn.LSTM(2, 3, seed=0, dtype=np.float64)), nn.Linear(3, 2, seed=1, dtype=np.float64))
    x1, x2 = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 3, 2))
    target = rng.standard_normal((2, 3, 2))
    rec = m.layers[0]
    m.forward(x1)
    carried = rec.last_state

    def objective():
        rec.hx = carried
        return 0.5 * float(np.sum((m.forward(x2) - target) ** 2))

    m.zero_grad()
    objective()
    m.backward(m.forward(x2) - target)
    check_params(m, objective)
