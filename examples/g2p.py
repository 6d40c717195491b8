#!/usr/bin/env python3
"""Grapheme-to-phoneme on CMUdict with rf.Seq2Seq (BiLSTM encoder, LSTM decoder, Luong attention, cosine learning rate
over the budget, best validation BLEU epoch kept, beam search); cmudict split by word (101,101 / 12,502 / 12,449), no stress;
trains on every pronunciation, a word is right when it equals any of them. Reports test WER and PER, plots learning curves."""
import argparse, itertools, math, os, sys, time  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import rnnfast as rf  # noqa: E402
from rnnfast.datasets import cmudict_split  # noqa: E402
from _common import add_common_args, data_or_exit, new_figure, print_report, save_figure, setup_threads  # noqa: E402


def load_data(max_train=None, max_eval=None, seed=0):
    """Per split, (word, list of its pronunciations); ``max_*`` keep a seeded random subset of the words."""
    out, rng = {}, np.random.default_rng(seed)
    for name, entries in cmudict_split(all_pronunciations=True, stress=False).items():
        items = [(w, [ph for _, ph in g]) for w, g in itertools.groupby(entries, key=lambda e: e[0])]  # a word's lines follow each other
        out[name] = [items[i] for i in np.sort(rng.permutation(len(items))[:max_train if name == "train" else max_eval])]
    return out


def score(preds, items):
    """(WER, PER) of predictions against each word's closest pronunciation."""
    best = [min((rf.train.metrics.edit_distance(r, p), len(r)) for r in prons) for p, (_, prons) in zip(preds, items)]
    return np.mean([d > 0 for d, _ in best]), sum(d for d, _ in best) / sum(n for _, n in best)


def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                        seconds=900, epochs=20, plot="g2p.png")
    for flag, default, what in [("hidden", 256, "decoder units, and per encoder direction"), ("layers", 1, "encoder and decoder layers"), ("batch-size", 128, "words a step"), ("dropout", 0.3, "dropout rate"), ("beam", 5, "beam width"), ("label-smoothing", 0.0, "label smoothing"), ("ema", 0.0, "decay of an EMA of the weights (0: none)"), ("average-epochs", 0, "validate and keep the mean of the last N epochs' weights"),
                                ("max-train", None, "train on N words"), ("test-words", None, "test N words"), ("save", None, "save the trained model to this file"), ("ensemble-with", None, "comma-separated saved models (--save) to decode the test words with, beside this one")]:
        p.add_argument("--" + flag, type={"dropout": float, "label-smoothing": float, "ema": float, "save": str, "ensemble-with": str}.get(flag, int), default=default, help=f"{what} (default: %(default)s)")
    a, res = p.parse_args(argv), {}
    threads, data = setup_threads(a.threads), data_or_exit(load_data, a.max_train, a.test_words, a.seed)
    pairs = {k: [list(t) for t in zip(*[(w, pr) for w, prs in v for pr in (prs if k == "train" else prs[:1])])] for k, v in data.items()}
    t0, done = time.perf_counter(), lambda e: min(1, max(e / a.epochs, (time.perf_counter() - t0) / (a.seconds or math.inf)))  # (budget spent)
    model = rf.Seq2Seq(hidden_size=a.hidden, num_layers=a.layers, embedding_dim=64, epochs=a.epochs, batch_size=a.batch_size, dropout=a.dropout, label_smoothing=a.label_smoothing,
                       early_stopping=True, patience=a.epochs, random_state=a.seed, verbose=0 if a.quiet else 1).fit(
        *pairs["train"], validation_data=tuple(x[:1000] for x in pairs["valid"]), callbacks=[rf.train.LearningRateScheduler(
            lambda e, lr: 1e-4 + 2.9e-3 * (1 + math.cos(math.pi * done(e))) / 2), rf.train.TimeLimit(a.seconds or 1e9)] + [cb for cb in (a.ema and rf.train.WeightAveraging(a.ema), a.average_epochs and rf.train.EpochAveraging(a.average_epochs)) if cb])
    rows = [("model", f"rf.Seq2Seq(hidden_size={a.hidden}, num_layers={a.layers}, dropout={a.dropout}, label_smoothing={a.label_smoothing}{f', ema={a.ema}' if a.ema else ''}{f', mean of {a.average_epochs} epochs' if a.average_epochs else ''}), {sum(v.size for _, v in model.model_.named_parameters()):,} parameters"),
            ("training", f"{model.n_epochs_} epochs of {len(pairs['train'][0]):,} pairs ({len(data['train']):,} words), "
                         f"{time.perf_counter() - t0:.0f} s, {threads} threads; kept epoch {1 + int(np.argmax(model.history_['val_bleu']))}")]
    a.save and model.save(a.save)
    decoder = rf.Seq2SeqEnsemble([model] + [rf.load(f) for f in a.ensemble_with.split(",")]) if a.ensemble_with else model
    for beam in sorted({1, a.beam}):
        t0 = time.perf_counter()
        res[beam] = score(decoder.predict(pairs["test"][0], beam_size=beam), data["test"])
        rows.append((f"test WER / PER, beam {beam}{f', ensemble of {len(decoder.estimators)}' if a.ensemble_with else ''} ({len(data['test']):,} words, {time.perf_counter() - t0:.0f} s)", "{:.2%} / {:.2%}".format(*res[beam])))
    fig, ax = new_figure(2, 1, size=(8, 3.2)) if a.plot else (None, None)
    for i, keys in enumerate([("loss", "val_loss"), ("val_bleu",)] if fig else []):
        [ax[i].plot(model.history_[k], "o-", label=k) for k in keys], ax[i].set(xlabel="epoch"), ax[i].legend()
    print_report("grapheme-to-phoneme on CMUdict (split by word); published WER 25.8% (deep BiLSTM + CTC)", rows + ([("plot", save_figure(fig, a.plot))] if fig else []))
    return {"wer": res[a.beam][0], "per": res[a.beam][1], "greedy_wer": res[1][0], "epochs": model.n_epochs_, "model": model}


if __name__ == "__main__":
    main()
