"""rnnfast.nn.Attention: Luong dot / general and Bahdanau additive; masking, gradients, bad input."""
import numpy as np
import pytest

from rnnfast.nn import Attention

from gradcheck import assert_close, check_params, numeric_grad

B, TQ, TK, Q, K, V = 3, 2, 4, 3, 3, 2
KEY_LENGTHS = np.array([2, 4, 1])


def problem(seed=0, single=False, with_values=True):
    r = np.random.default_rng(seed)
    q = r.standard_normal((B, Q) if single else (B, TQ, Q))
    k = r.standard_normal((B, TK, K))
    v = r.standard_normal((B, TK, V)) if with_values else None
    vdim = V if with_values else K
    dctx = r.standard_normal((B, vdim) if single else (B, TQ, vdim))
    dw = r.standard_normal((B, TK) if single else (B, TQ, TK))
    return q, k, v, dctx, dw


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
@pytest.mark.parametrize("single", [False, True], ids=["seq-query", "one-query"])
@pytest.mark.parametrize("with_values", [True, False], ids=["values", "keys-as-values"])
@pytest.mark.parametrize("lengths", [None, KEY_LENGTHS], ids=["full", "ragged"])
def test_gradients(kind, single, with_values, lengths):
    att = Attention(Q, K, kind=kind, hidden_size=5 if kind == "additive" else None, dtype=np.float64, seed=1)
    q, k, v, dctx, dw = problem(2, single, with_values)

    def objective():
        ctx, w = att(q, k, v, key_lengths=lengths)
        return float(np.sum(ctx * dctx) + np.sum(w * dw))

    ctx, w = att(q, k, v, key_lengths=lengths)
    dq, dk, dv = att.backward(dctx, dw)
    assert dq.shape == q.shape and dk.shape == k.shape
    assert_close(dq, numeric_grad(objective, q), "dquery")
    assert_close(dk, numeric_grad(objective, k), "dkeys")
    if with_values:
        assert_close(dv, numeric_grad(objective, v), "dvalues")
    else:
        assert dv is None
    check_params(att, objective)
    if lengths is not None:
        pad = np.arange(TK)[None, :] >= lengths[:, None]
        assert not np.any(dk[pad])


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_masking_and_weights(kind):
    att = Attention(Q, K, kind=kind, seed=0)
    q, k, v, _, _ = problem(3)
    ctx, w = att(q, k, v, key_lengths=KEY_LENGTHS)
    assert ctx.shape == (B, TQ, V) and w.shape == (B, TQ, TK) and ctx.dtype == np.float32
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-6)
    pad = np.arange(TK)[None, :] >= KEY_LENGTHS[:, None]
    assert np.all(w.transpose(1, 0, 2)[:, pad] == 0)
    np.testing.assert_allclose(w[2, :, 0], 1)  # one valid key takes all the weight
    k2, v2 = k.copy(), v.copy()
    k2[pad], v2[pad] = 1e3, -1e3  # padded keys must not matter
    ctx2, w2 = att(q, k2, v2, key_lengths=KEY_LENGTHS)
    np.testing.assert_allclose(ctx2, ctx, rtol=1e-6)
    np.testing.assert_allclose(w2, w, rtol=1e-6)


def test_scores_by_hand():
    att = Attention(2, 3, kind="general", dtype=np.float64, seed=0)
    W = att.state_dict()["weight"]
    q = np.array([[1.0, -1.0]])
    k = np.array([[[1.0, 0, 0], [0, 2.0, 0]]])
    s = np.array([q[0] @ W @ k[0, 0], q[0] @ W @ k[0, 1]])
    e = np.exp(s - s.max())
    ctx, w = att(q, k)
    np.testing.assert_allclose(w[0], e / e.sum())
    np.testing.assert_allclose(ctx[0], (e / e.sum()) @ k[0])
    add = Attention(2, 3, kind="additive", hidden_size=4, dtype=np.float64, seed=0)
    p = add.state_dict()
    s = np.array([p["v"] @ np.tanh(p["query_weight"] @ q[0] + p["key_weight"] @ k[0, j]) for j in range(2)])
    np.testing.assert_allclose(add(q, k)[1][0], np.exp(s) / np.exp(s).sum())
    assert set(p) == {"query_weight", "key_weight", "v"}
    assert p["query_weight"].shape == (4, 2) and p["key_weight"].shape == (4, 3)
    assert Attention(3, 3).state_dict() == {}


def test_dot_matches_torch_sdpa():
    torch = pytest.importorskip("torch")
    q, k, v, _, _ = problem(4)
    ctx, _ = Attention(Q, K, dtype=np.float64)(q, k, v, key_lengths=KEY_LENGTHS)
    mask = torch.from_numpy(np.arange(TK)[None, None, :] < KEY_LENGTHS[:, None, None])
    ref = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=mask, scale=1.0)
    np.testing.assert_allclose(ctx, ref.numpy(), rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="query_size == key_size"):
        Attention(3, 4, kind="dot")
    with pytest.raises(ValueError, match="kind must be"):
        Attention(3, 3, kind="bilinear")
    with pytest.raises(ValueError, match="only to kind='additive'"):
        Attention(3, 3, kind="general", hidden_size=4)
    att = Attention(Q, K)
    q, k, v, _, _ = problem()
    with pytest.raises(ValueError, match="query_size=3"):
        att(q[..., :2], k)
    with pytest.raises(ValueError, match="key_size=3"):
        att(q, k[..., :2])
    with pytest.raises(ValueError, match="batch size"):
        att(q[:2], k)
    with pytest.raises(ValueError, match="3-D"):
        att(q, k[0])
    with pytest.raises(ValueError, match="values"):
        att(q, k, v[:, :3])
    with pytest.raises(ValueError, match=r"key_lengths must be in \[1, 4\]"):
        att(q, k, key_lengths=[0, 1, 2])
    with pytest.raises(TypeError, match="real numbers"):
        att(q.astype(complex), k)
    att(q, k)
    with pytest.raises(ValueError, match="dcontext"):
        att.backward(np.zeros((B, V)))
