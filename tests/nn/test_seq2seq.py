"""rnnfast.nn.seq2seq: Encoder, AttentionDecoder, Seq2SeqModel and the decoders; shapes, masking, finite-difference
gradients, the same model in PyTorch, greedy / beam search, bad input; the fused training loss (forward_loss:
output layer and cross-entropy on the non-padded target steps only) against the logits path."""
import numpy as np
import pytest

import rnnfast.nn.layers as layers
from rnnfast.nn import Attention, AttentionDecoder, Encoder, Seq2SeqModel
from rnnfast.nn.seq2seq import beam_decode, greedy_decode, sequence_log_prob
from rnnfast.train import CrossEntropy

from gradcheck import check_params, numeric_grad

VS, VT = 9, 8  # vocabularies (0 pad, 1 <s>, 2 </s>, 3 <unk>, then tokens)
SRC = np.array([[4, 5, 6, 7], [8, 4, 0, 0], [5, 0, 0, 0]])
SRC_LEN = np.array([4, 2, 1])
TGT_IN = np.array([[1, 4, 5], [1, 6, 0], [1, 7, 4]])
TGT_OUT = np.array([[4, 5, 2], [6, 2, 0], [7, 4, 2]])
TGT_LEN = np.array([3, 2, 3])
CONFIGS = [(cell, att, bi) for cell in ("lstm", "gru") for att in ("luong", "dot", "bahdanau", None)
           for bi in (True, False)]


def model(cell="lstm", attention="luong", bi=True, layers=1, dtype=np.float64, seed=0, dropout=0.0, H=5):
    if attention == "dot":
        bi = False  # dot scores need decoder units == memory features
    return Seq2SeqModel(VS, VT, H, embedding_dim=3, num_layers=layers, cell=cell, bidirectional_encoder=bi,
                        attention=attention, dropout=dropout, dtype=dtype, seed=seed)


def loss_of(m):
    return CrossEntropy(ignore_index=0)(m(SRC, SRC_LEN, TGT_IN, TGT_LEN), TGT_OUT)


# ---------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bi", [True, False])
def test_encoder_shapes(cell, bi):
    enc = Encoder(VS, 3, 5, num_layers=2, cell=cell, bidirectional=bi, seed=0)
    out, state = enc(SRC, lengths=SRC_LEN)
    D = 2 if bi else 1
    assert out.shape == (3, 4, 5 * D) and enc.output_size == 5 * D
    h = state[0] if cell == "lstm" else state
    assert h.shape == (2 * D, 3, 5)
    assert np.all(out[1, 2:] == 0) and np.all(out[2, 1:] == 0)  # zero past each length


@pytest.mark.parametrize("cell,attention,bi", CONFIGS)
def test_model_shapes_and_parameter_names(cell, attention, bi):
    m = model(cell, attention, bi, layers=2, dtype=np.float32)
    logits = m(SRC, SRC_LEN, TGT_IN, TGT_LEN)
    assert logits.shape == (3, 3, VT) and logits.dtype == np.float32
    names = [n for n, _ in m.named_parameters()]
    assert set(names) == set(m.grads) == set(m.state_dict())
    assert "encoder.rnn.weight_ih_l1" in names and "decoder.out.weight" in names and "bridge.weight" in names
    assert ("decoder.attention.weight" in names) == (attention == "luong")
    assert ("decoder.attention.v" in names) == (attention == "bahdanau")


# ---------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("attention", ["luong", "bahdanau", "dot"])
def test_padding_never_leaks(attention):
    m = model("lstm", attention)
    m.eval()
    ref = m(SRC, SRC_LEN, TGT_IN, TGT_LEN)
    src2, tgt2 = SRC.copy(), TGT_IN.copy()
    src2[1, 2:], src2[2, 1:], tgt2[1, 2:] = 7, 8, 5  # change only padded steps
    out = m(src2, SRC_LEN, tgt2, TGT_LEN)
    valid = np.arange(3)[None] < TGT_LEN[:, None]
    np.testing.assert_array_equal(out[valid], ref[valid])
    memory, mlen, state = m.encode(SRC, SRC_LEN)
    h = np.random.default_rng(0).standard_normal((3, 2, 5))
    _, w = m.decoder.attention(h, memory, key_lengths=mlen)
    assert np.all(w[1, :, 2:] == 0) and np.all(w[2, :, 1:] == 0)
    np.testing.assert_allclose(w.sum(-1), 1.0)


