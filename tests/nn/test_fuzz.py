"""Fuzzing the layer API: every call either gives the float64 numpy reference's answer (tests/reference.py)
or raises TypeError / ValueError naming what is wrong; never a crash, never a silent wrong answer.

Random shapes (zero sizes included), input dtypes and layouts (Fortran order, strided and reversed views,
read-only arrays, nested lists), NaN / inf, lengths in and out of range and of every dtype, states of the
wrong shape or kind, and thread counts from -10**30 to 10**30. Counts come from the hypothesis profile
(tests/conftest.py): "ci" by default, ``--hypothesis-profile=fuzz`` for the release run. The integer
arguments that size allocations (constructor sizes) are fuzzed in a child process under a memory limit
(``test_huge_and_negative_constructor_ints_in_a_child``), so an allocation can never take the machine down.
"""
import re

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import reference as ref
import rnnfast as rf
from rnnfast import MAX_THREADS

N = settings().max_examples  # the profile's count (ci: hypothesis's 100; fuzz: 20,000)

CELLS = {"lstm": rf.nn.LSTM, "gru": rf.nn.GRU, "rnn": rf.nn.RNN}
X_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex64]
SPECIAL = [None, None, None, np.nan, np.inf, -np.inf, 1e4]
ODD_INTS = [0, -1, 257, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -2**64, 10**30]
INTS = st.one_of(st.integers(-3, 8), st.sampled_from(ODD_INTS))
LAYOUTS = ["c", "c", "f", "strided", "reversed", "readonly", "list", "newaxis", "broadcast"]


def _layout(a, how):
    """``a``'s values in another memory layout (or as nested lists)."""
    if how == "f":
        return np.asfortranarray(a)
    if how == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "newaxis" and a.ndim and a.shape[0] == 1:  # a length-1 axis of stride 0, as x[None] makes
        return a[0][None]
    if how == "reversed" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if how == "list" and a.size:  # (a nested list of no numbers has lost its shape)
        return a.tolist()
    return a


class Call:
    """One fuzzed call and what the contract says of it: ``bad`` lists the names the error must mention
    (empty: the call must succeed and match the reference)."""

    def __init__(self):
        self.bad = []

    def refuse(self, name):
        self.bad.append(name)


@st.composite
def layer_calls(draw):
    c = Call()
    valid = draw(st.integers(0, 2)) > 0  # two calls in three are valid ones (else every argument may be bad)
    c.cell = draw(st.sampled_from(sorted(CELLS)))
    c.I, c.H, c.L = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    c.bidir, c.bias, c.batch_first = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    c.dtype = draw(st.sampled_from([np.float32, np.float64]))
    c.relu = c.cell == "rnn" and draw(st.booleans())
    c.seed = draw(st.integers(0, 2**16))
    D = 2 if c.bidir else 1
    # x: shape, dtype, values, layout
    c.unbatched = draw(st.integers(0, 5)) == 0
    B, T = draw(st.integers(1 if valid else 0, 4)), draw(st.integers(1 if valid else 0, 5))
    F = c.I if valid else draw(st.one_of(st.just(c.I), st.just(c.I), st.just(c.I), st.integers(0, 5)))
    c.B, c.T = (1 if c.unbatched else B), T
    shape = (T, F) if c.unbatched else ((B, T, F) if c.batch_first else (T, B, F))
    if not valid and draw(st.integers(0, 15)) == 0:  # wrong rank
        shape = draw(st.sampled_from([(), (F,), (1, B, T, F)]))
        c.refuse("x")
    xdt = np.dtype(draw(st.sampled_from(X_DTYPES[:-2] if valid else X_DTYPES)))
    rng = np.random.default_rng(c.seed)
    x = rng.standard_normal(shape) * 2
    special = draw(st.sampled_from(SPECIAL)) if xdt.kind == "f" and x.size else None
    if special is not None:
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = special
    c.x = np.round(x).astype(xdt) if xdt.kind in "iub" else x.astype(xdt)
    c.special = special
    c.layout = draw(st.sampled_from(LAYOUTS))
    if c.layout == "broadcast" and c.x.ndim:  # every row the first one's, through a stride of 0
        c.x = np.broadcast_to(c.x[:1], c.x.shape)
    if xdt.kind not in "iuf":
        c.refuse("x")
    elif len(shape) in (2, 3) and (F != c.I or c.B * T == 0):
        c.refuse("x")
    c.lengths = draw(_lengths(c, valid)) if not c.unbatched else None
    c.hx = draw(_states(c, D, valid))
    c.n_threads = draw(st.one_of(st.none(), st.integers(1, 3)) if valid else
                       st.one_of(st.none(), st.integers(1, 3), INTS, st.booleans(), st.floats(-2, 2)))
    nt = c.n_threads
    if nt is not None and (isinstance(nt, (bool, float)) or not 1 <= nt <= MAX_THREADS):
        c.refuse("n_threads")
    c.train = draw(st.booleans()) and special is None
    return c


