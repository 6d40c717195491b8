"""CTC: loss and gradient against PyTorch's CTCLoss (random inputs, impossible alignments, repeated labels,
empty targets, every target layout and reduction), finite differences, the decoders against brute force,
the Trainer, bad input."""
import itertools

import numpy as np
import pytest

from rnnfast.train import CTCLoss, ctc_beam_decode, ctc_greedy_decode

from gradcheck import numeric_grad

torch = pytest.importorskip("torch")


def torch_ctc(x, targets, in_len, tgt_len, reduction="mean", zero_infinity=False, blank=0):
    """PyTorch's CTCLoss on log_softmax(x): value and gradient wrt x (of the sum for "none")."""
    xt = torch.tensor(x, requires_grad=True)
    lp = xt.log_softmax(-1).transpose(0, 1)
    loss = torch.nn.functional.ctc_loss(lp, torch.as_tensor(targets), torch.as_tensor(in_len),
                                        torch.as_tensor(tgt_len), blank=blank, reduction=reduction,
                                        zero_infinity=zero_infinity)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def random_problem(rng, dtype=np.float64, repeats=False):
    B, T, C, S = rng.integers(1, 6), rng.integers(1, 12), rng.integers(2, 6), rng.integers(1, 8)
    x = (rng.standard_normal((B, T, C)) * 2).astype(dtype)
    targets = rng.integers(1, C, (B, S))
    if repeats:
        targets[:, 1:] = targets[:, :1]
    tgt_len = rng.integers(0, S + 1, B)
    in_len = rng.integers(0, T + 1, B)
    return x, targets, in_len, tgt_len


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-10, 1e-10), (np.float32, 1e-5, 1e-6)])
def test_matches_torch_on_random_inputs(reduction, zero_infinity, dtype, rtol, atol):
    rng = np.random.default_rng(1)
    impossible = 0
    for trial in range(40):
        x, targets, in_len, tgt_len = random_problem(rng, dtype, repeats=trial % 3 == 0)
        value, grad = CTCLoss(reduction=reduction, zero_infinity=zero_infinity)(x, targets, in_len, tgt_len)
        ref_value, ref_grad = torch_ctc(x, targets, in_len, tgt_len, reduction, zero_infinity)
        assert grad.dtype == dtype and grad.shape == x.shape
        np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=atol)
        np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=atol, equal_nan=True)
        impossible += bool(np.any(np.isnan(grad)) or not np.all(np.isfinite(value)))
    if not zero_infinity and reduction != "none":
        assert impossible > 0  # the random inputs include alignments that cannot fit


def test_impossible_alignment_is_inf_and_zero_infinity_zeroes_it():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    targets = np.array([[1, 1, 1], [2, 3, 0]])  # 1 1 1 needs 5 steps
    value, grad = CTCLoss(reduction="none")(x, targets, [3, 3], [3, 2])
    assert value[0] == np.inf and np.isfinite(value[1])
    assert np.all(np.isnan(grad[0])) and np.all(np.isfinite(grad[1]))
    value, grad = CTCLoss(reduction="none", zero_infinity=True)(x, targets, [3, 3], [3, 2])
    assert value[0] == 0 and np.all(grad[0] == 0)


def test_empty_targets_and_empty_inputs():
    x = np.random.default_rng(2).standard_normal((3, 4, 3))
    targets = np.ones((3, 2), dtype=np.int64)
    in_len, tgt_len = [4, 0, 2], [0, 0, 0]
    value, grad = CTCLoss(reduction="none")(x, targets, in_len, tgt_len)
    ref_value, ref_grad = torch_ctc(x, targets, in_len, tgt_len, "none")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
    # only blanks: the loss is minus the log-probability of blank at every valid step
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    assert value[0] == pytest.approx(-logp[0, :, 0].sum()) and value[1] == 0


def test_target_layouts_agree():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 5))
    seqs = [[1, 2, 2], [], [4, 3, 1, 1]]
    tgt_len = np.array([len(s) for s in seqs])
    padded = np.full((3, 4), -1)
    for b, s in enumerate(seqs):
        padded[b, :len(s)] = s
    concat = np.array([c for s in seqs for c in s])
    ctc = CTCLoss(reduction="sum")
    expected = torch_ctc(x, concat, [7, 7, 7], tgt_len, "sum")
    for targets, lengths in ((padded, tgt_len), (concat, tgt_len), (padded, None), (seqs, None)):
        value, grad = ctc(x, targets, [7, 7, 7], lengths)
        np.testing.assert_allclose(value, expected[0], rtol=1e-12)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-10, atol=1e-12)


