#!/usr/bin/env python3
"""Multi-step forecasting of yearly sunspot numbers over the last three decades.

Data: ``rnnfast.datasets.load_sunspots`` (the ``statsmodels`` package's file): yearly mean sunspot
numbers 1700-2008, with a cycle of about 11 years.

Task: from every forecast origin year ``o`` in 1978 ... 2008 - horizon, predict the next ``horizon``
(10) years from the ``window`` (30) years up to ``o``. Everything the models learn from ends in 1978 (the
training windows' targets included), so the 30 test years 1979-2008 are never seen in training.

Model: ``rnnfast.LSTM`` estimator (16 units) on the square root of the series standardised with the
training years (the square root evens out the peaks), trained on 30-year windows with one target per
step (the following year); forecasts are iterated (each predicted year is fed back as the newest input)
and averaged over 3 seeds. The design was chosen on the earlier period 1949-1978 (training up to 1948)
before looking at 1979-2008: a "direct" model with one output per horizon overfitted the ~250 training
windows there (RMSE about 60 against 47 for the iterated one).

Baselines: persistence (every future year = the origin's value), the previous cycle (the value 11 years
earlier), an AR(9) fitted by least squares on the training years (numpy; iterated forecasts), and an
ARIMA from statsmodels when statsmodels imports (it needs pandas and patsy, which a ``--no-deps``
install does not bring: then the report says so).

Reported: RMSE over all (origin, horizon) pairs and per horizon; wall time. Plot: forecasts against the
truth, and RMSE by horizon.

    python examples/sunspots.py
    python examples/sunspots.py --horizon 5 --ensemble 1 --arima-order 2 0 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402
from rnnfast.datasets import load_sunspots, make_windows  # noqa: E402
from rnnfast.train import TimeLimit  # noqa: E402

from _common import (EpochProgress, Progress, add_common_args, data_or_exit, new_figure, print_report,  # noqa: E402
                     save_figure, setup_threads)

CYCLE = 11
COLORS = {"LSTM (rnnfast)": "C0", "persistence": "C1", "previous cycle (t-11)": "C2", "AR(9)": "C3", "ARIMA": "C4"}


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def setup(years, values, first_test_year=1979, window=30, horizon=10):
    """The forecasting problem: dict with the training windows and the test origins.

    ``origins`` are indices ``o`` (the last observed year) with ``years[o] >= first_test_year - 1`` and
    ``o + horizon < len(values)``; ``truth[i]`` holds ``values[o + 1 : o + 1 + horizon]``. Training windows
    are every window whose targets end before ``first_test_year``.
    """
    n_train = int(np.searchsorted(years, first_test_year))  # values[:n_train] are the training years
    origins = np.arange(n_train - 1, len(values) - horizon)
    truth = np.stack([values[o + 1:o + 1 + horizon] for o in origins])
    return {"years": years, "values": values, "n_train": n_train, "window": window, "horizon": horizon,
            "origins": origins, "truth": truth}


# ---------------------------------------------------------------------------------------- models
class SqrtScaler:
    """x -> (sqrt(x) - mean) / std with the training years' mean and std; ``inverse`` undoes it (>= 0)."""

    def __init__(self, train_values):
        r = np.sqrt(np.maximum(train_values, 0))
        self.mean, self.std = float(r.mean()), float(r.std())

    def __call__(self, x):
        return (np.sqrt(np.maximum(x, 0)) - self.mean) / self.std

    def inverse(self, z):
        return np.maximum(np.asarray(z) * self.std + self.mean, 0) ** 2