@st.composite
def _lengths(draw, c, valid):
    kind = draw(st.sampled_from(["none", "valid"] if valid else
                                ["none", "none", "valid", "valid", "ints", "dtype", "float", "shape", "bool"]))
    if kind == "none":
        return None
    B, T = c.B, c.T
    if kind == "valid" and T >= 1:
        return np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)), np.int64)
    if kind in ("ints", "valid"):
        vals = draw(st.lists(st.one_of(st.integers(1, max(T, 1)), INTS), min_size=B, max_size=B))
        if not all(1 <= v <= T for v in vals):
            c.refuse("lengths")
        return vals if max(map(abs, vals), default=0) >= 2**63 else np.array(vals, np.int64)
    if kind == "dtype":  # whole numbers in another integer dtype, possibly out of its range
        dt = np.dtype(draw(st.sampled_from([np.int8, np.uint8, np.int32, np.uint32, np.uint64])))
        info = np.iinfo(dt)
        vals = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=B, max_size=B))
        if not all(1 <= v <= T for v in vals):
            c.refuse("lengths")
        return np.array(vals, dt)
    if kind == "float":
        vals = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=B, max_size=B))
        if not all(np.isfinite(v) and v == round(v) and 1 <= v <= T for v in vals):
            c.refuse("lengths")
        return np.array(vals, np.float64)
    if kind == "bool":
        c.refuse("lengths")
        return np.ones(B, bool)
    c.refuse("lengths")  # wrong shape
    return np.ones(draw(st.sampled_from([(B + 1,), (B, 1), ()])), np.int64)


@st.composite
def _states(draw, c, D, valid):
    kind = draw(st.sampled_from(["none", "valid"] if valid else ["none", "none", "valid", "shape", "kind"]))
    if kind == "none":
        return None
    shape = (c.L * D, c.H) if c.unbatched else (c.L * D, c.B, c.H)
    if kind == "shape":
        i = draw(st.integers(0, len(shape) - 1))
        shape = shape[:i] + (shape[i] + draw(st.sampled_from([-1, 1, 2])),) + shape[i + 1:]
        if shape[i] < 0:
            shape = shape[:i] + (3,) + shape[i + 1:]
        c.refuse("hx")
    rng = np.random.default_rng(c.seed + 1)
    h = rng.standard_normal(shape).astype(c.dtype) * 0.5
    if c.cell != "lstm":
        if kind == "kind":  # a tuple where an array belongs
            c.refuse("hx")
            return (h, h)
        return h
    if kind == "kind":  # LSTM: an array where the pair belongs
        c.refuse("hx")
        return h
    return (h, rng.standard_normal(shape).astype(c.dtype) * 0.5)


def _layer(c):
    kw = dict(num_layers=c.L, bias=c.bias, batch_first=c.batch_first, bidirectional=c.bidir, dtype=c.dtype,
              seed=c.seed)
    if c.cell == "rnn":
        kw["nonlinearity"] = "relu" if c.relu else "tanh"
    return CELLS[c.cell](c.I, c.H, **kw)


def _batch_major(a, c):
    """An array in the layer's layout as (B, T, ...) float64 (unbatched: a batch of one)."""
    a = np.asarray(a, np.float64)
    if c.unbatched:
        return a[None]
    return a if c.batch_first else a.swapaxes(0, 1)


