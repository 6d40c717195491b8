#!/usr/bin/env python3
"""rnnfast against its peers (PyTorch, ONNX Runtime, TensorFlow/Keras) on the same shapes, weights and threads.

Run from the repository root::

    python bench/compare.py                      # every case, every installed peer (several minutes)
    python bench/compare.py --quick              # fewer rounds, no large shapes (about a minute)
    python bench/compare.py --cases 'lstm-medium-*,gru-step' --frameworks rnnfast,torch --json out.json

How it works
------------
The driver (this process) starts one worker subprocess per framework (``python bench/compare.py --worker
NAME --threads N``) and talks to each over its stdin/stdout, one JSON object per line; a worker's own stdout
and stderr (library logs) go to a log file. For every case the driver:

1. draws the weights (PyTorch's layout and keys, uniform(-1/sqrt(H), 1/sqrt(H))) and the inputs with numpy
   from fixed seeds, writes them to an .npz in a temporary folder, and has each worker build its model from
   that file (converting the weights to its own gate order and layout);
2. has each worker run the case once on those inputs and return its outputs (for training also the input
   gradient and the gradient of ``weight_hh_l0``); they must agree with rnnfast's within ``--rtol``
   (max |peer - rnnfast| / max |rnnfast|, per array). A framework that disagrees is reported, not timed;
3. warms each framework up, sizes its rounds (``iters`` calls per round, at least ``--min-round`` seconds),
   then runs the rounds interleaved: round 1 of every framework, round 2 of every framework, ... (the order
   rotates from round to round; only one worker runs at a time, and after each round the driver pauses for
   the worker's spin-waiting pool threads to go to sleep: ``HANDOVER_GAP``, or ``--gap``, and then until
   the other workers and the driver itself use under a tenth of a core, up to 1 s: ``wait_quiet``). The garbage
   collector is off while a round runs (as in timeit). The figure is the median over rounds of the time
   per call; 11 rounds, or with ``--quick`` 5 (3 for cases with a call over 0.25 s).

The machine's large-SGEMM rate (numpy float32 2048x2048 @ 2048x2048, limited to the same thread count with
threadpoolctl when installed) is measured by the driver, while the workers are idle: 5 times at the start,
once after every case and 5 times at the end; "% SGEMM" divides each case's GFLOP/s by the median of all
of them (the range is printed: a wide one means the machine was busy).

FLOPs: 2*G*H*(I+H) per time step and sequence forward (G = 4 LSTM, 3 GRU), per layer and direction (the
second layer of a bidirectional stack reads 2H features); training (forward + backward) = 3x forward.
Variable-length cases count only the valid steps.

Threads: one count for all (default ``rnnfast.get_num_threads()``): rnnfast ``n_threads``,
``torch.set_num_threads`` (inter-op 1), ONNX Runtime ``intra_op_num_threads`` (inter-op 1, sequential
execution), TensorFlow ``tf.config.threading.set_intra_op_parallelism_threads`` (inter-op 1).

Cases (``--cases`` takes comma-separated names or shell patterns):

- ``{lstm,gru}-{small,medium,large,latency}-{infer,train}``: one layer, one direction, batch-first input of
  shape (B, T, I). ``infer``: eval-mode forward. ``train``: forward + backward with loss = sum of outputs,
  computing the input gradient and every weight and bias gradient. ONNX Runtime: inference only.
- ``lstm2bi-medium-{infer,train}``: LSTM, 2 layers, bidirectional, medium shape.
- ``{lstm,gru}-step``: streaming latency of one ``step`` call at B=1, I=128, H=256, the state carried from
  call to call. PyTorch: ``nn.LSTMCell`` / ``nn.GRUCell`` (its per-step API) under ``inference_mode``; ONNX
  Runtime: a T=1 graph with the state as inputs and outputs; TensorFlow: a Keras ``LSTMCell`` / ``GRUCell``
  in a ``tf.function``.
- ``{lstm,gru}-varlen-{infer,train}``: medium shape, lengths uniform in [T/4, T] (adjusted so that the
  total is a multiple of T). ``rnnfast``: ``forward(x, lengths=...)``; ``rnnfast-dense``: the same tokens
  packed densely into sum(lengths)/T full-length sequences (the cost of variable lengths is the ratio);
  ``torch-packed``: ``pack_padded_sequence(enforce_sorted=False)`` -> module -> ``pad_packed_sequence``;
  ``onnxruntime`` (infer): the ``sequence_lens`` input.

Layouts: every framework takes the batch-first (B, T, I) input and returns the batch-first (B, T, D*H)
output inside the timed call. ONNX's recurrent ops are time-major (ONNX Runtime does not implement
``layout=1``), so its graphs begin and end with Transpose nodes (timed, like rnnfast's own packing).
Keras layers are batch-first already.

Output: a markdown table on stdout, and with ``--json`` every raw round, the machine (lscpu model name,
cores), versions and the date.
"""
import argparse
import datetime
import fnmatch
import gc
import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

SHAPES = {  # name: (B, T, I, H)
    "small": (32, 50, 64, 128),
    "medium": (64, 100, 128, 256),
    "large": (128, 100, 512, 512),
    "latency": (1, 100, 128, 256),
}
STEP_SHAPE = (1, 128, 256)  # B, I, H of the streaming case
STEP_CHECK_STEPS = 16
GATES = {"lstm": 4, "gru": 3}
FRAMEWORKS = ("rnnfast", "torch", "onnxruntime", "tensorflow")
SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Pause after a framework's round before the next framework's: its pool threads spin-wait that long after a
# call before they sleep (measured: ONNX Runtime ~25 ms of one core, PyTorch's OpenMP a few ms).
HANDOVER_GAP = {"onnxruntime": 0.03, "torch": 0.01, "rnnfast": 0.003, "tensorflow": 0.003}
SLOW_CALL = 0.25  # with --quick, cases with a call slower than this (s) get 3 rounds

# ----------------------------------------------------------------------------------------------- cases


