#!/usr/bin/env python3
"""German -> English translation with ``rf.Seq2Seq`` (bidirectional LSTM encoder, Luong attention decoder),
beside a word-by-word baseline and the same model in PyTorch.

Data: ``rnnfast.datasets.load_trans_de_en``: the example sentences of the Ding dictionary (Debian's
``trans-de-en``), 20,827 pairs, lower-cased and tokenised, slash alternatives cut to their first choice; a
seeded 90/10 split by dictionary sub-entry (18,770 training / 2,057 test pairs). Training pairs longer than
``--max-len`` tokens on either side are left out (about 1 %). Words seen fewer than ``--min-count`` times
in the training pairs become ``<unk>`` on both sides (the test references keep every word).

Baseline: word by word, IBM model 1: ``--ibm-iterations`` EM iterations of the translation table
t(english word | german word) (with a NULL source word) over the training pairs, then every German word
becomes its most probable English word, in the German order; a word never seen in training is copied
(names, numbers). No reordering, no fertility.

Model: ``rf.Seq2Seq(cell="lstm", bidirectional_encoder=True, attention="luong")``: Embedding -> dropout ->
bidirectional LSTM encoder; the decoder starts from ``tanh(Linear(final encoder states))``; Embedding ->
dropout -> LSTM -> Luong "general" attention over the valid source steps -> ``tanh(W [context; h])`` ->
dropout -> Linear over the English words. Teacher forcing, Adam, clipping by global norm 5, greedy decoding.

The PyTorch twin is that network written with ``torch.nn`` (packed sequences, masked attention), started
from the same initial weights (copied from rnnfast's untrained network), trained for the same epochs with
the same Adam settings, clipping, batch size and length-bucketed batches, decoded greedily the same way.

Reported: corpus BLEU on the test pairs (``rf.train.metrics.bleu``, sacrebleu's corpus BLEU on these
tokens) of the three, training wall times, and the BLEU after every epoch on ``--eval-size`` test pairs
(decoding time not counted as training). Issue target: rnnfast reaches the PyTorch model's final BLEU in
at most half its wall time. Plot: BLEU against training time.

    python examples/translate.py
    python examples/translate.py --epochs 4 --hidden 128 --no-torch
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402
from rnnfast.datasets import load_trans_de_en  # noqa: E402
from rnnfast.train import Callback, TimeLimit  # noqa: E402
from rnnfast.train.data import bucket_batches, pad_sequences  # noqa: E402
from rnnfast.train.metrics import bleu  # noqa: E402

from _common import (Progress, add_common_args, add_model_args, data_or_exit, new_figure, print_report,  # noqa: E402
                     save_figure, setup_threads, torch_or_none)

UNK = "<unk>"


# ---------------------------------------------------------------------------------------- data
def replace_rare(seqs, known):
    """Token lists with every token outside ``known`` replaced by ``<unk>``."""
    return [[t if t in known else UNK for t in s] for s in seqs]


def load_data(seed=0, min_count=3, max_len=20, max_train=None, max_test=None):
    """Training and test pairs: dict with ``train`` and ``test`` (each a pair of lists of token lists, as
    loaded) and ``train_unk`` / ``test_src_unk`` (rare and unseen words as ``<unk>``: what the models read
    and learn). ``max_*`` keep the first pairs of a split (quick runs)."""
    src, tgt = load_trans_de_en("train", random_state=seed)
    keep = [i for i in range(len(src)) if len(src[i]) <= max_len and len(tgt[i]) <= max_len][:max_train]
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    te_src, te_tgt = load_trans_de_en("test", random_state=seed)
    te_src, te_tgt = te_src[:max_test], te_tgt[:max_test]
    known = []
    for side in (src, tgt):
        counts = Counter(t for s in side for t in s)
        known.append({t for t, c in counts.items() if c >= min_count})
    return {"train": (src, tgt), "test": (te_src, te_tgt),
            "train_unk": (replace_rare(src, known[0]), replace_rare(tgt, known[1])),
            "test_src_unk": replace_rare(te_src, known[0])}


# ---------------------------------------------------------------------------------------- baseline
class WordByWord:
    """Word-by-word translation from an IBM model 1 translation table (see the module docstring).

    EM runs on flat arrays: one entry per (target token, source token or NULL) co-occurrence in a pair,
    ``t`` indexed by the distinct (source word, target word) pairs.
    """

    def fit(self, src, tgt, iterations=5):
        """EM on t(e | f) over the pairs; keeps each source word's most probable target word."""
        f_vocab = {None: 0}  # 0: the NULL word
        e_vocab: dict = {}
        fs, es, groups = [], [], []
        g = 0
        for f_sent, e_sent in zip(src, tgt):
            f_ids = np.array([0] + [f_vocab.setdefault(w, len(f_vocab)) for w in f_sent], np.int64)
            e_ids = np.array([e_vocab.setdefault(w, len(e_vocab)) for w in e_sent], np.int64)
            fs.append(np.tile(f_ids, len(e_ids)))
            es.append(np.repeat(e_ids, len(f_ids)))
            groups.append(np.repeat(np.arange(g, g + len(e_ids)), len(f_ids)))
            g += len(e_ids)
        f, e, group = (np.concatenate(a) for a in (fs, es, groups))
        keys, inv = np.unique(f * len(e_vocab) + e, return_inverse=True)
        pair_f, pair_e = keys // len(e_vocab), keys % len(e_vocab)
        t = np.ones(len(keys))  # uniform start (only ratios within a target token matter)
        for _ in range(iterations):
            p = t[inv]
            c = p / np.bincount(group, p, minlength=g)[group]  # each target token shares one count
            count = np.bincount(inv, c, minlength=len(keys))
            t = count / np.bincount(pair_f, count)[pair_f]
        order = np.lexsort((-t, pair_f))  # by source word, most probable first
        first = order[np.r_[True, pair_f[order][1:] != pair_f[order][:-1]]]
        f_words, e_words = list(f_vocab), list(e_vocab)
        self.table_ = {f_words[pair_f[k]]: e_words[pair_e[k]] for k in first if pair_f[k] != 0}
        return self

    def translate(self, src):
        """Each word's translation (unseen words copied), in the source order."""
        return [[self.table_.get(w, w) for w in s] for s in src]