def test_blank_other_than_zero():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 4))
    targets = np.array([[0, 1, 1], [2, 0, 0]])
    value, grad = CTCLoss(blank=3)(x, targets, [6, 5], [3, 2])
    ref_value, ref_grad = torch_ctc(x, targets, [6, 5], [3, 2], blank=3)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_finite_differences_float64(reduction):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 4))
    targets, in_len, tgt_len = np.array([[1, 2, 2], [3, 1, 0], [2, 0, 0]]), [6, 5, 3], [3, 2, 1]
    sw = np.array([0.5, 1.0, 2.0])
    ctc = CTCLoss(reduction=reduction)
    _, grad = ctc(x, targets, in_len, tgt_len, sample_weight=sw)
    num = numeric_grad(lambda: ctc(x, targets, in_len, tgt_len, sample_weight=sw)[0], x)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_mask_gives_the_input_lengths_and_mean_weights():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 3))
    targets = np.array([[1, 2], [2, -1]])
    mask = np.arange(5)[None, :] < np.array([[5], [3]])
    value, grad = CTCLoss()(x, targets, mask=mask)
    ref_value, ref_grad = torch_ctc(x, np.array([[1, 2], [2, 0]]), [5, 3], [2, 1])
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
    per_seq, _ = CTCLoss(reduction="none")(x, targets, mask=mask)
    weighted, _ = CTCLoss()(x, targets, mask=mask, sample_weight=[1.0, 3.0])
    assert weighted == pytest.approx((per_seq[0] / 2 + 3 * per_seq[1] / 1) / 4)


