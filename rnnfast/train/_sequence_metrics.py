"""Metrics of whole output sequences: corpus BLEU, entity-level F1 of tagged sequences, word and character
error rates (re-exported by :mod:`rnnfast.train.metrics`).

They follow the reference tools exactly: :func:`bleu` is sacrebleu's ``corpus_bleu(..., tokenize="none")``
on already tokenised text, :func:`entity_f1` is seqeval's ``f1_score`` (its default mode for BIO, its strict
IOBES mode for BIOES), and :func:`wer` / :func:`cer` are corpus rates: total edits over total reference length.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnfast._validation import check_bool, check_int, check_option, check_real

__all__ = ["bleu", "entity_f1", "entity_report", "edit_distance", "wer", "cer"]

Tokens = Sequence[Hashable]


# ---------------------------------------------------------------------------------------- shared checks
def _token_list(seq: Any, name: str) -> list:
    """``seq`` as a list of tokens (a string is refused: it would be read character by character)."""
    if isinstance(seq, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of tokens, not a string (split it first, e.g. text.split())")
    if isinstance(seq, np.ndarray):
        return seq.tolist()
    try:
        return list(seq)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of tokens, got {type(seq).__name__}") from None


def _corpus(references: Any, hypotheses: Any) -> Tuple[list, list]:
    """The two corpora as lists of the same, non-zero length."""
    for name, obj in (("references", references), ("hypotheses", hypotheses)):
        if isinstance(obj, (str, bytes)) or not hasattr(obj, "__len__"):
            raise TypeError(f"{name} must be a list (one entry per sentence), got {type(obj).__name__}")
    refs, hyps = list(references), list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"references has {len(refs)} entries, hypotheses {len(hyps)}: one each per sentence")
    if not hyps:
        raise ValueError("the corpus is empty")
    return refs, hyps


# ---------------------------------------------------------------------------------------- BLEU
_SMOOTH_DEFAULTS = {"none": 0.0, "floor": 0.1, "add-k": 1.0, "exp": 0.0}  # the value "floor" and "add-k" use


def _ngram_counts(tokens: list, max_n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _is_reference_set(ref: Any) -> bool:
    """Several references: a non-empty list whose items are all token sequences (lists, tuples, arrays)."""
    return (isinstance(ref, (list, tuple)) and len(ref) > 0
            and all(isinstance(r, (list, tuple, np.ndarray)) for r in ref))


def _sentence_stats(refs: List[list], hyp: list, max_n: int) -> Tuple[int, int, List[int], List[int]]:
    """(hypothesis length, closest reference length, clipped matches per order, n-grams per order)."""
    ref_counts: Counter = Counter()
    for r in refs:
        for gram, c in _ngram_counts(r, max_n).items():
            ref_counts[gram] = max(ref_counts[gram], c)
    # the closest reference length, the shorter one on a tie (sacrebleu's rule)
    ref_len = min((len(r) for r in refs), key=lambda n: (abs(len(hyp) - n), n))
    correct, total = [0] * max_n, [0] * max_n
    for gram, c in _ngram_counts(hyp, max_n).items():
        total[len(gram) - 1] += c
        correct[len(gram) - 1] += min(c, ref_counts.get(gram, 0))
    return len(hyp), ref_len, correct, total


def _bleu_from_stats(matches: Sequence[float], totals: Sequence[float], sys_len: int, ref_len: int, smooth: str,
                     value: float) -> float:
    """sacrebleu's ``compute_bleu`` (effective_order=False) from the corpus statistics."""
    correct, total = list(matches), list(totals)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    precisions = [0.0] * len(correct)
    mteval = 1.0
    for n in range(len(correct)):
        if smooth == "add-k" and n > 0:
            correct[n] += value
            total[n] += value
        if total[n] == 0:
            break
        if correct[n] == 0:
            if smooth == "exp":
                mteval *= 2
                precisions[n] = 100.0 / (mteval * total[n])
            elif smooth == "floor":
                precisions[n] = 100.0 * value / total[n]
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    # sacrebleu floors log(0) at -9999999999 (the score is then 0.0)
    logs = [math.log(p) if p > 0 else -9999999999 for p in precisions]
    return bp * math.exp(sum(logs) / len(logs))