# ---------------------------------------------------------------------------------------- rnnfast
def make_model(hidden_size=128, embedding_dim=64, dropout=0.2, epochs=6, batch_size=64, lr=3e-3, seed=0,
               threads=None):
    return rf.Seq2Seq(hidden_size=hidden_size, num_layers=1, cell="lstm", bidirectional_encoder=True,
                      attention="luong", embedding_dim=embedding_dim, dropout=dropout, epochs=epochs,
                      batch_size=batch_size, lr=lr, clip_norm=5.0, beam_size=1, random_state=seed, n_threads=threads)


class EpochBleu(Callback):
    """After every epoch: the training wall and CPU seconds so far (this callback's decoding excluded) and
    the BLEU of ``decode(sources)`` against ``references``; advances ``progress``. An rnnfast callback; the
    PyTorch loop calls :meth:`start` and :meth:`stop` itself."""

    def __init__(self, decode, sources, references, progress=None):
        self.decode, self.sources, self.references, self.progress = decode, sources, references, progress
        self.times, self.cpu_times, self.bleus, self.losses = [], [], [], []
        self._wall = self._cpu = 0.0
        self._t0 = (0.0, 0.0)

    def start(self):
        self._t0 = (time.perf_counter(), time.process_time())

    def stop(self, loss):
        self._wall += time.perf_counter() - self._t0[0]
        self._cpu += time.process_time() - self._t0[1]
        self.times.append(self._wall)
        self.cpu_times.append(self._cpu)
        self.losses.append(float(loss))
        self.bleus.append(bleu(self.references, self.decode(self.sources)))
        if self.progress is not None:
            self.progress.update(1, loss=self.losses[-1], bleu=self.bleus[-1])

    def on_epoch_begin(self, epoch, logs=None):
        self.start()

    def on_epoch_end(self, epoch, logs=None):
        self.stop((logs or {}).get("loss", float("nan")))


