"""Optional tuning: time the planner's candidate plans for a shape on this machine and remember the fastest.

Like FFTW's wisdom or cuDNN's find-algorithm: :func:`tune` runs each candidate kernel plan of
:func:`rnnfast._planner.candidates` (and each on one thread) a few times, interleaved, keeps the one with
the lowest median time and writes it to a small JSON file (``~/.cache/rnnfast/plans.json``, or
``$RNNFAST_CACHE_DIR``), keyed by the call's shape and thread count and by this machine's cache sizes.
Tuned plans are used by the layer that was tuned, and by every layer of a process started with
``RNNFAST_TUNE=1`` (which reads the file once). Off by default. Every plan computes the same function,
so results never change beyond float rounding; and since the default plan is among those timed, a
tuned plan is never slower than it by the measurement that chose it (and replaces it only when faster
by a margin in both median and fastest round, :func:`_pick`: gains within a shared machine's noise keep
the default).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import time
from typing import Optional, cast

import numpy as np

from rnnfast import _planner
from rnnfast._planner import Plan
from rnnfast._threads import resolve_threads
from rnnfast._validation import check_int

__all__ = ["tune", "tuned_plans", "cache_path"]

_lock = threading.Lock()
_loaded: Optional[dict] = None  # the cache file's plans for this machine, once read
_enabled: Optional[bool] = None  # RNNFAST_TUNE=1, once read


def cache_path() -> str:
    """The tuning cache file: ``$RNNFAST_CACHE_DIR/plans.json`` or ``~/.cache/rnnfast/plans.json``."""
    base = os.environ.get("RNNFAST_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rnnfast")
    return os.path.join(base, "plans.json")


def _machine_key() -> str:
    m = _planner.machine()
    return f"l1d={m.l1d} l2={m.l2} l3={m.l3}"


def _read(path: str) -> dict:
    """{machine key: {call key: plan fields}} from the file, or {} when absent or unreadable (a damaged
    cache only costs the tuning, never a call)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _valid(fields: object) -> bool:
    names = {f.name for f in dataclasses.fields(Plan)}
    return (isinstance(fields, dict) and set(fields) <= names and fields.get("kernel") in
            ("latency", "units", "packed", "blas") and fields.get("proj") in ("step", "gemm")
            and isinstance(fields.get("threads"), int) and fields["threads"] >= 1)


def tuned_plans() -> Optional[dict]:
    """This machine's tuned plans when ``RNNFAST_TUNE=1`` (the variable and the file are read once, at
    the first call), else None."""
    global _loaded, _enabled
    if _enabled is None:
        _enabled = os.environ.get("RNNFAST_TUNE", "0") == "1"
    if not _enabled:
        return None
    with _lock:
        if _loaded is None:
            mine = _read(cache_path()).get(_machine_key(), {})
            _loaded = {k: v for k, v in mine.items() if _valid(v)} if isinstance(mine, dict) else {}
        return _loaded


def _store(key: str, plan: Plan, path: str) -> None:
    """Add one tuned plan to the file, atomically (a temporary file renamed over it)."""
    with _lock:
        data = _read(path)
        mine = data.setdefault(_machine_key(), {})
        if not isinstance(mine, dict):
            mine = data[_machine_key()] = {}
        fields = dataclasses.asdict(plan)
        fields.pop("tuned", None)
        mine[key] = fields
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".plans-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if _loaded is not None:
            _loaded[key] = fields


# Calls of a plan in a row each round, the first untimed: a plan's steady state, as a service that keeps it
# sees (its weights or kept packs where its last call left them in the caches). Timed one call each after
# another plan's, kept panels lost to rows in place that they beat in a row (LSTM B=2 T=10 I=256 H=512 0.89
# against 1.32 faster; bench/plan_ab.py --calls).
CALLS = 3


