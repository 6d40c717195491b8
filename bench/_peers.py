"""The framework side of the peer benchmarks: one worker process per framework, serving JSON requests.

``compare.py`` and ``grid.py`` start ``python bench/_peers.py NAME THREADS`` once per framework (through
``_runner.WorkerProc``). The worker builds each case from the weights and inputs of an ``.npz`` that the
driver wrote (PyTorch's keys and layout, converted to its own gate order), answers the check call with its
outputs (for training also the input gradient and the gradient of ``weight_hh_l0``), and times its calls
when asked. Protocol: one JSON object a line on stdin, one answer a line on the original stdout; the
libraries' own output goes to stderr (the driver's log file).

Requests: ``setup`` (impl, case, data, variant, check_out), ``warmup`` (impl, n, batch_s), ``round`` (impl,
iters), ``release``, ``quit``. A worker keeps one built case per ``impl`` name (several implementations of a
case share a framework's worker: rnnfast and rnnfast-dense, torch and torch-bf16...), until ``release``. The setup answer carries ``info`` (e.g. rnnfast's kernel plan) when the framework
reports one.
"""
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np

from _cases import GATES

FRAMEWORKS = ("rnnfast", "torch", "onnxruntime", "tensorflow")


def load_data(path):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    sd = {k[2:]: v for k, v in data.items() if k.startswith("w:")}
    return sd, data


# ----------------------------------------------------------------------------------------------- workers


class Bench:
    """One built case in a worker: ``run()`` is the timed call, ``check()`` returns arrays to compare,
    ``info`` is a JSON-able dict sent back with the setup answer (e.g. the kernel plan)."""

    def __init__(self, run, check, info=None, counters=None):
        self.run = run
        self.check = check
        self.info = info or {}
        self.counters = counters  # None, or a callable: a dict of event counts (rnnfast: its thread policy's)


def _plan(layer, x, lengths, training, n_threads):
    """``str(layer.plan_for(...))``, the kernel path rnnfast picks for this call; "-" where the layer has
    no ``plan_for``."""
    plan_for = getattr(layer, "plan_for", None)
    if plan_for is None:
        return "-"
    try:
        return str(plan_for(x, lengths=lengths, training=training, n_threads=n_threads))
    except Exception as e:  # report it beside the timings rather than lose the point
        return f"plan_for failed: {type(e).__name__}: {e}"


def _policy_stats(layer):
    """A callable returning the counters of ``layer``'s thread policy (rnnfast._planner.ThreadPolicy.stats:
    calls on several threads, busy ones, calls sent to one thread, back-offs...), or None without one."""
    pol = getattr(layer, "thread_policy", None)
    if getattr(pol, "stats", None) is None:
        return None
    return lambda: dict(pol.stats)


