"""rnnfast.quantize: the bfloat16 inference models, every instruction path this machine runs.

The accuracy contract (rnnfast.quantize's docstring) is checked against the float32 layers; the kernels'
arithmetic against a numpy model of the same bfloat16 maths (weights and each step's x_t, h_{t-1} rounded
to bfloat16, float32 sums, float64 activations here).
"""
import importlib
import os
import pickle

import numpy as np
import pytest

import rnnfast as rf
from rnnfast._kernels import _lowp
from rnnfast.io import FormatError

Q = importlib.import_module("rnnfast.quantize")  # (rf.quantize is the function)

PATHS = [p for p in ("portable", "avx512_bf16", "amx") if _lowp.bf16_path_available(_lowp.BF16_PATHS[p])]
ALL_PATHS = ("portable", "avx512_bf16", "amx")
LAYERS = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}
# the accuracy contract at T <= 100 on random layers (rnnfast/quantize.py's docstring)
CONTRACT_RMS, CONTRACT_MAX = 4e-3, 3e-2


@pytest.fixture(params=ALL_PATHS)
def path(request):
    """Each bfloat16 path forced in turn (skipped where this machine lacks its instructions)."""
    if request.param not in PATHS:
        pytest.skip(f"this machine cannot run the {request.param} path")
    Q.set_bf16_path(request.param)
    yield request.param
    Q.set_bf16_path(None)


def _x(B, T, F, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, F)).astype(np.float32)


def _bf16(a):
    return Q._from_bf16(Q._to_bf16(np.asarray(a, np.float32))).astype(np.float64)


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _bf16_reference(mode, sd, x, relu=False):
    """One layer, one direction, full lengths: the bfloat16 maths in numpy (products of rounded values
    summed in float64, activations exact). Returns (out, h_n)."""
    w_ih, w_hh = _bf16(sd["weight_ih_l0"]), _bf16(sd["weight_hh_l0"])
    b_ih, b_hh = sd["bias_ih_l0"].astype(np.float64), sd["bias_hh_l0"].astype(np.float64)
    B, T, _ = x.shape
    H = w_hh.shape[1]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    out = np.empty((B, T, H))
    for t in range(T):
        gx = _bf16(x[:, t]) @ w_ih.T + b_ih
        gh = _bf16(h) @ w_hh.T + b_hh
        if mode == "lstm":
            i, f, g, o = np.split(gx + gh, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        elif mode == "gru":
            r = _sig(gx[:, :H] + gh[:, :H])
            z = _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
        else:
            a = gx + gh
            h = np.maximum(a, 0) if relu else np.tanh(a)
        out[:, t] = h
    return out, h


def _err(a, b):
    e = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.abs(e).max()), float(np.sqrt(np.mean(e * e)))


# ---------------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("B", [1, 5, 16, 37])
def test_paths_compute_the_bf16_maths(path, mode, B):
    layer = LAYERS[mode](40, 48, seed=1).eval()  # H = 48: a partial 32-column tail in the packed K
    x = _x(B, 9, 40, seed=B)
    ref, h_ref = _bf16_reference(mode, layer.state_dict(), x)
    out, h_n = rf.quantize(layer, "bf16")(x, n_threads=2)
    h_n = h_n[0] if mode == "lstm" else h_n
    # float32 sums in another order: an h_{t-1} may round to the neighbouring bfloat16 (2^-8 relative),
    # so the bound is a few such flips, far below the gap to float32 (test_accuracy_contract)
    mx, rms = _err(out, ref)
    assert mx < 2e-3 and rms < 1e-4, (mx, rms)
    assert _err(h_n[0], h_ref)[0] < 2e-3


def test_pack_and_unpack_are_the_rounded_weights():
    layer = rf.nn.GRU(37, 21, seed=3)
    q = rf.quantize(layer, "bf16")
    sd, dq = layer.state_dict(), q.dequantized()
    for k in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(dq[k], _bf16(sd[k]).astype(np.float32))
    np.testing.assert_array_equal(dq["bias_hh_l0"], sd["bias_hh_l0"])


