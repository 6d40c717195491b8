"""bench/lowp_accuracy.py's core on tiny random models (no data sets, no training): a classifier and the
char-LM of examples/char_lm.py, each evaluated in float32, bf16 and int8, and the table."""
import numpy as np
import pytest

import lowp_accuracy as la  # bench/, put on sys.path by this folder's conftest.py
from rnnfast import nn
from rnnfast.train import predict


def _classifier():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.GRU(4, 16, bidirectional=True, seed=1), nn.MeanPool(), nn.Linear(32, 3, seed=2))
    X = rng.standard_normal((40, 7, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    return model.eval(), X, y


def _check_rows(rows, metric_name):
    assert [r.precision for r in rows] == ["float32", "bf16", "int8"]
    ref = rows[0]
    assert ref.max_diff == ref.rms_diff == 0.0 and ref.metric == ref.ref_metric and ref.path == "-"
    for r in rows[1:]:
        assert r.metric_name == metric_name and r.ref_metric == ref.metric
        assert 0.0 < r.rms_diff <= r.max_diff < 0.1, r
        assert r.path not in ("", "-")


def test_classifier_in_three_precisions():
    model, X, y = _classifier()
    run = la.classifier_run(lambda m: predict(m, X), y)
    rows = la.compare_precisions("tiny", model, run, "accuracy")
    _check_rows(rows, "accuracy")
    logits = predict(model, X)
    assert rows[0].metric == pytest.approx(np.mean(logits.argmax(1) == y))
    for r in rows[1:]:
        assert 0.0 <= r.metric <= 1.0


def test_classifier_maps_through_classes():
    run = la.classifier_run(lambda m: m, np.array(["b", "a"]), classes=np.array(["a", "b"]))
    scores, acc = run(np.array([[0.1, 0.9], [0.2, 0.8]]))
    assert acc == 0.5 and scores.shape == (2, 2)


def test_char_lm_in_three_precisions():
    import char_lm  # examples/, put on sys.path by lowp_accuracy

    lm = char_lm.CharLM(12, embedding_dim=4, hidden_size=16, num_layers=2, seed=0)
    ids = np.random.default_rng(3).integers(0, 12, 300)
    rows = la.compare_precisions("lm", lm, la.lm_run(ids), "loss", quantize=la.quantize_lm)
    _check_rows(rows, "loss")
    assert rows[0].metric == pytest.approx(char_lm.evaluate(lm, ids))
    assert lm.lstm.__class__ is nn.LSTM  # quantize_lm left the float model alone
    for r in rows[1:]:
        assert abs(r.change) < 1.0  # percent


def test_targets_and_table():
    acc = la.Row("a", "int8", "accuracy", 0.903, 0.91, 1e-3, 1e-4, "amx")
    assert acc.change == pytest.approx(-0.7) and not acc.within_target
    loss = la.Row("b", "bf16", "loss", 2.02, 2.0, 1e-3, 1e-4, "amx")
    assert loss.change == pytest.approx(1.0) and loss.within_target
    ref = la.Row("b", "float32", "loss", 2.0, 2.0, 0.0, 0.0, "-")
    text = la.markdown([ref, loss, acc], {"b": "a note"})
    lines = text.splitlines()
    assert lines[0].startswith("| task | precision |") and len(lines[2].split("|")) == len(lines[0].split("|"))
    assert "| b | bf16 | amx | validation loss (nats/char) | 2.02000 | +1.000 % | yes |" in text
    assert "| a | int8 | amx | test accuracy | 90.30% | -0.70 points | **no** |" in text
    assert "- b: a note" in text


def test_bad_arguments():
    model, X, y = _classifier()
    with pytest.raises(ValueError, match="metric_name"):
        la.compare_precisions("t", model, la.classifier_run(lambda m: predict(m, X), y), "f1")
    with pytest.raises(SystemExit):
        la.parse_args(["--tasks", "mnist"])
    assert la.parse_args(["--tasks", "vowels,char_lm"]).tasks == ["vowels", "char_lm"]


def test_g2p_seq2seq_in_three_precisions():
    """The G2P row: a tiny rf.Seq2Seq on made-up words, greedy WER and teacher-forced logits per precision."""
    import rnnfast as rf

    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcde"), rng.integers(2, 6))) for _ in range(80)]
    items = [(w, [[c.upper() for c in w[::-1]], list("X" * len(w))]) for w in words]
    est = rf.Seq2Seq(hidden_size=16, embedding_dim=8, epochs=4, batch_size=16, random_state=0).fit(
        words, [p[0] for _, p in items])
    rows = la.compare_precisions("g2p", est, la.g2p_run(items, n_logits=20), "wer")
    _check_rows(rows, "wer")
    assert 0.0 <= rows[0].metric <= 1.0 and not hasattr(est, "precision_")
    text = la.markdown(rows, {})
    assert "| g2p | int8 |" in text and "test WER (greedy)" in text
    ids, lengths = la._ids([["a", "b"], ["zz"]], ["a", "b"], bos_eos=True)
    assert ids.tolist() == [[1, 4, 5, 2], [1, 3, 2, 0]] and lengths.tolist() == [4, 3]


def test_wer_changes_relatively():
    r = la.Row("g2p", "bf16", "wer", 0.303, 0.30, 1e-3, 1e-4, "amx")
    assert r.change == pytest.approx(1.0) and r.within_target
    assert not la.Row("g2p", "int8", "wer", 0.31, 0.30, 0.0, 0.0, "amx").within_target
    assert la.Row("g2p", "int8", "wer", 0.0, 0.0, 0.0, 0.0, "amx").change == 0.0
    assert "| g2p | bf16 | amx | test WER (greedy) | 30.30% | +1.000 % | yes |" in la.markdown([r], {})
    assert la.parse_args(["--tasks", "g2p", "--g2p-words", "10"]).g2p_words == 10
