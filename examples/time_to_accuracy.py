#!/usr/bin/env python3
"""Time to accuracy, rnnfast against PyTorch, on two real tasks: the Shakespeare character LM and the
JapaneseVowels classifier.

For each task the same model is built in both libraries with the same sizes; PyTorch's initial weights
are copied into rnnfast; both use Adam with the same hyper-parameters and gradient clipping, see the
same batches in the same order, and run on the same number of threads. The two trainings run in
lockstep in one process (one step of rnnfast, then the same step of PyTorch), so that a busy moment on a
shared machine hits both alike; only the training steps are timed (forward, loss, backward, clipping,
optimizer step). Every few steps both are evaluated on the same held-out data (not timed). The time
each needs to reach the target (validation loss for the LM, test accuracy for the vowels) is reported,
with the ratio.

- Character LM: Embedding(76, 64) -> LSTM(256, 2 layers) -> Linear(76), 64 streams of 100-character
  chunks, stateful (truncated BPTT), Adam lr 2e-3, clip 1.0; validation on the first 50,000 characters of
  the validation plays, read statefully.
- Vowels: LSTM(12 -> 64) -> output at each utterance's last step -> Linear(9), batches of 16 utterances
  of similar length (PyTorch gets the padded batch and picks each utterance's last valid step, which is
  exact for a one-direction LSTM and faster than packing; rnnfast gets the lengths and skips the padding),
  Adam lr 3e-3, clip 1.0.

    python examples/time_to_accuracy.py
    python examples/time_to_accuracy.py --lm-target 2.0 --lm-seconds 240 --tasks lm
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import rnnfast as rf  # noqa: E402  (imported before torch: both then share one OpenMP runtime)
from rnnfast import nn  # noqa: E402
from rnnfast.train import Adam, CrossEntropy, bucket_batches, clip_grad_norm, pad_sequences  # noqa: E402

import char_lm  # noqa: E402
import vowels  # noqa: E402
from _common import Progress, data_or_exit, new_figure, print_report, save_figure, setup_threads  # noqa: E402


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _np(t):
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------- char LM
def lm_pair(V, embedding_dim=64, hidden_size=256, num_layers=2, seed=0):
    """The PyTorch model (torch.nn modules in a dict) and an rnnfast :class:`char_lm.CharLM` holding
    the same weights."""
    torch = _torch()
    torch.manual_seed(seed)
    t = {"emb": torch.nn.Embedding(V, embedding_dim),
         "lstm": torch.nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True),
         "lin": torch.nn.Linear(hidden_size, V)}
    r = char_lm.CharLM(V, embedding_dim, hidden_size, num_layers, seed=seed)
    for name in ("emb", "lstm", "lin"):
        getattr(r, name).load_state_dict({k: _np(v) for k, v in t[name].state_dict().items()})
    return t, r


def _torch_lm_eval(t, ids, n_streams=32, chunk=512):
    """As :func:`char_lm.evaluate`, in PyTorch."""
    torch = _torch()
    x, y = char_lm.make_streams(ids, min(n_streams, max(1, (len(ids) - 1) // 2)))
    total, n, state = 0.0, 0, None
    with torch.no_grad():
        for t0 in range(0, x.shape[1], chunk):
            xs = torch.from_numpy(x[:, t0:t0 + chunk])
            ys = torch.from_numpy(y[:, t0:t0 + chunk])
            out, state = t["lstm"](t["emb"](xs), state)
            logits = t["lin"](out)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1),
                                                             reduction="sum"))
            n += ys.numel()
    return total / n


def race_lm(data, target=1.9, seconds=120.0, batch_size=64, bptt=100, lr=2e-3, clip=1.0, eval_every=25,
            val_chars=50_000, embedding_dim=64, hidden_size=256, num_layers=2, seed=0, progress=True):
    """Train the char LM in both libraries in lockstep until both reach ``target`` (nats/char) or each has
    trained ``seconds``. Returns a dict per library (``times``, ``steps``, ``val`` curves, ``step_times``,
    ``time_to_target``) and the initial losses."""
    torch = _torch()
    V = len(data["chars"])
    t, r = lm_pair(V, embedding_dim, hidden_size, num_layers, seed)
    t_params = [p for m in t.values() for p in m.parameters()]
    t_opt = torch.optim.Adam(t_params, lr=lr)
    r_opt = Adam(r.model, lr=lr)
    r_grads = list(r.model.grads.values())
    ce = CrossEntropy()
    x, y = char_lm.make_streams(data["train"], batch_size)
    n_chunks = x.shape[1] // bptt
    val_ids = data["valid"][:val_chars]
    res = {lib: {"train_time": 0.0, "step_times": [], "val_time": [], "val_step": [], "val": [],
                 "time_to_target": None, "steps_to_target": None} for lib in ("rnnfast", "pytorch")}
    r_state = t_state = None
    bar = Progress(seconds=seconds, desc="char LM race", disable=not progress)
    step = 0
    first = {}
    while True:
        k = step % n_chunks
        if k == 0:
            r_state = t_state = None
        xs, ys = x[:, k * bptt:(k + 1) * bptt], y[:, k * bptt:(k + 1) * bptt]
        # rnnfast
        t0 = time.perf_counter()
        r.model.zero_grad()
        logits, r_state = r.forward(xs, r_state)
        r_loss, dlogits = ce(logits, ys)
        r.backward(dlogits)
        clip_grad_norm(r_grads, clip)
        r_opt.step()
        dt = time.perf_counter() - t0
        res["rnnfast"]["step_times"].append(dt)
        res["rnnfast"]["train_time"] += dt
        # PyTorch
        xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
        t0 = time.perf_counter()
        t_opt.zero_grad(set_to_none=True)
        out, t_state = t["lstm"](t["emb"](xt), t_state)
        t_state = tuple(s.detach() for s in t_state)
        t_loss = torch.nn.functional.cross_entropy(t["lin"](out).reshape(-1, V), yt.reshape(-1))
        t_loss.backward()
        torch.nn.utils.clip_grad_norm_(t_params, clip)
        t_opt.step()
        dt = time.perf_counter() - t0
        res["pytorch"]["step_times"].append(dt)
        res["pytorch"]["train_time"] += dt
        if step == 0:
            first = {"rnnfast": r_loss, "pytorch": t_loss.item()}
        step += 1
        bar.update(1, rnnfast_loss=float(r_loss), torch_loss=t_loss.item())
        over = min(res["rnnfast"]["train_time"], res["pytorch"]["train_time"]) >= seconds
        if step % eval_every == 0 or over:
            vals = {"rnnfast": char_lm.evaluate(r, val_ids), "pytorch": _torch_lm_eval(t, val_ids)}
            for lib, v in vals.items():
                d = res[lib]
                d["val_step"].append(step)
                d["val_time"].append(d["train_time"])
                d["val"].append(v)
                if d["time_to_target"] is None and v <= target:
                    d["time_to_target"], d["steps_to_target"] = d["train_time"], step
            bar.write(f"step {step}: validation loss rnnfast {vals['rnnfast']:.4f} after "
                      f"{res['rnnfast']['train_time']:.1f} s, PyTorch {vals['pytorch']:.4f} after "
                      f"{res['pytorch']['train_time']:.1f} s")
            if all(res[lib]["time_to_target"] is not None for lib in res) or over:
                break
    bar.close()
    return {"results": res, "initial_loss": first, "target": target, "steps": step}


# ---------------------------------------------------------------------------------------- vowels
class _LastStepModel:
    """rnnfast: LSTM -> LastStep -> Linear, with lengths."""

    def __init__(self, lstm, lin):
        self.model = nn.Sequential(lstm, nn.LastStep(), lin)

    def __call__(self, x, lengths):
        return self.model(x, lengths=lengths)


def vowels_pair(hidden_size=64, seed=0):
    torch = _torch()
    torch.manual_seed(seed)
    t = {"lstm": torch.nn.LSTM(12, hidden_size, batch_first=True), "lin": torch.nn.Linear(hidden_size, 9)}
    lstm, lin = nn.LSTM(12, hidden_size), nn.Linear(hidden_size, 9)
    lstm.load_state_dict({k: _np(v) for k, v in t["lstm"].state_dict().items()})
    lin.load_state_dict({k: _np(v) for k, v in t["lin"].state_dict().items()})
    return t, _LastStepModel(lstm, lin)


def _torch_vowels_logits(t, x, lengths):
    torch = _torch()
    out, _ = t["lstm"](torch.from_numpy(x))
    last = out[torch.arange(x.shape[0]), torch.from_numpy(lengths - 1)]
    return t["lin"](last)


def race_vowels(train_data, test_data, target=0.96, seconds=30.0, max_epochs=60, batch_size=16, lr=3e-3, clip=1.0,
                hidden_size=64, seed=0, progress=True):
    """Train the vowel classifier in both libraries in lockstep, evaluating test accuracy after every
    epoch, until both reach ``target`` or ``max_epochs`` / ``seconds`` run out."""
    torch = _torch()
    Xtr, ytr = train_data
    Xte, yte = test_data
    t, r = vowels_pair(hidden_size, seed)
    t_params = [p for m in t.values() for p in m.parameters()]
    t_opt = torch.optim.Adam(t_params, lr=lr)
    r_opt = Adam(r.model, lr=lr)
    r_grads = list(r.model.grads.values())
    ce = CrossEntropy()
    lengths = np.array([len(x) for x in Xtr])
    xte, lte = pad_sequences(Xte, dtype=np.float32)
    res = {lib: {"train_time": 0.0, "step_times": [], "val_time": [], "val_step": [], "val": [],
                 "time_to_target": None, "steps_to_target": None} for lib in ("rnnfast", "pytorch")}
    rng = np.random.default_rng(seed)
    bar = Progress(total=max_epochs, desc="vowels race", unit="epoch", disable=not progress)
    step = 0
    first = {}
    for epoch in range(max_epochs):
        for idx in bucket_batches(lengths, batch_size, rng, shuffle=True):
            xb, lb = pad_sequences([Xtr[i] for i in idx], dtype=np.float32)
            yb = ytr[idx]
            t0 = time.perf_counter()
            r.model.zero_grad()
            r_loss, dlogits = ce(r(xb, lb), yb)
            r.model.backward(dlogits)
            clip_grad_norm(r_grads, clip)
            r_opt.step()
            dt = time.perf_counter() - t0
            res["rnnfast"]["step_times"].append(dt)
            res["rnnfast"]["train_time"] += dt
            t0 = time.perf_counter()
            t_opt.zero_grad(set_to_none=True)
            t_loss = torch.nn.functional.cross_entropy(_torch_vowels_logits(t, xb, lb), torch.from_numpy(yb))
            t_loss.backward()
            torch.nn.utils.clip_grad_norm_(t_params, clip)
            t_opt.step()
            dt = time.perf_counter() - t0
            res["pytorch"]["step_times"].append(dt)
            res["pytorch"]["train_time"] += dt
            if step == 0:
                first = {"rnnfast": r_loss, "pytorch": t_loss.item()}
            step += 1
        r.model.eval()
        r_acc = float(np.mean(r(xte, lte).argmax(-1) == yte))
        r.model.train()
        with torch.no_grad():
            t_acc = float(np.mean(_np(_torch_vowels_logits(t, xte, lte)).argmax(-1) == yte))
        for lib, v in (("rnnfast", r_acc), ("pytorch", t_acc)):
            d = res[lib]
            d["val_step"].append(step)
            d["val_time"].append(d["train_time"])
            d["val"].append(v)
            if d["time_to_target"] is None and v >= target:
                d["time_to_target"], d["steps_to_target"] = d["train_time"], step
        bar.update(1, rnnfast_acc=r_acc, torch_acc=t_acc)
        if all(res[lib]["time_to_target"] is not None for lib in res):
            break
        if min(res["rnnfast"]["train_time"], res["pytorch"]["train_time"]) >= seconds:
            break
    bar.close()
    return {"results": res, "initial_loss": first, "target": target, "steps": step}


# ---------------------------------------------------------------------------------------- report
def summary_row(name, metric, race):
    res = race["results"]
    r, t = res["rnnfast"], res["pytorch"]
    rt, tt = r["time_to_target"], t["time_to_target"]
    fmt = (lambda v: f"{v:.2f}") if metric.startswith("val") else (lambda v: f"{v:.4f}")
    best = (min if metric.startswith("val") else max)
    ratio = f"{tt / rt:.2f}" if (rt and tt) else "n/a"
    return {
        "task": name, "target": f"{metric} {'<=' if metric.startswith('val') else '>='} {race['target']}",
        "rnnfast_s": f"{rt:.1f}" if rt else f"not reached ({fmt(best(r['val']))})",
        "pytorch_s": f"{tt:.1f}" if tt else f"not reached ({fmt(best(t['val']))})",
        "ratio": ratio,
        "rnnfast_step_ms": f"{1e3 * np.median(r['step_times']):.1f}",
        "pytorch_step_ms": f"{1e3 * np.median(t['step_times']):.1f}",
        "step_ratio": f"{np.median(t['step_times']) / np.median(r['step_times']):.2f}",
        "steps": f"{r['steps_to_target'] or '-'} / {t['steps_to_target'] or '-'}",
    }


def print_table(rows, threads):
    head = ["task", "target", "rnnfast (s)", "PyTorch (s)", "PyTorch / rnnfast", "median step rnnfast (ms)",
            "median step PyTorch (ms)", "step ratio", "steps to target (rf / pt)"]
    keys = ["task", "target", "rnnfast_s", "pytorch_s", "ratio", "rnnfast_step_ms", "pytorch_step_ms",
            "step_ratio", "steps"]
    print(f"\n== time to accuracy, {threads} threads each (training time only) ==")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def plot(races, path):
    fig, axes = new_figure(len(races), 1, size=(5.2, 3.8))
    if fig is None:
        return None
    for ax, (name, ylabel, race) in zip(axes, races):
        for lib, col in (("rnnfast", "C0"), ("pytorch", "C1")):
            d = race["results"][lib]
            ax.plot(d["val_time"], d["val"], "o-", ms=3, color=col, label="PyTorch" if lib == "pytorch" else lib)
        ax.axhline(race["target"], color="gray", ls=":", label=f"target {race['target']}")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Time to accuracy: the same model, weights and batches in rnnfast and PyTorch")
    return save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("lm", "vowels"), default=["lm", "vowels"])
    p.add_argument("--threads", type=int, default=None, help="threads for both libraries (default: rnnfast's "
                                                             "default, the CPUs this process may use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lm-target", type=float, default=1.9, help="validation nats/char (default: %(default)s)")
    p.add_argument("--lm-seconds", type=float, default=120.0,
                   help="training-time budget per library for the LM (default: %(default)s)")
    p.add_argument("--lm-eval-every", type=int, default=25, help="steps between validations (default: %(default)s)")
    p.add_argument("--vowels-target", type=float, default=0.96, help="test accuracy (default: %(default)s)")
    p.add_argument("--vowels-seconds", type=float, default=30.0, help="(default: %(default)s)")
    p.add_argument("--vowels-epochs", type=int, default=60, help="(default: %(default)s)")
    p.add_argument("--plot", default="time_to_accuracy.png", metavar="PNG")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    torch = _torch()
    if torch is None:
        print("error: PyTorch is not installed (pip install torch)", file=sys.stderr)
        raise SystemExit(2)
    threads = setup_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"rnnfast {rf.__version__}, PyTorch {torch.__version__}; {threads} threads each")
    rows, races = [], []
    if "lm" in args.tasks:
        data = data_or_exit(char_lm.load_data)
        race = race_lm(data, target=args.lm_target, seconds=args.lm_seconds, eval_every=args.lm_eval_every,
                       seed=args.seed, progress=not args.quiet)
        print(f"char LM: initial training loss rnnfast {race['initial_loss']['rnnfast']:.6f}, PyTorch "
              f"{race['initial_loss']['pytorch']:.6f} (same weights, same batch)")
        rows.append(summary_row("char LM (Shakespeare)", "val nats/char", race))
        races.append(("char LM: validation loss", "nats/char", race))
    if "vowels" in args.tasks:
        train_data, test_data = data_or_exit(vowels.load_data)
        race = race_vowels(train_data, test_data, target=args.vowels_target, seconds=args.vowels_seconds,
                           max_epochs=args.vowels_epochs, seed=args.seed, progress=not args.quiet)
        print(f"vowels: initial training loss rnnfast {race['initial_loss']['rnnfast']:.6f}, PyTorch "
              f"{race['initial_loss']['pytorch']:.6f}")
        rows.append(summary_row("JapaneseVowels", "test accuracy", race))
        races.append(("JapaneseVowels: test accuracy", "accuracy", race))
    print_table(rows, threads)
    png = plot(races, args.plot) if args.plot else None
    print_report("notes", [
        ("timing", "training steps only (forward, loss, backward, clip, Adam), the two libraries interleaved "
                   "step by step"),
        ("ratio", "PyTorch's time to the target / rnnfast's: above 1 means rnnfast got there first"),
        ("plot", (png or "(matplotlib not installed)") if args.plot else "(none)"),
    ])
    return {"rows": rows, "races": races, "plot": png}


if __name__ == "__main__":
    main()