def _race(layer, x, lengths, training: bool, cands: list, rounds: int, times: dict) -> None:
    """``rounds`` rounds after a warm-up, each running every plan in ``cands`` in turn (the order reversed every
    other round: no plan always runs after the same one) for CALLS calls in a row; the mean seconds of all
    but the first into ``times[plan]``."""
    for rnd in range(rounds + 1):
        for p in (cands if rnd % 2 else cands[::-1]):
            layer._forced_plan = p
            took = [_time_once(layer, x, lengths, training, p.threads) for _ in range(CALLS)]
            if rnd > 0:
                times[p].append(sum(took[1:]) / (CALLS - 1))


def _time_once(layer, x, lengths, training: bool, threads: int) -> float:
    t0 = time.perf_counter()
    out = layer(x, lengths=lengths, n_threads=threads)[0]
    if training:
        layer.backward(np.ones_like(out), n_threads=threads)
    return time.perf_counter() - t0


# A candidate replaces the planner's own plan only when it is faster by this share in both its median and
# its fastest round: on a shared machine one busy round moves a median by more than a plan's gain, and a
# plan that wins by noise may lose on a quiet machine.
MARGIN = 0.03


def _pick(times: dict, default: Plan) -> Plan:
    """The plan to remember from ``times`` ({plan: seconds of each round}): the lowest median, unless the
    planner's ``default`` is within :data:`MARGIN` of it in median or fastest round (then the default)."""
    medians = {p: float(np.median(t)) for p, t in times.items()}
    best = min(times, key=lambda p: (medians[p], p != default))
    if best == default or default not in times:
        return best
    keep = 1.0 - MARGIN
    wins = medians[best] < keep * medians[default] and min(times[best]) < keep * min(times[default])
    return best if wins else default


def _candidates(call, threads: int) -> list:
    """The planner's candidates on ``threads`` threads, then on one (dropping repeats)."""
    seen, out = set(), []
    for n in dict.fromkeys((threads, 1)):
        for p in _planner.candidates(call, n):
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def tune(layer, x, lengths=None, *, training: bool = False, n_threads: Optional[int] = None,
         repeats: int = 5, save: bool = True) -> dict:
    """Time every candidate plan for this call on this machine and use the fastest from now on.

    Parameters
    ----------
    layer : rnnfast.nn.LSTM, GRU or RNN
    x : array-like, the input of a typical call (B, T, input_size)
    lengths : array-like (B,), optional
    training : bool, default False
        Time forward + backward (the layer is put in training mode for the timing, then restored).
    n_threads : int, optional
        Threads of the calls to tune (default :func:`rnnfast.get_num_threads`).
    repeats : int, default 5
        Timed rounds; each round runs every candidate for a few calls in a row (:data:`CALLS`, timing all but
        the first: its steady state), interleaved (in turn forward and reversed), after one warm-up round. A
        candidate must beat the planner's plan by :data:`MARGIN` in its median and its fastest round to
        replace it (more rounds resolve smaller gains on a busy machine).
    save : bool, default True
        Write the winner to the cache file (see :func:`cache_path`).

    Returns
    -------
    dict
        ``{"plan": the chosen Plan, "default": the planner's own, "times": {str(plan): median seconds}}``.
    """
    rounds = cast(int, check_int(repeats, "repeats", 1))
    threads = resolve_threads(n_threads)
    call = layer._describe(x, lengths, bool(training))
    default = _planner.plan_call(call, threads)
    cands = _candidates(call, threads)
    was_training, forced = layer.training, layer._forced_plan
    layer.train(bool(training))
    times: dict = {p: [] for p in cands}
    from rnnfast.nn import _packs  # (rnnfast.nn imports this module)

    try:
        with _packs.room(layer, len(cands)):  # (each plan's calls on its kept packs, as they will run)
            _race(layer, x, lengths, training, cands, rounds, times)
    finally:
        layer._forced_plan = forced
        layer.train(was_training)
        layer._cache = None
    medians = {p: float(np.median(t)) for p, t in times.items()}
    best = _pick(times, default)
    key = call.key(threads)
    if save:
        _store(key, best, cache_path())
    layer._kplans = {}
    layer._tuned = dict(layer._tuned or {}, **{key: {k: v for k, v in dataclasses.asdict(best).items()
                                                     if k != "tuned"}})
    return {"plan": best, "default": default, "times": {str(p): medians[p] for p in cands}}