def bleu(references: Sequence, hypotheses: Sequence[Tokens], max_n: int = 4, smooth: str = "exp",
         smooth_value: Optional[float] = None) -> float:
    """Corpus BLEU on 0-100 (Papineni et al., 2002), as sacrebleu's ``corpus_bleu(..., tokenize="none")``.

    Clipped n-gram matches (against the largest count in any reference) and n-gram totals are summed over
    the corpus, as are the hypothesis lengths and, per sentence, the reference length closest to the
    hypothesis (the shorter on a tie); the score is the brevity penalty times the geometric mean of the
    n-gram precisions.

    Parameters
    ----------
    references : list
        One entry per hypothesis: a token sequence, or a list of token sequences (several references;
        their number may vary by sentence).
    hypotheses : list of token sequences
        Tokens are any hashable values other than lists and tuples (ints, strings, ...), compared by
        equality; strings are not split (pass ``text.split()``).
    max_n : int >= 1, default 4
        The largest n-gram order.
    smooth : {"exp", "none", "floor", "add-k"}, default "exp"
        sacrebleu's smoothing: "exp" (its default, NIST's: the k-th order without matches counts as
        ``1 / (2^k total)``), "floor" (zero matches count as ``smooth_value``, default 0.1), "add-k"
        (``smooth_value``, default 1, added to the matches and totals of orders >= 2), "none".
    smooth_value : float > 0, optional
        For "floor" and "add-k".

    Returns
    -------
    float
        0 when nothing matches (not even one unigram).
    """
    max_n = check_int(max_n, "max_n", 1)
    smooth = check_option(smooth, "smooth", tuple(_SMOOTH_DEFAULTS))
    value = check_real(smooth_value, "smooth_value", 0.0, math.inf, closed="neither", allow_none=True)
    if value is None:
        value = _SMOOTH_DEFAULTS[smooth]
    refs, hyps = _corpus(references, hypotheses)
    correct, total = [0] * max_n, [0] * max_n
    sys_len = ref_len = 0
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        ref_set = ref if _is_reference_set(ref) else [ref]
        ref_lists = [_token_list(r, f"references[{i}]") for r in ref_set]
        h_len, r_len, c, t = _sentence_stats(ref_lists, _token_list(hyp, f"hypotheses[{i}]"), max_n)
        sys_len += h_len
        ref_len += r_len
        correct = [a + b for a, b in zip(correct, c)]
        total = [a + b for a, b in zip(total, t)]
    return _bleu_from_stats(correct, total, sys_len, ref_len, smooth, value)


# ---------------------------------------------------------------------------------------- entity F1
_SCHEMES = {"BIO": "BI", "BIOES": "BIES"}


def _check_tags(y_true: Any, y_pred: Any, scheme: str) -> Tuple[List[list], List[list]]:
    """Both corpora as lists of tag lists, each tag "O" or a prefix of the scheme, optionally "-TYPE"."""
    true, pred = _corpus(y_true, y_pred)
    prefixes = _SCHEMES[scheme]
    out = []
    for name, corpus in (("y_true", true), ("y_pred", pred)):
        seqs = [_token_list(s, f"{name}[{i}]") for i, s in enumerate(corpus)]
        for i, seq in enumerate(seqs):
            for tag in seq:
                if not isinstance(tag, str):
                    raise TypeError(f"{name}[{i}] holds a {type(tag).__name__}; tags are strings such as 'B-PER'")
                if tag != "O" and not (tag[:1] in prefixes and tag[1:2] in ("", "-")):
                    raise ValueError(f"{name}[{i}] holds the tag {tag!r}, which is not of the {scheme} scheme "
                                     f"('O' or one of {', '.join(prefixes)} followed by '-TYPE')")
        out.append(seqs)
    for i, (t, p) in enumerate(zip(*out)):
        if len(t) != len(p):
            raise ValueError(f"y_true[{i}] has {len(t)} tags, y_pred[{i}] has {len(p)}")
    return out[0], out[1]


