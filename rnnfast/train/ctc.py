"""Connectionist temporal classification: the loss (:class:`CTCLoss`) and two decoders.

CTC (Graves et al., 2006) scores a label sequence ``l`` of length S against T >= S per-step class scores
without an alignment: the probability of ``l`` is the sum over every path of T classes that collapses
to ``l`` (merge repeats, then drop the blanks). With the extended sequence ``l'`` (a blank before,
between and after the labels: length ``2 S + 1``) the forward variables are, in log space,

    alpha_t(s) = logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2)]) + log y_t(l'_s)

(the skip from ``s-2`` only onto a label that differs from the one two places back), the backward
variables ``beta`` are the forward variables of each sequence reversed in time and in ``l'`` (from its own
last step), and ``-log p(l|x) = -logsumexp(alpha_{T-1}
at the last two positions)``. The gradient with respect to the logits is ``softmax(logits) - gamma``, where
``gamma_t(c)`` is the posterior probability that step ``t`` emits ``c``.

The recursion is vectorised over the batch and the positions of ``l'`` (a Python loop over time only),
in float64 whatever the logits' dtype. :class:`rnnfast.train.Trainer` trains with it, on variable-length
inputs too: it passes each batch's lengths to a loss with an ``input_lengths`` parameter.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np

from rnnfast._validation import check_bool, check_int, check_option
from rnnfast.nn.module import as_float_keep, as_real_array, to_numpy

__all__ = ["CTCLoss", "ctc_greedy_decode", "ctc_beam_decode", "log_softmax"]

_NEG_INF = -np.inf
_FLOOR = -1e300  # below any finite log-probability a recursion reaches


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis (idempotent: log-probabilities come back unchanged)."""
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------- validation
def _check_logits(logits) -> np.ndarray:
    x = as_float_keep(to_numpy(logits), "logits")
    if x.ndim != 3:
        raise ValueError(f"logits must be 3-D (batch, time, classes), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[2] < 2:
        raise ValueError(f"logits need at least one sequence and two classes (blank and a label), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("logits must be finite")
    return x


def _check_int_array(a, name: str, ndim: Tuple[int, ...]) -> np.ndarray:
    arr = as_real_array(a, name)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise TypeError(f"{name} must hold whole numbers")
        arr = arr.astype(np.int64)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in ndim)}, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _input_lengths(input_lengths, mask, B: int, T: int) -> np.ndarray:
    """(B,) valid steps: ``input_lengths``, else the True count of a (B, T) ``mask``, else all T."""
    if input_lengths is None and mask is not None:
        m = np.asarray(mask)
        if m.shape != (B, T):
            raise ValueError(f"mask must have shape ({B}, {T}), got {m.shape}")
        input_lengths = m.astype(bool).sum(axis=1)
    if input_lengths is None:
        return np.full(B, T, dtype=np.int64)
    lengths = _check_int_array(input_lengths, "input_lengths", (1,))
    if lengths.shape != (B,):
        raise ValueError(f"input_lengths must have shape ({B},), got {lengths.shape}")
    if lengths.min() < 0 or lengths.max() > T:
        raise ValueError(f"input_lengths must be in [0, {T}], got min {lengths.min()}, max {lengths.max()}")
    return lengths


