"""The translation example's training step: rnnfast (fused output layer + loss on the non-padded steps),
its PyTorch twin and rnnfast's generic step (full logits, CrossEntropy, Linear backward), in turn on the
same batches in one process.

Every round runs ``--chunk`` steps of each contender on the same length-bucketed batches of
``examples/translate.py``'s data (Debian ``trans-de-en``), from the same initial weights (the twin's are
copied from rnnfast's); the machine's noise falls on all three alike. Reported: wall and CPU ms a step,
and the ratios of the sums (and the median per-round ratio). Both rnnfast steps train the same network
(timing only); the twin trains its own copy as ``TorchTranslator.fit`` does.

    python bench/translate_step.py                    # 60 steps in rounds of 5, the default threads
    python bench/translate_step.py --threads 1 --steps 40 --chunk 5
    python bench/translate_step.py --before           # also rnnfast's fused step as it was before session 13

``--epochs N`` times N whole epochs of each twin instead (alternating, the first ``--pairs`` training pairs),
as ``examples/translate.py`` times them, with the time outside the training steps: rnnfast's ``fit``
around ``Seq2SeqTrainer.train_step`` (vocabularies, batching, padding, callbacks, history), the twin's
per-batch id lookups and padding.

``--before`` adds the fused step with session 13's changes switched off (the numpy passes of Adam, of the
loss's softmax and of the global norm, np.add.at for the embeddings' gradients; the attention's products by
numpy's BLAS), on its own copy of the network.
"""
import argparse
import os
import sys
import time

import numpy as np

# the examples' folder only (never the checkout's root: it would shadow an installed rnnfast)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import translate as T  # noqa: E402
from _common import setup_threads  # noqa: E402


def rnnfast_steps(est, ds, batches):
    """(fused step, generic step, Batch list) of the estimator's untrained network."""
    from rnnfast.estimators.seq2seq import Seq2SeqTrainer
    from rnnfast.train.trainer import Batch, Trainer
    tr = Seq2SeqTrainer(est.model_, est.optimizer_, clip_norm=5.0)
    tr._grads = list(est.model_.grads.values())  # what Trainer.fit's start sets
    est.model_.train()
    bl = [Batch(*ds.batch(idx), ds.per_step, n_rows=len(idx)) for idx in batches]
    return tr.train_step, lambda b: Trainer.train_step(tr, b), bl


def _numpy_project(x, w, transpose=True, n_threads=None):
    x2 = x.reshape(-1, x.shape[-1])
    out = x2 @ (w.T if transpose else w)
    return out.reshape(x.shape[:-1] + (out.shape[-1],))