def test_rounding_is_to_nearest_even():
    # ties go to the even neighbour; past the largest bfloat16 (3.3895e38) a value rounds to inf
    v = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -1.5 - 2 ** -9, np.inf, -0.0, 3.4e38], np.float32)
    got = Q._from_bf16(Q._to_bf16(v))
    np.testing.assert_array_equal(got, np.array([1.0, 1.0, 1.0 + 2 ** -6, -1.5, np.inf, -0.0, np.inf], np.float32))
    assert np.isnan(Q._from_bf16(Q._to_bf16(np.array([np.nan], np.float32))))[0]


# ---------------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_accuracy_contract(path, mode):
    """Max and RMS error against float32 at T = 100, PyTorch's initialisation, inputs of unit scale."""
    layer = LAYERS[mode](64, 128, seed=7).eval()
    x = _x(8, 100, 64, seed=2)
    ref, _ = layer(x)
    out, _ = rf.quantize(layer, "bf16")(x)
    mx, rms = _err(out, ref)
    assert rms < CONTRACT_RMS and mx < CONTRACT_MAX, (mx, rms)
    assert rms > 1e-6  # (bfloat16 really ran)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("B, threads", [(1, 2), (6, 2), (20, 1), (40, 2), (70, 2)])
def test_lengths_bidirectional_stacked(path, mode, B, threads):
    layer = LAYERS[mode](12, 24, num_layers=2, bidirectional=True, seed=B).eval()
    x = _x(B, 11, 12, seed=B)
    lengths = np.random.default_rng(B).integers(1, 12, size=B)
    lengths[0] = 11
    ref, st_ref = layer(x, lengths=lengths)
    q = rf.quantize(layer, "bf16")
    out, st = q(x, lengths=lengths, n_threads=threads)
    assert out.shape == ref.shape
    mx, rms = _err(out, ref)
    assert mx < CONTRACT_MAX and rms < CONTRACT_RMS, (mx, rms)
    pad = np.arange(11)[None, :] >= lengths[:, None]
    assert np.all(out[pad] == 0)
    h, h_ref = (st[0], st_ref[0]) if mode == "lstm" else (st, st_ref)
    assert h.shape == h_ref.shape and _err(h, h_ref)[0] < CONTRACT_MAX
    if mode == "lstm":
        assert _err(st[1], st_ref[1])[0] < 2 * CONTRACT_MAX
    # each sequence alone, at its own length: the same results
    for b in (0, B - 1):
        alone, _ = q(x[b:b + 1, :lengths[b]])
        assert _err(alone[0], out[b, :lengths[b]])[0] < 2e-3


def test_paths_agree(mode="lstm"):
    layer = rf.nn.LSTM(30, 50, bidirectional=True, seed=4).eval()
    q = rf.quantize(layer, "bf16")
    x = _x(24, 20, 30)
    outs = {}
    for p in PATHS:
        Q.set_bf16_path(p)
        outs[p] = q(x)[0]
    Q.set_bf16_path(None)
    for p in PATHS:
        assert _err(outs[p], outs["portable"])[0] < 2e-3


def test_initial_states_and_unbatched_and_time_major(path):
    layer = rf.nn.LSTM(6, 10, num_layers=2, batch_first=False, seed=0).eval()
    q = rf.quantize(layer, "bf16")
    x = np.ascontiguousarray(_x(3, 7, 6).swapaxes(0, 1))  # (T=7, B=3, F)
    h0 = np.random.default_rng(1).standard_normal((2, 3, 10)).astype(np.float32)
    c0 = np.random.default_rng(2).standard_normal((2, 3, 10)).astype(np.float32)
    ref, (h_ref, c_ref) = layer(x, (h0, c0))
    out, (h, c) = q(x, (h0, c0))
    assert _err(out, ref)[0] < CONTRACT_MAX and _err(c, c_ref)[0] < CONTRACT_MAX
    one, (h1, _) = q(x[:, 1], (h0[:, 1], c0[:, 1]))  # unbatched (T, F)
    assert one.shape == (7, 10) and h1.shape == (2, 10)
    assert _err(one, out[:, 1])[0] < 2e-3