def _target_rows(targets, target_lengths, B: int) -> List[np.ndarray]:
    """The B label sequences from padded (B, S) targets, concatenated 1-D targets, or a list of sequences.

    Without ``target_lengths`` a list gives its own lengths and a padded array ends each row at its first
    negative entry (pad with -1)."""
    if isinstance(targets, (list, tuple)) and target_lengths is None:
        if len(targets) != B:
            raise ValueError(f"targets has {len(targets)} sequences, logits have {B}")
        return [_check_int_array(np.asarray(t, dtype=np.int64) if len(t) == 0 else t, f"targets[{i}]", (1,))
                for i, t in enumerate(targets)]
    tg = _check_int_array(targets, "targets", (1, 2))
    if target_lengths is None:
        if tg.ndim != 2:
            raise ValueError("1-D (concatenated) targets need target_lengths")
        pad = tg < 0
        lengths = np.where(pad.any(axis=1), pad.argmax(axis=1), tg.shape[1])
    else:
        lengths = _check_int_array(target_lengths, "target_lengths", (1,))
    if lengths.shape != (B,):
        raise ValueError(f"target_lengths must have shape ({B},), got {lengths.shape}")
    if lengths.size and lengths.min() < 0:
        raise ValueError("target_lengths must be >= 0")
    if tg.ndim == 2:
        if tg.shape[0] != B:
            raise ValueError(f"targets has {tg.shape[0]} rows, logits have {B} sequences")
        if lengths.max() > tg.shape[1]:
            raise ValueError(f"target_lengths must be at most the targets' width {tg.shape[1]}")
        return [tg[b, :lengths[b]] for b in range(B)]
    if lengths.sum() != tg.shape[0]:
        raise ValueError(f"concatenated targets hold {tg.shape[0]} labels, target_lengths sum to {lengths.sum()}")
    return np.split(tg, np.cumsum(lengths)[:-1])