def _numpy_add_outer(g, d, x, n_threads):
    g += d.reshape(-1, d.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def before_step(data, threads):
    """(step, batch list) of the fused step as before session 13, on a network of its own."""
    import contextlib

    import rnnfast.nn.layers as L
    import rnnfast.train.clip as C
    from rnnfast.train.optimizers import Adam, Optimizer
    est = T.make_model(epochs=0, threads=threads).fit(*data["train_unk"])
    ds = est._dataset(*data["train_unk"])
    batches = T.bucket_batches(ds.lengths, 64, rng=np.random.default_rng(0))
    fused, _, bl = rnnfast_steps(est, ds, batches)

    @contextlib.contextmanager
    def old_code():
        names = ("_project", "_add_outer", "_softmax_minus_onehot_")
        saved = [getattr(L, k) for k in names] + [L._optim.add_rows_, C._sum_squares, Adam.__dict__["step"]]
        L._optim.add_rows_ = np.add.at
        old = (_numpy_project, _numpy_add_outer, lambda b, t, s, n=1: L._softmax_minus_onehot_np(b, t, s))
        for k, f in zip(names, old):
            setattr(L, k, f)
        C._sum_squares, Adam.step = C._sum_squares_np, Optimizer.step
        try:
            yield
        finally:
            for k, f in zip(names, saved):
                setattr(L, k, f)
            L._optim.add_rows_, C._sum_squares, Adam.step = saved[-3:]
    def step(b):
        with old_code():
            return fused(b)
    return step, bl


def torch_steps(data, est, init, batches, threads):
    """(step, batch list) of the PyTorch twin, its step as ``TorchTranslator.fit``'s."""
    import torch
    torch.set_num_threads(threads)
    net = T.torch_seq2seq(init, 128, 64, 0.2)
    tt = T.TorchTranslator(net, est.source_tokens_, est.target_tokens_, 50)
    opt, lossf = torch.optim.Adam(net.parameters(), lr=3e-3), torch.nn.CrossEntropyLoss(ignore_index=0)
    X, Y = data["train_unk"]
    tgt = [np.array([1] + [tt.t_index.get(t, 3) for t in y] + [2], np.int64) for y in Y]
    tb = []
    for rows in batches:
        y, ylen = T.pad_sequences([tgt[i] for i in rows], dtype=np.int64)
        tb.append(tt._src(X, rows) + (torch.from_numpy(y), torch.from_numpy(np.asarray(ylen, np.int64) - 1)))

    def step(b):
        src, src_len, y, ylen = b
        opt.zero_grad()
        logits = net(src, src_len, y[:, :-1], ylen)
        loss = lossf(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        return loss.item()
    net.train()
    return step, tb


def epoch_spans(data, threads, rounds, n_pairs):
    """``rounds`` epochs of each twin, alternating: per twin the wall and CPU seconds of the epochs and of
    what they spent outside the training steps."""
    import collections

    import torch
    from rnnfast.estimators.seq2seq import Seq2SeqTrainer
    X, Y = (s[:n_pairs] for s in data["train_unk"])
    spans = collections.defaultdict(lambda: np.zeros(2))

    def timed(key, f):
        def run(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return f(*a, **k)
            finally:
                spans[key] += (time.perf_counter() - t0, time.process_time() - c0)
        return run
    est = T.make_model(epochs=0, threads=threads).fit(X, Y)
    tt = T.TorchTranslator(T.torch_seq2seq(est.model_.state_dict(), 128, 64, 0.2), est.source_tokens_,
                           est.target_tokens_, 50)
    torch.set_num_threads(threads)
    tt._src, pad = timed("PyTorch outside steps", tt._src), T.pad_sequences
    step = Seq2SeqTrainer.train_step
    Seq2SeqTrainer.train_step, T.pad_sequences = timed("rnnfast steps", step), timed("PyTorch outside steps", pad)
    try:
        for r in range(rounds):
            timed("rnnfast epoch (fit)", est.set_params(epochs=1).fit)(X, Y)
            timed("PyTorch epoch", tt.fit)(X, Y, epochs=1, batch_size=64, lr=3e-3, seed=r)
    finally:
        Seq2SeqTrainer.train_step, T.pad_sequences = step, pad
    spans["rnnfast outside steps"] = spans["rnnfast epoch (fit)"] - spans["rnnfast steps"]
    print(f"{rounds} epoch(s) of each on {len(X):,} pairs, {threads} thread(s): wall / CPU seconds")
    for k in ("rnnfast epoch (fit)", "rnnfast outside steps", "PyTorch epoch", "PyTorch outside steps"):
        print(f"  {k:22s} {spans[k][0]:8.2f} {spans[k][1]:8.2f}")
    ratio = spans["PyTorch epoch"] / spans["rnnfast epoch (fit)"]
    print(f"  PyTorch / rnnfast per epoch: wall {ratio[0]:.2f}x, CPU {ratio[1]:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="steps of each contender (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=5, help="steps of one contender in a row (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="threads of both (default: the CPUs)")
    p.add_argument("--before", action="store_true", help="also the fused step before session 13's changes")
    p.add_argument("--epochs", type=int, default=0, help="time whole epochs instead (see above)")
    p.add_argument("--pairs", type=int, default=None, help="training pairs of --epochs (default: all)")
    args = p.parse_args(argv)
    threads = setup_threads(args.threads)
    data = T.load_data(seed=0)
    if args.epochs:
        return epoch_spans(data, threads, args.epochs, args.pairs)
    est = T.make_model(epochs=0).fit(*data["train_unk"])
    init = est.model_.state_dict()
    ds = est._dataset(*data["train_unk"])
    batches = T.bucket_batches(ds.lengths, 64, rng=np.random.default_rng(0))[:args.steps]
    fused, generic, bl = rnnfast_steps(est, ds, batches)
    tstep, tb = torch_steps(data, est, init, batches, threads)
    runs = {"rnnfast fused": (fused, bl), "PyTorch": (tstep, tb), "rnnfast generic": (generic, bl)}
    pairs = [("PyTorch", "rnnfast fused"), ("rnnfast generic", "rnnfast fused"), ("PyTorch", "rnnfast generic")]
    if args.before:
        bstep, bbl = before_step(data, threads)
        runs["rnnfast before"] = (bstep, bbl[:len(batches)])
        pairs += [("rnnfast before", "rnnfast fused"), ("PyTorch", "rnnfast before")]
    for f, bs in runs.values():  # warm-up
        f(bs[0])
    res = {k: [] for k in runs}
    for s in range(0, len(batches), args.chunk):
        for name, (f, bs) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for b in bs[s:s + args.chunk]:
                f(b)
            res[name].append((time.perf_counter() - t0, time.process_time() - c0))
    n = len(batches)
    print(f"{n} steps of each, rounds of {args.chunk}, {threads} thread(s)")
    r = {k: np.array(v) for k, v in res.items()}
    for k, v in r.items():
        print(f"  {k:16s} wall {v[:, 0].sum() / n * 1e3:7.1f} ms/step   CPU {v[:, 1].sum() / n * 1e3:7.1f} ms/step")
    for a, b in pairs:
        w = r[a][:, 0] / r[b][:, 0]
        print(f"  {a} / {b}: wall {r[a][:, 0].sum() / r[b][:, 0].sum():.2f}x (per round median {np.median(w):.2f}, "
              f"{w.min():.2f}-{w.max():.2f}), CPU {r[a][:, 1].sum() / r[b][:, 1].sum():.2f}x")


if __name__ == "__main__":
    main()