# ---------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("B", [1, 3])
def test_step_equals_the_whole_sequence(path, mode, B):
    q = rf.quantize(LAYERS[mode](9, 33, num_layers=2, seed=5), "bf16")
    x = _x(B, 6, 9)
    out, st_full = q(x)
    state = None
    for t in range(6):
        y, state = q.step(x[:, t], state)
        np.testing.assert_allclose(y, out[:, t], rtol=0, atol=2e-3)
    h, h_full = (state[0], st_full[0]) if mode == "lstm" else (state, st_full)
    np.testing.assert_allclose(h, h_full, rtol=0, atol=2e-3)
    y1, s1 = q.step(x[0, 0])
    assert y1.shape == (33,) and (s1[0] if mode == "lstm" else s1).shape == (2, 33)
    with pytest.raises(ValueError, match="unidirectional"):
        rf.quantize(LAYERS[mode](9, 4, bidirectional=True), "bf16").step(x[:, 0])


# ---------------------------------------------------------------------------------------- models and files
def _fitted(cls=rf.LSTM, **kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 10, 4)).astype(np.float32)
    y = np.where(X[:, :, 0].sum(1) > 0, "up", "down")
    return cls(hidden_size=16, epochs=3, verbose=0, random_state=0, **kw).fit(X, y), X, y


def test_estimator_predicts_and_streams():
    est, X, y = _fitted()
    q = rf.quantize(est, "bf16")
    assert q is not est and q.precision_ == "bf16" and not hasattr(est, "precision_")
    np.testing.assert_allclose(q.predict_proba(X), est.predict_proba(X), atol=2e-3)
    assert np.mean(q.predict(X) == est.predict(X)) >= 0.97
    assert 0 <= q.score(X, y) <= 1
    state = None
    for t in range(10):
        p, state = q.predict_proba_step(X[:4, t], state)
    np.testing.assert_allclose(p, q.predict_proba(X[:4]), atol=2e-3)


def test_estimator_save_load_round_trip(tmp_path):
    est, X, _ = _fitted(rf.GRU, bidirectional=True)
    q = rf.quantize(est, "bf16")
    f = tmp_path / "q.rnnfast"
    q.save(f)
    back = rf.load(f)
    assert type(back) is type(est) and back.precision_ == "bf16"
    np.testing.assert_array_equal(back.predict_proba(X), q.predict_proba(X))
    with rf.io.open_archive(f) as ar:
        assert ar.precision == "bf16"
        assert ar.stored["model/0.layer.weight_ih_l0" if "model/0.layer.weight_ih_l0" in ar.stored
                         else "model/0.weight_ih_l0"].dtype == np.uint16
        assert all(d.dtype != np.uint16 for d in ar.declared.values())
        assert not any(k.startswith("optimizer/") for k in ar.stored)
    est.save(tmp_path / "f.rnnfast", include_optimizer=False)
    assert os.path.getsize(f) < os.path.getsize(tmp_path / "f.rnnfast")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("cls", [rf.LSTM, rf.GRU])
def test_pickled_quantized_estimator_keeps_its_precision(cls, precision):
    """(pickling used to rebuild the float32 network: int8 failed, bf16 silently predicted in float32)"""
    est, X, _ = _fitted(cls, num_layers=2)
    q = rf.quantize(est, precision)
    back = pickle.loads(pickle.dumps(q))
    assert back.precision_ == precision
    np.testing.assert_array_equal(back.predict_proba(X), q.predict_proba(X))
    with pytest.raises(Q.InferenceOnlyError):
        back.partial_fit(X[:4], _fitted(cls)[2][:4])


def test_sequential_save_load_round_trip(tmp_path, path):
    seq = rf.nn.Sequential(rf.nn.Embedding(30, 8, padding_idx=0), rf.nn.LSTM(8, 16, num_layers=2),
                           rf.nn.LastStep(), rf.nn.Linear(16, 3)).eval()
    q = rf.quantize(seq, "bf16")
    tokens = np.random.default_rng(0).integers(1, 30, size=(5, 7))
    f = tmp_path / "s.rnnfast"
    q.save(f)
    back = rf.load(f)
    assert isinstance(back, Q.QuantizedSequential) and back.precision == "bf16"
    np.testing.assert_array_equal(back(tokens), q(tokens))
    assert _err(q(tokens), seq(tokens))[0] < CONTRACT_MAX