def _split_tag(tag: str) -> Tuple[str, str]:
    """(prefix, entity type); "O" is ("O", "_") and a bare prefix has type "_", as seqeval."""
    return tag[0], tag[2:] or "_"


def _chunk_ends(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """seqeval's ``end_of_chunk`` (default mode): whether the previous tag closes an entity."""
    return (prev in "ES" or (prev in "BI" and cur in "BSO")
            or (prev != "O" and prev_type != cur_type))


def _chunk_starts(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """seqeval's ``start_of_chunk`` (default mode): whether the current tag opens an entity."""
    return (cur in "BS" or (prev in "ES" and cur in "EI") or (prev == "O" and cur in "EI")
            or (cur != "O" and prev_type != cur_type))


def _entities_lenient(seqs: List[list]) -> set:
    """seqeval's default-mode entities (type, start, end) of the sequences joined with an "O" between."""
    flat = [tag for seq in seqs for tag in seq + ["O"]] + ["O"]
    found, prev, prev_type, begin = set(), "O", "", 0
    for i, tag in enumerate(flat):
        cur, cur_type = _split_tag(tag)
        if _chunk_ends(prev, cur, prev_type, cur_type):
            found.add((prev_type, begin, i - 1))
        if _chunk_starts(prev, cur, prev_type, cur_type):
            begin = i
        prev, prev_type = cur, cur_type
    return found


def _entities_strict(seqs: List[list]) -> set:
    """seqeval's strict IOBES entities (type, sentence, start, end): B I* E or S, one type throughout."""
    found = set()
    for sent, seq in enumerate(seqs):
        tags = [_split_tag(t) for t in seq] + [("O", "_")]
        i = 0
        while i < len(tags):
            prefix, kind = tags[i]
            if prefix not in "BS":
                i += 1
                continue
            end = i + 1
            while tags[end - 1][0] in "BI" and tags[end][0] in "IE" and tags[end][1] == kind:
                end += 1
            if tags[end - 1][0] in "SE":
                found.add((kind, sent, i, end))
            i = end
    return found


def entity_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]],
                  scheme: str = "BIO") -> Dict[str, Dict[str, float]]:
    """Precision, recall, F1 and support of each entity type (seqeval's per-type figures).

    Parameters
    ----------
    y_true, y_pred, scheme : as :func:`entity_f1`

    Returns
    -------
    dict
        ``{type: {"precision", "recall", "f1", "support"}}`` for every type in either corpus (sorted), and
        ``"micro avg"`` over all entities. Support is the number of true entities; an undefined ratio is 0.
    """
    scheme = check_option(scheme, "scheme", tuple(_SCHEMES))
    true, pred = _check_tags(y_true, y_pred, scheme)
    extract = _entities_lenient if scheme == "BIO" else _entities_strict
    ents_true, ents_pred = extract(true), extract(pred)
    report = {}
    for kind in sorted({e[0] for e in ents_true | ents_pred}):
        t = {e for e in ents_true if e[0] == kind}
        p = {e for e in ents_pred if e[0] == kind}
        report[kind] = _prf(len(t & p), len(p), len(t))
    report["micro avg"] = _prf(len(ents_true & ents_pred), len(ents_pred), len(ents_true))
    return report


def _prf(tp: int, n_pred: int, n_true: int) -> Dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    den = precision + recall
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (den if den else 1.0),
            "support": n_true}


