"""Label-sequence targets for the estimators' ``loss="ctc"``: encoding, decoding and scoring.

With ``loss="ctc"`` the targets are one label sequence per input sequence, of any length up to the
input's (speech frames -> characters or words, handwriting -> letters): ``y`` is a list of N strings
(their characters are the labels) or of N sequences of labels (ints or strings). The labels seen in
``fit``, sorted, are ``classes_``; the network has one output per step for each of them plus the blank
(output 0, :class:`rnnfast.train.CTCLoss`'s default), and ``predict`` decodes its per-step outputs
(:func:`rnnfast.train.ctc_greedy_decode`, or :func:`rnnfast.train.ctc_beam_decode` with ``beam_size >
1``) into label sequences of the kind ``y`` was: strings when ``y`` held strings, else lists of labels.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import numpy as np

from rnnfast._validation import check_int
from rnnfast.estimators.targets import CTC, EncodedTargets, TargetSpec, check_sample_weight
from rnnfast.nn.module import to_numpy
from rnnfast.train.ctc import ctc_beam_decode, ctc_greedy_decode
from rnnfast.train.metrics import edit_distance

__all__ = ["encode_label_sequences", "decode_outputs", "score_sequences"]

_LABEL_TYPES = (int, str, np.integer, np.str_)


def _sequences(y: Any, n: int) -> tuple:
    """``y`` as N lists of labels, and whether every entry was a string."""
    if y is None:
        raise ValueError("loss='ctc' requires y: a list of label sequences, one per sequence of X")
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        raise TypeError(f"with loss='ctc', y must be a list of label sequences (strings or lists of labels), "
                        f"got {type(y).__name__}")
    items = list(to_numpy(y)) if not isinstance(y, (list, tuple)) else list(y)
    if len(items) != n:
        raise ValueError(f"X has {n} sequences but y has {len(items)} label sequences")
    strings = all(isinstance(s, str) for s in items)
    seqs = []
    for i, s in enumerate(items):
        if isinstance(s, bytes) or not (isinstance(s, str) or hasattr(s, "__len__")):
            raise TypeError(f"y[{i}] must be a string or a sequence of labels, got {type(s).__name__}")
        seq = list(s) if isinstance(s, str) else list(np.asarray(to_numpy(s)).reshape(-1).tolist())
        bad = [lab for lab in seq if isinstance(lab, bool) or not isinstance(lab, _LABEL_TYPES)]
        if bad:
            raise TypeError(f"y[{i}] holds the label {bad[0]!r} ({type(bad[0]).__name__}); labels must be "
                            "ints or strings")
        seqs.append(seq)
    return seqs, strings


def _vocabulary(seqs: List[list]) -> np.ndarray:
    found = {lab for s in seqs for lab in s}
    if not found:
        raise ValueError("y holds no labels at all (every sequence is empty): nothing to learn")
    try:
        return np.array(sorted(found))
    except TypeError:
        raise ValueError("the labels of y mix ints and strings; use one type") from None


def _check_fits(codes: List[List[int]], lengths: np.ndarray) -> None:
    """Each label sequence fits its input: its labels plus a blank between repeated labels."""
    for i, c in enumerate(codes):
        need = len(c) + sum(a == b for a, b in zip(c, c[1:]))
        if need > lengths[i]:
            raise ValueError(f"y[{i}] needs at least {need} time steps (its {len(c)} labels and a blank between "
                             f"repeated ones) but X[{i}] has {lengths[i]}: CTC emits at most one label per step")


def encode_label_sequences(y: Any, lengths: np.ndarray, spec: Optional[TargetSpec] = None,
                           who: str = "the estimator", loss: str = "ctc") -> EncodedTargets:
    """Check and encode label-sequence targets for ``loss="ctc"``.

    Parameters
    ----------
    y : list of N strings, or of N sequences of labels (ints or strings)
    lengths : int array (N,)
        The input sequences' lengths (each label sequence must fit in its input).
    spec : TargetSpec, optional
        A fitted estimator's: its labels are kept and ``y`` may use no other.
    who : str
        The estimator's name, for messages.
    loss : str
        The estimator's ``loss`` (a model fitted with "ctc" trains on with "ctc" only).

    Returns
    -------
    EncodedTargets
        ``y`` (N, S) int64: label ids 1..K (0 is the blank), padded with -1.
    """
    if spec is not None and spec.task != CTC:
        raise ValueError(f"{who} was fitted for {spec.task}, not with loss='ctc'; refit from scratch")
    if loss != "ctc":
        raise ValueError(f"{who} was fitted with loss='ctc' but loss is now {loss!r}; set loss='ctc' back or "
                         "refit from scratch (warm_start=False)")
    seqs, strings = _sequences(y, lengths.shape[0])
    classes = spec.classes if spec is not None else _vocabulary(seqs)
    assert classes is not None, "a ctc spec has classes"
    index = {lab: i + 1 for i, lab in enumerate(classes.tolist())}
    codes = []
    for i, s in enumerate(seqs):
        missing = [lab for lab in s if lab not in index]
        if missing:
            raise ValueError(f"y[{i}] holds the label {missing[0]!r}, not among the labels seen in fit "
                             f"{classes.tolist()[:20]}")
        codes.append([index[lab] for lab in s])
    _check_fits(codes, lengths)
    Y = np.full((len(codes), max(1, max(len(c) for c in codes))), -1, dtype=np.int64)
    for i, c in enumerate(codes):
        Y[i, :len(c)] = c
    new = spec if spec is not None else TargetSpec(CTC, True, int(classes.size) + 1, classes=classes,
                                                   strings=strings)
    return EncodedTargets(Y, new)


def decode_outputs(out: np.ndarray, lengths: np.ndarray, spec: TargetSpec,
                   beam_size: int = 1) -> List[Union[str, list]]:
    """The label sequences of per-step outputs ``out`` (N, T, K + 1): best path, or prefix beam search
    with ``beam_size`` > 1; strings when the model was fitted on strings."""
    beam_size = check_int(beam_size, "beam_size", 1)
    if beam_size == 1:
        ids = ctc_greedy_decode(out, lengths)
    else:
        ids = ctc_beam_decode(out, lengths, beam_size=beam_size)
    assert spec.classes is not None, "a ctc spec has classes"
    labels = [spec.classes[np.asarray(s, dtype=np.intp) - 1].tolist() for s in ids]
    return ["".join(s) for s in labels] if spec.strings else labels


def score_sequences(pred: Sequence, y: Any, sample_weight: Any = None) -> float:
    """1 - the label error rate: the (weighted) edit distances between ``pred`` and ``y`` over the
    (weighted) reference labels; for strings, 1 - the character error rate."""
    refs, _ = _sequences(y, len(pred))
    w = check_sample_weight(sample_weight, len(pred))
    w = np.ones(len(pred)) if w is None else w
    dist = np.array([edit_distance(r, list(p)) for r, p in zip(refs, pred)], dtype=np.float64)
    total = float(w @ np.array([len(r) for r in refs], dtype=np.float64))
    return 1.0 - float(w @ dist) / total if total > 0 else float(np.all(dist[w > 0] == 0))