def test_damaged_quantized_files_are_refused(tmp_path):
    q = rf.quantize(rf.nn.Sequential(rf.nn.RNN(3, 5)).eval(), "bf16")
    f = tmp_path / "s.rnnfast"
    q.save(f)
    import json
    import zipfile
    with zipfile.ZipFile(f) as z:
        index = json.loads(z.read("rnnfast.json"))
        members = {n: z.read(n) for n in z.namelist()}

    def rewrite(ix, name):
        g = tmp_path / name
        with zipfile.ZipFile(g, "w") as z:
            for n, data in members.items():
                z.writestr(n, json.dumps(ix) if n == "rnnfast.json" else data)
        return g

    with pytest.raises(FormatError, match="precision"):
        rf.load(rewrite({**index, "precision": "fp4"}, "a.rnnfast"))
    with pytest.raises(FormatError, match="precision"):
        rf.load(rewrite({**index, "precision": 3}, "b.rnnfast"))
    plain = dict(index)
    del plain["precision"]
    with pytest.raises(FormatError):  # uint16 weights without the precision: not float32
        rf.load(rewrite(plain, "c.rnnfast"))


# ---------------------------------------------------------------------------------------- refusals
def test_training_is_refused():
    layer = rf.quantize(rf.nn.LSTM(3, 4), "bf16")
    x = _x(2, 3, 3)
    layer(x)
    for call in (lambda: layer.backward(np.ones((2, 3, 4), np.float32)), lambda: layer.train(),
                 lambda: layer.load_state_dict({})):
        with pytest.raises(Q.InferenceOnlyError, match="inference only"):
            call()
    assert isinstance(Q.InferenceOnlyError("x"), TypeError)
    assert layer.train(False) is layer and layer.named_parameters() == []
    seq = rf.quantize(rf.nn.Sequential(rf.nn.GRU(3, 4), rf.nn.LastStep()), "bf16")
    with pytest.raises(Q.InferenceOnlyError):
        seq.train()
    est, X, y = _fitted(rf.RNN)
    q = rf.quantize(est, "bf16")
    for call in (lambda: q.fit(X, y), lambda: q.partial_fit(X, y)):
        with pytest.raises(Q.InferenceOnlyError, match="fit"):
            call()


def test_bad_input():
    layer = rf.nn.LSTM(3, 4)
    with pytest.raises(ValueError, match="unknown precision"):
        rf.quantize(layer, "fp8")
    with pytest.raises(TypeError, match="precision"):
        rf.quantize(layer, 16)
    with pytest.raises(TypeError, match="quantize takes"):
        rf.quantize(object(), "bf16")
    with pytest.raises(ValueError, match="already quantized"):
        rf.quantize(rf.quantize(layer, "bf16"), "bf16")
    with pytest.raises(ValueError, match="proj_size"):
        rf.quantize(rf.nn.LSTM(3, 4, proj_size=2), "bf16")
    with pytest.raises(ValueError, match="layer_norm"):
        rf.quantize(rf.nn.GRU(3, 4, layer_norm=True), "bf16")
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        rf.quantize(rf.LSTM(), "bf16")
    q = rf.quantize(layer, "bf16")
    with pytest.raises(ValueError, match="features"):
        q(_x(2, 3, 5))
    with pytest.raises(ValueError, match="lengths"):
        q(_x(2, 3, 3), lengths=[4, 1])
    with pytest.raises(TypeError):
        q(_x(2, 3, 3), hx=np.zeros((1, 2, 4)))  # LSTM wants (h, c)
    with pytest.raises(ValueError, match="path"):
        Q.set_bf16_path("sse")
    with pytest.raises(TypeError):
        Q.register_backend("bf16")


def test_cpu_features_and_paths():
    feats = _lowp.cpu_features()
    assert isinstance(feats, frozenset) and feats <= {"avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_bf16",
                                                       "amx_int8"}
    assert "portable" in PATHS
    assert Q.get_bf16_path(64) in PATHS and Q.get_bf16_path(1) in PATHS
    assert ("avx512_bf16" in PATHS) == ("avx512_bf16" in feats)