def _assert_refused(c, call):
    with pytest.raises((TypeError, ValueError)) as e:
        call()
    msg = str(e.value)
    assert msg and any(re.search(rf"\b{re.escape(n)}\b", msg) for n in c.bad), (c.bad, msg)


def _states_ref(c):
    """h0, c0 for the reference, (L*D, B, H) float64."""
    if c.hx is None:
        return None, None
    h, cc = c.hx if c.cell == "lstm" else (c.hx, None)
    fix = (lambda s: np.asarray(s, np.float64)[:, None]) if c.unbatched else (lambda s: np.asarray(s, np.float64))
    return fix(h), (None if cc is None else fix(cc))


def _close(got, want, dtype, scale=1.0):
    """Equal to the float64 reference up to the dtype's rounding; ``scale``: the size of the factors that
    multiply a rounding error (a weight gradient is an activation's gradient times the input, and a
    float32 gate saturated by a large input keeps only a few digits of 1 - z)."""
    tol = dict(rtol=2e-4, atol=2e-5 * scale) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11 * scale)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, equal_nan=True, **tol)


@settings(max_examples=3 * N)
@given(layer_calls())
def test_recurrent_layer_calls(c):
    note(vars(c))
    layer = _layer(c).train(c.train)
    x = _layout(c.x, c.layout)
    call = (lambda: layer(x, c.hx, lengths=c.lengths, n_threads=c.n_threads))
    if c.bad:
        event("refused")
        _assert_refused(c, call)
        return
    event("compared with the reference" + (", with backward" if c.train else ""))
    out, state = call()
    params = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    xr = _batch_major(np.asarray(c.x).astype(c.dtype), c)
    h0, c0 = _states_ref(c)
    nl = "relu" if c.relu else "tanh"
    lengths = None if c.lengths is None else np.asarray(c.lengths).astype(np.int64)
    want, hn, cn = ref.forward(c.cell, xr, params, c.L, c.bidir, h0, c0, lengths, nonlinearity=nl)
    _close(_batch_major(out, c), want, c.dtype)
    h = state[0] if c.cell == "lstm" else state
    _close(h[:, None] if c.unbatched else h, hn, c.dtype)
    if c.cell == "lstm":
        _close(state[1][:, None] if c.unbatched else state[1], cn, c.dtype)
    if c.train:
        dout = np.random.default_rng(c.seed + 2).standard_normal(np.shape(out))
        dx, _ = layer.backward(dout.astype(c.dtype))
        dx_want, _, _, grads = ref.backward(c.cell, xr, params, _batch_major(dout.astype(c.dtype), c), None, None,
                                            c.L, c.bidir, h0, c0, lengths, nonlinearity=nl)
        _close(_batch_major(dx, c), dx_want, c.dtype)
        scale = max(1.0, float(np.abs(xr).max(initial=0.0)), float(np.abs(want).max(initial=0.0)))
        for k, g in grads.items():
            _close(layer.grads[k], g, c.dtype, scale)


@settings(max_examples=N)
@given(st.sampled_from(sorted(CELLS)), st.booleans(), st.integers(1, 3), st.integers(1, 4),
       st.sampled_from(["shape", "dtype", "layout", "ok"]), st.integers(0, 2**16))
def test_backward_gradients_of_every_shape_and_layout(cell, bidir, B, T, what, seed):
    """dout of the wrong shape or type is refused; of any layout or real dtype it is used as given."""
    layer = CELLS[cell](3, 2, bidirectional=bidir, dtype=np.float64, seed=seed)
    x = np.random.default_rng(seed).standard_normal((B, T, 3))
    out, _ = layer(x)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    if what == "shape":
        with pytest.raises(ValueError, match="dout"):
            layer.backward(dout[:, :-1] if T > 1 else dout[None])
        return
    if what == "dtype":
        with pytest.raises(TypeError, match="dout"):
            layer.backward(dout.astype(np.complex128))
        return
    d = _layout(dout, "strided" if what == "layout" else "c")
    dx, _ = layer.backward(d)
    params = layer.state_dict()
    want = ref.backward(cell, x, params, dout, num_layers=1, bidirectional=bidir)[0]
    np.testing.assert_allclose(dx, want, rtol=1e-9, atol=1e-11)


