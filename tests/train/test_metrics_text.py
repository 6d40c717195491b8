"""Sequence metrics: BLEU against sacrebleu, entity F1 against seqeval (both schemes, per-type report),
edit distance against a plain dynamic program, WER / CER, bad input."""
import warnings

import numpy as np
import pytest

from rnnfast.train import metrics
from rnnfast.train.metrics import bleu, cer, edit_distance, entity_f1, entity_report, wer


# ---------------------------------------------------------------------------------------- BLEU
def random_sentence(rng, vocab, low=0, high=12):
    return [int(t) for t in rng.integers(0, vocab, rng.integers(low, high + 1))]


def to_text(tokens):
    return " ".join(f"w{t}" for t in tokens)


def sacre(refs_per_hyp, hyps, max_n=4, smooth="exp", smooth_value=None):
    """sacrebleu's corpus BLEU: reference streams padded with None where a sentence has fewer refs."""
    sacrebleu = pytest.importorskip("sacrebleu")
    k = max(len(r) for r in refs_per_hyp)
    streams = [[to_text(r[j]) if j < len(r) else None for r in refs_per_hyp] for j in range(k)]
    from sacrebleu.metrics import BLEU
    scorer = BLEU(tokenize="none", smooth_method=smooth, smooth_value=smooth_value, max_ngram_order=max_n)
    return scorer.corpus_score([to_text(h) for h in hyps], streams).score


@pytest.mark.parametrize("smooth", ["exp", "none", "floor", "add-k"])
def test_bleu_matches_sacrebleu_on_random_tokens(smooth):
    pytest.importorskip("sacrebleu")
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 8))
        vocab = int(rng.integers(2, 12))
        hyps = [random_sentence(rng, vocab, 0, int(rng.integers(1, 15))) for _ in range(n)]
        refs = [[random_sentence(rng, vocab, 1) for _ in range(rng.integers(1, 4))] for _ in range(n)]
        max_n = int(rng.integers(1, 6))
        ours = bleu([r if len(r) > 1 else r[0] for r in refs], hyps, max_n=max_n, smooth=smooth)
        assert ours == pytest.approx(sacre(refs, hyps, max_n, smooth), rel=1e-9, abs=1e-9), trial


def test_bleu_special_cases_and_sacrebleu_corpus_bleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    refs = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    assert bleu(refs, hyps) == pytest.approx(100.0)
    assert bleu([[1, 2, 3]], [[4, 5, 6]]) == 0.0  # no match at all
    assert bleu([[1, 2, 3]], [[]]) == 0.0
    # a short hypothesis pays the brevity penalty; several references, the closest length counts
    hyps = [["the", "cat"], ["on", "a", "mat", "today", "yes"]]
    refs = [[["the", "cat", "sat"], ["a", "cat", "sat", "down"]], [["on", "the", "mat"]]]
    expected = sacrebleu.corpus_bleu([" ".join(h) for h in hyps],
                                     [["the cat sat", "on the mat"], ["a cat sat down", None]],
                                     tokenize="none").score
    assert bleu(refs, hyps) == pytest.approx(expected, rel=1e-12)
    assert bleu(refs, hyps, smooth_value=None) == bleu(refs, hyps)
    assert bleu([["a", "b"]], [np.array(["a", "b"])]) == pytest.approx(bleu([["a", "b"]], [["a", "b"]]))


@pytest.mark.parametrize("call, exc", [
    (lambda: bleu([[1, 2]], [[1, 2], [3]]), ValueError),
    (lambda: bleu([], []), ValueError),
    (lambda: bleu(["a b"], ["a b"]), TypeError),      # strings are not token lists
    (lambda: bleu("a b", "a b"), TypeError),
    (lambda: bleu([[1]], [[1]], max_n=0), ValueError),
    (lambda: bleu([[1]], [[1]], smooth="lin"), ValueError),
    (lambda: bleu([[1]], [[1]], smooth="floor", smooth_value=-1.0), ValueError),
    (lambda: bleu([[1]], [5]), TypeError),
])
def test_bleu_bad_input(call, exc):
    with pytest.raises(exc):
        call()


# ---------------------------------------------------------------------------------------- entity F1
def random_tags(rng, n, prefixes, types=("PER", "LOC", "ORG")):
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in types]
    weights = np.ones(len(tags))
    weights[0] = len(tags) * 0.7
    return [[tags[i] for i in rng.choice(len(tags), rng.integers(0, 12), p=weights / weights.sum())]
            for _ in range(n)]


def perturb(rng, seqs, prefixes, types=("PER", "LOC", "ORG")):
    """A noisy copy of each sequence (a prediction): some tags replaced."""
    out = []
    for s in seqs:
        s = list(s)
        for i in range(len(s)):
            if rng.random() < 0.25:
                s[i] = "O" if rng.random() < 0.3 else f"{rng.choice(list(prefixes))}-{rng.choice(types)}"
        out.append(s)
    return out