def test_padded_targets_get_no_gradient():
    m = model()
    m.train()
    loss_of(m)
    m.zero_grad()
    value, d = loss_of(m)
    assert np.all(d[1, 2] == 0)  # the padded target step has no loss
    m.backward(d)
    g = {k: v.copy() for k, v in m.grads.items()}
    tgt2 = TGT_IN.copy()
    tgt2[1, 2] = 7
    m.zero_grad()
    _, d2 = CrossEntropy(ignore_index=0)(m(SRC, SRC_LEN, tgt2, TGT_LEN), TGT_OUT)
    m.backward(d2)
    for k, v in m.grads.items():
        np.testing.assert_allclose(v, g[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert np.all(m.grads["encoder.embedding.weight"][0] == 0)  # the padding row


# ---------------------------------------------------------------------------------------- gradients
def check_some(m, objective, n=4):
    """Finite differences at ``n`` random entries of every parameter against ``m.grads``."""
    rng = np.random.default_rng(0)
    grads = {k: v.copy() for k, v in m.grads.items()}
    for name, p in m.named_parameters():
        idx = rng.choice(p.size, min(n, p.size), replace=False)
        num = numeric_grad(objective, p, indices=idx).reshape(-1)[idx]
        np.testing.assert_allclose(grads[name].reshape(-1)[idx], num, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell,attention,bi", CONFIGS)
def test_gradients_match_finite_differences(cell, attention, bi):
    full = (cell, attention, bi) in (("lstm", "luong", True), ("gru", "bahdanau", True))
    m = model(cell, attention, bi, layers=2 if full else 1, seed=3, H=4)
    m.zero_grad()
    _, d = loss_of(m)
    m.backward(d)
    if full:  # every entry of every parameter
        check_params(m, lambda: loss_of(m)[0], rtol=1e-5, atol=1e-8)
    else:
        check_some(m, lambda: loss_of(m)[0])


def test_backward_needs_forward():
    from rnnfast.nn import BackwardStateError
    m = model()
    with pytest.raises(BackwardStateError):
        m.backward(np.zeros((3, 3, VT)))


# ---------------------------------------------------------------------------------------- PyTorch
def torch_twin(m, torch, cell, attention):
    """The same model in PyTorch, with m's weights."""
    tnn = torch.nn
    enc_rnn, dec_rnn = m.encoder.rnn, m.decoder.rnn
    R = tnn.LSTM if cell == "lstm" else tnn.GRU
    mods = {"enc_emb": tnn.Embedding(VS, 3, padding_idx=0),
            "enc": R(3, enc_rnn.hidden_size, enc_rnn.num_layers, batch_first=True, bidirectional=enc_rnn.bidirectional),
            "bridge": tnn.Linear(m.encoder.output_size, 5), "dec_emb": tnn.Embedding(VT, 3, padding_idx=0),
            "dec": R(3, 5, dec_rnn.num_layers, batch_first=True), "out": tnn.Linear(5, VT)}
    if attention is not None:
        mods["combine"] = tnn.Linear(m.encoder.output_size + 5, 5)
    t = tnn.ModuleDict(mods).double()
    src = {"enc_emb": m.encoder.embedding, "enc": enc_rnn, "bridge": m.bridge, "dec_emb": m.decoder.embedding,
           "dec": dec_rnn, "out": m.decoder.out}
    if attention is not None:
        src["combine"] = m.decoder.combine
    for name, layer in src.items():
        t[name].load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return t


def torch_forward(t, torch, m, attention):
    pack = torch.nn.utils.rnn.pack_padded_sequence
    unpack = torch.nn.utils.rnn.pad_packed_sequence
    src = torch.from_numpy(SRC)
    x = pack(t["enc_emb"](src), torch.from_numpy(SRC_LEN), batch_first=True, enforce_sorted=False)
    out, st = t["enc"](x)
    memory, _ = unpack(out, batch_first=True, total_length=SRC.shape[1])
    h_n = st[0] if isinstance(st, tuple) else st
    D = 2 if m.encoder.rnn.bidirectional else 1
    last = h_n[-D:].transpose(0, 1).reshape(3, -1)
    h0 = torch.tanh(t["bridge"](last)).unsqueeze(0).repeat(m.num_layers, 1, 1).contiguous()
    s0 = (h0, torch.zeros_like(h0)) if isinstance(st, tuple) else h0
    y = pack(t["dec_emb"](torch.from_numpy(TGT_IN)), torch.from_numpy(TGT_LEN), batch_first=True, enforce_sorted=False)
    h, _ = t["dec"](y, s0)
    h, _ = unpack(h, batch_first=True, total_length=TGT_IN.shape[1])
    if attention is None:
        return t["out"](h), memory
    att = m.decoder.attention
    p = {k: torch.from_numpy(v) for k, v in att.state_dict().items()}
    if att.kind == "dot":
        scores = h @ memory.transpose(1, 2)
    elif att.kind == "general":
        scores = h @ (memory @ p["weight"].T).transpose(1, 2)
    else:
        hid = torch.tanh((h @ p["query_weight"].T)[:, :, None] + (memory @ p["key_weight"].T)[:, None])
        scores = hid @ p["v"]
    valid = torch.arange(SRC.shape[1])[None, None, :] < torch.from_numpy(SRC_LEN)[:, None, None]
    w = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    z = torch.tanh(t["combine"](torch.cat([w @ memory, h], dim=-1)))
    return t["out"](z), memory


@pytest.mark.parametrize("cell,attention,bi", [("lstm", "luong", True), ("gru", "bahdanau", True),
                                               ("lstm", "dot", False), ("gru", None, False),
                                               ("lstm", "bahdanau", True)])
def test_matches_pytorch(cell, attention, bi):
    torch = pytest.importorskip("torch")
    m = model(cell, attention, bi, layers=2, seed=5)
    t = torch_twin(m, torch, cell, attention)
    logits = m(SRC, SRC_LEN, TGT_IN, TGT_LEN)
    tl, _ = torch_forward(t, torch, m, attention)
    np.testing.assert_allclose(logits, tl.detach().numpy(), rtol=1e-10, atol=1e-12)
    value, d = CrossEntropy(ignore_index=0)(logits, TGT_OUT)
    m.zero_grad()
    m.backward(d)
    tloss = torch.nn.functional.cross_entropy(tl.reshape(-1, VT), torch.from_numpy(TGT_OUT).reshape(-1),
                                              ignore_index=0)
    tloss.backward()
    assert abs(value - tloss.item()) < 1e-12
    names = {"enc_emb": "encoder.embedding", "enc": "encoder.rnn", "bridge": "bridge", "dec_emb": "decoder.embedding",
             "dec": "decoder.rnn", "out": "decoder.out", "combine": "decoder.combine"}
    for tname, prefix in names.items():
        if tname not in t:
            continue
        for k, p in t[tname].named_parameters():
            np.testing.assert_allclose(m.grads[f"{prefix}.{k}"], p.grad.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{prefix}.{k}")


# ---------------------------------------------------------------------------------------- decoding
def trained_copy_model(attention="luong", cell="lstm", steps=150):
    """A model trained briefly to copy its input (the decoders then make confident, checkable choices)."""
    from rnnfast.train import Adam
    rng = np.random.default_rng(0)
    m = Seq2SeqModel(VS, VS, 16, embedding_dim=8, cell=cell, attention=attention, dtype=np.float64, seed=1)
    opt = Adam(m, lr=0.02)
    for _ in range(steps):
        lens = rng.integers(1, 5, 16)
        src = np.zeros((16, 4), np.int64)
        for i, n in enumerate(lens):
            src[i, :n] = rng.integers(4, VS, n)
        tgt = np.zeros((16, 6), np.int64)
        tgt[:, 0] = 1
        tgt[:, 1:5] = src
        tgt[np.arange(16), lens + 1] = 2
        m.train()
        m.zero_grad()
        _, d = CrossEntropy(ignore_index=0)(m(src, lens, tgt[:, :5], lens + 1), tgt[:, 1:6][:, :5])
        m.backward(d)
        opt.step()
    return m


@pytest.fixture(scope="module")
def copier():
    return trained_copy_model()


def test_greedy_copies_and_reports_its_log_prob(copier):
    toks, lp = greedy_decode(copier, SRC, SRC_LEN, max_length=8)
    assert toks == [[4, 5, 6, 7], [8, 4], [5]]
    np.testing.assert_allclose(lp, sequence_log_prob(copier, SRC, SRC_LEN, toks), rtol=1e-9)


@pytest.mark.parametrize("attention", ["luong", "bahdanau", None])
def test_beam_size_one_is_greedy(attention):
    m = model("gru", attention, seed=7)
    g, glp = greedy_decode(m, SRC, SRC_LEN, max_length=6)
    b, blp = beam_decode(m, SRC, SRC_LEN, beam_size=1, max_length=6)
    assert g == b
    np.testing.assert_allclose(glp, blp, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_beam_is_at_least_as_likely_as_greedy(seed, copier):
    m = model("lstm", "luong", seed=seed, H=6)
    m.load_state_dict(m.state_dict())
    for mod in (m, copier):
        g, glp = greedy_decode(mod, SRC, SRC_LEN, max_length=12)
        b, blp = beam_decode(mod, SRC, SRC_LEN, beam_size=4, max_length=12)
        assert np.all(blp >= glp - 1e-9), (glp, blp)
        finished = [len(t) < 12 for t in b]
        np.testing.assert_allclose(blp[finished], sequence_log_prob(mod, SRC, SRC_LEN, b)[finished], rtol=1e-9)


# ---------------------------------------------------------------------------------------- ensembles
def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_ensemble_of_one_model_or_of_copies_is_the_model(copier):
    twin = trained_copy_model(steps=0)
    twin.load_state_dict(copier.state_dict())
    for decode, kw in ((greedy_decode, {}), (beam_decode, {"beam_size": 3})):
        ref, ref_lp = decode(copier, SRC, SRC_LEN, max_length=8, **kw)
        for members in ([copier], [copier, twin], (twin, copier, twin)):
            got, lp = decode(members, SRC, SRC_LEN, max_length=8, **kw)
            assert got == ref
            np.testing.assert_allclose(lp, ref_lp, rtol=1e-12, atol=1e-12)


def test_ensemble_greedy_takes_the_mean_probability_argmax():
    """Two different models (LSTM/Luong, GRU/Bahdanau of another size): each greedy token is the argmax of the
    members' mean softmax, recomputed by teacher forcing on the prefix decoded so far."""
    a, b = model("lstm", "luong", seed=3, H=5), model("gru", "bahdanau", seed=4, H=7, layers=2)
    toks, lp = greedy_decode([a, b], SRC, SRC_LEN, max_length=5)
    for i in range(len(SRC)):
        src, n, prefix, total = SRC[i:i + 1], SRC_LEN[i:i + 1], [1], 0.0
        for _ in range(5):
            tin = np.array([prefix])
            p = np.mean([_softmax(m(src, n, tin)[0, -1]) for m in (a, b)], axis=0)
            nxt = int(np.argmax(p))
            total += np.log(p[nxt])
            if nxt == 2:
                break
            prefix.append(nxt)
        assert toks[i] == prefix[1:]
        np.testing.assert_allclose(lp[i], total, rtol=1e-10)
    single = [greedy_decode(m, SRC, SRC_LEN, max_length=5)[0] for m in (a, b)]
    assert single[0] != single[1]  # (the members disagree: the test is not vacuous)


def test_ensemble_beam_is_at_least_as_likely_as_greedy():
    members = [model("lstm", "luong", seed=5, H=6), model("lstm", "dot", seed=6, H=6)]
    g, glp = greedy_decode(members, SRC, SRC_LEN, max_length=10)
    b, blp = beam_decode(members, SRC, SRC_LEN, beam_size=4, max_length=10)
    assert np.all(blp >= glp - 1e-9), (glp, blp)
    finished = [len(t) < 10 for t in b]
    np.testing.assert_allclose(blp[finished], sequence_log_prob(members, SRC, SRC_LEN, b)[finished], rtol=1e-9)
    np.testing.assert_allclose(glp[[len(t) < 10 for t in g]],
                               sequence_log_prob(members, SRC, SRC_LEN, g)[[len(t) < 10 for t in g]], rtol=1e-9)


def test_ensemble_bad_members():
    with pytest.raises(ValueError, match="empty"):
        greedy_decode([], SRC, SRC_LEN)
    with pytest.raises(TypeError, match="position 1"):
        beam_decode([model(), "m"], SRC, SRC_LEN)
    other = Seq2SeqModel(VS, VT + 1, 5, embedding_dim=3, seed=0)
    with pytest.raises(ValueError, match="vocabulary sizes"):
        greedy_decode([model(), other], SRC, SRC_LEN)


def test_step_matches_teacher_forcing(copier):
    copier.eval()
    logits = copier(SRC, SRC_LEN, TGT_IN, TGT_LEN)
    memory, mlen, state = copier.encode(SRC, SRC_LEN)
    proj = copier.decoder.project(memory)
    for t in range(TGT_IN.shape[1]):
        lt, state = copier.decoder.step(TGT_IN[:, t], memory, mlen, state, proj)
        valid = t < TGT_LEN
        np.testing.assert_allclose(lt[valid], logits[valid, t], rtol=1e-9, atol=1e-12)


def test_attention_projected_keys_match():
    att = Attention(4, 6, kind="additive", dtype=np.float64, seed=0)
    r = np.random.default_rng(0)
    q, k = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 6))
    ref = att(q, k, key_lengths=[5, 2])
    got = att(q, k, key_lengths=[5, 2], projected_keys=att.project_keys(k))
    np.testing.assert_array_equal(ref[0], got[0])
    with pytest.raises(ValueError, match="projected_keys"):
        att(q, k, projected_keys=np.zeros((2, 5, 3)))


# ---------------------------------------------------------------------------------------- bad input
def test_bad_arguments():
    with pytest.raises(ValueError, match="attention"):
        Seq2SeqModel(VS, VT, 4, attention="cosine")
    with pytest.raises(ValueError, match="cell"):
        Seq2SeqModel(VS, VT, 4, cell="rnn")
    with pytest.raises(ValueError, match="dot"):
        AttentionDecoder(VT, 3, 4, 8, attention="dot")
    with pytest.raises(TypeError):
        Seq2SeqModel(VS, VT, 4.5)
    with pytest.raises(ValueError):
        Seq2SeqModel(VS, VT, 4, dropout=1.0)
    m = model()
    with pytest.raises(TypeError, match="integer"):
        m(SRC.astype(float), SRC_LEN, TGT_IN)
    with pytest.raises(ValueError, match="batch"):
        m(SRC, SRC_LEN, TGT_IN[:2])
    with pytest.raises(ValueError, match="lengths"):
        m(SRC, [5, 1, 1], TGT_IN)
    with pytest.raises(ValueError, match="ids must be in"):
        m(SRC + VS, SRC_LEN, TGT_IN)
    with pytest.raises(ValueError, match="memory"):
        m.decoder(TGT_IN, np.zeros((3, 4, 3)))
    with pytest.raises(ValueError):
        greedy_decode(m, SRC, SRC_LEN, max_length=0)
    with pytest.raises(ValueError):
        beam_decode(m, SRC, SRC_LEN, beam_size=0)
    with pytest.raises(ValueError, match="missing keys"):
        m.load_state_dict({})


def test_state_dict_round_trip():
    a, b = model(seed=1), model(seed=2)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(SRC, SRC_LEN, TGT_IN, TGT_LEN), b(SRC, SRC_LEN, TGT_IN, TGT_LEN))
    assert "Encoder" in repr(a) and a.encoder.rnn.bidirectional


# ---------------------------------------------------------------------------------------- fused loss
def grads_of(m):
    return {k: v.copy() for k, v in m.grads.items()}


@pytest.mark.parametrize("cell,attention,bi", CONFIGS)
def test_fused_loss_and_gradients_match_the_logits_path(cell, attention, bi, monkeypatch):
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", 3)  # 8 valid target steps: three blocks, one partial
    m = model(cell, attention, bi, seed=5)
    m.zero_grad()
    value, d = loss_of(m)
    m.backward(d)
    ref = grads_of(m)
    m.zero_grad()
    fused = m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT)
    m.backward()
    assert fused == pytest.approx(value, rel=1e-13)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, ref[k], rtol=1e-11, atol=1e-14, err_msg=k)