@settings(max_examples=N)
@given(st.integers(1, 6), st.integers(1, 4), st.one_of(st.none(), st.integers(-8, 8)),
       st.lists(st.one_of(st.integers(-8, 8), st.sampled_from(ODD_INTS)), min_size=0, max_size=6),
       st.sampled_from([np.int64, np.int32, np.uint64, np.float64, np.bool_, "list"]))
def test_embedding_ids(num, dim, padding_idx, ids, id_dtype):
    call_ctor = (lambda: rf.nn.Embedding(num, dim, padding_idx=padding_idx, seed=0))
    if padding_idx is not None and not -num <= padding_idx < num:
        with pytest.raises(ValueError, match="padding_idx"):
            call_ctor()
        return
    emb = call_ctor()
    fits = all(-2**63 <= i < 2**63 for i in ids)
    if id_dtype == "list" or not fits:
        arg = [ids]
    else:
        try:
            arg = np.array([ids], id_dtype)
        except OverflowError:
            arg = [ids]
    arr = np.asarray(arg) if fits else None
    valid = fits and arr is not None and arr.dtype.kind in "iu" and all(0 <= i < num for i in ids)
    if not valid:
        with pytest.raises((TypeError, ValueError), match=r"\bids\b|\bx\b|\bindices\b|input"):
            emb(arg)
        return
    out = emb(arg)
    np.testing.assert_array_equal(out, emb.state_dict()["weight"][np.asarray(ids, np.intp)][None])


@settings(max_examples=N)
@given(st.integers(1, 4), st.integers(1, 4), st.lists(st.integers(0, 4), min_size=1, max_size=3),
       st.sampled_from(X_DTYPES), st.sampled_from(LAYOUTS), st.sampled_from(SPECIAL), st.integers(0, 2**16))
def test_linear_inputs(fin, fout, lead, xdt, layout, special, seed):
    lin = rf.nn.Linear(fin, fout, dtype=np.float64, seed=seed)
    F = lead.pop()
    x = np.random.default_rng(seed).standard_normal((*lead, F))
    if special is not None and x.size and np.dtype(xdt).kind == "f":
        x.reshape(-1)[0] = special
    x = np.round(x).astype(xdt) if np.dtype(xdt).kind in "iub" else x.astype(xdt)
    if np.dtype(xdt).kind not in "iuf" or F != fin:
        with pytest.raises((TypeError, ValueError), match=r"\bx\b"):
            lin(_layout(x, layout))
        return
    out = lin(_layout(x, layout))
    w, b = lin.state_dict()["weight"], lin.state_dict()["bias"]
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.T + b, rtol=1e-12, atol=1e-12, equal_nan=True)


_CTOR_CHILD = r"""
import resource, sys, json
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))   # an impossible allocation fails, never swaps
import numpy as np, rnnfast as rf
ODD = [0, -1, -2**63, 2**31, 2**32 + 1, 2**40, 2**63 - 1, 2**64, 10**30, True, 2.0, "3", None]
x = np.zeros((1, 2, 3), np.float32)
results = []
def run(what, f):
    try:
        f()
        results.append((what, "ok"))
    except (TypeError, ValueError, MemoryError) as e:
        results.append((what, type(e).__name__ + ": " + str(e)[:200]))
for v in ODD:
    for cls in (rf.nn.LSTM, rf.nn.GRU, rf.nn.RNN):
        run(f"{cls.__name__}(input_size={v!r})", lambda: cls(v, 4))
        run(f"{cls.__name__}(hidden_size={v!r})", lambda: cls(3, v))
        run(f"{cls.__name__}(num_layers={v!r})", lambda: cls(3, 4, num_layers=v))
        run(f"{cls.__name__}(seed={v!r})", lambda: cls(3, 4, seed=v))
        run(f"{cls.__name__}(...)(n_threads={v!r})", lambda: cls(3, 4)(x, n_threads=v))
        run(f"{cls.__name__}(...)(lengths=[{v!r}])", lambda: cls(3, 4)(x, lengths=[v]))
    run(f"Linear(in_features={v!r})", lambda: rf.nn.Linear(v, 2))
    run(f"Linear(out_features={v!r})", lambda: rf.nn.Linear(2, v))
    run(f"Embedding(num_embeddings={v!r})", lambda: rf.nn.Embedding(v, 2))
    run(f"Embedding(embedding_dim={v!r})", lambda: rf.nn.Embedding(2, v))
    run(f"Embedding(padding_idx={v!r})", lambda: rf.nn.Embedding(4, 2, padding_idx=v))
    run(f"Embedding(...)([[{v!r}]])", lambda: rf.nn.Embedding(4, 2)([[v]]))
    run(f"set_num_threads({v!r})", lambda: rf.set_num_threads(v))
rf.set_num_threads(None)
print(json.dumps(results))
"""


