"""The training passes compiled in session 13, against the numpy passes they replace, in turn in one process
on the translation example's network (``examples/translate.py``'s data and model):

- Adam's step over all 21 parameters (1.66M values): ``Adam.step`` (rnnfast._kernels._optim.adam_step)
  against ``Optimizer.step`` (the numpy passes of ``Adam._update``; the results are bit-identical);
- the global norm's sums of squares over the gradients: the compiled pass against numpy's dot products;
- the softmax - onehot pass of ``Linear.cross_entropy`` on one 256-row block of logits (4858 classes);
- an embedding's gradient, 1,000 rows of 64 added at their ids: the compiled pass against np.add.at.

Reported: min and median ms per call over ``--rounds`` rounds of ``--calls`` calls.

    python bench/translate_kernels.py --threads 1
    python bench/translate_kernels.py --threads 2
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


def contenders(threads):
    """name -> a function of no arguments, on the untrained translation network with random gradients."""
    import rnnfast.nn.layers as L
    import rnnfast.train.clip as C
    from rnnfast._kernels import _optim
    from rnnfast.train.optimizers import Adam, Optimizer
    model = T.make_model(epochs=0, threads=threads).fit(*T.load_data(seed=0)["train_unk"]).model_
    rng = np.random.default_rng(0)
    grads = list(model.grads.values())
    for g in grads:
        g[...] = rng.standard_normal(g.shape) * 1e-3
    opt = Adam(model, lr=3e-3)
    C_out = model.decoder.out.out_features
    logits = rng.standard_normal((256, C_out)).astype(np.float32)
    block, target, scale = np.empty_like(logits), rng.integers(0, C_out, 256).astype(np.intp), np.float32(1 / 900)
    emb = model.encoder.embedding.grads["weight"]
    ids, rows = rng.integers(4, emb.shape[0], 1000).astype(np.intp), rng.standard_normal((1000, 64)).astype(emb.dtype)

    def softmax(f):
        def run():
            np.copyto(block, logits)
            f(block, target, scale)
        return run
    return {"Adam step, compiled": opt.step, "Adam step, numpy": lambda: Optimizer.step(opt),
            "sum of squares, compiled": lambda: [_optim.sum_squares(g, threads) for g in grads],
            "sum of squares, numpy": lambda: [C._sum_squares_np(g) for g in grads],
            "softmax pass, compiled": softmax(lambda b, t, s: _optim.softmax_xent_(b, t, float(s), threads)),
            "softmax pass, numpy": softmax(L._softmax_minus_onehot_np),
            "(copy of the logits)": softmax(lambda b, t, s: None),
            "embedding grad, compiled": lambda: _optim.add_rows_(emb, ids, rows),
            "embedding grad, np.add.at": lambda: np.add.at(emb, ids, rows)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="threads (default: the CPUs)")
    p.add_argument("--rounds", type=int, default=7, help="rounds (default: %(default)s)")
    p.add_argument("--calls", type=int, default=10, help="calls of each per round (default: %(default)s)")
    args = p.parse_args(argv)
    threads = setup_threads(args.threads)
    runs = contenders(threads)
    res = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f()
            res[k].append((time.perf_counter() - t0) / args.calls * 1e3)
    print(f"{threads} thread(s), {args.rounds} rounds of {args.calls} calls: ms per call")
    for k, v in res.items():
        print(f"  {k:26s} min {min(v):7.2f}   median {np.median(v):7.2f}")


if __name__ == "__main__":
    main()
