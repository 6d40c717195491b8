"""Small helpers shared by the example scripts: command-line options, threads, a progress bar, a report,
an optional matplotlib figure, and the message shown when a data package is missing.

Nothing here is part of rnnfast's API; the scripts import it as ``_common`` (each puts its own folder
first on ``sys.path``).
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

import rnnfast as rf
from rnnfast.datasets import DatasetNotAvailable

__all__ = ["add_common_args", "add_model_args", "torch_or_none", "setup_threads", "Progress", "EpochProgress", "print_report", "plot_available",
           "new_figure", "save_figure", "data_or_exit", "smooth"]


def add_common_args(parser, seconds=None, epochs=None, plot="example.png"):
    """--seconds, --epochs, --threads, --seed, --plot / --no-plot, --quiet."""
    parser.add_argument("--seconds", type=float, default=seconds,
                        help="training time budget in seconds (default: %(default)s; 0 or none = no limit)")
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="number of passes over the training data (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of rnnfast's kernels (default: the CPUs this process may use)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--plot", default=plot, metavar="PNG",
                        help="where to write the figure, if matplotlib is installed (default: %(default)s)")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no figure")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_model_args(parser, hidden, embedding, dropout, batch_size, lr, min_count, hidden_help="units per direction"):
    """--hidden, --embedding, --dropout, --batch-size, --lr (Adam), --min-count (a word's training count to
    get its own id) and --no-torch (skip the PyTorch twin), with these defaults: the options of the scripts
    that train a token model beside its PyTorch twin."""
    d = " (default: %(default)s)"
    parser.add_argument("--hidden", type=int, default=hidden, help=hidden_help + d)
    parser.add_argument("--embedding", type=int, default=embedding, help="embedding size" + d)
    parser.add_argument("--dropout", type=float, default=dropout, help="dropout rate" + d)
    parser.add_argument("--batch-size", type=int, default=batch_size, help="sequences per step" + d)
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate" + d)
    parser.add_argument("--min-count", type=int, default=min_count,
                        help="training count for a word to get its own id (rarer ones are replaced)" + d)
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch twin")
    return parser


def torch_or_none():
    """The ``torch`` module, or None (with a line on stderr) when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: no PyTorch twin", file=sys.stderr)
        return None
    return torch


def setup_threads(n_threads=None, numpy_blas_threads=1):
    """Set rnnfast's thread count (None: its default, the CPUs this process may use) and hold numpy's
    own BLAS to ``numpy_blas_threads``.

    Why numpy's BLAS: the layers outside the recurrent kernels (Linear, Attention, the losses) compute
    with numpy, whose OpenBLAS keeps its own pool of spinning threads. On a 2-core machine shared with
    another busy process that pool collapses (a 2 ms product took 500-800 ms here), while rnnfast's
    OpenMP kernels give way. One BLAS thread costs little (those products are a small part of a step) and
    removes the collapse. Needs ``threadpoolctl`` (optional; without it nothing is changed).

    Returns the thread count rnnfast will use.
    """
    if n_threads is not None:
        rf.set_num_threads(int(n_threads))
    if numpy_blas_threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            # every BLAS in the process: numpy's, and scipy's, which rnnfast's kernels hold at one thread
            # during their calls anyway (they run their own OpenMP threads around it)
            threadpool_limits(int(numpy_blas_threads), user_api="blas")
    return rf.get_num_threads()


