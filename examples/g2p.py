#!/usr/bin/env python3
"""Grapheme-to-phoneme conversion on CMUdict with rf.Seq2Seq: bidirectional LSTM encoder, LSTM decoder with Luong
attention, teacher forcing, a cosine learning rate over the budget (epochs or seconds), beam search. Data: cmudict split
by word (101,101 / 12,502 / 12,449 words), no stress; a word is right when the prediction equals any of its
pronunciations. Reported: test WER and PER (phoneme edit distance); plot: the learning curves.

    python examples/g2p.py --epochs 12 --seconds 2400
"""
import argparse, math, os, sys, time  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import rnnfast as rf  # noqa: E402
from rnnfast.datasets import cmudict_split  # noqa: E402
from rnnfast.train import LearningRateScheduler, TimeLimit  # noqa: E402
from _common import add_common_args, data_or_exit, new_figure, print_report, save_figure, setup_threads  # noqa: E402


def load_data(max_train=None, max_eval=None, seed=0):
    """Per split, (word, list of its pronunciations); ``max_*`` keep a seeded random subset of the words."""
    out, rng = {}, np.random.default_rng(seed)
    for name, entries in cmudict_split(all_pronunciations=True, stress=False).items():
        words = {}
        for w, phs in entries:
            words.setdefault(w, []).append(phs)
        items, cap = list(words.items()), max_train if name == "train" else max_eval
        out[name] = [items[i] for i in np.sort(rng.permutation(len(items))[:cap])]
    return out


def score(preds, items):
    """(WER, PER) of predictions against each word's closest pronunciation."""
    best = [min((rf.train.metrics.edit_distance(r, p), len(r)) for r in prons) for p, (_, prons) in zip(preds, items)]
    return np.mean([d > 0 for d, _ in best]), sum(d for d, _ in best) / sum(n for _, n in best)


def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                        seconds=900, epochs=12, plot="g2p.png")
    for flag, default, what in [("hidden", 192, "decoder units, and per encoder direction"), ("batch-size", 128, "words a step"),
                                ("beam", 5, "beam width"), ("max-train", None, "train on N words"), ("test-words", None, "test N words")]:
        p.add_argument("--" + flag, type=int, default=default, help=f"{what} (default: %(default)s)")
    a, res = p.parse_args(argv), {}
    threads, data = setup_threads(a.threads), data_or_exit(load_data, a.max_train, a.test_words, a.seed)
    pairs = {k: ([w for w, _ in v], [pr[0] for _, pr in v]) for k, v in data.items()}
    done = lambda e: max(e / a.epochs, (time.perf_counter() - t0) / (a.seconds or math.inf))  # noqa: E731 (budget spent)
    cbs = [LearningRateScheduler(lambda e, lr: 1e-4 + 2.9e-3 * (1 + math.cos(math.pi * min(done(e), 1))) / 2)]
    model = rf.Seq2Seq(hidden_size=a.hidden, embedding_dim=64, epochs=a.epochs, batch_size=a.batch_size, dropout=0.1,
                       random_state=a.seed, verbose=0 if a.quiet else 1)
    t0 = time.perf_counter()
    model.fit(*pairs["train"], validation_data=tuple(x[:1000] for x in pairs["valid"]),
              callbacks=cbs + ([TimeLimit(a.seconds)] if a.seconds else []))
    train_time = time.perf_counter() - t0
    for beam in sorted({1, a.beam}):
        t0 = time.perf_counter()
        res[beam] = score(model.predict(pairs["test"][0], beam_size=beam), data["test"]) + (time.perf_counter() - t0,)
    n_par = sum(v.size for _, v in model.model_.named_parameters())
    rows = [("model", f"rf.Seq2Seq(hidden_size={a.hidden}), {n_par:,} parameters"),
            ("training", f"{model.n_epochs_} epochs of {len(data['train']):,} words, {train_time:.0f} s, {threads} threads")]
    rows += [(f"test WER / PER, beam {b} ({len(data['test']):,} words, {t:.0f} s)", f"{w:.2%} / {e:.2%}")
             for b, (w, e, t) in res.items()]
    fig, ax = new_figure(2, 1, size=(8, 3.2)) if a.plot else (None, None)
    if fig is not None:
        for i, keys in enumerate([("loss", "val_loss"), ("val_bleu",)]):
            [ax[i].plot(model.history_[k], "o-", label=k) for k in keys], ax[i].set(xlabel="epoch"), ax[i].legend()
        rows.append(("plot", save_figure(fig, a.plot)))
    print_report("grapheme-to-phoneme on CMUdict (split by word); published WER 25.8% (deep BiLSTM + CTC)", rows)
    return {"wer": res[a.beam][0], "per": res[a.beam][1], "greedy_wer": res[1][0], "train_time": train_time}


if __name__ == "__main__":
    main()