def test_fused_float32_matches_the_logits_path():
    m = model(dtype=np.float32, seed=2, H=16)
    m.zero_grad()
    value, d = CrossEntropy(ignore_index=0)(m(SRC, SRC_LEN, TGT_IN, TGT_LEN), TGT_OUT)
    m.backward(d)
    ref = grads_of(m)
    m.zero_grad()
    assert m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT) == pytest.approx(value, rel=1e-6)
    m.backward()
    for k, g in m.grads.items():
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_padded_targets_are_left_out():
    m = model(seed=1)
    m.zero_grad()
    m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT)
    m.backward()
    ref = grads_of(m)
    tgt_in = TGT_IN.copy()
    tgt_in[1, 2] = 7  # a padded input step: its target is padding
    m.zero_grad()
    m.forward_loss(SRC, SRC_LEN, tgt_in, TGT_LEN, TGT_OUT)
    m.backward()
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, ref[k], rtol=1e-12, atol=1e-15, err_msg=k)
    out = TGT_OUT.copy()
    out[:] = 0  # no target at all: no loss, no gradient
    m.zero_grad()
    assert m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, out) == 0.0
    m.backward()
    assert not any(g.any() for g in m.grads.values())


@pytest.mark.parametrize("cell,attention", [("lstm", "luong"), ("gru", "bahdanau")])
def test_fused_gradients_match_finite_differences(cell, attention, monkeypatch):
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", 5)
    m = model(cell, attention, True, layers=2, seed=3, H=4)
    m.zero_grad()
    m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT)
    m.backward()
    check_params(m, lambda: loss_of(m)[0], rtol=1e-5, atol=1e-8)