def _flop_seq(cell, I, H, layers, D, tokens):
    """Forward FLOPs of a stack run over ``tokens`` (sequence x time step) valid steps."""
    G = GATES[cell]
    f = 0.0
    for layer in range(layers):
        F = I if layer == 0 else D * H
        f += D * 2.0 * G * H * (F + H) * tokens
    return f


def build_cases(quick):
    """Every case, in run order: dicts with the shape, mode, FLOPs and the implementations to time."""
    cases = []

    def impl(name, fw=None, variant=None):
        return {"impl": name, "fw": fw or name, "variant": variant}

    seq_impls = {"infer": [impl("rnnfast"), impl("torch"), impl("onnxruntime"), impl("tensorflow")],
                 "train": [impl("rnnfast"), impl("torch"), impl("tensorflow")]}
    for cell in ("lstm", "gru"):
        for shape, (B, T, I, H) in SHAPES.items():
            if quick and shape == "large":
                continue
            for mode in ("infer", "train"):
                f = _flop_seq(cell, I, H, 1, 1, B * T) * (3 if mode == "train" else 1)
                cases.append(dict(name=f"{cell}-{shape}-{mode}", kind="seq", cell=cell, shape=shape, mode=mode,
                                  B=B, T=T, I=I, H=H, layers=1, bidirectional=False, flop=f,
                                  impls=seq_impls[mode]))
    B, T, I, H = SHAPES["medium"]
    for mode in ("infer", "train"):
        f = _flop_seq("lstm", I, H, 2, 2, B * T) * (3 if mode == "train" else 1)
        cases.append(dict(name=f"lstm2bi-medium-{mode}", kind="seq", cell="lstm", shape="medium", mode=mode,
                          B=B, T=T, I=I, H=H, layers=2, bidirectional=True, flop=f, impls=seq_impls[mode]))
    Bs, Is, Hs = STEP_SHAPE
    for cell in ("lstm", "gru"):
        cases.append(dict(name=f"{cell}-step", kind="step", cell=cell, shape="step", mode="infer", B=Bs, T=1,
                          I=Is, H=Hs, layers=1, bidirectional=False,
                          flop=_flop_seq(cell, Is, Hs, 1, 1, Bs),
                          impls=[impl("rnnfast"), impl("torch"), impl("onnxruntime"), impl("tensorflow")]))
    for cell in ("lstm", "gru"):
        for mode in ("infer", "train"):
            impls = [impl("rnnfast"), impl("rnnfast-dense", "rnnfast", "dense"),
                     impl("torch-packed", "torch", "packed")]
            if mode == "infer":
                impls.append(impl("onnxruntime"))
            cases.append(dict(name=f"{cell}-varlen-{mode}", kind="varlen", cell=cell, shape="medium", mode=mode,
                              B=B, T=T, I=I, H=H, layers=1, bidirectional=False, flop=None, impls=impls))
    return cases


