"""Request batching for services: :class:`Batcher` coalesces concurrent single-sequence requests into one
kernel call.

rnnfast's inference is thread-safe and releases the GIL, so a threaded server may call ``predict`` from
every request thread. With many small concurrent requests most of each call's time is overhead (Python,
one batch-1 pass over the weights per step); a :class:`Batcher` collects the requests that arrive within
``max_delay_ms`` (up to ``max_batch_size``) and runs them as one batch. The sequences keep their own
lengths, passed to the kernel as ``lengths``, so padded steps are not computed, and each request gets
what the model gives for its sequence alone::

    model = rf.load("model.rnnfast")
    with rf.serving.Batcher(model, max_batch_size=32, max_delay_ms=2) as batcher:
        future = batcher.submit(x)          # x: (T, F) features or (T,) token ids, from any thread
        label = future.result()             # = model.predict(x[None])[0]

The model is an estimator (``method`` "predict" or "predict_proba"), a :class:`rnnfast.nn.Sequential`
or one recurrent layer (``rnnfast.nn.LSTM`` / ``GRU`` / ``RNN``; the result is ``layer(x)``, the pair
``(out, state)`` of the unbatched call). Results equal the unbatched call's to float rounding: a batch
runs the batched kernel, one sequence alone the batch-1 kernel, whose sums may round in another order
(a few units in the last place).
"""
from __future__ import annotations

import collections
import os
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Optional, Tuple

import numpy as np

from rnnfast._validation import check_int, check_option, check_real
from rnnfast.nn.module import call_forward, to_numpy
from rnnfast.nn.stateful import stateful_layers, unwrap