def test_fused_misuse():
    m = model()
    with pytest.raises(ValueError, match="shape"):
        m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT[:, :2])
    m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT)
    with pytest.raises(ValueError, match="none after forward_loss"):
        m.backward(np.zeros((3, 3, 8)))
    m(SRC, SRC_LEN, TGT_IN, TGT_LEN)
    with pytest.raises(ValueError, match="dlogits after forward"):
        m.backward()
    m.eval()
    with pytest.raises(ValueError, match="train"):
        m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT)


def test_estimator_fit_is_the_generic_fit(monkeypatch):
    """Seq2SeqTrainer's fused step trains as the Trainer's generic step (full logits, CrossEntropy) does."""
    from rnnfast.estimators.seq2seq import Seq2Seq, Seq2SeqTrainer
    from rnnfast.train.trainer import Trainer
    X = [list("abcd"), list("ba"), list("cab"), list("dcb"), list("a")] * 4
    Y = [x[::-1] + ["z"] * (i % 3) for i, x in enumerate(X)]  # unequal target lengths: padded steps
    kw = dict(hidden_size=8, embedding_dim=4, epochs=2, batch_size=6, dropout=0.3, dtype="float64", random_state=0)
    fused = Seq2Seq(**kw).fit(X, Y)
    monkeypatch.setattr(Seq2SeqTrainer, "train_step", Trainer.train_step)
    generic = Seq2Seq(**kw).fit(X, Y)
    np.testing.assert_allclose(fused.history_["loss"], generic.history_["loss"], rtol=1e-11)
    ref = generic.model_.state_dict()
    for k, v in fused.model_.state_dict().items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cell,attention", [("lstm", "luong"), ("gru", None)])