class Progress:
    """A progress bar: tqdm when importable, else a line every ``log_every`` seconds on stderr.

    ``total`` may be a number of steps, or None with ``seconds`` (then the bar counts seconds of the
    budget). ``update(n, **postfix)`` advances it and shows the postfix values.
    """

    def __init__(self, total=None, desc="", unit="step", seconds=None, disable=False, log_every=10.0):
        self.disable = disable
        self.desc = desc
        self.unit = unit
        self.seconds = seconds if (seconds and not total) else None
        self.total = total
        self.n = 0
        self._t0 = time.perf_counter()
        self._last_line = self._t0
        self.log_every = log_every
        self._bar = None
        self._shown = 0.0
        if disable:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            if self.seconds:
                self._bar = tqdm(total=round(self.seconds), desc=desc, unit="s", dynamic_ncols=True,
                                 file=sys.stderr, mininterval=0.5,
                                 bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s{postfix}")
            else:
                self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                                 mininterval=0.5)

    def update(self, n=1, **postfix):
        self.n += n
        if self.disable:
            return
        now = time.perf_counter()
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        if self._bar is not None:
            if self.seconds:
                el = min(now - self._t0, self.seconds)
                self._bar.update(el - self._shown)
                self._shown = el
            else:
                self._bar.update(n)
            if text:
                self._bar.set_postfix_str(text, refresh=False)
            return
        if now - self._last_line >= self.log_every:
            self._last_line = now
            tot = f"/{self.total}" if self.total else ""
            print(f"{self.desc} [{self.n}{tot} {self.unit}s, {now - self._t0:.0f} s] {text}", file=sys.stderr,
                  flush=True)

    def write(self, line):
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        elif not self.disable:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochProgress:
    """A :class:`rnnfast.train.callbacks.Callback` that advances a :class:`Progress` once per epoch (for
    fits with many short epochs, where a bar per epoch would flood the terminal)."""

    def __new__(cls, progress):
        from rnnfast.train import Callback

        class _CB(Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                progress.update(1, **{k: float(v) for k, v in logs.items() if k in ("loss", "val_loss")})

        return _CB()


def print_report(title, rows, file=None):
    """Print ``rows`` (pairs of label, value) under ``title`` as an aligned block."""
    file = file or sys.stdout
    width = max((len(k) for k, _ in rows), default=0)
    print(f"\n== {title} ==", file=file)
    for k, v in rows:
        if isinstance(v, float):
            v = f"{v:.4g}" if (abs(v) >= 1e-3 or v == 0) and math.isfinite(v) else f"{v:.3e}"
        print(f"  {k.ljust(width)}  {v}", file=file)
    file.flush()


def plot_available():
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


def new_figure(ncols=1, nrows=1, size=(6.4, 4.0)):
    """A matplotlib figure with the Agg backend (no display needed), or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, None
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes.ravel()


def save_figure(fig, path):
    """Save and close ``fig``; returns the path, or None when there was nothing to save."""
    if fig is None or not path:
        return None
    import matplotlib.pyplot as plt
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def data_or_exit(loader, *args, **kwargs):
    """``loader(*args, **kwargs)``, or exit with status 2 and the install hint when the data package is
    missing (the scripts' command-line behaviour; functions called from tests let the error through)."""
    try:
        return loader(*args, **kwargs)
    except DatasetNotAvailable as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


def smooth(values, k=20):
    """Running mean over the last ``k`` values (same length as ``values``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(0, idx - k)
    return (c[idx] - c[lo]) / (idx - lo)


class BudgetSteps:
    """Mixin for an :class:`rnnfast.train.Trainer` whose ``train_step`` runs within a budget of seconds and/or
    steps: before each step a cosine learning-rate decay over the budget spent so far (down to
    ``min_lr_frac`` of the base rate), after it the step's time, loss and counters in ``self.log``, the
    progress bar, a validation every ``eval_every`` steps (and at the end) through ``self.validate()``, and
    a stop once the budget is spent. Use it first in the bases: ``class T(BudgetSteps, Trainer)``.

    Subclasses implement ``validate() -> dict`` (recorded as ``val_<key>``) and may override
    ``step_postfix(batch) -> dict`` (the bar's figures) and ``count_items(batch)`` (what ``self.items``
    counts: sequences by default).
    """

    def set_budget(self, lr, seconds=None, total_steps=None, eval_every=None, min_lr_frac=0.05, bar=None):
        """The budget and schedule (call once, before ``fit``)."""
        self.base_lr, self.seconds, self.total_steps = lr, seconds, total_steps
        self.eval_every, self.min_lr_frac, self.bar = eval_every, min_lr_frac, bar
        self.train_time, self.steps, self.items = 0.0, 0, 0
        self.log = {k: [] for k in ("step", "time", "loss", "val_step", "val_time")}

    def budget_spent(self):
        """The fraction of the budget used (the larger of time and steps), at most 1."""
        frac = max(self.train_time / self.seconds if self.seconds else 0.0,
                   self.steps / self.total_steps if self.total_steps else 0.0)
        return min(frac, 1.0)

    def train_step(self, batch):
        lo = self.min_lr_frac
        self.optimizer.lr = self.base_lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * self.budget_spent())))
        t0 = time.perf_counter()
        value = super().train_step(batch)
        self.train_time += time.perf_counter() - t0
        self.steps += 1
        self.items += self.count_items(batch)
        for key, v in (("step", self.steps), ("time", self.train_time), ("loss", value)):
            self.log[key].append(v)
        if self.bar is not None:
            self.bar.update(1, **self.step_postfix(batch))
        done = bool((self.seconds and self.train_time >= self.seconds)
                    or (self.total_steps and self.steps >= self.total_steps))
        if self.eval_every and (self.steps % self.eval_every == 0 or done):
            self.log["val_step"].append(self.steps)
            self.log["val_time"].append(self.train_time)
            for k, v in self.validate().items():
                self.log.setdefault(f"val_{k}", []).append(v)
        if done:
            self.stop("the budget is spent", reason="time_limit")
        return value

    def count_items(self, batch):
        """What ``self.items`` counts of a step (default: sequences)."""
        return batch.x.shape[0]

    def step_postfix(self, batch):
        """The progress bar's figures after a step."""
        return {"loss": float(np.mean(self.log["loss"][-50:])), "lr": self.optimizer.lr}

    def validate(self):  # pragma: no cover - abstract
        raise NotImplementedError