__all__ = ["Batcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """:meth:`Batcher.submit` found ``max_queue`` requests waiting: the service is over capacity (shed the
    request, answer 503, or retry later)."""


_STOP = object()

# A Batcher's worker thread does not survive fork(): in a forked child (gunicorn --preload, multiprocessing's
# "fork") the Batchers made before the fork refuse requests instead of queueing them for no one.
_LIVE: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for batcher in list(_LIVE):
        batcher._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------- adapters
class _EstimatorAdapter:
    """A fitted estimator: a request is checked as ``predict(x[None])`` checks it; a batch runs as
    ``predict`` (or ``predict_proba``) on the list of sequences does from the network's call on: one
    ``forward`` of the network in eval mode on the right-padded sequences with their lengths (what its
    predict loop does for a single batch), without checking the sequences again (a ``predict`` call's own
    checks cost about 0.7 ms, more than a batch of a small model's computing) and without the loop's
    per-call objects (about 0.2 ms a batch)."""

    def __init__(self, est, method: str):
        est._check_fitted()
        if method == "predict_proba" and est.task_ != "classification":
            raise ValueError("method='predict_proba' needs a classifier; this estimator was fitted for regression")
        self.est, self.proba = est, method == "predict_proba"
        self.n_threads = est._validate_params().n_threads

    def check(self, x):
        from rnnfast.estimators.inputs import encode_inputs
        est = self.est
        arr = np.asarray(to_numpy(x))
        if arr.ndim not in (1, 2):
            raise ValueError(f"a request is one sequence, (T, F) features or (T,) token ids; got shape {arr.shape}")
        spec = est._specs[0]
        if (arr.ndim == 2 and arr.dtype.kind in "fiu" and spec.kind == "features" and arr.shape[0]
                and arr.shape[1] == spec.n_features_in):
            # the common case, cheaply (a server's request threads pay this under the GIL): what
            # encode_inputs would give; anything else goes through it for its checks and messages
            out = arr.astype(est._fitted_dtype())
            if np.isfinite(out).all():
                return out
        enc = encode_inputs(arr[None], est._fitted_dtype(), spec, type(est).__name__, univariate_2d=est._two_d_input)
        n = enc.t if enc.lengths is None else int(enc.lengths[0])
        return enc.X[0, :n].copy()

    def run(self, xs: list) -> list:
        from rnnfast.estimators.targets import predictions, probabilities
        est = self.est
        net = est.model_  # read per batch: a refit makes a new network
        if net.training:  # as the predict loop: eval mode, no state carried in from elsewhere
            net.eval()
        for layer in stateful_layers(net):
            if layer.hx is not None:
                layer.reset_state()
        X, lengths, full = _pad(xs)
        out = np.asarray(call_forward(net, X, None if full else lengths, self.n_threads))
        res = probabilities(out, lengths, est.per_step_) if self.proba else predictions(out, est._specs[1])
        return [res[i, :n] if est.per_step_ else res[i] for i, n in enumerate(lengths)]


class _ModuleAdapter:
    """A Sequential or a recurrent layer in eval mode: a batch is one ``forward(X, lengths=...)`` on the
    right-padded sequences; per-step outputs are cut to each sequence's length."""

    def __init__(self, model, n_threads: Optional[int]):
        if not callable(getattr(model, "forward", None)) or not getattr(model, "keyword_protocol", False):
            raise TypeError("Batcher needs an estimator, a rnnfast.nn.Sequential or a recurrent layer, got "
                            f"{type(model).__name__}")
        layers = getattr(model, "layers", [model])
        self.first = unwrap(layers[0]) if layers else None
        self.batch_first = getattr(self.first, "batch_first", True)
        if not self.batch_first and self.first is not model:
            raise ValueError("Batcher needs a Sequential whose layers are batch-first (batch_first=True)")
        model.eval()
        self.model, self.n_threads = model, n_threads

    def check(self, x):
        arr = np.asarray(to_numpy(x))
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"a request must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2) or arr.shape[0] == 0:
            raise ValueError(f"a request is one non-empty sequence, (T, F) or (T,) token ids; got shape {arr.shape}")
        first = self.first
        if hasattr(first, "num_embeddings"):
            first._check_ids(arr)
        elif hasattr(first, "input_size") and (arr.ndim != 2 or arr.shape[1] != first.input_size):
            raise ValueError(f"a request must be (T, {first.input_size}), got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError("the request contains NaN or infinity")
        return arr.copy()

    def run(self, xs: list) -> list:
        X, lengths, full = _pad(xs)
        if not self.batch_first:
            X = np.ascontiguousarray(X.swapaxes(0, 1))
        res = self.model.forward(X, lengths=None if full else lengths, n_threads=self.n_threads)
        if isinstance(res, tuple):  # a recurrent layer: (out, state)
            out, state = res
            out = out if self.batch_first else out.swapaxes(0, 1)
            pick = (lambda s, i: (s[0][:, i], s[1][:, i])) if isinstance(state, tuple) else (lambda s, i: s[:, i])
            return [(out[i, :n], pick(state, i)) for i, n in enumerate(lengths)]
        per_step = res.ndim >= 3 and res.shape[1] == X.shape[1]
        return [res[i, :n] if per_step else res[i] for i, n in enumerate(lengths)]


def _pad(xs: list) -> Tuple[np.ndarray, np.ndarray, bool]:
    """``(X, lengths, full)``: checked sequences (each (T_i, ...), T_i >= 1, one trailing shape) right-padded
    with zeros into one (B, T_max, ...) array of their common dtype, their lengths, and whether they are
    all as long (the lengths are then not needed). What ``pad_sequences`` gives, without its checks
    (``check`` made them) and in one copy per sequence."""
    lengths = np.fromiter(map(len, xs), np.int64, len(xs))
    T = int(lengths.max())
    X = np.zeros((len(xs), T) + xs[0].shape[1:], np.result_type(*{x.dtype for x in xs}))
    for row, x in zip(X, xs):
        row[:len(x)] = x
    return X, lengths, bool(lengths.min() == T)


def _adapter(model, method: str, n_threads: Optional[int]):
    from rnnfast.estimators.base import EstimatorBase
    if isinstance(model, EstimatorBase):
        check_option(method, "method", ("predict", "predict_proba"))
        return _EstimatorAdapter(model, method)
    check_option(method, "method", ("predict",))
    return _ModuleAdapter(model, n_threads)


# ---------------------------------------------------------------------------------------- worker
class _Inbox:
    """The requests waiting for a worker, oldest first: a deque under one lock. A worker sleeps on the
    lock's condition only when it finds too few to take, and :meth:`put` wakes the sleepers only once
    there are as many as one of them waits for (no wake-up per request); a worker takes everything
    waiting in one locked pass.

    The stop marker stays at the front once put, so that every worker finds it."""

    __slots__ = ("items", "cond", "needs")

    def __init__(self) -> None:
        self.items: "collections.deque" = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.needs: list = []  # how many requests each sleeping worker waits for

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item) -> None:
        with self.cond:
            self.items.append(item)
            if self.needs and (item is _STOP or len(self.items) >= min(self.needs)):
                self.cond.notify_all()

    def take(self, batch: list, max_batch: int, deadline: Optional[float] = None) -> bool:
        """Move waiting requests into ``batch`` (up to ``max_batch``): when ``batch`` is empty, first wait
        for one; with ``deadline`` (a ``time.monotonic()``), also wait until it is full or the deadline
        passes. Returns True when it reached the stop marker (left in place; ``batch`` holds what was
        queued before it)."""
        with self.cond:
            while True:
                items = self.items
                while items and len(batch) < max_batch:
                    if items[0] is _STOP:
                        return True
                    batch.append(items.popleft())
                if batch and (deadline is None or len(batch) >= max_batch):
                    return False
                timeout = None if deadline is None or not batch else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return False
                need = max_batch - len(batch) if batch else 1
                self.needs.append(need)
                try:
                    self.cond.wait(timeout)
                finally:
                    self.needs.remove(need)

    def cancel_rest(self, settle_with: Optional[Callable] = None) -> None:
        """Cancel the requests queued behind the stop marker (a ``submit`` racing ``close``), where
        ``settle_with`` settles futures (see :func:`_resolve`)."""
        with self.cond:
            rest = [item[1] for item in self.items if item is not _STOP]
            self.items.clear()
            self.items.append(_STOP)
        if rest:
            _hand_over(_cancel, rest, settle_with)


def _cancel(futures: list) -> None:
    for fut in futures:
        fut.cancel()


def _collect(inbox: _Inbox, max_batch: int, delay: float) -> Tuple[list, bool]:
    """The next batch: every request already queued goes at once (they queued while the previous batch
    ran, so the worker is the bottleneck and they have waited already); a request found alone waits for
    company until the batch holds ``max_batch`` or ``delay`` seconds after it was submitted (its last
    field, a ``time.monotonic()``). Blocks until there is a request or the stop marker. Returns (items,
    stop)."""
    batch: list = []
    stop = inbox.take(batch, max_batch)
    if stop or len(batch) != 1 or delay <= 0:
        return batch, stop
    return batch, inbox.take(batch, max_batch, batch[0][2] + delay)


class _Stats:
    """Batches and requests served, counted by every worker thread."""

    def __init__(self) -> None:
        self.lock, self.batches, self.requests = threading.Lock(), 0, 0

    def add(self, n: int) -> None:
        with self.lock:
            self.batches += 1
            self.requests += n


def _settle(outcomes: list) -> None:
    """Set each future's result (``ok``) or exception: ``[(future, ok, value), ...]``."""
    for fut, ok, value in outcomes:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _outcomes(adapter, live: list) -> list:
    """``[(future, ok, value), ...]`` of one batch ``[(x, future), ...]``: one call for all; when it fails,
    each request runs alone so an error reaches only the future of the request that caused it."""
    try:
        return [(fut, True, res) for (_, fut), res in zip(live, adapter.run([x for x, _ in live]))]
    except Exception:
        pass
    outcomes = []
    for x, fut in live:
        try:
            outcomes.append((fut, True, adapter.run([x])[0]))
        except Exception as e:
            outcomes.append((fut, False, e))
    return outcomes


def _resolve(adapter, items: list, stats: _Stats, settle_with: Optional[Callable] = None) -> None:
    """Run one batch and settle its futures: here, or with ``settle_with(fn, outcomes)`` (an event loop's
    ``call_soon_threadsafe``: once per batch, on the loop's thread; here when that fails, the loop being
    closed)."""
    live = [(x, f) for x, f, _ in items if f.set_running_or_notify_cancel()]
    if not live:
        return
    stats.add(len(live))
    _hand_over(_settle, _outcomes(adapter, live), settle_with)


def _hand_over(fn: Callable, arg: list, settle_with: Optional[Callable]) -> None:
    """``fn(arg)`` (settling futures) through ``settle_with`` when given, else (or when it raises) here."""
    if settle_with is not None:
        try:
            settle_with(fn, arg)
            return
        except Exception:  # noqa: BLE001 - settled here instead
            pass
    fn(arg)


class _Load:
    """The worker's recent load, which decides whether a request found alone waits for company: only when
    requests have been coming together (the last batch held more than one) and the worker has been busy
    at least half the time lately (its CPU time running batches over all time, weighted 0.8 per batch back:
    CPU time, so that other processes slowing the worker down do not pass for a high load; time spent
    waiting for company counts as idle, so waits that gather little stop by themselves).

    Below that, a request found alone runs at once: a load well under capacity gains nothing by waiting
    (the worker keeps up), and waiting only adds to its latency. A busy worker waits, so that the requests
    a burst of answers brings back run as one batch rather than as several small ones."""

    __slots__ = ("size", "busy", "total")

    def __init__(self) -> None:
        # as if it had idled 0.1 s: a new worker waits for company only once it has been busy a while
        self.size, self.busy, self.total = 1, 0.0, 0.1

    def add(self, size: int, elapsed: float, run: float) -> None:
        """A batch of ``size`` requests took ``run`` seconds of the worker's CPU, ``elapsed`` seconds after
        the worker finished the previous one."""
        self.size = size
        self.busy = 0.8 * self.busy + run
        self.total = 0.8 * self.total + max(elapsed, run)

    def together(self) -> bool:
        return self.size > 1 and self.busy >= 0.5 * self.total


def _worker(inbox: _Inbox, adapter, max_batch: int, delay: float, stats: _Stats,
            settle_with: Optional[Callable] = None) -> None:
    """A Batcher's worker thread: batches until it reaches the stop marker (it holds no reference to the
    Batcher, so an unreferenced Batcher is collected and its finalizer stops the workers)."""
    stop, load = False, _Load()
    while not stop:
        free = time.monotonic()
        items, stop = _collect(inbox, max_batch, delay if load.together() else 0.0)
        if items:
            cpu = time.thread_time()
            _resolve(adapter, items, stats, settle_with)
            load.add(len(items), time.monotonic() - free, time.thread_time() - cpu)
    inbox.cancel_rest(settle_with)


# ---------------------------------------------------------------------------------------- Batcher
class Batcher:
    """Coalesce concurrent single-sequence requests into batched calls of one model (thread-safe).

    Parameters
    ----------
    model : estimator, rnnfast.nn.Sequential or recurrent layer
        A fitted estimator (``rnnfast.LSTM``, ``rnnfast.GRUClassifier``, ... or what :func:`rnnfast.load`
        returns), a Sequential, or an LSTM / GRU / RNN layer. Modules are put in eval mode.
    max_batch_size : int >= 1, default 32
        Most requests in one call.
    max_delay_ms : float >= 0, default 2
        How long the first request of a batch may wait for others (counted from its ``submit``): only when
        it finds no other request queued, requests have been coming together (the previous batch held more
        than one) and the worker has been busy at least half the time lately; it then waits until
        ``max_batch_size`` requests have come or ``max_delay_ms`` passed. Otherwise a batch starts as soon
        as the worker is free, with every request queued meanwhile (up to ``max_batch_size``): a lone
        client, or a load under capacity, gets the unbatched latency. A request waits at most
        ``max_delay_ms`` plus the batches ahead of it.
    method : {"predict", "predict_proba"}, default "predict"
        For estimators: what each future resolves to, ``model.predict(x[None])[0]`` or
        ``model.predict_proba(x[None])[0]``; per-step models give (T, ...) for the sequence. Modules
        resolve to ``model(x[None])[0]`` (Sequential) or the unbatched ``layer(x)`` pair.
    max_queue : int >= 1, default 1024
        Requests that may wait; :meth:`submit` raises :class:`QueueFullError` beyond it.
    n_threads : int, optional
        Kernel threads of a module's batched call (estimators use their own ``n_threads``).
    workers : int in [1, 64], default 1
        Threads running batches, each taking the next batch when it is free: with several, batches run side
        by side on several cores (give each call ``n_threads=1``). On a small machine whose front end needs
        a core of its own one is best (two on two cores made smaller batches and cost more CPU a request
        in ``examples/load_test.py``).
    settle_with : callable, optional
        Where the futures are settled (their results set, their done-callbacks run): by default on the
        worker thread, as each batch finishes. An asyncio service passes its event loop's
        ``call_soon_threadsafe``: each batch's futures are then settled on the loop's thread in one
        callback (one wake-up of the loop a batch, and the worker goes on to the next batch at once);
        ``settle_with(fn, arg)`` must arrange for ``fn(arg)`` to run, or raise (they are then settled on
        the worker thread).

    Notes
    -----
    Each request is checked when submitted (a bad one gets a future holding its error and never joins a
    batch); should a batched call still fail, its requests run one by one so that only the failing one's
    future gets the error. :meth:`close` (or leaving the ``with`` block) finishes what was submitted and
    joins the worker threads. Threads do not survive ``fork``: make the Batcher in
    each worker process of a pre-forking server (a Batcher from the parent refuses requests there).

    Examples
    --------
    >>> import numpy as np, rnnfast as rf
    >>> layer = rf.nn.GRU(3, 4)
    >>> with rf.serving.Batcher(layer) as b:
    ...     out, h_n = b.submit(np.ones((5, 3), np.float32)).result(timeout=10)
    >>> out.shape, h_n.shape
    ((5, 4), (1, 4))
    """

    def __init__(self, model: Any, max_batch_size: int = 32, max_delay_ms: float = 2.0, *, method: str = "predict",
                 max_queue: int = 1024, n_threads: Optional[int] = None, workers: int = 1,
                 settle_with: Optional[Callable[..., Any]] = None) -> None:
        self.max_batch_size = check_int(max_batch_size, "max_batch_size", 1)
        self.max_delay_ms = float(check_real(max_delay_ms, "max_delay_ms", 0.0, 60_000.0))
        self.max_queue = check_int(max_queue, "max_queue", 1)
        self.method = method
        n_threads = check_int(n_threads, "n_threads", 1, allow_none=True)
        self.workers = check_int(workers, "workers", 1, 64)
        self._adapter = _adapter(model, method, n_threads)
        self.model = model
        if settle_with is not None and not callable(settle_with):
            raise TypeError(f"settle_with must be callable, got {type(settle_with).__name__}")
        self._inbox = _Inbox()
        self._lock = threading.Lock()
        self._closed = self._forked = False
        self._stats = _Stats()
        self._threads = [threading.Thread(target=_worker, name=f"rnnfast-batcher-{i}", daemon=True,
                                          args=(self._inbox, self._adapter, self.max_batch_size,
                                                self.max_delay_ms / 1000.0, self._stats, settle_with))
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        self._finalizer = weakref.finalize(self, self._inbox.put, _STOP)
        _LIVE.add(self)

    def submit(self, x: Any) -> "Future[Any]":
        """Queue one sequence; returns a future of its result (see ``method``).

        Parameters
        ----------
        x : array-like, (T, F) features or (T,) token ids
            One sequence; it is checked now and copied, so the caller may reuse its buffer.

        Returns
        -------
        concurrent.futures.Future
            Resolves to the result, or holds the exception the request caused (a bad shape, dtype, NaN,
            an unknown token id: the errors ``predict`` raises for it).

        Raises
        ------
        RuntimeError
            The batcher is closed, or was made in the parent of this forked process.
        QueueFullError
            ``max_queue`` requests are already waiting.
        """
        fut: "Future[Any]" = Future()
        try:
            item = self._adapter.check(x)  # a new array: the caller may reuse its buffer
        except Exception as e:
            fut.set_exception(e)
            return fut
        with self._lock:
            if self._closed:
                raise RuntimeError("this Batcher is closed")
            if self._forked:
                raise RuntimeError("this Batcher was made before the process forked, and its worker thread "
                                   "stayed in the parent: make the Batcher in each worker process")
            if len(self._inbox) >= self.max_queue:
                raise QueueFullError(f"{self.max_queue} requests are waiting (max_queue); retry later or raise "
                                     "max_queue")
            self._inbox.put((item, fut, time.monotonic()))
        return fut

    def predict(self, x: Any, timeout: Optional[float] = None) -> Any:
        """``submit(x).result(timeout)``: the result of one sequence, blocking."""
        return self.submit(x).result(timeout)

    @property
    def stats(self) -> dict:
        """``{"batches": calls made, "requests": requests they served}`` so far."""
        with self._stats.lock:
            return {"batches": self._stats.batches, "requests": self._stats.requests}

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking requests, finish those submitted, and join the worker threads (idempotent).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for each worker; None waits until it is done.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._finalizer()  # puts the stop marker behind the submitted requests
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"Batcher({type(self.model).__name__}, max_batch_size={self.max_batch_size}, "
                f"max_delay_ms={self.max_delay_ms}, method={self.method!r}, {state})")