def test_fused_label_smoothing_matches_the_logits_path(cell, attention, monkeypatch):
    """forward_loss(label_smoothing=eps) is CrossEntropy(ignore_index=0, label_smoothing=eps) on the logits;
    padded targets stay out of the smoothing too."""
    monkeypatch.setattr(layers, "CE_BLOCK_ROWS", 3)
    m = model(cell, attention, True, seed=6)
    m.zero_grad()
    value, d = CrossEntropy(ignore_index=0, label_smoothing=0.15)(m(SRC, SRC_LEN, TGT_IN, TGT_LEN), TGT_OUT)
    m.backward(d)
    ref = grads_of(m)
    m.zero_grad()
    fused = m.forward_loss(SRC, SRC_LEN, TGT_IN, TGT_LEN, TGT_OUT, label_smoothing=0.15)
    m.backward()
    assert fused == pytest.approx(value, rel=1e-13)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, ref[k], rtol=1e-11, atol=1e-14, err_msg=k)


def test_estimator_label_smoothing():
    """Seq2Seq(label_smoothing=eps) trains on the smoothed loss (its fused step equals the generic step with
    that loss), keeps the parameter through save / load, and refuses values outside [0, 1)."""
    import rnnfast as rf
    from rnnfast.estimators.seq2seq import Seq2Seq
    X = [list("abcd"), list("ba"), list("cab"), list("dcb"), list("a")] * 4
    Y = [x[::-1] for x in X]
    kw = dict(hidden_size=8, embedding_dim=4, epochs=2, batch_size=6, dtype="float64", random_state=0)
    smooth, plain = Seq2Seq(label_smoothing=0.2, **kw).fit(X, Y), Seq2Seq(**kw).fit(X, Y)
    assert smooth.history_["loss"][0] != plain.history_["loss"][0]
    with pytest.raises(ValueError, match="label_smoothing"):
        Seq2Seq(label_smoothing=1.0, **kw).fit(X, Y)
    assert Seq2Seq(label_smoothing=0.2).get_params()["label_smoothing"] == 0.2
    import tempfile, os  # noqa: E401
    with tempfile.TemporaryDirectory() as d:
        smooth.save(os.path.join(d, "m.rnnfast"))
        back = rf.load(os.path.join(d, "m.rnnfast"))
    assert back.get_params()["label_smoothing"] == 0.2 and back.predict(X[:3]) == smooth.predict(X[:3])
