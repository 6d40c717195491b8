"""Property tests over random shapes and lengths: padded steps never affect results and get no gradient."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnfast.nn import Attention, LastStep, MaxPool, MeanPool


@st.composite
def padded_batch(draw):
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, 5))
    F = 2 * draw(st.integers(1, 2))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).standard_normal((B, T, F)), lengths


@settings(max_examples=30, deadline=None)
@given(padded_batch(), st.sampled_from(["last", "last-bidir", "mean", "max", "dot", "general", "additive"]))
def test_padding_is_invisible(batch, kind):
    x, lengths = batch
    B, T, F = x.shape
    pad = np.arange(T)[None, :] >= lengths[:, None]
    x2 = x.copy()
    x2[pad] = 1e3
    if kind in ("dot", "general", "additive"):
        att = Attention(F, F, kind=kind, dtype=np.float64, seed=0)
        q = x[:, 0] * 0.5
        out, w = att(q, x, key_lengths=lengths)
        out2, _ = att(q, x2, key_lengths=lengths)
        assert np.all(w[pad] == 0)
        _, dx, _ = att.backward(np.ones_like(out))
    else:
        layer = {"last": LastStep(), "last-bidir": LastStep(bidirectional=True), "mean": MeanPool(),
                 "max": MaxPool()}[kind]
        out = layer(x, lengths)
        out2 = layer(x2, lengths)
        layer(x, lengths)
        dx = layer.backward(np.ones_like(out))
    np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-12)
    assert dx.shape == x.shape and not np.any(dx[pad])
