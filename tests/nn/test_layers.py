"""Embedding, Linear, Dropout, LastStep, MeanPool, MaxPool: values, finite-difference gradients (float64,
ragged lengths), float32, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnfast as rf
from rnnfast.nn import Dropout, Embedding, LastStep, Linear, MaxPool, MeanPool

from gradcheck import assert_close, check_params, numeric_grad

LENGTHS = np.array([2, 4, 1])  # ragged, unsorted, includes 1 and T


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------- Embedding
def test_embedding_lookup_and_padding_row():
    emb = Embedding(6, 3, padding_idx=0, seed=1)
    assert np.all(emb.state_dict()["weight"][0] == 0)
    ids = np.array([[1, 2, 0], [5, 0, 0]])
    out = emb(ids)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, emb.state_dict()["weight"][ids])


def test_embedding_gradient_repeated_ids_and_no_padding_gradient():
    emb = Embedding(6, 3, padding_idx=0, dtype=np.float64, seed=1)
    ids = np.array([[1, 2, 0, 1], [5, 1, 0, 0]])
    R = rng().standard_normal((2, 4, 3))
    emb(ids)
    assert emb.backward(R) is None
    num = numeric_grad(lambda: float(np.sum(emb(ids) * R)), dict(emb.named_parameters())["weight"])
    num[0] = 0  # the padding row gets no gradient by definition
    assert_close(emb.grads["weight"], num)
    assert not np.any(emb.grads["weight"][0])
    np.testing.assert_allclose(emb.grads["weight"][1], R[0, 0] + R[0, 3] + R[1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_gradient_adds_as_numpy_add_at(dtype):
    """The compiled scatter-add adds the rows in np.add.at's order: the same gradient bit for bit, many
    repeated ids included (and added to what the gradient held)."""
    r = rng(4)
    emb = Embedding(50, 7, padding_idx=3, dtype=dtype, seed=0)
    ids = r.integers(0, 50, (16, 40))
    ids[:, :10] = 9  # one id repeated 160 times
    R = (r.standard_normal((16, 40, 7)) * 10.0 ** r.integers(-4, 4, (16, 40, 1))).astype(dtype)
    emb.grads["weight"][...] = r.standard_normal((50, 7))
    ref = emb.grads["weight"].copy()
    keep = ids.reshape(-1) != 3
    np.add.at(ref, ids.reshape(-1)[keep], R.reshape(-1, 7)[keep])
    emb(ids)
    emb.backward(R)
    np.testing.assert_array_equal(emb.grads["weight"], ref)


def test_embedding_negative_padding_idx_and_any_shape():
    emb = Embedding(5, 2, padding_idx=-1)
    assert emb.padding_idx == 4
    assert emb(np.array([1, 4])).shape == (2, 2)
    assert emb(np.array(3)).shape == (2,)


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    te = torch.nn.Embedding(7, 3, padding_idx=2).double()
    emb = Embedding(7, 3, padding_idx=2, dtype=np.float64)
    emb.load_state_dict(te.state_dict())
    ids = np.array([[1, 2, 6], [2, 2, 0]])
    R = rng().standard_normal((2, 3, 3))
    out_t = te(torch.from_numpy(ids))
    (out_t * torch.from_numpy(R)).sum().backward()
    np.testing.assert_allclose(emb(ids), out_t.detach().numpy())
    emb.backward(R)
    np.testing.assert_allclose(emb.grads["weight"], te.weight.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("ids, exc, match", [
    (np.array([[0.0, 1.0]]), TypeError, "integers"),
    (np.array([[True, False]]), TypeError, "integers"),
    ([["a"]], TypeError, "integers"),
    (np.array([[1, 6]]), ValueError, r"\[0, 6\).*got 6"),
    (np.array([[-1, 2]]), ValueError, "got -1"),
])
def test_embedding_bad_ids(ids, exc, match):
    with pytest.raises(exc, match=match):
        Embedding(6, 2)(ids)


def test_embedding_bad_construction():
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(4, 2, padding_idx=4)
    with pytest.raises(TypeError, match="padding_idx"):
        Embedding(4, 2, padding_idx=1.0)
    with pytest.raises(ValueError, match="num_embeddings"):
        Embedding(0, 2)
    with pytest.raises(TypeError, match="dtype"):
        Embedding(4, 2, dtype=np.int32)
    emb = Embedding(4, 2)
    emb(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        emb.backward(np.zeros((1, 2, 3)))


# ---------------------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(shape, bias):
    lin = Linear(3, 2, bias=bias, dtype=np.float64, seed=0)
    x = rng(1).standard_normal(shape)
    R = rng(2).standard_normal(shape[:-1] + (2,))
    out = lin(x)
    assert out.shape == shape[:-1] + (2,)
    dx = lin.backward(R)
    assert_close(dx, numeric_grad(lambda: float(np.sum(lin(x) * R)), x))
    check_params(lin, lambda: float(np.sum(lin(x) * R)))
    assert set(lin.state_dict()) == ({"weight", "bias"} if bias else {"weight"})


def test_linear_matches_torch_and_init_bounds():
    torch = pytest.importorskip("torch")
    lin = Linear(5, 4, seed=3)
    k = 1 / np.sqrt(5)
    assert np.all(np.abs(lin.state_dict()["weight"]) <= k) and np.all(np.abs(lin.state_dict()["bias"]) <= k)
    tl = torch.nn.Linear(5, 4)
    lin.load_state_dict(tl.state_dict())
    x = rng().standard_normal((2, 3, 5)).astype(np.float32)
    out = lin(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, tl(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_linear_bad_input():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match="in_features=3"):
        lin(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="in_features=3"):
        lin(np.float32(1.0))
    with pytest.raises(TypeError, match="real numbers"):
        lin(np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match="bias"):
        Linear(3, 2, bias=1)
    lin(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        lin.backward(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------- Dropout
def test_dropout_training_and_eval():
    d = Dropout(0.25, seed=0)
    x = np.ones((200, 50), np.float32)
    y = d(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    R = rng().standard_normal(x.shape)
    np.testing.assert_allclose(d.backward(R), R * y)  # x = 1, so y is the mask
    assert d.eval()(x) is x
    with pytest.raises(rf.nn.BackwardStateError):
        d.backward(R)


def test_dropout_edges_and_seed():
    x = np.ones((3, 4))
    assert np.all(Dropout(1.0)(x) == 0)
    assert np.all(Dropout(0.0)(x) == x)
    np.testing.assert_array_equal(Dropout(0.5, seed=7)(x), Dropout(0.5, seed=7)(x))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(1.5)
    with pytest.raises(TypeError, match="p must"):
        Dropout("0.5")
    d = Dropout(0.5)
    d(x)
    with pytest.raises(ValueError, match="shape"):
        d.backward(np.ones((4, 3)))


# ---------------------------------------------------------------------------------------- reductions
def seq(dtype=np.float64, seed=0):
    return rng(seed).standard_normal((3, 4, 2)).astype(dtype)


@pytest.mark.parametrize("layer", [LastStep(), LastStep(bidirectional=True), MeanPool(), MaxPool()],
                         ids=["last", "last-bidir", "mean", "max"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "ragged"])
def test_reduction_gradients(layer, lengths):
    x = seq()
    R = rng(5).standard_normal((3, 2))
    out = layer(x, lengths=lengths)
    assert out.shape == (3, 2)
    dx = layer.backward(R)
    assert_close(dx, numeric_grad(lambda: float(np.sum(layer(x, lengths=lengths) * R)), x))
    if lengths is not None:
        pad = np.arange(4)[None, :] >= lengths[:, None]
        assert not np.any(dx[pad])


def test_reduction_values_ignore_padding():
    x = seq()
    L = LENGTHS
    x_pad = x.copy()
    x_pad[np.arange(4)[None, :] >= L[:, None]] = 1e6  # padded garbage must not matter
    for b in range(3):
        valid = x[b, :L[b]]
        np.testing.assert_allclose(MeanPool()(x_pad, L)[b], valid.mean(0))
        np.testing.assert_allclose(MaxPool()(x_pad, L)[b], valid.max(0))
        np.testing.assert_allclose(LastStep()(x_pad, L)[b], valid[-1])
    np.testing.assert_allclose(LastStep()(x), x[:, -1])
    assert MeanPool()(x.astype(np.float32), L).dtype == np.float32


def test_laststep_bidirectional_equals_final_states():
    lstm = rf.nn.LSTM(3, 4, bidirectional=True, num_layers=2, dtype=np.float64, seed=0)
    x = rng().standard_normal((3, 4, 3))
    out, (h_n, _) = lstm(x, lengths=LENGTHS)
    np.testing.assert_allclose(LastStep(bidirectional=True)(out, LENGTHS),
                               np.concatenate([h_n[-2], h_n[-1]], axis=-1), rtol=1e-12)
    # Unidirectional: the output at the last valid step is the final state.
    gru = rf.nn.GRU(3, 4, dtype=np.float64, seed=0)
    out, h_n = gru(x, lengths=LENGTHS)
    np.testing.assert_allclose(LastStep()(out, LENGTHS), h_n[-1], rtol=1e-12)


@pytest.mark.parametrize("layer", [LastStep(), MeanPool(), MaxPool()], ids=["last", "mean", "max"])
def test_reduction_bad_input(layer):
    with pytest.raises(ValueError, match="3-D"):
        layer(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least one"):
        layer(np.zeros((3, 0, 2)))
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        layer(np.zeros((3, 4, 2)), lengths=[1, 5, 2])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        layer(np.zeros((3, 4, 2)), lengths=[1, 2])
    with pytest.raises(TypeError, match="whole numbers"):
        layer(np.zeros((3, 4, 2)), lengths=[1.5, 2, 2])
    with pytest.raises(TypeError, match="real numbers"):
        layer(np.zeros((3, 4, 2), complex))
    layer(np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        layer.backward(np.zeros((3, 4, 2)))


def test_laststep_bidirectional_needs_even_features():
    with pytest.raises(ValueError, match="even"):
        LastStep(bidirectional=True)(np.zeros((1, 2, 3)))


@pytest.mark.parametrize("K, M", [(1000, M) for M in (1, 2, 3, 5, 17, 32, 33, 48, 49, 96, 97)]
                         + [(1030, M) for M in (95, 192, 193)] + [(300, 64)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_linear_on_a_few_rows_of_big_weights(K, M, n_threads):
    """A few rows against big weights read the weight rows in place (rf_gemv_nb, _recurrent.matmul's
    few-rows path; BLAS would pack them at every call): the same product as float64 numpy, with and without
    beta, for row counts on either side of its limits (in_place_rows_max: 32 rows, then 48 or 96 a thread
    by K), weight rows ending inside a block."""
    from rnnfast._kernels import _recurrent as k
    rng = np.random.default_rng(M)
    lin = rf.nn.Linear(K, 1030, seed=M)  # 1.2-4 MB: past every threshold of its row count
    assert 1030 * K * 4 >= max(k.FEW_ROWS_MIN_BYTES, k.MANY_ROWS_MIN_BYTES, k.TWO_ROWS_MIN_BYTES if M <= 2 else 0)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w, b = lin.state_dict()["weight"], lin.state_dict()["bias"]
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(lin(x, n_threads=n_threads), want, rtol=2e-5, atol=2e-5)
    c = rng.standard_normal((M, 1030)).astype(np.float32)
    out = c.copy()
    k.matmul(x, w, out, trans_b=True, beta=1.0, nthreads=n_threads)
    np.testing.assert_allclose(out, want - b + c, rtol=2e-5, atol=2e-5)


def test_in_place_rows_rule():
    """Where _recurrent.matmul reads W's rows in place: 32 rows from 256 KB; from 512 KB 48 rows a thread
    (96 from K = 1024, 32 below K = 512) for up to two threads; never with the switch off."""
    from rnnfast._kernels import _recurrent as k
    rule = k.in_place_rows_max
    assert rule(512, 200 * 1024, 2) == 0
    assert rule(512, 300 * 1024, 2) == 32
    assert [rule(768, 1 << 20, n) for n in (1, 2, 8)] == [48, 96, 96]
    assert [rule(1024, 1 << 20, n) for n in (1, 2)] == [96, 192]
    assert [rule(256, 1 << 20, n) for n in (1, 2)] == [32, 64]
    most = k.FEW_ROWS_MAX
    try:
        k.FEW_ROWS_MAX = 0
        assert rule(1024, 1 << 24, 2) == 0
    finally:
        k.FEW_ROWS_MAX = most


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 200), st.sampled_from([(512, 300), (1030, 130), (256, 1100), (700, 200)]),
       st.integers(1, 3), st.booleans(), st.integers(0, 2**16))
def test_float32_matmul_on_any_row_count_matches_float64(M, KN, n_threads, beta, seed):
    """X W^T in float32 on random row counts around every limit of _recurrent.in_place_rows_max (rows in
    place or BLAS, whichever the rule picks; 1-3 rows past a group of 4), with and without beta, on one to
    three threads: float64's product to float32 rounding."""
    from rnnfast._kernels import _recurrent as k
    K, N = KN
    rng = np.random.default_rng(seed)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (N, K)))
    c = rng.standard_normal((M, N)).astype(np.float32)
    out = c.copy()
    k.matmul(x, w, out, trans_b=True, beta=1.0 if beta else 0.0, nthreads=n_threads)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + (c if beta else 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.sqrt(K))