def lstm_forecasts(prob, hidden_size=16, epochs=100, batch_size=16, lr=3e-3, ensemble=3, seed=0, seconds=None,
                   progress=False):
    """Iterated multi-step LSTM forecasts for every test origin, averaged over ``ensemble`` seeds.

    The LSTM reads windows of ``window`` years and is trained with one target per step, the next year's
    value (so every year of a window is a training target); a forecast feeds each predicted year back in
    as the newest input, ``horizon`` times. Returns (forecasts (n_origins, horizon), wall seconds of the
    training, epochs run per model).
    """
    v, n_train, W, Hz = prob["values"], prob["n_train"], prob["window"], prob["horizon"]
    sc = SqrtScaler(v[:n_train])
    z = sc(v).astype(np.float32)
    win, _ = make_windows(z[:n_train], W + 1, 1)       # (N, W + 1, 1), only training years
    X, y = win[:, :-1], win[:, 1:, 0].astype(np.float64)  # per-step targets: the following year
    start = np.stack([z[o - W + 1:o + 1] for o in prob["origins"]])
    preds, epochs_run, wall = [], [], 0.0
    bar = Progress(total=ensemble * epochs, desc="sunspot LSTMs", unit="epoch", disable=not progress)
    for k in range(ensemble):
        cbs = [EpochProgress(bar)] + ([TimeLimit(seconds / ensemble)] if seconds else [])
        m = rf.LSTM(hidden_size=hidden_size, epochs=epochs, batch_size=batch_size, lr=lr, clip_norm=1.0,
                    random_state=seed + k)
        t0 = time.perf_counter()
        m.fit(X, y, callbacks=cbs)
        wall += time.perf_counter() - t0
        epochs_run.append(m.n_epochs_)
        cur = start.copy()
        out = []
        for _ in range(Hz):  # all origins at once, one year at a time
            nxt = m.predict(cur[:, :, None])[:, -1].astype(np.float32)
            out.append(nxt)
            cur = np.concatenate([cur[:, 1:], nxt[:, None]], axis=1)
        preds.append(np.stack(out, axis=1))
    bar.close()
    return sc.inverse(np.mean(preds, axis=0)), wall, epochs_run


def persistence(prob):
    v = prob["values"]
    return np.repeat(v[prob["origins"]][:, None], prob["horizon"], axis=1)


def previous_cycle(prob):
    """values[o + h - 11] for h = 1..horizon (from the forecast when h > 11 is not needed here)."""
    v, Hz = prob["values"], prob["horizon"]
    if Hz > CYCLE:
        raise ValueError(f"the previous-cycle baseline needs horizon <= {CYCLE}")
    return np.stack([v[o + 1 - CYCLE:o + 1 - CYCLE + Hz] for o in prob["origins"]])


