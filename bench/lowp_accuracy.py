"""The low-precision accuracy contract on trained example models (issue 16, item 4).

Trains short float32 models the way the examples do -- JapaneseVowels (``examples/vowels.py``: the
``rnnfast.LSTM`` estimator, bidirectional 64), Rotten Tomatoes sentiment (``examples/sentiment.py``:
Embedding -> bidirectional GRU 64 -> mean pool -> Linear), the Shakespeare character LM
(``examples/char_lm.py``: Embedding -> LSTM 2 x 256 -> Linear) and grapheme-to-phoneme on CMUdict
(``examples/g2p.py``'s ``rf.Seq2Seq``: BiLSTM encoder, LSTM decoder with Luong attention, here smaller and on
a subset of the training words) -- with the examples' own data loaders, model settings and training code,
each within a time budget; then evaluates each trained model in float32 and after
``rnnfast.quantize(model, "bf16")`` and ``rnnfast.quantize(model, "int8")``.

Reported, as a markdown table (stdout and ``--out``): the task metric (test accuracy in points for the
classifiers, validation loss in nats per character for the LM, on the first ``--lm-chars`` validation
characters, greedy-decoding test WER for G2P on ``--g2p-words`` test words), its change against float32 and
whether it is within the issue's target (0.5 points of accuracy, 1% of loss or WER), and the largest and
RMS difference of the model's outputs against float32 (class probabilities for the estimator, logits for the
others; G2P: teacher-forced logits on the reference pronunciations), with the instruction path each
precision ran.

    python bench/lowp_accuracy.py                       # about 2 min of training a task, 2 threads
    python bench/lowp_accuracy.py --seconds 30 --tasks vowels,sentiment --out /tmp/acc.md
    python bench/lowp_accuracy.py --tasks g2p --out ''  # G2P alone
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import os
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the example scripts, imported as modules (not the checkout's root: its unbuilt source tree would shadow an
# installed rnnfast)
if os.path.join(ROOT, "examples") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "examples"))

import rnnfast as rf  # noqa: E402

PRECISIONS = ("bf16", "int8")
TASKS = ("vowels", "sentiment", "char_lm", "g2p")
#: the issue's target: accuracy within 0.5 points, loss (and WER) within 1% of float32
ACCURACY_POINTS, LOSS_FRACTION = 0.5, 0.01
#: the metrics, as ``Row.metric_name`` gives them: accuracy changes in points, the others relatively
METRICS = {"accuracy": "test accuracy", "loss": "validation loss (nats/char)", "wer": "test WER (greedy)"}


@dataclasses.dataclass
class Row:
    """One task at one precision: its metric and how far its outputs are from float32's."""

    task: str
    precision: str
    metric_name: str  # "accuracy" (a fraction; shown in points), "loss" or "wer" (a fraction; relative change)
    metric: float
    ref_metric: float
    max_diff: float
    rms_diff: float
    path: str

    @property
    def change(self) -> float:
        """The metric's change against float32: points of accuracy, or percent of the loss or WER."""
        if self.metric_name == "accuracy":
            return 100.0 * (self.metric - self.ref_metric)
        if self.ref_metric == 0:
            return 0.0 if self.metric == 0 else float("inf")
        return 100.0 * (self.metric - self.ref_metric) / self.ref_metric

    @property
    def within_target(self) -> bool:
        limit = ACCURACY_POINTS if self.metric_name == "accuracy" else 100.0 * LOSS_FRACTION
        return abs(self.change) <= limit + 1e-9


def quantized_path(precision: str, batch: int = 64) -> str:
    """The instruction path a quantized layer of ``precision`` runs at ``batch`` rows ("-" for float32)."""
    if precision == "float32":
        return "-"
    from rnnfast.quantize import get_backend

    return str(get_backend(precision).path(batch))


def compare_precisions(task: str, model: Any, run: Callable[[Any], Tuple[np.ndarray, float]], metric_name: str,
                       quantize: Callable[[Any, str], Any] = rf.quantize,
                       precisions: Sequence[str] = PRECISIONS) -> List[Row]:
    """Evaluate ``model`` in float32 and quantized to each of ``precisions``.

    Parameters
    ----------
    task : str
        The task's name in the rows.
    model : model object
        The trained float32 model.
    run : callable
        ``run(model) -> (outputs, metric)``: the model's outputs on the evaluation data (any shape, the
        same for every precision) and its task metric there.
    metric_name : {"accuracy", "loss", "wer"}
    quantize : callable, default rnnfast.quantize
        ``quantize(model, precision) -> model``.
    precisions : sequence of str

    Returns
    -------
    list of Row
        float32 first, then one per precision.
    """
    if metric_name not in METRICS:
        raise ValueError(f"metric_name must be one of {list(METRICS)}, not {metric_name!r}")
    ref_out, ref = run(model)
    ref_out = np.asarray(ref_out, np.float64)
    rows = [Row(task, "float32", metric_name, ref, ref, 0.0, 0.0, "-")]
    for p in precisions:
        out, metric = run(quantize(model, p))
        d = np.asarray(out, np.float64) - ref_out
        rows.append(Row(task, p, metric_name, metric, ref, float(np.abs(d).max()), float(np.sqrt(np.mean(d * d))),
                        quantized_path(p)))
    return rows