def test_trains_in_the_trainer():
    import rnnfast as rf
    rng = np.random.default_rng(7)
    X = rng.standard_normal((16, 8, 3)).astype(np.float32)
    Y = np.where(X[:, :4, 0] > 0, 1, 2)  # a label per step of the first half
    model = rf.Sequential(rf.nn.LSTM(3, 16, seed=0), rf.nn.Linear(16, 3, seed=1))
    history = rf.train.Trainer(model, CTCLoss(), rf.train.Adam(model, lr=0.02)).fit(X, Y, epochs=15,
                                                                                    batch_size=8, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7


def test_trainer_gives_the_loss_the_input_lengths():
    import rnnfast as rf
    rng = np.random.default_rng(11)
    lengths = np.array([9, 4, 7, 6, 9, 5, 8, 3])
    X = rng.standard_normal((8, 9, 3)).astype(np.float64)
    X[np.arange(9)[None, :] >= lengths[:, None]] = 0
    labels = [[1 + int(X[i, 0, 0] > 0)] + [2] * (lengths[i] // 4) for i in range(8)]
    Y = rf.train.pad_sequences(labels, value=-1)[0]
    model = rf.Sequential(rf.nn.LSTM(3, 12, dtype=np.float64, seed=0), rf.nn.Linear(12, 3, dtype=np.float64, seed=1))
    trainer = rf.train.Trainer(model, CTCLoss(), rf.train.Adam(model, lr=0.02))
    model.eval()
    out = model(X, lengths=lengths)
    expected, _ = CTCLoss()(out, Y, lengths)
    assert trainer.evaluate(X, Y, lengths, batch_size=8)["loss"] == pytest.approx(expected, rel=1e-12)
    assert CTCLoss()(out, Y)[0] != pytest.approx(expected)  # without the lengths it is another loss
    history = trainer.fit(X, Y, lengths, epochs=20, batch_size=4)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_speed_shape_runs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((32, 100, 30)).astype(np.float32)
    targets = rng.integers(1, 30, (32, 20))
    value, grad = CTCLoss()(x, targets, np.full(32, 100), np.full(32, 20))
    ref_value, ref_grad = torch_ctc(x, targets, np.full(32, 100), np.full(32, 20))
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, exc", [
    (dict(logits=np.zeros((2, 3))), ValueError),
    (dict(logits=np.full((1, 3, 3), np.nan)), ValueError),
    (dict(targets=np.array([[0, 1]])), ValueError),          # the blank as a label
    (dict(targets=np.array([[1, 5]])), ValueError),          # outside the classes
    (dict(targets=np.array([[1.5, 2]])), TypeError),
    (dict(input_lengths=[4]), ValueError),
    (dict(target_lengths=[3]), ValueError),
    (dict(logits=np.array([["a"]])), TypeError),
])
def test_bad_input(bad, exc):
    args = dict(logits=np.zeros((1, 3, 3)), targets=np.array([[1, 2]]), input_lengths=[3], target_lengths=[2])
    args.update(bad)
    with pytest.raises(exc):
        CTCLoss()(args["logits"], args["targets"], args["input_lengths"], args["target_lengths"])


def test_bad_parameters():
    with pytest.raises(ValueError):
        CTCLoss(reduction="avg")
    with pytest.raises(TypeError):
        CTCLoss(blank=1.0)
    with pytest.raises(ValueError):
        CTCLoss(blank=3)(np.zeros((1, 2, 3)), [[1]])
    with pytest.raises(TypeError):
        CTCLoss(zero_infinity=1)


# ---------------------------------------------------------------------------------------- decoders
def test_greedy_on_crafted_input():
    # per-step argmax: 1 1 0 1 2 2 0 0 | 2 (the second sequence stops after 3 steps: 2 2 0)
    path = [[1, 1, 0, 1, 2, 2, 0, 0], [2, 2, 0, 1, 1, 1, 1, 1]]
    x = np.full((2, 8, 3), -5.0)
    for b, p in enumerate(path):
        x[b, np.arange(8), p] = 5.0
    assert ctc_greedy_decode(x, [8, 3]) == [[1, 1, 2], [2]]
    assert ctc_greedy_decode(x) == [[1, 1, 2], [2, 1]]
    assert ctc_greedy_decode(x, [8, 3], blank=2) == [[1, 0, 1, 0], [0]]
    assert ctc_beam_decode(x, [8, 3]) == [[1, 1, 2], [2]]


def label_probability(logp, labels):
    """p(labels | x) by PyTorch's CTC (an independent oracle)."""
    t = torch.tensor(logp)[:, None, :]
    tg = torch.tensor([labels if labels else [1]])
    nll = torch.nn.functional.ctc_loss(t, tg, torch.tensor([logp.shape[0]]), torch.tensor([len(labels)]),
                                       reduction="sum")
    return float(np.exp(-nll.item()))


def log_softmax(x):
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_beam_is_exact_with_a_large_beam():
    rng = np.random.default_rng(9)
    T, C = 4, 3
    for _ in range(10):
        x = rng.standard_normal((1, T, C)) * 1.5
        logp = log_softmax(x[0])
        candidates = [list(s) for n in range(T + 1) for s in itertools.product(range(1, C), repeat=n)]
        probs = [label_probability(logp, s) for s in candidates]
        best = candidates[int(np.argmax(probs))]
        assert ctc_beam_decode(x, beam_size=100) == [best]
        assert ctc_beam_decode(logp[None], beam_size=100) == [best]  # log-probabilities work as well
        assert sum(probs) == pytest.approx(1.0)


def test_beam_at_least_as_probable_as_greedy():
    rng = np.random.default_rng(10)
    for _ in range(20):
        x = rng.standard_normal((1, 8, 4))
        logp = log_softmax(x[0])
        greedy = ctc_greedy_decode(x)[0]
        beam = ctc_beam_decode(x, beam_size=8)[0]
        assert label_probability(logp, beam) >= label_probability(logp, greedy) * (1 - 1e-12)


def test_decoders_bad_input():
    with pytest.raises(ValueError):
        ctc_greedy_decode(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        ctc_beam_decode(np.zeros((1, 3, 3)), beam_size=0)
    with pytest.raises(ValueError):
        ctc_beam_decode(np.zeros((1, 3, 3)), input_lengths=[4])
    with pytest.raises(ValueError):
        ctc_greedy_decode(np.zeros((1, 3, 3)), blank=3)


def test_trainer_passes_lengths_only_to_losses_that_take_them():
    import rnnfast as rf
    from rnnfast.train.trainer import _takes_input_lengths
    seen = []

    def with_lengths(out, y, input_lengths=None, mask=None, sample_weight=None):
        seen.append(None if input_lengths is None else input_lengths.tolist())
        return rf.train.MSE()(out, y, sample_weight=sample_weight)

    def without(out, y, mask=None, sample_weight=None):
        return rf.train.MSE()(out, y, sample_weight=sample_weight)

    assert _takes_input_lengths(with_lengths) and _takes_input_lengths(CTCLoss())
    assert not _takes_input_lengths(without) and not _takes_input_lengths(rf.train.CrossEntropy())
    X = [np.ones((n, 2), np.float32) for n in (3, 5, 3, 5)]
    y = np.zeros((4, 1), np.float32)
    model = rf.Sequential(rf.nn.LSTM(2, 3, seed=0), rf.nn.LastStep(), rf.nn.Linear(3, 1, seed=1))
    rf.train.Trainer(model, with_lengths, rf.train.SGD(model, lr=0.1)).fit(X, y, batch_size=4, shuffle=False)
    assert seen == [[3, 5, 3, 5]] or sorted(seen[0]) == [3, 3, 5, 5]
    rf.train.Trainer(model, without, rf.train.SGD(model, lr=0.1)).fit(X, y, batch_size=4)  # no TypeError