def make_data(case, path):
    """Weights (PyTorch keys and layout) and inputs of one case, from fixed seeds, saved to ``path``.

    Fills in the token count and FLOPs of variable-length cases.
    """
    cell, I, H, L = case["cell"], case["I"], case["H"], case["layers"]
    G, D = GATES[cell], (2 if case["bidirectional"] else 1)
    rng = np.random.default_rng(42)
    k = 1.0 / np.sqrt(H)
    arrays = {}
    for layer in range(L):
        F = I if layer == 0 else D * H
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            arrays["w:weight_ih" + sfx] = rng.uniform(-k, k, (G * H, F)).astype(np.float32)
            arrays["w:weight_hh" + sfx] = rng.uniform(-k, k, (G * H, H)).astype(np.float32)
            arrays["w:bias_ih" + sfx] = rng.uniform(-k, k, (G * H,)).astype(np.float32)
            arrays["w:bias_hh" + sfx] = rng.uniform(-k, k, (G * H,)).astype(np.float32)
    xr = np.random.default_rng(1234)
    if case["kind"] == "step":
        arrays["x_t"] = xr.standard_normal((case["B"], I)).astype(np.float32)
        arrays["x_steps"] = xr.standard_normal((STEP_CHECK_STEPS, case["B"], I)).astype(np.float32)
    else:
        B, T = case["B"], case["T"]
        x = xr.standard_normal((B, T, I)).astype(np.float32)
        arrays["x"] = x
        if case["kind"] == "varlen":
            lengths = xr.integers(T // 4, T, endpoint=True, size=B)
            while lengths.sum() % T:  # make the total a multiple of T: exactly the same tokens, dense
                lengths[np.argmax(lengths)] -= 1
            assert lengths.sum() % T == 0 and lengths.min() >= T // 4
            tokens = np.concatenate([x[b, :lengths[b]] for b in range(B)])
            arrays["lengths"] = lengths.astype(np.int64)
            arrays["x_dense"] = np.ascontiguousarray(tokens.reshape(-1, T, I))
            case["tokens"] = int(lengths.sum())
            case["dense_batch"] = int(lengths.sum()) // T
            case["flop"] = _flop_seq(cell, I, H, L, D, case["tokens"]) * (3 if case["mode"] == "train" else 1)
    np.savez(path, **arrays)


def load_data(path):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    sd = {k[2:]: v for k, v in data.items() if k.startswith("w:")}
    return sd, data


# ----------------------------------------------------------------------------------------------- workers


class Bench:
    """One built case in a worker: ``run()`` is the timed call, ``check()`` returns arrays to compare."""

    def __init__(self, run, check):
        self.run = run
        self.check = check


def _lstm_gru_blocks(a, order, G):
    """Reorder the G gate blocks along axis 0 of ``a`` (PyTorch layout)."""
    blocks = np.split(a, G, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


class RnnfastWorker:
    name = "rnnfast"

    def __init__(self, threads):
        import rnnfast
        from rnnfast.nn import GRU, LSTM

        self.rnnfast = rnnfast
        self.cls = {"lstm": LSTM, "gru": GRU}
        rnnfast.set_num_threads(threads)
        self.nth = threads

    def versions(self):
        return {"rnnfast": self.rnnfast.__version__, "numpy": np.__version__}

    def build(self, case, sd, data, variant):
        nth = self.nth
        layer = self.cls[case["cell"]](case["I"], case["H"], num_layers=case["layers"],
                                       bidirectional=case["bidirectional"], dtype=np.float32, seed=0)
        layer.load_state_dict(sd)
        if case["kind"] == "step":
            layer.eval()
            x_t = data["x_t"]
            st = [None]

            def run():
                y, st[0] = layer.step(x_t, st[0], n_threads=nth)
                return y

            def check():
                s, ys = None, []
                for x in data["x_steps"]:
                    y, s = layer.step(x, s, n_threads=nth)
                    ys.append(y)
                return {"ys": np.stack(ys)}

            return Bench(run, check)
        x, lengths = data["x"], data.get("lengths")
        if variant == "dense":
            x, lengths = data["x_dense"], None
        DH = case["H"] * (2 if case["bidirectional"] else 1)
        if case["mode"] == "infer":
            layer.eval()

            def run():
                return layer.forward(x, lengths=lengths, n_threads=nth)

            def check():
                return {"out": run()[0]}

            return Bench(run, check)
        layer.train()
        dout = np.ones((x.shape[0], x.shape[1], DH), np.float32)  # loss = sum of outputs

        def run():
            layer.forward(x, lengths=lengths, n_threads=nth)
            return layer.backward(dout, n_threads=nth)

        def check():
            layer.zero_grad()
            out, _ = layer.forward(x, lengths=lengths, n_threads=nth)
            dx, _ = layer.backward(dout, n_threads=nth)
            return {"out": out, "dx": dx, "dweight_hh_l0": layer.grads["weight_hh_l0"].copy()}

        return Bench(run, check)


class TorchWorker:
    name = "torch"

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass

    def versions(self):
        t = self.torch
        return {"torch": t.__version__, "mkldnn": bool(t.backends.mkldnn.is_available()),
                "threads": t.get_num_threads(), "parallel_info": t.__config__.parallel_info().splitlines()[:6]}

    def build(self, case, sd, data, variant):
        torch = self.torch
        cell, I, H = case["cell"], case["I"], case["H"]
        if case["kind"] == "step":
            mod = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(I, H)
            mod.load_state_dict({k[:-3]: torch.from_numpy(v) for k, v in sd.items()})  # drop "_l0"
            mod.eval()
            x_t = torch.from_numpy(data["x_t"])
            z = torch.zeros(case["B"], H)
            st = [(z, z) if cell == "lstm" else z]

            def one(x, s):
                if cell == "lstm":
                    h, c = mod(x, s)
                    return h, (h, c)
                h = mod(x, s)
                return h, h

            def run():
                with torch.inference_mode():
                    y, st[0] = one(x_t, st[0])
                return y

            def check():
                s, ys = ((z, z) if cell == "lstm" else z), []
                with torch.inference_mode():
                    for x in data["x_steps"]:
                        y, s = one(torch.from_numpy(x), s)
                        ys.append(y.numpy())
                return {"ys": np.stack(ys)}

            return Bench(run, check)
        mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
            I, H, num_layers=case["layers"], bidirectional=case["bidirectional"], batch_first=True)
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        x = torch.from_numpy(data["x"].copy())
        T = case["T"]
        if variant == "packed":
            lengths = torch.from_numpy(data["lengths"])
            pack = torch.nn.utils.rnn.pack_padded_sequence
            unpack = torch.nn.utils.rnn.pad_packed_sequence

            def fwd(inp):
                y, _ = mod(pack(inp, lengths, batch_first=True, enforce_sorted=False))
                return unpack(y, batch_first=True, total_length=T)[0]
        else:
            def fwd(inp):
                return mod(inp)[0]

        if case["mode"] == "infer":
            mod.eval()

            def run():
                with torch.inference_mode():
                    return fwd(x)

            def check():
                return {"out": run().numpy()}

            return Bench(run, check)
        mod.train()
        x.requires_grad_(True)  # rnnfast's backward computes dx too

        def run():
            mod.zero_grad(set_to_none=True)
            x.grad = None
            fwd(x).sum().backward()
            return x.grad

        def check():
            mod.zero_grad(set_to_none=True)
            x.grad = None
            out = fwd(x)
            out.sum().backward()
            return {"out": out.detach().numpy(), "dx": x.grad.numpy(),
                    "dweight_hh_l0": mod.weight_hh_l0.grad.numpy()}

        return Bench(run, check)


_ONNX_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}  # PyTorch (i,f,g,o)/(r,z,n) -> ONNX (i,o,f,c)/(z,r,h)