def ar_forecasts(prob, p=9):
    """AR(p) with intercept, fitted by least squares on the training years; iterated forecasts."""
    v, n_train, Hz = prob["values"].astype(np.float64), prob["n_train"], prob["horizon"]
    tr = v[:n_train]
    A = np.stack([tr[i:len(tr) - p + i] for i in range(p)], axis=1)  # lags, oldest first
    A = np.hstack([A, np.ones((A.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(A, tr[p:], rcond=None)
    out = np.empty((len(prob["origins"]), Hz))
    for i, o in enumerate(prob["origins"]):
        hist = list(v[o - p + 1:o + 1])
        for h in range(Hz):
            nxt = float(np.dot(coef[:p], hist[-p:]) + coef[p])
            hist.append(nxt)
            out[i, h] = nxt
    return np.maximum(out, 0)


def arima_forecasts(prob, order=(9, 0, 0)):
    """ARIMA(order) from statsmodels, fitted once on the training years, then applied (same parameters)
    to the data up to each origin. Returns (forecasts, None) or (None, the reason it could not run)."""
    try:
        from statsmodels.tsa.arima.model import ARIMA
    except Exception as e:  # statsmodels absent, or installed --no-deps without pandas / patsy
        return None, f"statsmodels' ARIMA does not import here ({type(e).__name__}: {e})"
    v, n_train, Hz = prob["values"].astype(np.float64), prob["n_train"], prob["horizon"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ARIMA(v[:n_train], order=tuple(order)).fit()
            out = np.stack([np.asarray(res.apply(v[:o + 1]).forecast(Hz)) for o in prob["origins"]])
    except Exception as e:
        return None, f"statsmodels' ARIMA failed ({type(e).__name__}: {e})"
    return np.maximum(out, 0), None


# ---------------------------------------------------------------------------------------- report
def plot(prob, forecasts, path):
    fig, axes = new_figure(2, 1, size=(6.0, 4.0))
    if fig is None:
        return None
    years, v, origins, Hz = prob["years"], prob["values"], prob["origins"], prob["horizon"]
    ax = axes[0]
    lo = max(0, prob["n_train"] - 50)
    ax.plot(years[lo:], v[lo:], color="black", lw=1.5, label="observed")
    ax.axvspan(years[prob["n_train"]] - 0.5, years[-1] + 0.5, color="0.92", label="test years")
    for name in ("LSTM (rnnfast)", "AR(9)", "ARIMA"):
        col = COLORS[name]
        if name not in forecasts:
            continue
        for j, i in enumerate(range(0, len(origins), 5)):
            o = origins[i]
            ax.plot(years[o + 1:o + 1 + Hz], forecasts[name][i], color=col, lw=1.2, alpha=0.9,
                    ls="-" if name.startswith("LSTM") else "--", label=name if j == 0 else None)
            ax.plot(years[o], v[o], "o", color=col, ms=3)
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title(f"{Hz}-year forecasts from every 5th origin")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    h = np.arange(1, Hz + 1)
    for name, f in forecasts.items():
        ax.plot(h, np.sqrt(np.mean((f - prob["truth"]) ** 2, axis=0)), "o-", color=COLORS.get(name), label=name)
    ax.set_xlabel("horizon (years ahead)")
    ax.set_ylabel("RMSE, test origins")
    ax.set_title("RMSE by horizon")
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    return save_figure(fig, path)


def run(window=30, horizon=10, first_test_year=1979, hidden_size=16, epochs=100, ensemble=3, seed=0,
        seconds=None, arima_order=(9, 0, 0), progress=False):
    """Everything but printing: returns dict with ``prob``, ``forecasts`` (name -> array), ``rmse``
    (name -> float), ``lstm_wall``, ``lstm_epochs``, ``arima_note``."""
    years, values = load_sunspots()
    prob = setup(years, values, first_test_year, window, horizon)
    lstm, wall, ep = lstm_forecasts(prob, hidden_size=hidden_size, epochs=epochs, ensemble=ensemble, seed=seed,
                                    seconds=seconds, progress=progress)
    fc = {"LSTM (rnnfast)": lstm, "persistence": persistence(prob)}
    if horizon <= CYCLE:
        fc["previous cycle (t-11)"] = previous_cycle(prob)
    fc["AR(9)"] = ar_forecasts(prob, 9)
    arima, note = arima_forecasts(prob, arima_order) if arima_order else (None, "not asked for")
    if arima is not None:
        fc["ARIMA"] = arima
    return {"prob": prob, "forecasts": fc, "rmse": {k: rmse(f, prob["truth"]) for k, f in fc.items()},
            "lstm_wall": wall, "lstm_epochs": ep, "arima_note": note}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=None, epochs=100, plot="sunspots.png")
    p.add_argument("--window", type=int, default=30, help="years of input (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=10, help="years to forecast (default: %(default)s)")
    p.add_argument("--first-test-year", type=int, default=1979, help="(default: %(default)s)")
    p.add_argument("--hidden", type=int, default=16, help="LSTM hidden size (default: %(default)s)")
    p.add_argument("--ensemble", type=int, default=3, help="LSTMs (seeds) averaged (default: %(default)s)")
    p.add_argument("--arima-order", type=int, nargs=3, default=(9, 0, 0), metavar=("P", "D", "Q"),
                   help="ARIMA order, when statsmodels imports (default: 9 0 0)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data_or_exit(load_sunspots)
    res = run(args.window, args.horizon, args.first_test_year, args.hidden, args.epochs, args.ensemble,
              args.seed, args.seconds, tuple(args.arima_order), progress=not args.quiet)
    prob = res["prob"]
    yrs = prob["years"]
    o = prob["origins"]
    print(f"Sunspots {yrs[0]}-{yrs[-1]}: training years {yrs[0]}-{yrs[prob['n_train'] - 1]}, "
          f"{len(o)} forecast origins {yrs[o[0]]}-{yrs[o[-1]]}, horizon {args.horizon}; {threads} threads")
    png = plot(prob, res["forecasts"], args.plot) if args.plot else None
    rows = [(f"RMSE {k}", round(v, 2)) for k, v in res["rmse"].items()]
    if "ARIMA" not in res["forecasts"]:
        rows.append(("ARIMA", res["arima_note"]))
    else:
        rows[-1] = (f"RMSE ARIMA{tuple(args.arima_order)} (statsmodels)", rows[-1][1])
    n_windows = prob["n_train"] - args.window
    rows += [
        ("LSTM", f"rnnfast.LSTM(hidden_size={args.hidden}), one target per step, iterated forecasts, "
                 f"{args.ensemble} seeds averaged, {res['lstm_epochs'][0]} epochs each"),
        ("LSTM training wall time (s)", round(res["lstm_wall"], 2)),
        ("throughput (windows/s, training)", f"{sum(res['lstm_epochs']) * n_windows / res['lstm_wall']:,.0f}"),
        ("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"),
    ]
    print_report(f"sunspots, {args.horizon}-year forecasts over {yrs[prob['n_train']]}-{yrs[-1]}", rows)
    return res


if __name__ == "__main__":
    main()