def train_rnnfast(data, eval_size=400, seconds=None, progress=None, **kw):
    """Fit ``make_model(**kw)``. Returns (model, untrained weights, :class:`EpochBleu` record, wall seconds)."""
    X, Y = data["train_unk"]
    model = make_model(**{**kw, "epochs": 0}).fit(X, Y)
    init = model.model_.state_dict()  # the untrained network (the seed fixes it), for the twin
    model.set_params(epochs=kw.get("epochs", 6))
    rec = EpochBleu(model.predict, data["test_src_unk"][:eval_size], data["test"][1][:eval_size], progress)
    cbs = [rec] + ([TimeLimit(seconds)] if seconds else [])
    t0 = time.perf_counter()
    model.fit(X, Y, callbacks=cbs)
    return model, init, rec, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------- PyTorch twin
def torch_seq2seq(init, hidden_size, embedding_dim, dropout):
    """rf.Seq2Seq's network in PyTorch, with its parameter names, loaded with ``init`` (its state dict)."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    H, E = hidden_size, embedding_dim
    V_src, V_tgt = init["encoder.embedding.weight"].shape[0], init["decoder.embedding.weight"].shape[0]

    def run(rnn, x, lengths, state=None):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = rnn(packed, state)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], state

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleDict({"embedding": nn.Embedding(V_src, E, padding_idx=0),
                                          "rnn": nn.LSTM(E, H, batch_first=True, bidirectional=True)})
            self.bridge = nn.Linear(2 * H, H)
            self.decoder = nn.ModuleDict({"embedding": nn.Embedding(V_tgt, E, padding_idx=0),
                                          "rnn": nn.LSTM(E, H, batch_first=True),
                                          "attention": nn.ParameterDict({"weight": nn.Parameter(torch.empty(H, 2 * H))}),
                                          "combine": nn.Linear(3 * H, H), "out": nn.Linear(H, V_tgt)})
            self.drop = nn.Dropout(dropout)

        def encode(self, src, lengths):
            memory, (h_n, _) = run(self.encoder["rnn"], self.drop(self.encoder["embedding"](src)), lengths)
            h0 = torch.tanh(self.bridge(torch.cat([h_n[-2], h_n[-1]], dim=-1)))[None]
            mask = torch.arange(src.shape[1])[None, :] < lengths[:, None]
            return memory, mask, (h0.contiguous(), torch.zeros_like(h0))

        def head(self, h, memory, mask):
            dec = self.decoder
            scores = h @ (memory @ dec["attention"]["weight"].T).transpose(1, 2)  # (B, T, S): h . W m
            w = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
            z = torch.tanh(dec["combine"](torch.cat([w @ memory, h], dim=-1)))
            return dec["out"](self.drop(z))

        def forward(self, src, src_len, tgt_in, tgt_len):
            memory, mask, state = self.encode(src, src_len)
            h, _ = run(self.decoder["rnn"], self.drop(self.decoder["embedding"](tgt_in)), tgt_len, state)
            return self.head(h, memory, mask)

        @torch.no_grad()
        def greedy(self, src, src_len, max_length, bos=1, eos=2):
            memory, mask, state = self.encode(src, src_len)
            prev = torch.full((src.shape[0],), bos, dtype=torch.long)
            out, done = [], torch.zeros(src.shape[0], dtype=torch.bool)
            for _ in range(max_length):
                h, state = self.decoder["rnn"](self.decoder["embedding"](prev)[:, None], state)
                prev = self.head(h, memory, mask)[:, 0].argmax(-1)
                out.append(prev)
                done |= prev == eos
                if bool(done.all()):
                    break
            return torch.stack(out, 1).numpy()

    model = Twin()
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in init.items()})
    return model


class TorchTranslator:
    """Training and greedy decoding of the twin with the estimator's vocabularies (ids 0-3: <pad>, <s>,
    </s>, <unk>; then ``source_tokens_`` / ``target_tokens_`` of the fitted rf.Seq2Seq)."""

    def __init__(self, model, source_tokens, target_tokens, max_length):
        self.model, self.max_length = model, max_length
        self.s_index = {t: i + 4 for i, t in enumerate(source_tokens)}
        self.itos = list(target_tokens)
        self.t_index = {t: i + 4 for i, t in enumerate(target_tokens)}

    def _src(self, seqs, rows):
        import torch
        x, lengths = pad_sequences([np.array([self.s_index.get(t, 3) for t in seqs[i]], np.int64) for i in rows],
                                   dtype=np.int64)
        return torch.from_numpy(x), torch.from_numpy(np.asarray(lengths, np.int64))

    def fit(self, X, Y, epochs, batch_size, lr, clip_norm=5.0, seed=0, record=None):
        import torch
        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        lossf = torch.nn.CrossEntropyLoss(ignore_index=0)
        tgt = [np.array([1] + [self.t_index.get(t, 3) for t in y] + [2], np.int64) for y in Y]
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            if record is not None:
                record.start()
            total, n = 0.0, 0
            self.model.train()
            for rows in bucket_batches([len(x) for x in X], batch_size, rng=rng):
                src, src_len = self._src(X, rows)
                y, ylen = pad_sequences([tgt[i] for i in rows], dtype=np.int64)
                y, ylen = torch.from_numpy(y), torch.from_numpy(np.asarray(ylen, np.int64) - 1)
                opt.zero_grad()
                logits = self.model(src, src_len, y[:, :-1], ylen)
                loss = lossf(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip_norm)
                opt.step()
                total += loss.item() * int(ylen.sum())
                n += int(ylen.sum())
            if record is not None:
                record.stop(total / n)
        return self

    def predict(self, X, batch_size=256):
        self.model.eval()
        out = []
        for s in range(0, len(X), batch_size):
            rows = range(s, min(s + batch_size, len(X)))
            ids = self.model.greedy(*self._src(X, rows), self.max_length)
            for r in ids.tolist():
                r = r[:r.index(2)] if 2 in r else r
                out.append([self.itos[i - 4] for i in r if i >= 4])
        return out


def train_torch(data, fitted, init, epochs, eval_size=400, hidden_size=128, embedding_dim=64, dropout=0.2,
                batch_size=64, lr=3e-3, seed=0, threads=None, progress=None):
    """The twin trained as rnnfast trained its network. Returns (translator, EpochBleu record, wall seconds)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    net = torch_seq2seq(init, hidden_size, embedding_dim, dropout)
    tr = TorchTranslator(net, fitted.source_tokens_, fitted.target_tokens_, 2 * fitted.max_target_length_ + 5)
    rec = EpochBleu(tr.predict, data["test_src_unk"][:eval_size], data["test"][1][:eval_size], progress)
    t0 = time.perf_counter()
    tr.fit(*data["train_unk"], epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, record=rec)
    return tr, rec, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------- report