def seqeval_scores(true, pred, scheme):
    """seqeval's micro F1 and per-type (precision, recall, f1, support) rows: its default mode for BIO,
    its strict IOBES mode for BIOES."""
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support as prfs_default
    from seqeval.metrics.v1 import precision_recall_fscore_support as prfs_strict
    from seqeval.scheme import IOBES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scheme == "BIO":
            return seqeval.f1_score(true, pred), np.column_stack(prfs_default(true, pred, average=None))
        return (seqeval.f1_score(true, pred, mode="strict", scheme=IOBES),
                np.column_stack(prfs_strict(true, pred, scheme=IOBES, average=None)))


@pytest.mark.parametrize("scheme, prefixes", [("BIO", "BI"), ("BIOES", "BIES")])
def test_entity_f1_matches_seqeval(scheme, prefixes):
    rng = np.random.default_rng(1)
    for _ in range(80):
        true = random_tags(rng, int(rng.integers(1, 6)), prefixes)
        pred = perturb(rng, true, prefixes)
        expected, per_type = seqeval_scores(true, pred, scheme)
        f1, report = entity_f1(true, pred, scheme=scheme, return_report=True)
        assert f1 == pytest.approx(expected, rel=1e-12, abs=1e-12)
        ours = [[v["precision"], v["recall"], v["f1"], v["support"]] for k, v in report.items() if k != "micro avg"]
        np.testing.assert_allclose(np.array(ours, dtype=float).reshape(-1, 4), per_type.reshape(-1, 4),
                                   rtol=1e-12, atol=1e-12)


def test_entity_f1_crafted():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "I-ORG"]]
    # default mode: I-ORG after O opens an entity, so ORG (1, 2) matches; LOC is missed, ORG at 3 is wrong
    report = entity_report(true, pred)
    assert report["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert report["LOC"]["recall"] == 0.0 and report["LOC"]["support"] == 1
    assert entity_f1(true, pred) == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert entity_f1([["O"]], [["O"]]) == 0.0
    strict = [["B-PER", "E-PER", "S-LOC", "B-ORG", "O"]]
    assert entity_report(strict, strict, scheme="BIOES")["micro avg"]["support"] == 2  # B-ORG O is no entity


@pytest.mark.parametrize("call, exc", [
    (lambda: entity_f1([["B-PER"]], [["B-PER", "O"]]), ValueError),
    (lambda: entity_f1([["B-PER"]], [["B-PER"], ["O"]]), ValueError),
    (lambda: entity_f1([["S-PER"]], [["O"]]), ValueError),           # S is not BIO
    (lambda: entity_f1([["X-PER"]], [["O"]], scheme="BIOES"), ValueError),
    (lambda: entity_f1([[1]], [["O"]]), TypeError),
    (lambda: entity_f1([["O"]], [["O"]], scheme="IOB1"), ValueError),
    (lambda: entity_f1([["O"]], [["O"]], return_report=1), TypeError),
    (lambda: entity_f1(["B-PER"], ["B-PER"]), TypeError),
])
def test_entity_f1_bad_input(call, exc):
    with pytest.raises(exc):
        call()


# ---------------------------------------------------------------------------------------- WER / CER
def plain_levenshtein(a, b):
    d = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    d[:, 0] = np.arange(len(a) + 1)
    d[0, :] = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1, -1]


def test_edit_distance_matches_the_plain_dynamic_program():
    rng = np.random.default_rng(3)
    for _ in range(300):
        a = list(rng.integers(0, 4, rng.integers(0, 10)))
        b = list(rng.integers(0, 4, rng.integers(0, 10)))
        assert edit_distance(a, b) == plain_levenshtein(a, b)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1


def test_wer_and_cer_are_corpus_rates():
    refs = ["the cat sat", "on the mat"]
    hyps = ["the cat sat down", "on mat"]
    assert wer(refs, hyps) == pytest.approx((1 + 1) / 6)
    assert wer([r.split() for r in refs], [h.split() for h in hyps]) == wer(refs, hyps)
    assert cer(["abc", "de"], ["abd", "de"]) == pytest.approx(1 / 5)
    assert cer([[1, 2, 3]], [[1, 3]]) == pytest.approx(1 / 3)
    assert wer(["a"], ["b c d"]) == 3.0
    assert metrics.wer is wer and metrics.cer is cer


def test_error_rates_bad_input():
    with pytest.raises(ValueError):
        wer([""], ["a"])
    with pytest.raises(ValueError):
        cer(["a"], ["a", "b"])
    with pytest.raises(TypeError):
        wer("abc", "abc")