def test_huge_and_negative_constructor_ints_in_a_child(tmp_path):
    """Every integer argument with huge, negative and non-int values: a TypeError / ValueError, or
    MemoryError only for parameters that cannot be allocated (as numpy and PyTorch); never a crash."""
    import json

    from tests._child import run_python
    res = run_python(["-c", _CTOR_CHILD], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-3000:])
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(results) > 200
    for what, outcome in results:
        if outcome.startswith("MemoryError"):  # only a size that really does not fit
            assert re.search(r"input_size|hidden_size|in_features|out_features|num_embeddings|embedding_dim|"
                             r"num_layers", what), (what, outcome)
            continue
        if outcome == "ok":
            continue
        name = re.search(r"\((\w+)=|\.\.\.\)\((\w+)=|(set_num_threads)|(\(\[\[)", what)
        assert outcome.split(":")[0] in ("TypeError", "ValueError", "UnsupportedDtypeError"), (what, outcome)
        assert len(outcome) > 20, (what, outcome)
        assert name, what


@pytest.mark.parametrize("B", [1, 3, 40])  # the batch-1, few-rows and packed kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rnn_propagates_nan_found_by_fuzzing(B, dtype):
    """relu(NaN) was 0 in the kernels (``a > 0 ? a : 0``): a NaN input gave a finite answer, silently."""
    m = rf.nn.RNN(2, 3, nonlinearity="relu", dtype=dtype, seed=0).eval()
    x = np.ones((B, 4, 2), dtype)
    x[0, 1, 0] = np.nan
    out, h = m(x)
    assert np.all(np.isnan(out[0, 1:])) and np.all(np.isnan(h[:, 0]))
    assert np.all(np.isfinite(out[1:])) and np.all(np.isfinite(out[0, :1]))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_unbatched_and_stride_0_inputs_found_by_fuzzing(cell, batch_first):
    """An unbatched sequence (made (1, T, F) by x[None], whose length-1 axis has stride 0) raised
    "internal: bad in-place strides" in eval mode when the kernel reads the input in place."""
    m = CELLS[cell](1, 1, bidirectional=True, batch_first=batch_first, seed=0).eval()
    x = np.array([[0.0], [0.0], [1.0], [0.0]], np.float32)  # (T, F)
    packed = x[None].copy() if batch_first else x[:, None].copy()
    want = m(packed)[0]
    np.testing.assert_array_equal(m(x)[0], want[0] if batch_first else want[:, 0])
    np.testing.assert_array_equal(m(x[None] if batch_first else x[:, None])[0], want)  # stride 0 itself


def test_float32_gradient_of_a_saturated_gate_found_by_fuzzing():
    """Not a bug, a tolerance: x = 253 (uint8) saturates the GRU's update gate; float32 keeps a few digits of
    1 - z, so dW_ih (the gate's gradient times x) differs from float64 by 1.6% of an element of 1.5e-3. In
    float64 the same call matches to 1e-9."""
    x = np.array([[1, 2, 1, 253]], np.uint8)
    for dtype, tol in ((np.float32, 2e-5 * 253), (np.float64, 1e-11 * 253)):
        m = rf.nn.GRU(4, 2, bias=False, batch_first=False, dtype=dtype, seed=1)
        out, _ = m(x)
        dout = np.random.default_rng(3).standard_normal(out.shape)
        m.backward(dout.astype(dtype))
        p = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
        grads = ref.backward("gru", x.astype(dtype).astype(np.float64)[None], p, dout.astype(dtype)[None])[3]
        for k, g in grads.items():
            np.testing.assert_allclose(m.grads[k], g, rtol=2e-4 if dtype == np.float32 else 1e-9, atol=tol)