def time_to_reach(record, target):
    """Training seconds until the per-epoch BLEU first reached ``target`` (None if it never did)."""
    for t, b in zip(record.times, record.bleus):
        if b >= target:
            return t
    return None


def plot(records, baseline, path):
    fig, axes = new_figure(1, 1, size=(6.4, 4.2))
    if fig is None:
        return None
    ax = axes[0]
    for name, rec in records.items():
        ax.plot(rec.times, rec.bleus, "o-", ms=3, label=name)
    ax.axhline(baseline, color="gray", ls=":", label=f"word by word (IBM 1), {baseline:.1f}")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("BLEU (held-out pairs, greedy)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("German -> English (Ding sentences): BiLSTM + Luong attention")
    return save_figure(fig, path)


def run(data, args, threads):
    """Baseline, rnnfast and (unless --no-torch or PyTorch is absent) the twin. Returns a dict of results."""
    kw = dict(hidden_size=args.hidden, embedding_dim=args.embedding, dropout=args.dropout, batch_size=args.batch_size,
              lr=args.lr, seed=args.seed)
    src, refs = data["test"]
    t0 = time.perf_counter()
    base = WordByWord().fit(*data["train"], iterations=args.ibm_iterations)
    res = {"baseline": bleu(refs, base.translate(src)), "baseline_time": time.perf_counter() - t0,
           "examples": [(src[i], refs[i], base.translate([src[i]])[0]) for i in range(3)]}
    bar = Progress(args.epochs, desc="rnnfast", unit="epoch", disable=args.quiet)
    model, init, rec, _ = train_rnnfast(data, args.eval_size, args.seconds, bar, epochs=args.epochs, threads=threads,
                                        **kw)
    bar.close()
    hyps = model.predict(data["test_src_unk"])
    res.update(model=model, records={"rnnfast": rec}, rnnfast=bleu(refs, hyps), rnnfast_time=rec.times[-1],
               examples=[e + (hyps[i],) for i, e in enumerate(res["examples"])])
    if args.torch and torch_or_none() is not None:
        bar = Progress(len(rec.times), desc="PyTorch", unit="epoch", disable=args.quiet)
        tr, trec, _ = train_torch(data, model, init, len(rec.times), args.eval_size, threads=threads, progress=bar,
                                  **kw)
        bar.close()
        res["records"]["PyTorch"] = trec
        res.update(torch=bleu(refs, tr.predict(data["test_src_unk"])), torch_time=trec.times[-1])
    return res


def _took(rec):
    return f"{len(rec.times)} epochs in {rec.times[-1]:.1f} s ({rec.cpu_times[-1]:.1f} CPU s)"


def report(res, data, args):
    n_src, n_tgt = len(res["model"].source_tokens_), len(res["model"].target_tokens_)
    rows = [("model", f"Seq2Seq: Embedding({n_src}+4, {args.embedding}) -> BiLSTM({args.hidden}) encoder; "
                      f"LSTM({args.hidden}) + Luong attention decoder -> Linear({n_tgt}+4); dropout {args.dropout}, "
                      f"Adam lr {args.lr}, batch {args.batch_size}"),
            ("word by word (IBM model 1): BLEU", f"{res['baseline']:.2f} ({res['baseline_time']:.0f} s to fit)"),
            ("rnnfast: BLEU", f"{res['rnnfast']:.2f}, {_took(res['records']['rnnfast'])}")]
    if "torch" in res:
        rec, trec = res["records"]["rnnfast"], res["records"]["PyTorch"]
        reach = time_to_reach(rec, trec.bleus[-1])
        rows += [("PyTorch twin: BLEU", f"{res['torch']:.2f}, {_took(trec)}"),
                 ("PyTorch / rnnfast training time (wall, CPU)", f"{res['torch_time'] / res['rnnfast_time']:.2f}x, "
                                                                 f"{trec.cpu_times[-1] / rec.cpu_times[-1]:.2f}x"),
                 (f"rnnfast time to PyTorch's final BLEU ({trec.bleus[-1]:.2f}, {args.eval_size} pairs)",
                  "not reached" if reach is None else
                  f"{reach:.1f} s = {reach / res['torch_time']:.2f} of PyTorch's time (target <= 0.5)")]
    rows.append(("plot", res.get("plot") or "(none)"))
    print_report(f"German -> English, {len(data['test'][0]):,} held-out pairs (BLEU, lower-cased tokens)", rows)
    for de, en, wbw, s2s in res["examples"]:
        print(f"\n  de:     {' '.join(de)}\n  ref:    {' '.join(en)}\n  w-by-w: {' '.join(wbw)}\n  rnnfast: "
              f"{' '.join(s2s)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=None, epochs=6, plot="translate.png")
    add_model_args(p, hidden=128, embedding=64, dropout=0.2, batch_size=64, lr=3e-3, min_count=3,
                   hidden_help="units of the decoder and of each encoder direction")
    p.add_argument("--max-len", type=int, default=20, help="longest training sentence, tokens (default: %(default)s)")
    p.add_argument("--eval-size", type=int, default=400, help="test pairs decoded after every epoch (default: "
                   "%(default)s)")
    p.add_argument("--ibm-iterations", type=int, default=5, help="EM iterations of the baseline (default: %(default)s)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data = data_or_exit(load_data, seed=args.seed, min_count=args.min_count, max_len=args.max_len)
    print(f"trans-de-en: {len(data['train'][0]):,} training / {len(data['test'][0]):,} test pairs; {threads} threads")
    res = run(data, args, threads)
    res["plot"] = plot(res["records"], res["baseline"], args.plot) if args.plot else None
    report(res, data, args)
    return res


if __name__ == "__main__":
    main()
