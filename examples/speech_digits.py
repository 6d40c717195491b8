#!/usr/bin/env python3
"""Speech recognition of spoken digit strings: MFCCs with deltas -> 2-layer bidirectional LSTM -> CTC.

Data (``rnnfast.datasets.speech``): strings of 1-7 digits ("three one four") synthesized with espeak-ng
in 170 training voices (7 English accents x 30 variants, minus the held-out ones), each utterance with
its own speed, pitch, word gap and loudness; the test set is spoken by the 40 held-out voices, never heard
in training. Then an out-of-domain test on real recordings of one speaker (Asterisk's "Allison" prompts):
the ten single digits, and strings made of those recordings joined by random pauses. Audio at 8 kHz;
features: 13 MFCCs + deltas + delta-deltas (25 ms Hamming frames every 10 ms, normalised per utterance),
``--stack`` consecutive frames concatenated into one step (fewer steps, same information). Training
adds ``--augment`` altered copies of every utterance (resampled by 0.85-1.15: another vocal tract; white
noise at 5-30 dB SNR) and gives the originals a light noise floor.

Model: ``rf.LSTM(num_layers=2, bidirectional=True, loss="ctc")``, the estimator with CTC over characters
of the transcript (``--labels chars``: letters and space, 16 labels + blank) or over digit words
(``--labels words``: 10 labels + blank); ``predict`` decodes greedily (``--beam`` for prefix beam search).

Reported: character error rate (CER) and word error rate (WER) of the transcripts on the held-out
voices (target: CER <= 5%), then on the real recordings; wall time and throughput; with ``--torch``
also the identical PyTorch model (torch.nn.LSTM + torch.nn.CTCLoss, the same initial weights, epochs,
batch size and learning rate): its CER and wall time. Plot: the loss and the held-out CER per epoch.

    python examples/speech_digits.py --seconds 600
    python examples/speech_digits.py --labels words --epochs 20 --torch
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402  (imported before torch: both then share one OpenMP runtime)
from rnnfast.datasets.speech import load_recorded_digits, load_spoken_digits  # noqa: E402
from rnnfast.train import Callback, TimeLimit, bucket_batches, pad_sequences  # noqa: E402
from rnnfast.train.metrics import cer, wer  # noqa: E402

from _common import (EpochProgress, Progress, add_common_args, data_or_exit, new_figure, print_report,  # noqa: E402
                     save_figure, setup_threads)


# ---------------------------------------------------------------------------------------- data
def stack_frames(f, k):
    """(T, F) features -> (ceil(T / k), k F): each step holds k consecutive frames (the last zero-padded)."""
    if k == 1:
        return f
    pad = (-f.shape[0]) % k
    f = np.concatenate([f, np.zeros((pad, f.shape[1]), f.dtype)]) if pad else f
    return f.reshape(-1, k * f.shape[1])


def load_data(n_train=3000, n_test=600, n_real_strings=100, seed=0, cache_dir=None):
    """The three sets as :class:`rnnfast.datasets.speech.SpokenDigits`: ``train`` and ``test`` (held-out
    voices) synthesized, ``real`` the recordings (10 single digits, then ``n_real_strings`` strings)."""
    return {"train": load_spoken_digits("train", n_train, seed=seed, cache_dir=cache_dir),
            "test": load_spoken_digits("test", n_test, seed=seed, cache_dir=cache_dir),
            "real": load_recorded_digits(n_real_strings, seed=seed)}


def augment(ds, copies=1, seed=0):
    """``ds`` with ``copies`` altered copies of every utterance appended: resampled by a factor in
    [0.85, 1.15] (the voice's formants, pitch and tempo all move: another vocal tract) and mixed with white
    noise at 5-30 dB SNR. The originals get a light noise floor (30-50 dB SNR): synthesized silence is
    digital zeros, which no microphone records."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng([seed, 7])

    def noisy(a, lo, hi):
        scale = np.sqrt(np.mean(a ** 2) / 10 ** (rng.uniform(lo, hi) / 10))
        return (a + scale * rng.standard_normal(a.size)).astype(np.float32)

    audio = [noisy(a, 30, 50) for a in ds.audio]
    for _ in range(copies):
        for a in ds.audio:
            up = int(rng.integers(85, 116))
            audio.append(noisy(resample_poly(a, up, 100).astype(np.float32), 5, 30))
    n = copies + 1
    return type(ds)(audio, ds.digits * n, ds.voices * n, ds.sample_rate)


def featurize(ds, stack=3):
    """The model's inputs: features per utterance, ``stack`` frames per step."""
    return [stack_frames(f, stack) for f in ds.features()]


def targets(ds, labels):
    """What the model learns: the transcripts as strings ("chars"), or as lists of digit words ("words")."""
    return ds.words() if labels == "chars" else [w.split() for w in ds.words()]


def as_text(pred):
    """Predictions (strings, or lists of words) as transcript strings."""
    return [p if isinstance(p, str) else " ".join(p) for p in pred]


def error_rates(ds, pred):
    """(CER, WER) of predictions against the transcripts of ``ds``."""
    ref, hyp = ds.words(), as_text(pred)
    return cer(ref, hyp), wer(ref, hyp)


# ---------------------------------------------------------------------------------------- training
class CERMonitor(Callback):
    """After every epoch: the CER on a held-out set (for the learning curve only; nothing is selected)."""

    def __init__(self, model, X, ds, every=1):
        self.estimator, self.X, self.ds, self.every, self.cer = model, X, ds, every, []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.cer.append((epoch + 1, error_rates(self.ds, self.estimator.predict(self.X))[0]))


def make_model(hidden_size=128, num_layers=2, epochs=30, batch_size=32, lr=2e-3, dropout=0.0, seed=0):
    return rf.LSTM(hidden_size=hidden_size, num_layers=num_layers, bidirectional=True, dropout=dropout,
                   loss="ctc", epochs=epochs, batch_size=batch_size, lr=lr, clip_norm=5.0, random_state=seed)


def train(X, y, monitor=None, seconds=None, progress=True, **kw):
    """Fit the estimator on features ``X`` and targets ``y``; ``monitor`` = (X, SpokenDigits) of a held-out
    set scored after every epoch. Returns (model, wall seconds, CER curve [(epoch, cer)])."""
    model = make_model(**kw)
    bar = Progress(total=model.epochs, desc="train", unit="epoch", disable=not progress)
    callbacks = [EpochProgress(bar)] + ([TimeLimit(seconds)] if seconds else [])
    mon = CERMonitor(model, monitor[0], monitor[1]) if monitor is not None else None
    t0 = time.perf_counter()
    model.fit(X, y, callbacks=callbacks + ([mon] if mon else []))
    wall = time.perf_counter() - t0
    bar.close()
    return model, wall, (mon.cer if mon else [])


# ---------------------------------------------------------------------------------------- PyTorch twin
def torch_twin(X, y, X_test, epochs, batch_size=32, lr=2e-3, seed=0, progress=True, **kw):
    """The identical model in PyTorch (torch.nn.LSTM over packed sequences + torch.nn.CTCLoss, the
    rnnfast estimator's initial weights through ``rf.interop.to_torch``), Adam and clipping as the
    estimator, the same epochs. Returns (predictions on ``X_test``, wall seconds) or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    init = make_model(epochs=0, batch_size=batch_size, lr=lr, seed=seed, **kw).fit(X, y)  # no epoch: labels
    net = rf.interop.to_torch(init)
    classes = init.classes_.tolist()
    codes = [[1 + classes.index(lab) for lab in t] for t in y]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    lengths = np.array([len(x) for x in X])
    bar = Progress(total=epochs, desc="torch", unit="epoch", disable=not progress)
    t0 = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        for idx in bucket_batches(lengths, batch_size, np.random.default_rng([seed, epoch]), True):
            xb, lb = pad_sequences([X[i] for i in idx])
            tb = torch.tensor([c for i in idx for c in codes[i]])
            logp = torch.log_softmax(net(torch.from_numpy(xb), lb), dim=-1).transpose(0, 1)
            loss = ctc(logp, tb, torch.from_numpy(lb), torch.tensor([len(codes[i]) for i in idx]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
        bar.update(1, loss=loss.item())
    wall = time.perf_counter() - t0
    bar.close()
    net.eval()
    with torch.no_grad():
        xt, lt = pad_sequences(X_test)
        out = net(torch.from_numpy(xt), lt).numpy()
    ids = rf.train.ctc_greedy_decode(out, lt)
    pred = [[classes[i - 1] for i in s] for s in ids]
    return [("".join(p) if isinstance(y[0], str) else p) for p in pred], wall


# ---------------------------------------------------------------------------------------- report
def plot(history, curve, path, target=0.05):
    fig, axes = new_figure(2, 1, size=(5.2, 3.8))
    if fig is None:
        return None
    axes[0].plot(np.arange(1, len(history["loss"]) + 1), history["loss"])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("CTC loss (train)")
    axes[0].set_yscale("log")
    if curve:
        ep, c = zip(*curve)
        axes[1].plot(ep, 100 * np.array(c), marker=".", label="held-out voices")
    axes[1].axhline(100 * target, color="gray", ls=":", label=f"target {100 * target:g}%")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("CER (%)")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Spoken digits: MFCC -> BiLSTM x2 -> CTC (rnnfast.LSTM, loss='ctc')")
    return save_figure(fig, path)


def run(args, data):
    """Train, score and (optionally) the PyTorch twin; returns the figures as a dict."""
    t0 = time.perf_counter()
    train_set = augment(data["train"], args.augment, args.seed) if args.augment >= 0 else data["train"]
    feats = {k: featurize(v, args.stack) for k, v in dict(data, train=train_set).items()}
    feat_time = time.perf_counter() - t0
    y = targets(train_set, args.labels)
    kw = dict(hidden_size=args.hidden, num_layers=args.layers, batch_size=args.batch_size, lr=args.lr,
              dropout=args.dropout, seed=args.seed)
    n_mon = min(200, len(data["test"]))
    monitor = (feats["test"][:n_mon], _subset(data["test"], n_mon))
    model, wall, curve = train(feats["train"], y, monitor, seconds=args.seconds, progress=not args.quiet,
                               epochs=args.epochs, **kw)
    res = {"model": model, "wall": wall, "curve": curve, "epochs": model.n_epochs_, "feature_time": feat_time,
           "history": model.history_}
    t0 = time.perf_counter()
    res["test"] = error_rates(data["test"], model.predict(feats["test"], beam_size=args.beam))
    res["predict_time"] = time.perf_counter() - t0
    real_pred = model.predict(feats["real"], beam_size=args.beam)
    res["real"] = error_rates(data["real"], real_pred)
    res["real_single"] = error_rates(_subset(data["real"], 10), real_pred[:10])
    res["real_examples"] = list(zip(data["real"].words()[10:13], as_text(real_pred[10:13])))
    if args.torch:
        twin = torch_twin(feats["train"], y, feats["test"], model.n_epochs_, progress=not args.quiet, **kw)
        if twin is not None:
            res["torch"] = (error_rates(data["test"], twin[0]), twin[1])
    return res


def _subset(ds, n):
    return type(ds)(ds.audio[:n], ds.digits[:n], ds.voices[:n], ds.sample_rate)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=900, epochs=8, plot="speech_digits.png")
    p.add_argument("--labels", choices=("chars", "words"), default="chars",
                   help="CTC over the transcript's characters or over digit words (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=128, help="LSTM units per direction (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="stacked bidirectional layers (default: %(default)s)")
    p.add_argument("--stack", type=int, default=3, help="frames (10 ms) per step (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.2, help="between the layers (default: %(default)s)")
    p.add_argument("--augment", type=int, default=1,
                   help="altered copies of each training utterance (other vocal tract, noise); -1: the clean "
                        "synthesized audio only (default: %(default)s)")
    p.add_argument("--beam", type=int, default=1, help="CTC beam width for the final scores (default: greedy)")
    p.add_argument("--train-size", type=int, default=3000,
                   help="synthesized training utterances (default: %(default)s)")
    p.add_argument("--test-size", type=int, default=600, help="held-out-voice utterances (default: %(default)s)")
    p.add_argument("--real-strings", type=int, default=100,
                   help="digit strings joined from the real recordings (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="where the synthesized audio is kept "
                   "(default: $RNNFAST_CACHE_DIR or ~/.cache/rnnfast)")
    p.add_argument("--torch", action="store_true", help="also train the identical PyTorch model (same epochs)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    t0 = time.perf_counter()
    data = data_or_exit(load_data, args.train_size, args.test_size, args.real_strings, args.seed, args.cache_dir)
    load_time = time.perf_counter() - t0
    print(f"spoken digits: {len(data['train'])} x {max(args.augment, 0) + 1} training utterances "
          f"({data['train'].seconds() / 3600:.2f} h, "
          f"{len(set(data['train'].voices))} voices), {len(data['test'])} test ({len(set(data['test'].voices))} "
          f"held-out voices), {len(data['real'])} real; loaded in {load_time:.1f} s; {threads} threads")
    res = run(args, data)
    model = res["model"]
    png = plot(model.history_, res["curve"], args.plot) if args.plot else None
    n_par = sum(v.size for _, v in model.model_.named_parameters())
    rows = [
        ("model", f"MFCC+deltas x{args.stack} frames -> BiLSTM {args.layers}x{args.hidden} -> CTC over "
                  f"{args.labels} ({len(model.classes_)} labels + blank), {n_par:,} parameters"),
        ("held-out voices: CER / WER", f"{100 * res['test'][0]:.2f}% / {100 * res['test'][1]:.2f}%"),
        ("target", "CER <= 5%"),
        ("real voice, single digits: CER / WER",
         f"{100 * res['real_single'][0]:.1f}% / {100 * res['real_single'][1]:.1f}%"),
        ("real voice, all: CER / WER", f"{100 * res['real'][0]:.1f}% / {100 * res['real'][1]:.1f}%"),
        ("real examples (reference -> output)", "; ".join(f"{r!r} -> {h!r}" for r, h in res["real_examples"])),
        ("epochs", res["epochs"]),
        ("training wall time (s)", round(res["wall"], 1)),
        ("throughput (utterances/s, training)",
         f"{res['epochs'] * len(data['train']) * (max(args.augment, 0) + 1) / res['wall']:,.0f}"),
        ("features (s) / test decoding (s)", f"{res['feature_time']:.1f} / {res['predict_time']:.2f}"),
    ]
    if "torch" in res:
        (tc, tw), twall = res["torch"]
        rows.append(("PyTorch twin: CER / WER, wall (s)", f"{100 * tc:.2f}% / {100 * tw:.2f}%, {twall:.1f}"))
    rows.append(("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"))
    print_report("Spoken digit strings, CTC", rows)
    return {k: v for k, v in res.items() if k != "model"} | {"plot": png}


if __name__ == "__main__":
    main()
