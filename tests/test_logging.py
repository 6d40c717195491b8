"""Status messages go through logging (logger ``rnnfast`` and its children), never print; ``verbose`` still
shows epoch lines when nothing is configured."""
import ast
import logging
import pathlib

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _logging
from rnnfast.train import Adam, CrossEntropy, StepLR, Trainer
from rnnfast.train.callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint
from tests._child import run_python

PKG = pathlib.Path(rf.__file__).parent


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4, 2)).astype(np.float32), np.arange(n) % 2


def test_no_print_in_the_package_but_progress_bars_and_the_cli():
    """print is for the command line's own output and the progress bar; everything else logs."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel == "__main__.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        allowed = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "ProgressBar":
                allowed |= {id(n) for n in ast.walk(node)}
        found += [f"{rel}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name) and n.func.id == "print" and id(n) not in allowed]
    assert not found, found


def test_estimator_epoch_lines_are_rnnfast_train_records(caplog):
    caplog.set_level(logging.INFO, logger="rnnfast")
    X, y = _data()
    rf.LSTM(hidden_size=3, epochs=2, verbose=2, random_state=0).fit(X, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "rnnfast.train"]
    assert [line.split(" [")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "rnnfast.train")


def test_verbose_zero_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="rnnfast")
    X, y = _data()
    rf.LSTM(hidden_size=3, epochs=1, verbose=0, random_state=0).fit(X, y)
    assert not [r for r in caplog.records if r.name.startswith("rnnfast")]


def test_callback_status_messages(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="rnnfast")
    m = rf.nn.Sequential(rf.nn.LSTM(2, 3, seed=0), rf.nn.LastStep(), rf.nn.Linear(3, 2, seed=0))
    X, y = _data()
    cbs = [EarlyStopping(monitor="loss", patience=1, min_delta=10.0, verbose=1),
           ModelCheckpoint(str(tmp_path / "c{epoch}.rnnfast"), save_best_only=False, verbose=0),
           LearningRateScheduler(StepLR, step_size=1, gamma=0.5, verbose=1)]
    Trainer(m, CrossEntropy(), Adam(m, lr=0.01), callbacks=cbs).fit(X, y, epochs=5, batch_size=8, seed=0)
    by_msg = {r.getMessage(): r for r in caplog.records if r.name == "rnnfast.train"}
    assert any(k.startswith("Early stopping after epoch") and v.levelno == logging.INFO for k, v in by_msg.items())
    saved = [v for k, v in by_msg.items() if k.startswith("Saved ")]
    assert saved and all(v.levelno == logging.DEBUG for v in saved)  # its verbose is 0
    assert any("learning rate" in k and v.levelno == logging.INFO for k, v in by_msg.items())


def test_application_handlers_are_left_alone():
    """With a handler on the rnnfast logger (an application's logging), fit adds none of its own."""
    seen = []

    class Look(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(list(_logging.logger.handlers))

    handler = logging.NullHandler()
    _logging.logger.addHandler(handler)
    try:
        m = rf.nn.Sequential(rf.nn.LSTM(2, 3, seed=0), rf.nn.LastStep(), rf.nn.Linear(3, 2, seed=0))
        X, y = _data()
        Trainer(m, CrossEntropy(), Adam(m), callbacks=[Look()], verbose=2).fit(X, y, epochs=1)
    finally:
        _logging.logger.removeHandler(handler)
    assert seen == [[handler]]


def test_console_attaches_only_without_handlers_and_undoes_it(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = _logging.logger.level
    with _logging.console(True):
        with _logging.console(True):  # nested / concurrent fits share one
            assert len(_logging.logger.handlers) == 1
        assert len(_logging.logger.handlers) == 1 and _logging.logger.getEffectiveLevel() <= logging.INFO
    assert _logging.logger.handlers == [] and _logging.logger.level == level
    with _logging.console(False):
        assert _logging.logger.handlers == []


_CHILD = r"""
import numpy as np, rnnfast as rf
X = np.random.default_rng(0).standard_normal((16, 4, 2)).astype(np.float32)
rf.LSTM(hidden_size=3, epochs=2, verbose=2, random_state=0).fit(X, np.arange(16) % 2)
rf.LSTM(hidden_size=3, epochs=1, verbose=0, random_state=0).fit(X, np.arange(16) % 2)
"""


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_still_shows_epoch_lines_with_no_logging_configured(tmp_path, verbose):
    res = run_python(["-c", _CHILD.replace("verbose=2", f"verbose={verbose}")], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Epoch 1/2" in res.stderr and "Epoch 2/2" in res.stderr and "loss=" in res.stderr, res.stderr
    assert "Epoch 1/1" not in res.stderr and res.stdout == ""  # the verbose=0 fit says nothing
    if verbose == 2:  # one plain line per epoch (verbose=1 draws a bar, tqdm's when installed)
        epoch_lines = [line for line in res.stderr.splitlines() if line.startswith("Epoch ")]
        assert [line.split(" [")[0] for line in epoch_lines] == ["Epoch 1/2", "Epoch 2/2"], res.stderr