def markdown(rows: Sequence[Row], notes: Dict[str, str]) -> str:
    """The rows as a markdown table, with each task's note (model, budget, evaluation set) below it."""
    lines = ["| task | precision | path (B=64) | metric | value | change vs float32 | within target | "
             "max abs output diff | RMS output diff |", "|---|---|---|---|---:|---:|---|---:|---:|"]
    for r in rows:
        acc = r.metric_name == "accuracy"
        value = f"{r.metric:.5f}" if r.metric_name == "loss" else f"{100 * r.metric:.2f}%"
        if r.precision == "float32":
            change, ok = "-", "-"
        else:
            change = f"{r.change:+.2f} points" if acc else f"{r.change:+.3f} %"
            ok = "yes" if r.within_target else "**no**"
        metric = METRICS[r.metric_name]
        lines.append(f"| {r.task} | {r.precision} | {r.path} | {metric} | {value} | {change} | {ok} | "
                     f"{r.max_diff:.2e} | {r.rms_diff:.2e} |")
    lines.append("")
    lines += [f"- {task}: {note}" for task, note in notes.items()]
    lines.append(f"- Targets (issue 16): accuracy within {ACCURACY_POINTS} points, loss and WER within "
                 f"{100 * LOSS_FRACTION:.0f}% (relative) of float32.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tasks
def classifier_run(predict: Callable[[Any], np.ndarray], y: np.ndarray, classes: Any = None):
    """``run`` for a classifier: ``predict(model)`` gives scores (N, C) (logits or probabilities); the metric
    is the accuracy of their argmax (mapped through ``classes`` when given) against ``y``."""
    def run(model):
        scores = np.asarray(predict(model))
        pred = scores.argmax(axis=1)
        return scores, float(np.mean((np.asarray(classes)[pred] if classes is not None else pred) == y))
    return run


def vowels_task(seconds: float, seed: int):
    import vowels

    (Xtr, ytr), (Xte, yte) = vowels.load_data()
    t0 = time.perf_counter()
    model, _ = vowels.train((Xtr, ytr), (Xte, yte), seconds=seconds, monitor_test=False, seed=seed)
    note = (f"examples/vowels.py's rnnfast.LSTM (bidirectional, 64 units), {model.n_epochs_} epochs in "
            f"{time.perf_counter() - t0:.0f} s; {len(Xte)} test utterances; outputs: class probabilities")
    run = classifier_run(lambda m: m.predict_proba(Xte), np.asarray(yte), model.classes_)
    return model, run, "accuracy", rf.quantize, note


def sentiment_task(seconds: float, seed: int):
    import sentiment
    from rnnfast.train import predict

    data = sentiment.load_data(seed=seed)
    Xte, yte = data["test"]
    t0 = time.perf_counter()
    model, hist, _ = sentiment.train(data, seconds=seconds, seed=seed, verbose=0)
    note = (f"examples/sentiment.py's Embedding -> bidirectional GRU(64) -> mean pool -> Linear, "
            f"{len(hist.epoch)} epochs in {time.perf_counter() - t0:.0f} s (best validation epoch kept); "
            f"{len(Xte)} test reviews; outputs: logits")
    return model, classifier_run(lambda m: predict(m, Xte), np.asarray(yte)), "accuracy", rf.quantize, note


class _RecordingLM:
    """A char-LM whose ``forward`` also keeps the logits, so that ``char_lm.evaluate`` gives them too."""

    def __init__(self, lm):
        self.lm, self.logits = lm, []

    def forward(self, x, state=None):
        logits, state = self.lm.forward(x, state)
        self.logits.append(logits)
        return logits, state

    def eval(self):
        self.lm.eval()

    def train(self):
        self.lm.train()


def lm_run(ids: np.ndarray):
    """``run`` for a char-LM: the validation loss of ``char_lm.evaluate`` on ``ids`` and its logits."""
    import char_lm

    def run(lm):
        rec = _RecordingLM(lm)
        loss = char_lm.evaluate(rec, ids)
        return np.concatenate([z.reshape(-1) for z in rec.logits]), float(loss)
    return run


def quantize_lm(lm, precision: str):
    """A copy of a ``char_lm.CharLM`` whose LSTM is ``rnnfast.quantize``-d (embedding and output layer as they are)."""
    q = copy.copy(lm)
    q.lstm = rf.quantize(lm.lstm, precision)
    return q


def char_lm_task(seconds: float, seed: int, lm_chars: int = 100_000):
    import char_lm

    data = char_lm.load_data()
    res = char_lm.train(data, seconds=seconds, seed=seed, progress=False, eval_every=10**9)
    ids = data["valid"][:lm_chars]
    note = (f"examples/char_lm.py's Embedding -> LSTM(256) x 2 -> Linear, {res['steps']} steps "
            f"({res['chars']:,} characters) in {res['train_time']:.0f} s; loss on the first {len(ids):,} "
            f"validation characters; outputs: logits")
    return res["lm"], lm_run(ids), "loss", quantize_lm, note


def _ids(seqs: Sequence[Sequence[Any]], tokens: Sequence[Any], bos_eos: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Token sequences as right-padded ids of an rf.Seq2Seq vocabulary (``tokens``: its ``*_tokens_``) and
    their lengths; with ``bos_eos``, between ``<s>`` and ``</s>``."""
    from rnnfast.estimators.seq2seq import BOS, EOS, N_SPECIAL, PAD, UNK

    index = {t: i + N_SPECIAL for i, t in enumerate(tokens)}
    rows = [[BOS] * bos_eos + [index.get(t, UNK) for t in s] + [EOS] * bos_eos for s in seqs]
    out = np.full((len(rows), max(map(len, rows))), PAD, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, np.array([len(r) for r in rows])


def g2p_run(items: Sequence[Tuple[str, List[List[str]]]], n_logits: int = 256):
    """``run`` for a fitted rf.Seq2Seq on G2P test ``items`` (word, its pronunciations): greedy-decoding WER
    (``examples/g2p.py``'s ``score``: a word is right when it equals one of its pronunciations), and the
    teacher-forced logits of the first ``n_logits`` words' first pronunciations."""
    import g2p

    words = [w for w, _ in items]

    def run(est):
        wer, _ = g2p.score(est.predict(words, beam_size=1), items)
        src, src_len = _ids(words[:n_logits], est.source_tokens_)
        tgt, tgt_len = _ids([p[0] for _, p in items[:n_logits]], est.target_tokens_, bos_eos=True)
        logits = est.model_(src, src_len, tgt[:, :-1], tgt_len - 1)
        return np.concatenate([z[:n - 1].reshape(-1) for z, n in zip(logits, tgt_len)]), float(wer)
    return run


def g2p_task(seconds: float, seed: int, g2p_words: int = 3000, g2p_train: int = 20000):
    import math

    import g2p
    from rnnfast.train import LearningRateScheduler, TimeLimit

    data = g2p.load_data(max_train=g2p_train, max_eval=g2p_words, seed=seed)
    words, prons = [w for w, _ in data["train"]], [p[0] for _, p in data["train"]]
    t0 = time.perf_counter()
    spent = lambda e: min(1.0, (time.perf_counter() - t0) / seconds)  # noqa: E731 (the cosine over the budget)
    model = rf.Seq2Seq(hidden_size=128, embedding_dim=64, epochs=1000, batch_size=128, dropout=0.1,
                       random_state=seed).fit(words, prons, callbacks=[TimeLimit(seconds), LearningRateScheduler(
                           lambda e, lr: 1e-4 + 2.9e-3 * (1 + math.cos(math.pi * spent(e))) / 2)])
    note = (f"examples/g2p.py's rf.Seq2Seq (BiLSTM encoder, LSTM decoder, Luong attention) with hidden_size=128, "
            f"{model.n_epochs_} epochs of {len(words):,} training words in {time.perf_counter() - t0:.0f} s; WER "
            f"of greedy decoding on {len(data['test']):,} test words (right: equal to one of the word's "
            "pronunciations); outputs: teacher-forced logits of 256 test words")
    return model, g2p_run(data["test"]), "wer", rf.quantize, note


BUILDERS = {"vowels": vowels_task, "sentiment": sentiment_task, "char_lm": char_lm_task, "g2p": g2p_task}


# ------------------------------------------------------------------------------------------------ main
def _tasks(text: str) -> List[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown tasks {bad}; known: {', '.join(TASKS)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=_tasks, default=list(TASKS), help="comma-separated (default: all)")
    p.add_argument("--seconds", type=float, default=110.0, help="training budget per task (default: %(default)s)")
    p.add_argument("--lm-chars", type=int, default=100_000, help="validation characters for the LM's loss")
    p.add_argument("--g2p-words", type=int, default=3000, help="test words of the G2P WER (default: %(default)s)")
    p.add_argument("--g2p-train", type=int, default=20000, help="training words of the G2P model (default: "
                   "%(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "lowp-accuracy.md"),
                   help="markdown file to write ('' for none; default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    from _common import setup_threads

    threads = setup_threads(args.threads)
    rows, notes = [], {}
    for name in args.tasks:
        print(f"{name}: training for at most {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
        kw = {"char_lm": {"lm_chars": args.lm_chars},
              "g2p": {"g2p_words": args.g2p_words, "g2p_train": args.g2p_train}}.get(name, {})
        model, run, metric_name, quantize, notes[name] = BUILDERS[name](args.seconds, args.seed, **kw)
        rows += compare_precisions(name, model, run, metric_name, quantize)
    header = (f"# Low-precision accuracy on trained example models\n\n{datetime.date.today()}, {threads} threads, "
              f"seed {args.seed}; `python bench/lowp_accuracy.py --seconds {args.seconds:g}"
              + (f" --tasks {','.join(args.tasks)}" if list(args.tasks) != list(TASKS) else "") + "`\n\n")
    text = header + markdown(rows, notes) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