def _lstm_gru_blocks(a, order, G):
    """Reorder the G gate blocks along axis 0 of ``a`` (PyTorch layout)."""
    blocks = np.split(a, G, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def rnnfast_layer(case, sd):
    """The case's rnnfast layer (RNN: tanh) holding the weights ``sd`` (PyTorch's keys and layout): what the
    rnnfast worker times, and what the other workers convert with rnnfast.interop."""
    from rnnfast.nn import GRU, LSTM, RNN

    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[case["cell"]]
    layer = cls(case["I"], case["H"], num_layers=case["layers"], bidirectional=case["bidirectional"],
                dtype=np.float32, seed=0)
    layer.load_state_dict(sd)
    return layer


class RnnfastWorker:
    name = "rnnfast"

    def __init__(self, threads):
        import rnnfast

        self.rnnfast = rnnfast
        rnnfast.set_num_threads(threads)
        self.nth = threads

    def versions(self):
        return {"rnnfast": self.rnnfast.__version__, "numpy": np.__version__}

    def _build_step(self, layer, data):
        """The streaming-step case: one ``step`` call at a time, the state carried from call to call."""
        nth = self.nth
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

        return Bench(run, check, {"plan": _plan(layer, x_t[:, None], None, False, nth)}, _policy_stats(layer))

    def build(self, case, sd, data, variant):
        nth = self.nth
        layer = rnnfast_layer(case, sd)
        if variant in LOWP:  # an inference copy in that precision (rnnfast.quantize)
            layer = self.rnnfast.quantize(layer, variant)
        elif variant == "frozen":  # a read-only copy keeping its weight packs (rnnfast.nn.freeze)
            layer = self.rnnfast.nn.freeze(layer)
        if case["kind"] == "step":
            return self._build_step(layer, data)
        x, lengths = data["x"], data.get("lengths")
        if variant == "dense":
            x, lengths = data["x_dense"], None
        DH = case["H"] * (2 if case["bidirectional"] else 1)
        training = case["mode"] == "train"
        layer.train(training)
        info = {"plan": _plan(layer, x, lengths, training, nth)}
        if not training:
            def run():
                return layer.forward(x, lengths=lengths, n_threads=nth)

            def check():
                return {"out": run()[0]}

            return Bench(run, check, info, _policy_stats(layer))
        dout = np.ones((x.shape[0], x.shape[1], DH), np.float32)  # loss = sum of outputs

        def run():
            layer.forward(x, lengths=lengths, n_threads=nth)
            return layer.backward(dout, n_threads=nth)

        def check():
            layer.zero_grad()
            out, _ = layer.forward(x, lengths=lengths, n_threads=nth)
            dx, _ = layer.backward(dout, n_threads=nth)
            return {"out": out, "dx": dx, "dweight_hh_l0": layer.grads["weight_hh_l0"].copy()}

        return Bench(run, check, info, _policy_stats(layer))


#: The low-precision variants (compare.py --precision): rnnfast's quantized models; the peers' own.
LOWP = ("bf16", "int8")


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

    def _lowp(self, mod, variant):
        """(input dtype, autocast context or None) of a variant: "bf16" converts ``mod``'s weights to
        bfloat16 (``module.to(torch.bfloat16)``), "autocast" runs float32 weights under CPU bfloat16 autocast."""
        torch = self.torch
        if variant == "bf16":
            mod.to(torch.bfloat16)
            return torch.bfloat16, None
        if variant == "autocast":
            return torch.float32, torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.float32, None

    def _build_step(self, case, sd, data, variant=None):
        """The streaming-step case: one ``step`` call at a time, the state carried from call to call."""
        torch = self.torch
        cell, I, H = case["cell"], case["I"], case["H"]
        mod = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(I, H)
        mod.load_state_dict({k[:-3]: torch.from_numpy(v) for k, v in sd.items()})  # drop "_l0"
        mod.eval()
        dt, amp = self._lowp(mod, variant)
        x_t = torch.from_numpy(data["x_t"]).to(dt)
        z = torch.zeros(case["B"], H, dtype=dt)
        st = [(z, z) if cell == "lstm" else z]

        def one(x, s):
            if cell == "lstm":
                h, c = mod(x, s)
                return h, (h, c)
            h = mod(x, s)
            return h, h

        def run():
            with torch.inference_mode(), (amp or contextlib.nullcontext()):
                y, st[0] = one(x_t, st[0])
            return y

        def check():
            s, ys = ((z, z) if cell == "lstm" else z), []
            with torch.inference_mode(), (amp or contextlib.nullcontext()):
                for x in data["x_steps"]:
                    y, s = one(torch.from_numpy(x).to(dt), s)
                    ys.append(y.float().numpy())
            return {"ys": np.stack(ys)}

        return Bench(run, check)

    def build(self, case, sd, data, variant):
        torch = self.torch
        if case["kind"] == "step":
            return self._build_step(case, sd, data, variant)
        from rnnfast.interop import to_torch

        mod = to_torch(rnnfast_layer(case, sd))  # batch-first, the weights of sd
        dt, amp = self._lowp(mod, variant)
        x = torch.from_numpy(data["x"].copy()).to(dt)
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
                with torch.inference_mode(), (amp or contextlib.nullcontext()):
                    return fwd(x)

            def check():
                return {"out": run().float().numpy()}

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


def ort_options(threads):
    """ONNX Runtime session options: ``threads`` intra-op threads, one inter-op, sequential, every graph
    optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def ort_session(layer, so, int8=False, opset=17, **export):
    """An ONNX Runtime session of the rnnfast ``layer`` (``rnnfast.interop.to_onnx(layer, **export)``) with
    the options ``so`` (or a thread count): float32, or with ``int8`` the graph through ``quantize_dynamic``
    (per-tensor int8 weights, u8 activations quantized at run time: DynamicQuantizeLSTM for LSTM)."""
    import onnxruntime as ort

    from rnnfast.interop import to_onnx

    if isinstance(so, int):
        so = ort_options(so)
    model = to_onnx(layer.eval(), opset=opset, **export)
    if not int8:
        return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "int8.onnx")
        quantize_dynamic(model, path, weight_type=QuantType.QInt8)
        return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


class OrtWorker:
    """ONNX Runtime on the graph ``rnnfast.interop.to_onnx`` exports from the case's weights (the same
    graph users get: dynamic batch and time, ``lengths`` as ``sequence_lens`` for the varlen cases)."""

    name = "onnxruntime"
    opset = 17

    def __init__(self, threads):
        import onnx
        import onnxruntime as ort

        self.onnx, self.ort = onnx, ort
        self.so = ort_options(threads)

    def versions(self):
        return {"onnxruntime": self.ort.__version__, "onnx": self.onnx.__version__, "opset": self.opset,
                "providers": self.ort.get_available_providers()}

    def _session(self, case, sd, variant=None, **export):
        """An inference session of the case's layer (PyTorch's weights loaded into rnnfast's twin); variant
        "int8": the graph through ``quantize_dynamic``."""
        return ort_session(rnnfast_layer(case, sd), self.so, int8=variant == "int8", opset=self.opset, **export)

    def _build_step(self, case, sd, data, variant=None):
        """The streaming-step case: one ``step`` call at a time, the state carried from call to call."""
        lstm = case["cell"] == "lstm"
        sess = self._session(case, sd, variant, lengths=False, initial_state=True)
        z = np.zeros((1, case["B"], case["H"]), np.float32)
        x_t = data["x_t"][:, None, :]  # one step: (B, 1, I)
        st = [[z, z] if lstm else [z]]

        def feed(x, s):
            return {"x": x, "h0": s[0], "c0": s[1]} if lstm else {"x": x, "h0": s[0]}

        def run():
            st[0] = sess.run(None, feed(x_t, st[0]))[1:]  # (h_n[, c_n])
            return st[0][0]

        def check():
            s, ys = ([z, z] if lstm else [z]), []
            for x in data["x_steps"]:
                s = sess.run(None, feed(x[:, None, :], s))[1:]
                ys.append(s[0][0])
            return {"ys": np.stack(ys)}

        return Bench(run, check)

    def build(self, case, sd, data, variant):
        if case["mode"] == "train":
            raise Skip("ONNX Runtime has no training here (inference only)")
        if variant == "int8" and case["cell"] != "lstm":
            raise Skip("quantize_dynamic has no int8 GRU / RNN operator: the graph would stay float32")
        if case["kind"] == "step":
            return self._build_step(case, sd, data, variant)
        varlen = case["kind"] == "varlen"
        sess = self._session(case, sd, variant, lengths=varlen)
        feed = {"x": data["x"]}
        if varlen:
            feed["lengths"] = data["lengths"].astype(np.int32)

        def run():
            return sess.run(["y"], feed)

        def check():
            return {"out": run()[0]}

        return Bench(run, check)


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

    def _build_step(self, case, sd, data):
        """The streaming-step case: one ``step`` call at a time, the state carried from call to call."""
        from rnnfast.interop import keras_weights

        tf, keras = self.tf, self.keras
        cell, B, I, H = case["cell"], case["B"], case["I"], case["H"]
        c = keras.layers.LSTMCell(H) if cell == "lstm" else keras.layers.GRUCell(H, reset_after=True)
        c.build((B, I))
        c.set_weights(keras_weights(rnnfast_layer(case, sd)))  # one level, one direction: one cell's arrays

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

    def build(self, case, sd, data, variant):
        tf, keras = self.tf, self.keras
        keras.backend.clear_session()
        cell, B, I, H = case["cell"], case["B"], case["I"], case["H"]
        G = GATES[cell]
        if case["kind"] == "step":
            return self._build_step(case, sd, data)
        if case["kind"] == "varlen":
            raise Skip("not measured (Keras masking is not the same computation)")
        T, L, bid = case["T"], case["layers"], case["bidirectional"]
        layers = []
        for layer in range(L):
            def mk(go_backwards=False):
                if cell == "lstm":
                    return keras.layers.LSTM(H, return_sequences=True, go_backwards=go_backwards)
                if cell == "rnn":
                    return keras.layers.SimpleRNN(H, return_sequences=True, go_backwards=go_backwards)
                return keras.layers.GRU(H, return_sequences=True, reset_after=True, go_backwards=go_backwards)
            lay = keras.layers.Bidirectional(mk(), backward_layer=mk(True), merge_mode="concat") if bid else mk()
            layers.append(lay)
        y = tf.zeros((B, T, I))
        for lay in layers:
            y = lay(y)
        from rnnfast.interop import keras_weights
        from rnnfast.interop._gates import from_order

        arrays = iter(keras_weights(rnnfast_layer(case, sd)))  # level by level, forward then reverse
        for lay in layers:
            lay.set_weights([next(arrays) for _ in lay.get_weights()])
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
            dwhh = from_order(grads[2].numpy().T, "keras", cell)  # Keras (H, G*H) -> PyTorch (G*H, H)
            return {"out": out.numpy(), "dx": grads[0].numpy(), "dweight_hh_l0": dwhh}

        return Bench(run, check)


WORKERS = {"rnnfast": RnnfastWorker, "torch": TorchWorker, "onnxruntime": OrtWorker, "tensorflow": TfWorker}


class Skip(Exception):
    """This framework does not run this case (reported, not an error)."""


def _warmup(bench, n, batch_s):
    """``n`` timed calls, then calls back to back for ``batch_s`` s (at least one): the first calls of a fast
    case can pay for waking threads, and a round sized from them alone came out far shorter than --min-round.
    """
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        bench.run()
        times.append(time.perf_counter() - t0)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < batch_s or k == 0:
        bench.run()
        k += 1
    batch = (time.perf_counter() - t0) / k
    gc.collect()
    return {"ok": True, "times": times, "batch": batch}


def _round(run, n):
    """Seconds per call over ``n`` calls; like timeit, the collector is off while they are timed."""
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        return (time.perf_counter() - t0) / n
    finally:
        gc.enable()


def _timed_round(bench, n):
    """The ``round`` answer: seconds per call and, where the bench counts events, how many happened in the
    round (``counters``: e.g. rnnfast's calls whose barriers found the cores busy)."""
    before = bench.counters() if bench.counters else None
    ans = {"ok": True, "t": _round(bench.run, n)}
    if before is not None:
        ans["counters"] = {k: v - before.get(k, 0) for k, v in bench.counters().items()}
    return ans


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
    benches = {}  # impl name -> Bench
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        try:
            if cmd == "setup":
                benches.pop(req.get("impl"), None)
                gc.collect()
                sd, data = load_data(req["data"])
                try:
                    bench = w.build(req["case"], sd, data, req.get("variant"))
                except Skip as e:
                    send({"ok": True, "skip": str(e)})
                    continue
                benches[req.get("impl")] = bench
                arrays = bench.check()
                np.savez(req["check_out"], **arrays)
                send({"ok": True, "info": bench.info})
            elif cmd == "warmup":
                send(_warmup(benches[req.get("impl")], req["n"], req.get("batch_s", 0.0)))
            elif cmd == "round":
                send(_timed_round(benches[req.get("impl")], req["iters"]))
            elif cmd == "release":
                benches.clear()
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


if __name__ == "__main__":
    worker_main(sys.argv[1], int(sys.argv[2]))