def entity_f1(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], scheme: str = "BIO",
              return_report: bool = False) -> Union[float, Tuple[float, Dict[str, Dict[str, float]]]]:
    """Micro-averaged entity-level F1 of tagged sequences (named-entity recognition, chunking).

    An entity counts as found only when its type and both its ends match. ``scheme="BIO"`` reads entities
    as seqeval's default mode (conlleval's rules: an ``I-X`` after ``O`` or after another type also opens
    an entity) and equals ``seqeval.metrics.f1_score(y_true, y_pred)``; ``scheme="BIOES"`` reads them
    strictly (only ``B-X I-X* E-X`` and ``S-X`` are entities) and equals ``seqeval.metrics.f1_score(y_true,
    y_pred, mode="strict", scheme=IOBES)``.

    Parameters
    ----------
    y_true, y_pred : list of lists of str
        One tag list per sentence, of equal lengths; tags are "O" or a prefix of the scheme (B, I; and E,
        S for BIOES) followed by "-TYPE" (a bare prefix is the type "_").
    scheme : {"BIO", "BIOES"}, default "BIO"
    return_report : bool, default False
        Also return :func:`entity_report`'s per-type figures.

    Returns
    -------
    float, or (float, dict) with ``return_report``
        0 when there is no entity in either corpus.
    """
    return_report = check_bool(return_report, "return_report")
    report = entity_report(y_true, y_pred, scheme)
    f1 = report["micro avg"]["f1"]
    return (f1, report) if return_report else f1


# ---------------------------------------------------------------------------------------- error rates
def edit_distance(reference: Tokens, hypothesis: Tokens) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions turning ``hypothesis`` into
    ``reference`` (unit costs). A string is a sequence of characters here.

    Parameters
    ----------
    reference, hypothesis : sequences of hashable tokens, or strings

    Returns
    -------
    int
    """
    ref, hyp = list(reference), list(hypothesis)
    ids: Dict[Any, int] = {}
    r = np.array([ids.setdefault(t, len(ids)) for t in ref], dtype=np.int64)
    h = np.array([ids.setdefault(t, len(ids)) for t in hyp], dtype=np.int64)
    steps = np.arange(len(h) + 1)
    row = steps.copy()  # distance of the empty reference prefix to each hypothesis prefix
    for i in range(len(r)):
        sub = row[:-1] + (h != r[i])
        cur = np.empty_like(row)
        cur[0] = i + 1
        cur[1:] = np.minimum(row[1:] + 1, sub)
        # insertions along the row: cur[j] = min_k (cur[k] + j - k), a running minimum
        row = np.minimum.accumulate(cur - steps) + steps
    return int(row[-1])


def _error_rate(references: Sequence, hypotheses: Sequence, split) -> float:
    refs, hyps = _corpus(references, hypotheses)
    edits = length = 0
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        r, h = split(ref, f"references[{i}]"), split(hyp, f"hypotheses[{i}]")
        edits += edit_distance(r, h)
        length += len(r)
    if length == 0:
        raise ValueError("the references are all empty: the error rate is undefined")
    return edits / length


def _words(seq: Any, name: str) -> list:
    return seq.split() if isinstance(seq, str) else _token_list(seq, name)


def _chars(seq: Any, name: str) -> list:
    return list(seq) if isinstance(seq, str) else _token_list(seq, name)


def wer(references: Sequence, hypotheses: Sequence) -> float:
    """Word error rate of a corpus: the total word edit distance over the total reference words.

    Parameters
    ----------
    references, hypotheses : lists of the same length
        Each entry a string (split on whitespace) or a sequence of tokens.

    Returns
    -------
    float
        Can exceed 1 (many insertions).
    """
    return _error_rate(references, hypotheses, _words)


def cer(references: Sequence, hypotheses: Sequence) -> float:
    """Character error rate of a corpus: the total character edit distance over the total reference
    characters (spaces included).

    Parameters
    ----------
    references, hypotheses : lists of the same length
        Each entry a string, or a sequence of symbols (e.g. a CTC decoder's label lists).

    Returns
    -------
    float
    """
    return _error_rate(references, hypotheses, _chars)