def test_token_language_model_generates():
    rng = np.random.default_rng(0)
    X = rng.integers(1, 20, size=(40, 12))
    est = rf.LSTM(hidden_size=16, epochs=1, verbose=0, random_state=0, return_sequences=True).fit(
        X, np.roll(X, -1, axis=1))
    q = rf.quantize(est, "bf16")
    out = q.generate([3, 4, 5], 6, random_state=0)
    assert out.shape == (6,) and np.all((out >= 1) & (out < 20))
    assert np.mean(q.predict(X) == est.predict(X)) > 0.95


class _NumpyBackend(Q.Backend):
    """A float32 backend in numpy over packed rows only (strided_io False): the Backend / Direction contract
    as a new precision (int8) sees it, checked against the float layers."""

    name = "test_f32"

    def pack(self, cell, w_ih, w_hh, b, bhn):
        return (cell, w_ih.copy(), w_hh.copy(), b.copy(), bhn.copy())

    def unpack(self, packed):
        return packed[1], packed[2]

    def run(self, packed, d, ws):
        cell, w_ih, w_hh, b, bhn = packed
        H = w_hh.shape[1]
        assert d.x_strides[1] == 0 and d.y_strides[1] == 0 and d.x.shape[1] == w_ih.shape[1]
        T = len(d.bs)
        for i in range(T):
            t = T - 1 - i if d.reverse else i
            n, r0 = d.bs[t], d.off[t]
            x, h = d.x[r0:r0 + n].astype(np.float64), d.h[:n].astype(np.float64)
            gx, gh = x @ w_ih.T, h @ w_hh.T
            if cell == 1:
                i_, f, g, o = np.split(gx + gh + b, 4, axis=1)
                c = _sig(f) * d.c[:n] + _sig(i_) * np.tanh(g)
                h = _sig(o) * np.tanh(c)
                d.c[:n] = c
            elif cell == 2:
                a = gx + b
                r, z = _sig(a[:, :H] + gh[:, :H]), _sig(a[:, H:2 * H] + gh[:, H:2 * H])
                h = (1 - z) * np.tanh(a[:, 2 * H:] + r * (gh[:, 2 * H:] + bhn)) + z * h
            else:
                h = np.maximum(gx + gh + b, 0) if d.relu else np.tanh(gx + gh + b)
            d.h[:n] = h
            d.y[r0:r0 + n, d.ycol:d.ycol + H] = h
        return 0

    def encode(self, w):
        return {"": w.astype(np.float32), "@scale": np.ones(w.shape[0], np.float32)}

    def decode(self, parts):
        return parts[""] * parts["@scale"][:, None]

    def decoded(self, parts):
        if set(parts) != {"", "@scale"}:
            return None if set(parts) == {""} else self._bad()
        return np.dtype(np.float32), parts[""][1]

    def _bad(self):
        raise ValueError("a main array and its scale")


@pytest.fixture
def numpy_backend():
    Q.register_backend(_NumpyBackend())
    yield "test_f32"
    Q._BACKENDS.pop("test_f32", None)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_a_new_backend_plugs_in(numpy_backend, mode, tmp_path):
    layer = LAYERS[mode](5, 7, num_layers=2, bidirectional=True, seed=3).eval()
    x = _x(4, 6, 5)
    lengths = np.array([6, 2, 5, 1])
    q = rf.quantize(layer, numpy_backend)
    assert q.precision == numpy_backend and numpy_backend in Q.precisions()
    ref, st_ref = layer(x, lengths=lengths)
    out, st = q(x, lengths=lengths)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(st[0] if mode == "lstm" else st, st_ref[0] if mode == "lstm" else st_ref, atol=1e-5)
    seq = rf.quantize(rf.nn.Sequential(layer, rf.nn.LastStep(bidirectional=True)), numpy_backend)
    seq.save(tmp_path / "n.rnnfast")
    with rf.io.open_archive(tmp_path / "n.rnnfast") as ar:
        assert "0.weight_ih_l0@scale" in ar.stored and "0.weight_ih_l0@scale" not in ar.declared
    back = rf.load(tmp_path / "n.rnnfast")
    np.testing.assert_allclose(back(x, lengths=lengths), seq(x, lengths=lengths), atol=1e-6)


# ---------------------------------------------------------------------------------------- Seq2Seq (G2P)
_S2S_TOKENS = list("abcdefg")