def _extended(rows: Sequence[np.ndarray], blank: int, C: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Extended labels ``l'`` (B, L) padded with blanks, their lengths (B,) and the skip mask (B, L)."""
    B, S = len(rows), max((len(r) for r in rows), default=0)
    L = 2 * S + 1
    ext = np.full((B, L), blank, dtype=np.int64)
    for b, r in enumerate(rows):
        if r.size and (r.min() < 0 or r.max() >= C or np.any(r == blank)):
            bad = r[(r < 0) | (r >= C) | (r == blank)][0]
            raise ValueError(f"target labels must be in [0, {C}) and not the blank {blank}; sequence {b} has {bad}")
        ext[b, 1:2 * len(r):2] = r
    ext_len = 2 * np.array([len(r) for r in rows], dtype=np.int64) + 1
    skip = np.zeros((B, L), dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, ext_len, skip


# ---------------------------------------------------------------------------------------- recursions
def _lse3_into(a: np.ndarray, b: np.ndarray, c: np.ndarray, out: np.ndarray, m: np.ndarray,
               tmp: np.ndarray) -> None:
    """``out = log(exp(a) + exp(b) + exp(c))`` elementwise, -inf where all three are, through the buffers
    ``m`` and ``tmp`` (numpy's exp and log are vectorised; its logaddexp is several times slower)."""
    np.maximum(a, b, out=m)
    np.maximum(m, c, out=m)
    np.maximum(m, _FLOOR, out=m)  # all three -inf: a finite shift keeps exp(-inf - m) = 0, not NaN
    np.subtract(a, m, out=tmp)
    np.exp(tmp, out=out)
    for x in (b, c):
        np.subtract(x, m, out=tmp)
        np.exp(tmp, out=tmp)
        out += tmp
    np.log(out, out=out)
    out += m


def _alphas(em: np.ndarray, skip: np.ndarray, in_len: np.ndarray) -> np.ndarray:
    """Forward log-variables (B, T, L); a sequence's values stay frozen past its last step."""
    B, T, L = em.shape
    # two -inf columns on the left stand for the positions s - 1 and s - 2 of s = 0 and 1
    alpha = np.full((B, T, L + 2), _NEG_INF)
    alpha[:, 0, 2:4] = np.where((in_len > 0)[:, None], em[:, 0, :2], _NEG_INF)
    skip_add = np.where(skip, 0.0, _NEG_INF)  # the jump from s - 2 is allowed (0) or not (-inf)
    live_all = int(in_len.min()) if B else T  # steps every sequence still runs
    new, jump, m, tmp = (np.empty((B, L)) for _ in range(4))
    with np.errstate(divide="ignore"):
        for t in range(1, T):
            prev = alpha[:, t - 1]
            np.add(prev[:, :-2], skip_add, out=jump)
            _lse3_into(prev[:, 2:], prev[:, 1:-1], jump, new, m, tmp)
            new += em[:, t]
            alpha[:, t, 2:] = new if t < live_all else np.where((t < in_len)[:, None], new, prev[:, 2:])
    return alpha[:, :, 2:]


def _reversal(in_len: np.ndarray, ext_len: np.ndarray, T: int, L: int) -> Tuple[np.ndarray, np.ndarray]:
    """Flat indices (B, T, L) that reverse each sequence's valid block in time and in position, and the
    mask of that block.

    The reversed extended sequence is again an extended sequence, so the backward variables are the
    forward variables of the reversed problem, reversed back."""
    B = in_len.shape[0]
    t_idx = in_len[:, None] - 1 - np.arange(T)[None, :]
    s_idx = ext_len[:, None] - 1 - np.arange(L)[None, :]
    valid = (t_idx >= 0)[:, :, None] & (s_idx >= 0)[:, None, :]
    flat = ((np.arange(B)[:, None, None] * T + np.maximum(t_idx, 0)[:, :, None]) * L
            + np.maximum(s_idx, 0)[:, None, :])
    return flat, valid


def _betas(em: np.ndarray, skip: np.ndarray, in_len: np.ndarray, ext_len: np.ndarray) -> np.ndarray:
    """Backward log-variables (B, T, L), each sequence started at its own last step (-inf past it)."""
    B, T, L = em.shape
    flat, valid = _reversal(in_len, ext_len, T, L)
    # reversed, "l'_s differs from l'_{s-2}" becomes "from l'_{s+2}": the skip of position s + 2
    s_idx = ext_len[:, None] + 1 - np.arange(L)[None, :]
    skip_rev = np.take_along_axis(np.pad(skip, ((0, 0), (0, 2))), np.clip(s_idx, 0, L + 1), axis=1)
    skip_rev &= (s_idx >= 2) & (s_idx < ext_len[:, None])
    alpha_rev = _alphas(np.where(valid, em.reshape(-1).take(flat), _NEG_INF), skip_rev, in_len)
    return np.where(valid, np.ascontiguousarray(alpha_rev).reshape(-1).take(flat), _NEG_INF)


def _log_likelihood(alpha: np.ndarray, in_len: np.ndarray, ext_len: np.ndarray) -> np.ndarray:
    """log p(l | x) per sequence (B,) from the forward variables at each sequence's last step."""
    B = alpha.shape[0]
    rows = np.arange(B)
    last = alpha[rows, np.maximum(in_len - 1, 0)]
    a = last[rows, ext_len - 1]
    b = np.where(ext_len > 1, last[rows, np.maximum(ext_len - 2, 0)], _NEG_INF)
    ll = np.logaddexp(a, b)
    # no step at all: only the empty target, with probability 1
    return np.where(in_len == 0, np.where(ext_len == 1, 0.0, _NEG_INF), ll)


def ctc_forward_backward(logp: np.ndarray, ext: np.ndarray, ext_len: np.ndarray, skip: np.ndarray,
                         in_len: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-sequence negative log-likelihoods (B,) and their gradients wrt the logits (B, T, C), float64.

    Parameters
    ----------
    logp : float64 array (B, T, C)
        Log-probabilities (a log-softmax of the logits).
    ext, ext_len, skip : the extended labels, their lengths and skip mask (see :func:`_extended`)
    in_len : int array (B,)

    Returns
    -------
    nll : (B,) array; ``inf`` where no path fits the input length
    grad : (B, T, C) array; zero past each sequence's end, NaN for an impossible sequence (as PyTorch)
    """
    B, T, C = logp.shape
    L = ext.shape[1]
    em = _emissions(logp, ext, ext_len)
    alpha = _alphas(em, skip, in_len)
    beta = _betas(em, skip, in_len, ext_len)
    ll = _log_likelihood(alpha, in_len, ext_len)
    fin = np.isfinite(ll)
    with np.errstate(invalid="ignore"):
        occupied = np.where(em > _NEG_INF, alpha + beta - em, _NEG_INF)
    post = np.exp(occupied - np.where(fin, ll, 0.0)[:, None, None])  # (B, T, L) posterior of each position
    onehot = np.zeros((B, L, C))
    np.put_along_axis(onehot, ext[:, :, None], 1.0, axis=2)
    gamma = np.matmul(post, onehot)
    valid = (np.arange(T)[None, :] < in_len[:, None])[:, :, None]
    grad = np.where(valid, np.exp(logp) - gamma, 0.0)
    grad[~fin] = np.where(valid[~fin], np.nan, 0.0)  # PyTorch's gradient of an infinite loss
    return -ll, grad


# ---------------------------------------------------------------------------------------- the loss
class CTCLoss:
    """CTC loss from logits (PyTorch's ``CTCLoss`` applied to ``log_softmax(logits)``), with its gradient.

    Called as ``value, grad = ctc(logits, targets, input_lengths, target_lengths)``; like the other losses of
    :mod:`rnnfast.train.losses` it also takes the fit loop's ``mask`` and ``sample_weight`` keywords, so it
    plugs into :class:`rnnfast.train.Trainer`: ``Trainer(model, CTCLoss(), optimizer).fit(X, Y, lengths)``
    (or a list ``X`` of (T_i, F) arrays) with ``Y`` the label sequences padded with -1 (e.g.
    ``pad_sequences(labels, value=-1)[0]``) and a model with per-step class scores (B, T, C), the blank
    included; the Trainer passes each batch's lengths as ``input_lengths``. The estimators' ``loss="ctc"``
    does all of this for you.

    Parameters
    ----------
    blank : int >= 0, default 0
        The blank class (never a target label).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean": each sequence's loss divided by its target length (at least 1), then the mean over the
        batch (PyTorch's); "sum": the sum over the batch; "none": the (B,) per-sequence losses, and the
        gradient of their sum.
    zero_infinity : bool, default False
        Infinite losses (no alignment fits: too few steps for the labels) and their gradients become 0.
        Otherwise such a sequence's loss is ``inf`` and its gradient NaN, as in PyTorch.

    Notes
    -----
    With ``sample_weight`` (B,) each sequence's loss is weighted; "mean" then divides by the summed weights
    instead of B. The forward and backward recursions run in log space, in float64, vectorised over the
    batch; the gradient is returned in the logits' dtype (float32 kept, else float64).
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> None:
        self.blank = check_int(blank, "blank", 0)
        self.reduction = check_option(reduction, "reduction", ("mean", "sum", "none"))
        self.zero_infinity = check_bool(zero_infinity, "zero_infinity")

    def __call__(self, logits, targets, input_lengths=None, target_lengths=None, mask=None,
                 sample_weight=None) -> Tuple[Union[float, np.ndarray], np.ndarray]:
        """The loss and its gradient wrt ``logits``.

        Parameters
        ----------
        logits : array-like of float (B, T, C)
            Unnormalised class scores (the loss applies log-softmax over C).
        targets : int array (B, S) padded, 1-D concatenated (needs ``target_lengths``), or a list of B
            label sequences. Labels are in [0, C) and never the blank.
        input_lengths : int array (B,), optional
            Valid steps of each sequence, in [0, T] (default: from ``mask``, else T).
        target_lengths : int array (B,), optional
            Labels of each sequence (default: a list's lengths; a padded array's entries before its
            first negative one).
        mask : bool array (B, T), optional
            The fit loop's valid steps, used when ``input_lengths`` is None.
        sample_weight : array (B,), optional

        Returns
        -------
        value : float, or (B,) array for ``reduction="none"``
        grad : numpy.ndarray (B, T, C)
        """
        x = _check_logits(logits)
        B, T, C = x.shape
        if self.blank >= C:
            raise ValueError(f"blank={self.blank} is not a class of logits with {C} classes")
        in_len = _input_lengths(input_lengths, mask, B, T)
        rows = _target_rows(targets, target_lengths, B)
        ext, ext_len, skip = _extended(rows, self.blank, C)
        nll, grad = ctc_forward_backward(log_softmax(x.astype(np.float64)), ext, ext_len, skip, in_len)
        if self.zero_infinity:
            inf = np.isinf(nll)
            nll[inf] = 0.0
            grad[inf] = 0.0
        scale = self._scales(ext_len // 2, sample_weight, B)
        grad *= scale[:, None, None]
        if self.reduction == "none":
            return nll * scale, grad.astype(x.dtype, copy=False)
        return float(np.sum(nll * scale)), grad.astype(x.dtype, copy=False)

    def _scales(self, target_len: np.ndarray, sample_weight, B: int) -> np.ndarray:
        """Each sequence's factor in the reduced loss (B,)."""
        w = np.ones(B)
        if sample_weight is not None:
            w = as_real_array(sample_weight, "sample_weight").astype(np.float64)
            if w.shape != (B,):
                raise ValueError(f"sample_weight must have shape ({B},), got {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("sample_weight must be finite and non-negative")
        if self.reduction != "mean":
            return w
        total = w.sum()
        return w / np.maximum(target_len, 1) / total if total > 0 else np.zeros(B)

    def __repr__(self) -> str:
        return f"CTCLoss(blank={self.blank}, reduction={self.reduction!r}, zero_infinity={self.zero_infinity})"


# ---------------------------------------------------------------------------------------- decoding
def _decode_inputs(scores, input_lengths, blank: int) -> Tuple[np.ndarray, np.ndarray]:
    x = _check_logits(scores)
    B, T, C = x.shape
    blank = check_int(blank, "blank", 0)
    if blank >= C:
        raise ValueError(f"blank={blank} is not a class of scores with {C} classes")
    return x, _input_lengths(input_lengths, None, B, T)


def ctc_greedy_decode(logits_or_logprobs, input_lengths=None, blank: int = 0) -> List[List[int]]:
    """Best-path decoding: the most likely class at each step, repeats merged, blanks dropped.

    Parameters
    ----------
    logits_or_logprobs : array-like of float (B, T, C)
        Logits, log-probabilities or probabilities (only the argmax per step matters).
    input_lengths : int array (B,), optional
        Valid steps of each sequence (default all T).
    blank : int, default 0

    Returns
    -------
    list of B lists of int
    """
    x, in_len = _decode_inputs(logits_or_logprobs, input_lengths, blank)
    best = x.argmax(axis=2)
    out = []
    for b in range(x.shape[0]):
        path = best[b, :in_len[b]]
        keep = np.ones(path.size, dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(c) for c in path[keep] if c != blank])
    return out


def _emissions(logp: np.ndarray, ext: np.ndarray, ext_len: np.ndarray) -> np.ndarray:
    """log y_t(l'_s) (B, T, L), -inf at the positions past each extended sequence's end."""
    B, T, _ = logp.shape
    L = ext.shape[1]
    em = np.take_along_axis(logp, np.broadcast_to(ext[:, None, :], (B, T, L)), axis=2)
    return np.where(np.arange(L)[None, None, :] < ext_len[:, None, None], em, _NEG_INF)


def _sequence_log_probs(logp: np.ndarray, candidates: List[Tuple[int, ...]], blank: int) -> np.ndarray:
    """Exact log p(l | x) of each candidate label sequence under one sequence's log-probabilities (T, C)."""
    rows = [np.array(c, dtype=np.int64) for c in candidates]
    ext, ext_len, skip = _extended(rows, blank, logp.shape[1])
    em = _emissions(np.broadcast_to(logp, (len(rows),) + logp.shape), ext, ext_len)
    in_len = np.full(len(rows), logp.shape[0], dtype=np.int64)
    return _log_likelihood(_alphas(em, skip, in_len), in_len, ext_len)


def _beam_step(prefixes: List[Tuple[int, ...]], pb: np.ndarray, pnb: np.ndarray, lp: np.ndarray, blank: int):
    """One step of prefix beam search for K prefixes and the step's log-probabilities lp (C,).

    Returns the K prefixes' new (blank-ending, label-ending) log-probabilities and the (K, C) log-probabilities
    of their one-label extensions (-inf for the blank, and where an extension is already a kept prefix:
    that is merged into the prefix's own label-ending probability)."""
    last = np.array([p[-1] if p else -1 for p in prefixes])
    same_b = np.logaddexp(pb, pnb) + lp[blank]
    same_nb = np.where(last >= 0, pnb + lp[np.maximum(last, 0)], _NEG_INF)  # a repeat without a blank merges
    # a label equal to the last one extends only the paths that ended in a blank
    ext = np.where(np.arange(lp.size)[None, :] == last[:, None], pb[:, None], np.logaddexp(pb, pnb)[:, None])
    ext = ext + lp[None, :]
    ext[:, blank] = _NEG_INF
    index = {p: i for i, p in enumerate(prefixes)}
    for j, p in enumerate(prefixes):
        i = index.get(p[:-1]) if p else None
        if i is not None:
            same_nb[j] = np.logaddexp(same_nb[j], ext[i, p[-1]])
            ext[i, p[-1]] = _NEG_INF
    return same_b, same_nb, ext


def _prefix_beam(logp: np.ndarray, beam_size: int, blank: int) -> List[Tuple[int, ...]]:
    """Prefix beam search over one sequence's log-probabilities (T, C): the prefixes kept at the end, best
    first. Every step scores the kept prefixes and all their one-label extensions at once."""
    prefixes: List[Tuple[int, ...]] = [()]
    pb, pnb = np.zeros(1), np.full(1, _NEG_INF)  # log p of each prefix's paths ending in blank / in a label
    C = logp.shape[1]
    for t in range(logp.shape[0]):
        same_b, same_nb, ext = _beam_step(prefixes, pb, pnb, logp[t], blank)
        K = len(prefixes)
        scores = np.concatenate([np.logaddexp(same_b, same_nb), ext.ravel()])
        keep = [k for k in np.argsort(-scores, kind="stable")[:beam_size].tolist() if scores[k] > _NEG_INF]
        prefixes = [prefixes[k] if k < K else prefixes[(k - K) // C] + ((k - K) % C,) for k in keep]
        keep = np.array(keep)
        pb = np.where(keep < K, same_b[np.minimum(keep, K - 1)], _NEG_INF)
        pnb = np.where(keep < K, same_nb[np.minimum(keep, K - 1)], ext.ravel()[np.maximum(keep - K, 0)])
    return prefixes


def ctc_beam_decode(logits_or_logprobs, input_lengths=None, beam_size: int = 8, blank: int = 0) -> List[List[int]]:
    """Prefix beam search (log space): the label sequence of highest probability (summed over its paths)
    among the ``beam_size`` prefixes kept at every step.

    The prefixes left at the end and the greedy (best-path) decoding are rescored exactly with the CTC
    forward recursion and the most probable is returned, so the result is never less probable than
    :func:`ctc_greedy_decode`'s (pruning alone does not guarantee that).

    Parameters
    ----------
    logits_or_logprobs : array-like of float (B, T, C)
        Logits or log-probabilities (a log-softmax is applied; it leaves log-probabilities unchanged).
    input_lengths : int array (B,), optional
        Valid steps of each sequence (default all T).
    beam_size : int >= 1, default 8
        Prefixes kept per step. Large enough to keep every prefix, the result is the exact most
        probable label sequence.
    blank : int, default 0

    Returns
    -------
    list of B lists of int
    """
    x, in_len = _decode_inputs(logits_or_logprobs, input_lengths, blank)
    beam_size = check_int(beam_size, "beam_size", 1)
    logp = log_softmax(x.astype(np.float64))
    greedy = ctc_greedy_decode(x, in_len, blank)
    out = []
    for b in range(x.shape[0]):
        lp = logp[b, :in_len[b]]
        candidates = list(dict.fromkeys(_prefix_beam(lp, beam_size, blank) + [tuple(greedy[b])]))
        scores = _sequence_log_probs(lp, candidates, blank) if lp.shape[0] else np.zeros(len(candidates))
        out.append([int(c) for c in candidates[int(np.argmax(scores))]])
    return out