class OrtWorker:
    name = "onnxruntime"
    opset = 17

    def __init__(self, threads):
        import onnx
        import onnxruntime as ort

        self.onnx, self.ort = onnx, ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.so = so

    def versions(self):
        return {"onnxruntime": self.ort.__version__, "onnx": self.onnx.__version__, "opset": self.opset,
                "providers": self.ort.get_available_providers()}

    def _weights(self, case, sd, layer):
        G, order = GATES[case["cell"]], _ONNX_ORDER[case["cell"]]
        D = 2 if case["bidirectional"] else 1
        W, R, Bb = [], [], []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            W.append(_lstm_gru_blocks(sd["weight_ih" + sfx], order, G))
            R.append(_lstm_gru_blocks(sd["weight_hh" + sfx], order, G))
            Bb.append(np.concatenate([_lstm_gru_blocks(sd["bias_ih" + sfx], order, G),
                                      _lstm_gru_blocks(sd["bias_hh" + sfx], order, G)]))
        return np.stack(W), np.stack(R), np.stack(Bb)

    def _rnn_node(self, case, inits, layer, X, outputs, extra_inputs=("", "", "")):
        """A LSTM/GRU node of one layer; ``extra_inputs``: (sequence_lens, initial_h, initial_c)."""
        h = self.onnx.helper
        from onnx import numpy_helper

        W, R, Bb = self._weights(case, self._sd, layer)
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        for n, a in zip(names, (W, R, Bb)):
            inits.append(numpy_helper.from_array(a, n))
        seq_lens, h0, c0 = extra_inputs
        attrs = dict(hidden_size=case["H"], direction="bidirectional" if case["bidirectional"] else "forward")
        if case["cell"] == "lstm":
            ins = [X] + names + [seq_lens, h0, c0]
            op = "LSTM"
        else:
            ins = [X] + names + [seq_lens, h0]
            op = "GRU"
            attrs["linear_before_reset"] = 1
        while ins and ins[-1] == "":
            ins.pop()
        return h.make_node(op, ins, outputs, name=f"{op}{layer}", **attrs)

    def _session(self, nodes, inits, inputs, outputs):
        h = self.onnx.helper
        graph = h.make_graph(nodes, "rnn", inputs, outputs, initializer=inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", self.opset)])
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        return self.ort.InferenceSession(model.SerializeToString(), sess_options=self.so,
                                         providers=["CPUExecutionProvider"])

    def build(self, case, sd, data, variant):
        if case["mode"] == "train":
            raise Skip("ONNX Runtime has no training here (inference only)")
        h = self.onnx.helper
        from onnx import TensorProto, numpy_helper

        self._sd = sd
        cell, B, I, H = case["cell"], case["B"], case["I"], case["H"]
        f32 = TensorProto.FLOAT
        nodes, inits = [], []
        if case["kind"] == "step":
            inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes0"))
            nodes.append(h.make_node("Unsqueeze", ["x", "axes0"], ["X"]))
            inputs = [h.make_tensor_value_info("x", f32, [B, I]), h.make_tensor_value_info("h0", f32, [1, B, H])]
            outputs = [h.make_tensor_value_info("h1", f32, [1, B, H])]
            if cell == "lstm":
                inputs.append(h.make_tensor_value_info("c0", f32, [1, B, H]))
                outputs.append(h.make_tensor_value_info("c1", f32, [1, B, H]))
                nodes.append(self._rnn_node(case, inits, 0, "X", ["", "h1", "c1"], ("", "h0", "c0")))
            else:
                nodes.append(self._rnn_node(case, inits, 0, "X", ["", "h1"], ("", "h0", "")))
            sess = self._session(nodes, inits, inputs, outputs)
            z = np.zeros((1, B, H), np.float32)
            x_t = data["x_t"]
            st = [[z, z] if cell == "lstm" else [z]]

            def feed(x, s):
                d = {"x": x, "h0": s[0]}
                if cell == "lstm":
                    d["c0"] = s[1]
                return d

            def run():
                st[0] = sess.run(None, feed(x_t, st[0]))
                return st[0][0]

            def check():
                s, ys = ([z, z] if cell == "lstm" else [z]), []
                for x in data["x_steps"]:
                    s = sess.run(None, feed(x, s))
                    ys.append(s[0][0])
                return {"ys": np.stack(ys)}

            return Bench(run, check)

        T, L = case["T"], case["layers"]
        D = 2 if case["bidirectional"] else 1
        inputs = [h.make_tensor_value_info("x", f32, [B, T, I])]
        seq_lens = ""
        if case["kind"] == "varlen":
            inputs.append(h.make_tensor_value_info("lens", TensorProto.INT32, [B]))
            seq_lens = "lens"
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape3"))
        nodes.append(h.make_node("Transpose", ["x"], ["X0"], perm=[1, 0, 2]))  # (B,T,I) -> (T,B,I)
        X = "X0"
        for layer in range(L):
            Y = f"Y{layer}"  # (T, D, B, H)
            nodes.append(self._rnn_node(case, inits, layer, X, [Y], (seq_lens, "", "")))
            if layer + 1 < L:  # (T, D, B, H) -> (T, B, D*H)
                nodes.append(h.make_node("Transpose", [Y], [Y + "t"], perm=[0, 2, 1, 3]))
                nodes.append(h.make_node("Reshape", [Y + "t", "shape3"], [f"X{layer + 1}"]))
                X = f"X{layer + 1}"
            else:  # (T, D, B, H) -> (B, T, D*H)
                nodes.append(h.make_node("Transpose", [Y], [Y + "t"], perm=[2, 0, 1, 3]))
                nodes.append(h.make_node("Reshape", [Y + "t", "shape3"], ["out"]))
        outputs = [h.make_tensor_value_info("out", f32, [B, T, D * H])]
        sess = self._session(nodes, inits, inputs, outputs)
        feed = {"x": data["x"]}
        if seq_lens:
            feed["lens"] = data["lengths"].astype(np.int32)

        def run():
            return sess.run(None, feed)

        def check():
            return {"out": run()[0]}

        return Bench(run, check)


_KERAS_ORDER = {"lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}  # PyTorch (i,f,g,o)/(r,z,n) -> Keras (i,f,c,o)/(z,r,h)


class TfWorker:
    name = "tensorflow"

    def __init__(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        self.tf, self.keras = tf, keras

    def versions(self):
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__,
                "keras_backend": self.keras.backend.backend(),
                "intra_op": self.tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": self.tf.config.threading.get_inter_op_parallelism_threads()}

    @staticmethod
    def _keras_weights(cell, sd, sfx):
        G, order = GATES[cell], _KERAS_ORDER[cell]
        kernel = _lstm_gru_blocks(sd["weight_ih" + sfx], order, G).T
        rec = _lstm_gru_blocks(sd["weight_hh" + sfx], order, G).T
        b_ih = _lstm_gru_blocks(sd["bias_ih" + sfx], order, G)
        b_hh = _lstm_gru_blocks(sd["bias_hh" + sfx], order, G)
        bias = b_ih + b_hh if cell == "lstm" else np.stack([b_ih, b_hh])  # GRU reset_after: (2, 3H)
        return [np.ascontiguousarray(kernel), np.ascontiguousarray(rec), bias]

    def build(self, case, sd, data, variant):
        tf, keras = self.tf, self.keras
        keras.backend.clear_session()
        cell, B, I, H = case["cell"], case["B"], case["I"], case["H"]
        G = GATES[cell]
        if case["kind"] == "step":
            c = keras.layers.LSTMCell(H) if cell == "lstm" else keras.layers.GRUCell(H, reset_after=True)
            c.build((B, I))
            c.set_weights(self._keras_weights(cell, sd, "_l0"))

            @tf.function(reduce_retracing=True)
            def one(x, s):
                y, s2 = c(x, s, training=False)
                return y, (list(s2) if isinstance(s2, (list, tuple)) else [s2])

            z = tf.zeros((B, H))
            s0 = [z, z] if cell == "lstm" else [z]
            x_t = tf.constant(data["x_t"])
            st = [s0]

            def run():
                y, st[0] = one(x_t, st[0])
                return y

            def check():
                s, ys = s0, []
                for x in data["x_steps"]:
                    y, s = one(tf.constant(x), s)
                    ys.append(y.numpy())
                return {"ys": np.stack(ys)}

            return Bench(run, check)
        if case["kind"] == "varlen":
            raise Skip("not measured (Keras masking is not the same computation)")
        T, L, bid = case["T"], case["layers"], case["bidirectional"]
        layers = []
        for layer in range(L):
            def mk(go_backwards=False):
                if cell == "lstm":
                    return keras.layers.LSTM(H, return_sequences=True, go_backwards=go_backwards)
                return keras.layers.GRU(H, return_sequences=True, reset_after=True, go_backwards=go_backwards)
            lay = keras.layers.Bidirectional(mk(), backward_layer=mk(True), merge_mode="concat") if bid else mk()
            layers.append(lay)
        y = tf.zeros((B, T, I))
        for lay in layers:
            y = lay(y)
        for layer, lay in enumerate(layers):
            w = self._keras_weights(cell, sd, f"_l{layer}")
            if bid:
                w = w + self._keras_weights(cell, sd, f"_l{layer}_reverse")
            lay.set_weights(w)
        variables = [v for lay in layers for v in lay.trainable_variables]
        rec0 = variables[1]
        assert tuple(rec0.shape) == (H, G * H), rec0.shape
        x = tf.constant(data["x"])

        def model(inp, training):
            for lay in layers:
                inp = lay(inp, training=training)
            return inp

        if case["mode"] == "infer":
            @tf.function
            def infer(inp):
                return model(inp, False)

            def run():
                return infer(x)

            def check():
                return {"out": run().numpy()}

            return Bench(run, check)

        @tf.function
        def train(inp):
            with tf.GradientTape() as tape:
                tape.watch(inp)
                out = model(inp, True)
                loss = tf.reduce_sum(out)
            return out, tape.gradient(loss, [inp] + variables)

        def run():
            return train(x)

        def check():
            out, grads = run()
            inv = np.argsort(_KERAS_ORDER[cell])
            dwhh = _lstm_gru_blocks(grads[2].numpy().T, inv, G)  # Keras (H, G*H) -> PyTorch (G*H, H)
            return {"out": out.numpy(), "dx": grads[0].numpy(), "dweight_hh_l0": dwhh}

        return Bench(run, check)


WORKERS = {"rnnfast": RnnfastWorker, "torch": TorchWorker, "onnxruntime": OrtWorker, "tensorflow": TfWorker}


class Skip(Exception):
    """This framework does not run this case (reported, not an error)."""


def worker_main(name, threads):
    """Serve one framework: read JSON requests on stdin, answer one JSON line each on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the libraries print goes to the log, not into the protocol
    sys.stdout = sys.stderr

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        w = WORKERS[name](threads)
        send({"ok": True, "versions": w.versions(), "pid": os.getpid()})
    except Exception as e:  # not installed, or broken
        send({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return
    bench = None
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        try:
            if cmd == "setup":
                bench = None
                gc.collect()
                sd, data = load_data(req["data"])
                try:
                    bench = w.build(req["case"], sd, data, req.get("variant"))
                except Skip as e:
                    send({"ok": True, "skip": str(e)})
                    continue
                arrays = bench.check()
                np.savez(req["check_out"], **arrays)
                send({"ok": True})
            elif cmd == "warmup":
                times = []
                for _ in range(req["n"]):
                    t0 = time.perf_counter()
                    bench.run()
                    times.append(time.perf_counter() - t0)
                # then back to back for a while: the first calls of a fast case can pay for waking
                # threads, and a round sized from them alone came out far shorter than --min-round
                k, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < req.get("batch_s", 0.0) or k == 0:
                    bench.run()
                    k += 1
                batch = (time.perf_counter() - t0) / k
                gc.collect()
                send({"ok": True, "times": times, "batch": batch})
            elif cmd == "round":  # like timeit: the collector is off while the calls are timed
                n = req["iters"]
                run = bench.run
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    for _ in range(n):
                        run()
                    t = (time.perf_counter() - t0) / n
                finally:
                    gc.enable()
                send({"ok": True, "t": t})
            elif cmd == "release":
                bench = None
                gc.collect()
                send({"ok": True})
            elif cmd == "quit":
                send({"ok": True})
                break
            else:
                send({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:
            traceback.print_exc()
            send({"ok": False, "error": f"{type(e).__name__}: {e}"})


# ----------------------------------------------------------------------------------------------- driver


def _cpu_ns(pids):
    """CPU time (ns) used so far by every thread of ``pids`` and of this process but the calling thread
    (Linux /proc/<pid>/task/<tid>/schedstat); None where that is not available."""
    me = threading.get_native_id()
    total = 0
    for pid in list(pids) + [os.getpid()]:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            if pid == os.getpid():
                return None
            continue
        for tid in tids:
            if pid == os.getpid() and int(tid) == me:
                continue
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def wait_quiet(other_pids, window=0.002, busy=0.1, limit=1.0):
    """Before a round: wait (up to ``limit`` s) until the other workers and the driver use under
    ``busy`` of one core over ``window`` s. A framework's pool threads spin for a while after its
    calls (ONNX Runtime's and PyTorch's for milliseconds, numpy's OpenBLAS after the SGEMM probe for
    longer), and a round that starts beside them measures that contention, not the framework; the
    fixed handover gap alone left some rounds starting beside spinning threads."""
    t_end = time.perf_counter() + limit
    last = _cpu_ns(other_pids)
    if last is None:
        return
    while time.perf_counter() < t_end:
        time.sleep(window)
        now = _cpu_ns(other_pids)
        if now - last < busy * window * 1e9:
            return
        last = now


class WorkerProc:
    """A worker subprocess and a reader thread that queues its answers."""

    def __init__(self, name, threads, logdir, timeout):
        self.name, self.timeout = name, timeout
        self.log_path = os.path.join(logdir, f"worker-{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", name, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.q = queue.Queue()
        self.dead = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line)
        self.q.put(None)

    def log_tail(self, n=15):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def recv(self):
        try:
            line = self.q.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise WorkerDied(f"no answer in {self.timeout} s (killed)")
        if line is None:
            rc = self.proc.wait()
            raise WorkerDied(f"worker exited with code {rc}; log tail:\n{self.log_tail()}")
        return json.loads(line)

    def call(self, **req):
        if self.dead:
            raise WorkerDied(self.dead)
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return self.recv()
        except (BrokenPipeError, WorkerDied) as e:
            if not isinstance(e, WorkerDied):
                time.sleep(0.1)
                e = f"worker gone (exit code {self.proc.poll()}); log tail:\n{self.log_tail()}"
            self.dead = str(e)
            raise WorkerDied(self.dead) from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc.poll() is None and not self.dead:
            try:
                self.call(cmd="quit")
            except WorkerDied:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


class WorkerDied(RuntimeError):
    pass


_SGEMM_MATS = {}


def sgemm_rate(threads, reps=5, n=2048):
    """GFLOP/s of numpy float32 n x n @ n x n (median of ``reps``), limited to ``threads`` when possible."""
    if n not in _SGEMM_MATS:
        rng = np.random.default_rng(0)
        _SGEMM_MATS[n] = (rng.standard_normal((n, n), dtype=np.float32),
                          rng.standard_normal((n, n), dtype=np.float32), np.empty((n, n), np.float32))
    a, b, c = _SGEMM_MATS[n]
    info = {"n": n, "reps": reps}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        ctx = threadpool_limits(limits=threads, user_api="blas")
        info["threads"] = threads
        info["limited_by"] = "threadpoolctl"
    except ImportError:
        import contextlib

        ctx = contextlib.nullcontext()
        threadpool_info = None
        info["threads"] = None
        info["limited_by"] = "none (threadpoolctl not installed: numpy's BLAS ran with its own thread count)"
    with ctx:
        if threadpool_info is not None:
            blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
            info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                   "filepath")} for d in blas]
        np.matmul(a, b, out=c)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    info["times"] = times
    info["gflops"] = [2.0 * n ** 3 / t / 1e9 for t in times]
    return info


def machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "numpy": np.__version__,
            "os_cpu_count": os.cpu_count()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                     "L2 cache", "L3 cache", "Hypervisor vendor"):
                info["lscpu " + k] = v
        info["avx512"] = " avx512f " in f" {out} "
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return math.inf
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    d = np.max(np.abs(a - ref)) if ref.size else 0.0
    if not np.isfinite(d):
        return math.inf
    return float(d / scale) if scale > 0 else float(d)


def fmt_ms(s):
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def select_cases(cases, patterns):
    if not patterns:
        return cases
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c["name"], p) for p in pats)]
    unknown = [p for p in pats if not any(fnmatch.fnmatchcase(c["name"], p) for c in cases)]
    if unknown:
        sys.exit(f"--cases: no case matches {unknown}; cases are: {', '.join(c['name'] for c in cases)}")
    return chosen


def run_case(case, workers, tmp, args, log):
    """Check, calibrate and time one case. Returns its JSON record."""
    data_path = os.path.join(tmp, "data.npz")
    make_data(case, data_path)
    rec = {k: v for k, v in case.items() if k != "impls"}
    rec["impls"] = {}
    ref = None
    live = []
    for spec in case["impls"]:
        name, fw = spec["impl"], spec["fw"]
        r = rec["impls"][name] = {"framework": fw, "variant": spec["variant"]}
        w = workers.get(fw)
        if w is None:
            r.update(status="skipped", reason="framework not selected or not available")
            continue
        if w.dead:
            r.update(status="error", reason=f"worker died earlier: {w.dead}")
            continue
        check_path = os.path.join(tmp, f"check-{name}.npz")
        t_setup = time.perf_counter()
        try:
            ans = w.call(cmd="setup", case={k: v for k, v in case.items() if k != "impls"}, data=data_path,
                         variant=spec["variant"], check_out=check_path)
        except WorkerDied as e:
            r.update(status="error", reason=str(e))
            log(f"  {name}: worker died: {e}")
            continue
        r["setup_s"] = time.perf_counter() - t_setup  # build + the check call (the first call)
        if not ans.get("ok"):
            r.update(status="error", reason=ans.get("error"))
            log(f"  {name}: error: {ans.get('error')}")
            continue
        if "skip" in ans:
            r.update(status="skipped", reason=ans["skip"])
            continue
        with np.load(check_path) as z:
            arrays = {k: z[k] for k in z.files}
        os.remove(check_path)
        if name == "rnnfast":
            ref = arrays
            r["check"] = "reference"
        elif spec["variant"] == "dense":
            r["check"] = "reference (rnnfast on other inputs)"
        elif ref is None:
            r.update(status="unchecked", reason="no rnnfast reference to compare with")
            log(f"  {name}: not timed: no rnnfast reference")
            continue
        else:
            errs = {k: rel_err(arrays.get(k, np.empty(0)), v) for k, v in ref.items()}
            worst = max(errs.values()) if errs else math.inf
            r["check"] = {"rel_err": errs, "max": worst, "rtol": args.rtol}
            if not worst <= args.rtol:
                r.update(status="disagrees", reason=f"max rel. error {worst:.2e} > {args.rtol:g} ({errs})")
                log(f"  {name}: DISAGREES with rnnfast: {errs}")
                continue
        live.append((name, w, r))
    # warm up and size the rounds
    for name, w, r in list(live):
        try:
            ans = w.call(cmd="warmup", n=max(1, args.warmup), batch_s=min(0.2, args.min_round / 2))
            if not ans.get("ok"):
                raise WorkerDied(ans.get("error"))
        except WorkerDied as e:
            r.update(status="error", reason=str(e))
            live.remove((name, w, r))
            continue
        # the check call before was the first (tracing, allocating) call
        t = min(min(ans["times"]), ans.get("batch", float("inf")))
        r["warmup_s"] = ans["times"]
        r["iters"] = max(1, math.ceil(args.min_round / max(t, 1e-7)))
        r["rounds_s"] = []
    n_rounds = args.rounds
    if args.quick and not args.rounds_given and any(min(r["warmup_s"]) > SLOW_CALL for _, _, r in live):
        n_rounds = 3
    rec["rounds"] = n_rounds
    # interleaved rounds
    prev = None
    for k in range(n_rounds):
        order = live[k % len(live):] + live[:k % len(live)] if live else []
        for name, w, r in order:
            if r.get("status") == "error":
                continue
            if prev is not None:
                time.sleep(args.gap if args.gap is not None else HANDOVER_GAP.get(prev, 0.01))
            wait_quiet([x.proc.pid for _, x, _ in live if x is not w])
            prev = w.name
            try:
                ans = w.call(cmd="round", iters=r["iters"])
                if not ans.get("ok"):
                    raise WorkerDied(ans.get("error"))
            except WorkerDied as e:
                r.update(status="error", reason=str(e))
                continue
            r["rounds_s"].append(ans["t"])
    for name, w, r in live:
        if r.get("status") == "error":
            continue
        rounds = r["rounds_s"]
        r["status"] = "ok"
        r["median_s"] = float(np.median(rounds))
        r["min_s"] = float(np.min(rounds))
        r["iqr_s"] = float(np.subtract(*np.percentile(rounds, [75, 25])))
        flop = case["flop"]  # rnnfast-dense runs exactly the same number of tokens
        r["flop"] = flop
        r["gflops"] = flop / r["median_s"] / 1e9
    for name, w, r in live:
        try:
            w.call(cmd="release")
        except WorkerDied:
            pass
    base = rec["impls"].get("rnnfast", {}).get("median_s")
    for name, r in rec["impls"].items():
        if base and r.get("median_s"):
            r["ratio_vs_rnnfast"] = r["median_s"] / base
    return rec


def markdown(results, sgemm_gflops, sgemm_note):
    lines = ["| case | framework | ms (median) | ratio peer/rnnfast | GFLOP/s | % of SGEMM | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for rec in results:
        for name, r in rec["impls"].items():
            st = r.get("status")
            if st == "ok":
                ratio = r.get("ratio_vs_rnnfast")
                note = ""
                if isinstance(r.get("check"), dict):
                    note = f"agrees ({r['check']['max']:.0e})"
                if r["iqr_s"] > 0.25 * r["median_s"]:
                    note += (", " if note else "") + f"noisy: IQR {100 * r['iqr_s'] / r['median_s']:.0f}%"
                lines.append(
                    f"| {rec['name']} | {name} | {fmt_ms(r['median_s'])} | "
                    f"{'' if name == 'rnnfast' or ratio is None else f'{ratio:.2f}'} | {r['gflops']:.1f} | "
                    f"{100 * r['gflops'] / sgemm_gflops:.0f}% | {note} |")
            elif st in ("disagrees", "error", "unchecked"):
                reason = str(r.get("reason", "")).splitlines()[0][:120]
                lines.append(f"| {rec['name']} | {name} | {st.upper()} |  |  |  | {reason} |")
            # skipped cases are listed in the JSON only
    lines.append("")
    lines.append(f"SGEMM: {sgemm_gflops:.0f} GFLOP/s ({sgemm_note}). Ratio above 1: rnnfast is faster.")
    return "\n".join(lines)


def driver(args):
    t_start = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    threads = args.threads
    if threads is None:
        try:
            import rnnfast

            threads = rnnfast.get_num_threads()
        except ImportError:
            threads = len(os.sched_getaffinity(0))
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        sys.exit(f"--frameworks: unknown {bad}; known: {', '.join(FRAMEWORKS)}")
    if "rnnfast" not in frameworks:
        frameworks.insert(0, "rnnfast")  # the reference for the checks and the ratios
    cases = select_cases(build_cases(args.quick), args.cases)
    args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = 5 if args.quick else 11
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.min_round is None:
        args.min_round = 0.02 if args.quick else 0.05
    env_warn = [f"{k}={os.environ[k]}" for k in SLOW_BLAS_ENV if k in os.environ]
    if env_warn:
        log("WARNING: " + ", ".join(env_warn) + " set: numpy's OpenBLAS (the SGEMM rate) and scipy's may run "
            "slower; see bench/README.md (env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py)")
    machine = machine_info()
    log(f"machine: {machine.get('lscpu Model name', '?')}, {machine.get('affinity_cpus', '?')} CPUs; "
        f"threads = {threads}; {len(cases)} cases, {args.rounds} rounds")
    sg0 = sgemm_rate(threads)
    log(f"SGEMM 2048^3: {np.median(sg0['gflops']):.0f} GFLOP/s ({sg0['limited_by']})")

    tmp = tempfile.mkdtemp(prefix="rnnfast-compare-")
    workers, versions = {}, {}
    sg_mid = []
    try:
        for fw in frameworks:
            w = WorkerProc(fw, threads, tmp, args.timeout)
            try:
                hello = w.recv()
            except WorkerDied as e:
                hello = {"ok": False, "error": str(e)}
            if hello.get("ok"):
                workers[fw] = w
                versions[fw] = hello["versions"]
                log(f"{fw}: {hello['versions']}")
            else:
                versions[fw] = {"unavailable": hello.get("error")}
                log(f"{fw}: UNAVAILABLE, skipped: {hello.get('error')}")
                w.close()
        if "rnnfast" not in workers:
            sys.exit("rnnfast itself could not start; see " + tmp)
        results = []
        for case in cases:
            t0 = time.perf_counter()
            rec = run_case(case, workers, tmp, args, log)
            rec["wall_s"] = time.perf_counter() - t0
            results.append(rec)
            time.sleep(0.03)  # spinning pool threads of the last round stop
            sg_mid.append(sgemm_rate(threads, reps=1)["gflops"][0])  # the SGEMM rate through the run
            summary = ", ".join(f"{n} {fmt_ms(r['median_s'])} ms" if r.get("status") == "ok" else f"{n} {r.get('status')}"
                                for n, r in rec["impls"].items())
            log(f"{case['name']} ({rec['wall_s']:.1f} s): {summary}")
    finally:
        for w in workers.values():
            w.close()
    sg1 = sgemm_rate(threads)
    all_g = sg0["gflops"] + sg_mid + sg1["gflops"]
    sgemm = float(np.median(all_g))
    note = (f"numpy float32 2048x2048 @ 2048x2048, median of {len(all_g)}: 5 at the start, one after each case, "
            f"5 at the end (range {min(all_g):.0f}-{max(all_g):.0f}); "
            + (f"{threads} threads via threadpoolctl" if sg0["limited_by"] == "threadpoolctl"
               else "threads NOT limited (threadpoolctl not installed)"))
    wall = time.perf_counter() - t_start
    table = markdown(results, sgemm, note)
    header = (f"rnnfast {versions.get('rnnfast', {}).get('rnnfast', '?')} ({machine.get('git', '?')}) vs peers; "
              f"{machine.get('lscpu Model name', '?')} ({machine.get('affinity_cpus', '?')} CPUs), {threads} threads, "
              f"float32, batch-first; "
              f"median of {args.rounds} interleaved rounds"
              + (f" (3 for calls over {SLOW_CALL} s)" if args.quick and not args.rounds_given else "")
              + f"; run took {wall:.0f} s")
    vers = "; ".join(f"{k} " + (", ".join(f"{a}={b}" for a, b in v.items() if a in (k, 'onnx', 'keras'))
                               if "unavailable" not in v else f"unavailable ({v['unavailable']})")
                     for k, v in versions.items())
    print(header)
    print(f"Versions: {vers}")
    if env_warn:
        print("WARNING: " + ", ".join(env_warn) + " were set (slower numpy BLAS)")
    print()
    print(table)
    skipped = [(rec["name"], n, r.get("reason")) for rec in results for n, r in rec["impls"].items()
               if r.get("status") == "skipped" and r.get("reason") != "framework not selected or not available"]
    if skipped and args.verbose:
        print("\nSkipped: " + "; ".join(f"{c} {n}: {why}" for c, n, why in skipped))
    if args.json:
        out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "argv": sys.argv, "threads": threads, "rounds": args.rounds, "min_round_s": args.min_round,
               "warmup": args.warmup, "gap_s": args.gap, "rtol": args.rtol, "quick": args.quick,
               "wall_s": wall, "machine": machine, "env_warnings": env_warn, "versions": versions,
               "sgemm": {"start": sg0, "between_cases_gflops": sg_mid, "end": sg1, "gflops_median": sgemm,
                         "note": note},
               "cases": results, "table_markdown": table}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
        log(f"wrote {args.json}")
    if args.keep_logs:
        log(f"worker logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 rounds of >= 20 ms (3 for calls over 0.25 s), no "
                   "large shapes (about a minute)")
    p.add_argument("--threads", type=int, default=None, help="threads for every framework "
                   "(default rnnfast.get_num_threads())")
    p.add_argument("--json", default=None, help="write every raw round, versions and the machine here")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of %(default)s (rnnfast always runs: it is the reference)")
    p.add_argument("--cases", default=None, help="comma-separated case names or shell patterns, e.g. "
                   "'lstm-*-infer,gru-step' (default: all)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per framework (default 11, quick 5)")
    p.add_argument("--min-round", type=float, default=None,
                   help="seconds a round lasts at least, by repeating the call (default 0.05, quick 0.02)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls after the check call and before "
                   "the rounds; the fastest sizes the rounds (default 2, quick 1)")
    p.add_argument("--gap", type=float, default=None, help="pause in s between two rounds, for the previous "
                   "worker's threads to stop spinning (default per framework: 30 ms after ONNX Runtime, 10 ms "
                   "after PyTorch, 3 ms after the others)")
    p.add_argument("--rtol", type=float, default=1e-4, help="max |peer - rnnfast| / max |rnnfast| (1e-4)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for a worker's answer")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the worker logs")
    p.add_argument("--verbose", action="store_true", help="also list the skipped framework/case pairs")
    p.add_argument("--list", action="store_true", help="list the cases (with --quick: those of a quick run)")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        for c in select_cases(build_cases(args.quick), args.cases):
            print(f"{c['name']:<22} B={c['B']} T={c['T']} I={c['I']} H={c['H']} layers={c['layers']} "
                  f"bidirectional={c['bidirectional']}: {', '.join(i['impl'] for i in c['impls'])}")
    elif args.worker:
        worker_main(args.worker, args.threads or 1)
    else:
        driver(args)


if __name__ == "__main__":
    main()