@pytest.fixture(scope="module", params=["lstm", "gru"])
def seq2seq(request):
    """A tiny fitted rf.Seq2Seq (bidirectional encoder, Luong attention) that reverses short strings, and
    its data."""
    rng = np.random.default_rng(1)
    X = ["".join(rng.choice(_S2S_TOKENS, rng.integers(2, 6))) for _ in range(120)]
    Y = [x[::-1] for x in X]
    est = rf.Seq2Seq(hidden_size=16, embedding_dim=8, epochs=6, batch_size=16, cell=request.param,
                     random_state=0).fit(X, Y)
    return est, X, Y


def _teacher_forced(model, n=24):
    """Teacher-forced logits of a Seq2SeqModel on fixed random ids (the whole encoder-decoder)."""
    rng = np.random.default_rng(2)
    src = rng.integers(4, 11, size=(n, 6))
    tgt = np.concatenate([np.ones((n, 1), np.int64), rng.integers(4, 11, size=(n, 5))], axis=1)
    lengths = rng.integers(2, 7, size=n)
    return model(src, lengths, tgt)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_seq2seq_quantized_predicts_as_float32(seq2seq, precision):
    est, X, Y = seq2seq
    q = rf.quantize(est, precision)
    assert q is not est and q.precision_ == precision and not hasattr(est, "precision_")
    assert isinstance(q.model_, Q.QuantizedSeq2SeqModel) and not isinstance(est.model_, Q.QuantizedSeq2SeqModel)
    for part in (q.model_.encoder, q.model_.decoder):
        assert isinstance(part.rnn, Q.QuantizedRNN) and part.rnn.precision == precision
    assert type(est.model_.encoder.rnn) in (rf.nn.LSTM, rf.nn.GRU)  # the float model is left alone
    ref, got = _teacher_forced(est.model_), _teacher_forced(q.model_)
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 1e-6 < err < 2e-2, err  # quantized for real, and close
    # decoding: the decoder's step runs the quantized layer's step
    memory, lengths, state = q.model_.encode(np.array([[4, 5, 6, 0], [7, 8, 9, 10]]), [3, 4])
    fmem, _, fstate = est.model_.encode(np.array([[4, 5, 6, 0], [7, 8, 9, 10]]), [3, 4])
    args = np.array([1, 1]), memory, lengths, state
    logits, new_state = q.model_.decoder.step(*args)
    flogits, _ = est.model_.decoder.step(np.array([1, 1]), fmem, lengths, fstate)
    assert np.abs(logits - flogits).max() < 5e-2 * np.abs(flogits).max()
    assert type(new_state) is type(fstate)
    same = np.mean([a == b for a, b in zip(q.predict(X), est.predict(X))])
    assert same >= 0.9, same
    assert abs(q.score(X, Y) - est.score(X, Y)) < 5.0  # BLEU points
    assert len(q.predict(X[:5], beam_size=3)) == 5


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_seq2seq_save_load_keeps_the_precision(seq2seq, precision, tmp_path):
    est, X, _ = seq2seq
    q = rf.quantize(est, precision)
    f = tmp_path / "q.rnnfast"
    q.save(f)
    back = rf.load(f)
    assert type(back) is type(est) and back.precision_ == precision
    assert isinstance(back.model_, Q.QuantizedSeq2SeqModel)
    np.testing.assert_array_equal(_teacher_forced(back.model_), _teacher_forced(q.model_))
    assert back.predict(X) == q.predict(X)
    stored = {"bf16": np.uint16, "int8": np.int8}[precision]
    with rf.io.open_archive(f) as ar:
        assert ar.precision == precision
        assert ar.stored["model/encoder.rnn.weight_ih_l0"].dtype == stored
        assert ar.stored["model/decoder.rnn.weight_hh_l0"].dtype == stored
        assert ar.stored["model/decoder.out.weight"].dtype == np.float32
        assert all(d.dtype == np.float32 for d in ar.declared.values())
    est.save(tmp_path / "f.rnnfast")  # the float estimator still saves as before
    assert rf.load(tmp_path / "f.rnnfast").predict(X[:10]) == est.predict(X[:10])
    assert os.path.getsize(f) < os.path.getsize(tmp_path / "f.rnnfast")


def test_seq2seq_training_is_refused(seq2seq):
    est, X, Y = seq2seq
    q = rf.quantize(est, "int8")
    with pytest.raises(Q.InferenceOnlyError, match="Seq2Seq.fit"):
        q.fit(X, Y)
    m = q.model_
    for call in (lambda: m.train(), lambda: m.backward(np.zeros((1, 1, 1), np.float32)),
                 lambda: m.load_state_dict(est.model_.state_dict())):
        with pytest.raises(Q.InferenceOnlyError, match="inference only"):
            call()
    assert m.eval() is m and not m.training
    assert not any(k.startswith(("encoder.rnn.", "decoder.rnn.")) for k, _ in m.named_parameters())
    keys = set(m.state_dict())
    assert "encoder.rnn.weight_ih_l0@scale" in keys and "decoder.out.weight" in keys
    assert {k for k in keys if "@" not in k} == set(est.model_.state_dict())
    with pytest.raises(ValueError, match="already quantized"):
        rf.quantize(q, "bf16")
    with pytest.raises(ValueError, match="already quantized"):
        rf.quantize(m, "bf16")


def test_seq2seq_model_and_refusals():
    from rnnfast.nn.seq2seq import Seq2SeqModel, greedy_decode

    model = Seq2SeqModel(12, 13, 16, embedding_dim=8, cell="gru", attention="bahdanau", num_layers=2, seed=0)
    q = rf.quantize(model, "bf16")
    assert isinstance(q, Q.QuantizedSeq2SeqModel) and q.precision == "bf16"
    assert model.training and q.decoder.rnn.num_layers == 2
    ids, _ = greedy_decode(q, np.array([[4, 5, 6], [7, 8, 0]]), [3, 2], max_length=6)
    assert len(ids) == 2 and all(len(s) <= 6 for s in ids)
    err = np.abs(_teacher_forced(q) - _teacher_forced(model.eval())).max()
    assert 0 < err < 5e-2
    with pytest.raises(ValueError, match="float64"):
        rf.quantize(Seq2SeqModel(12, 13, 8, embedding_dim=4, dtype=np.float64, seed=0), "int8")
    with pytest.raises(Exception, match="not fitted"):
        rf.quantize(rf.Seq2Seq(), "bf16")
    est64 = rf.Seq2Seq(hidden_size=8, embedding_dim=4, epochs=1, dtype="float64", random_state=0).fit(["ab"], ["ba"])
    with pytest.raises(ValueError, match="float64"):
        rf.quantize(est64, "bf16")


# ---------------------------------------------------------------------------------------- GRU reset_after=False
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_gru_reset_before_runs_its_stored_weights_on_the_float32_kernel(precision, tmp_path):
    """No low-precision kernel has the reset-before cell: the quantized layer keeps the precision's weights
    (files) and runs them on the float32 kernel, with the rounding of the weights as its only error."""
    gru = rf.nn.GRU(5, 12, num_layers=2, bidirectional=True, reset_after=False, seed=0).eval()
    q = rf.quantize(gru, precision)
    x = _x(4, 9, 5)
    lengths = [9, 3, 7, 1]
    assert q.plan_for(x) == f"{precision} weights, float32 kernel (GRU reset_after=False)"
    out, h = q(x, lengths=lengths)
    ref, href = gru(x, lengths=lengths)
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert 0 < err < 2e-2, err
    twin = rf.nn.GRU(5, 12, num_layers=2, bidirectional=True, reset_after=False)
    twin.load_state_dict(q.dequantized())  # exactly the float32 kernel on the stored weights
    np.testing.assert_array_equal(out, twin.eval()(x, lengths=lengths)[0])
    uni = rf.quantize(rf.nn.GRU(5, 12, reset_after=False, seed=1), precision)
    y, s = uni.step(x[:, 0])
    np.testing.assert_allclose(y, uni(x[:, :1])[0][:, 0], rtol=1e-6, atol=1e-6)
    seq = rf.quantize(rf.nn.Sequential(rf.nn.GRU(5, 12, reset_after=False, seed=2), rf.nn.LastStep()).eval(),
                      precision)
    seq.save(tmp_path / "g.rnnfast")
    back = rf.load(tmp_path / "g.rnnfast")
    np.testing.assert_array_equal(back(x), seq(x))
    assert back.layers[0]._fallback is not None and not back.layers[0]._fallback.reset_after
    with pytest.raises(Q.InferenceOnlyError):
        q.backward(np.ones_like(out))


# ------------------------------------------------------------- LSTM on AMX: units shared out (large weights)
# packed weights past RF_AMX_UNITS_MIN_BYTES (2 MiB: 4 x 512 x (64 + 512) bfloat16) at >= 32 rows: the
# threads share out the unit blocks; H = 500 leaves a partial last unit block, B = 37 five rows past the
# full tiles (those on AVX512-BF16)
@pytest.mark.parametrize("threads", [1, 2])
def test_lstm_units_shared_out_computes_the_bf16_maths(path, threads):
    layer = rf.nn.LSTM(40, 500, seed=5).eval()
    x = _x(37, 6, 40, seed=3)
    ref, h_ref = _bf16_reference("lstm", layer.state_dict(), x)
    out, (h_n, c_n) = rf.quantize(layer, "bf16")(x, n_threads=threads)
    mx, rms = _err(out, ref)
    assert mx < 2e-3 and rms < 1e-4, (mx, rms)
    assert _err(h_n[0], h_ref)[0] < 2e-3


@pytest.mark.parametrize("threads", [1, 2])
def test_lstm_units_shared_out_lengths_bidirectional(path, threads):
    layer = rf.nn.LSTM(40, 500, bidirectional=True, seed=6).eval()
    B, T = 40, 7
    x = _x(B, T, 40, seed=4)
    lengths = np.random.default_rng(5).integers(1, T + 1, size=B)
    lengths[:20] = T  # 20 full rows: full tiles at the first steps, then fewer rows step by step
    ref, (h_ref, c_ref) = layer(x, lengths=lengths)
    q = rf.quantize(layer, "bf16")
    out, (h, c) = q(x, lengths=lengths, n_threads=threads)
    mx, rms = _err(out, ref)
    assert mx < CONTRACT_MAX and rms < CONTRACT_RMS, (mx, rms)
    assert np.all(out[np.arange(T)[None, :] >= lengths[:, None]] == 0)
    assert _err(h, h_ref)[0] < CONTRACT_MAX and _err(c, c_ref)[0] < 2 * CONTRACT_MAX
    for b in (0, B - 1):  # each sequence alone (the AVX512-BF16 kernel: one row): the same results
        alone, _ = q(x[b:b + 1, :lengths[b]])
        assert _err(alone[0], out[b, :lengths[b]])[0] < 2e-3
    # the other thread count (units or rows shared out, or one thread): the same results
    again, _ = q(x, lengths=lengths, n_threads=3 - threads)
    assert _err(again, out)[0] < 2e-3


# ------------------------------------------------------------- the thread back-off serves batch 1 only
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_thread_backoff_only_at_batch_one(precision):
    """While the layer backs off (a recent batch-1 call found the cores busy), batch-1 calls run on one
    thread; a call of many rows keeps its threads and never starts a back-off (one late barrier costs it
    little, one thread half its speed), as the float32 layers do."""
    from rnnfast._planner import ThreadPolicy

    asked, noted = [], []

    class Recording(ThreadPolicy):
        def threads(self, planned):
            asked.append(planned)
            return super().threads(planned)

        def note(self, threads, yields):
            noted.append(threads)
            super().note(threads, yields)

    q = rf.quantize(rf.nn.LSTM(8, 16, seed=0).eval(), precision)
    q.thread_policy = Recording(clock=lambda: 10.0)
    x = np.random.default_rng(0).standard_normal((6, 5, 8)).astype(np.float32)
    ref = q(x, n_threads=1)[0]
    q.thread_policy.serial_until = 20.0  # backing off
    np.testing.assert_array_equal(q(x, n_threads=2)[0], ref)
    assert asked == [] and noted == []
    q(x[:1], n_threads=2)
    assert asked == [2] and noted == [1]  # one thread while backing off
    q.thread_policy.serial_until = 0.0
    np.testing.assert_array_equal(q(x[:1], n_threads=2)[0], ref[:1])
    assert asked == [2, 2] and noted == [1, 2]
