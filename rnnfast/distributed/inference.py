"""Batch inference over many inputs with one model per worker: Ray actors, Dask workers or local processes.

:func:`predict` applies a saved model (``rf.load``) to every input of a list of ``.npy`` files or an iterable of
arrays and returns the results in input order. Each worker loads the model once and keeps it; its kernels
run ``threads`` threads (default: the cores this process may use divided by the workers).

Backends (each imported only when asked for):

- ``"ray"``: ``num_workers`` Ray actors (``pip install "rnnfast[ray]"``). Ray is started locally when it is
  not running yet (``ray.init(address=...)`` to join a cluster started with ``ray start --head``) and left
  running for later calls. An actor whose process dies is restarted by Ray and its calls retried
  (``max_restarts`` / ``max_task_retries`` = ``retries``).
- ``"dask"``: tasks on the workers of a ``dask.distributed`` client (``pip install "rnnfast[dask]"``): the one
  given by ``address`` (a scheduler address or a ``Client``), else a ``LocalCluster`` of ``num_workers``
  one-thread worker processes made for the call and closed after it. Each worker process caches the model.
- ``"processes"``: a ``concurrent.futures.ProcessPoolExecutor`` of ``num_workers`` processes on this machine
  (no extra package); a pool broken by a dead worker is replaced.

Failures: a task that raises is submitted again, at most ``retries`` more times (so an input is tried at most
``retries + 1`` times); then :func:`predict` raises ``RuntimeError`` naming the input and the last error. At
most ``2 * num_workers`` inputs are in flight at once, so an iterable of arrays is read as the work proceeds.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Iterable, List, Optional, Sized, Union

import numpy as np

from rnnfast._validation import AnyOf, Boolean, Integer, Options, validate_params

__all__ = ["predict", "BACKENDS"]

BACKENDS = ("ray", "dask", "processes")
_PARAMS = {
    "num_workers": Integer(1), "backend": Options(*BACKENDS), "method": Options("predict", "predict_proba"),
    "threads": Integer(1, allow_none=True), "retries": Integer(0), "progress": Boolean(),
}

# ---------------------------------------------------------------------------------------- the workers' side
_MODELS: Dict[tuple, Any] = {}  # (model path, threads) -> the model loaded in this worker process


def _worker_model(model_path: str, threads: int):
    """The model of ``model_path``, loaded once per worker process, its kernels set to ``threads`` threads."""
    key = (model_path, threads)
    if key not in _MODELS:
        import rnnfast as rf
        rf.set_num_threads(threads)
        _MODELS[key] = rf.load(model_path)
    return _MODELS[key]


def _apply(model, item, method: str) -> np.ndarray:
    """The model's ``method`` on one input: a .npy path (read here, in the worker) or an array."""
    X = np.load(item, allow_pickle=False) if isinstance(item, (str, os.PathLike)) else item
    return np.asarray(getattr(model, method)(X))


def _run(model_path: str, threads: int, method: str, item) -> np.ndarray:
    """One task of the ``"processes"`` and ``"dask"`` backends."""
    return _apply(_worker_model(model_path, threads), item, method)


class _Actor:
    """A Ray actor holding one model (wrapped by ``ray.remote`` when the ``"ray"`` backend runs)."""

    def __init__(self, model_path: str, threads: int) -> None:
        self.model = _worker_model(model_path, threads)

    def predict(self, item, method: str) -> np.ndarray:
        return _apply(self.model, item, method)


# ---------------------------------------------------------------------------------------- the driver's side
def _default_threads(num_workers: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // num_workers)


def _progress_of(progress: Union[bool, Callable[[int, Optional[int]], Any]], total: Optional[int]):
    """``(update(), close())`` for the progress: a callable ``progress(done, total)``, a tqdm bar (True,
    when tqdm is installed) or nothing."""
    if callable(progress):
        done = itertools.count(1)
        return lambda: progress(next(done), total), lambda: None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return lambda: None, lambda: None
        bar = tqdm(total=total, desc="rnnfast.distributed.predict", unit="input")
        return lambda: bar.update(1), bar.close
    return lambda: None, lambda: None


def _drive(submit: Callable[[int, Any], Future], items: Iterable, window: int, retries: int,
           progress: Callable[[], Any]) -> List[np.ndarray]:
    """Run ``submit(i, item)`` over ``items`` with at most ``window`` in flight, each retried at most
    ``retries`` times; the results in input order."""
    source = enumerate(items)
    results: Dict[int, np.ndarray] = {}
    pending: Dict[Future, tuple] = {}  # future -> (index, item, tries so far)

    def feed() -> None:
        while len(pending) < window:
            nxt = next(source, None)
            if nxt is None:
                return
            pending[submit(*nxt)] = (nxt[0], nxt[1], 1)

    feed()
    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            i, item, tries = pending.pop(fut)
            exc = fut.exception()
            if exc is None:
                results[i] = fut.result()
                progress()
            elif tries <= retries:
                pending[submit(i, item)] = (i, item, tries + 1)
            else:
                for other in pending:
                    other.cancel()
                raise RuntimeError(f"input {i} failed {tries} time(s); last error: {type(exc).__name__}: "
                                   f"{exc}") from exc
        feed()
    return [results[i] for i in range(len(results))]


def _check_inputs(inputs) -> Any:
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        raise TypeError("inputs must be a list of .npy paths or an iterable of arrays, not a single "
                        f"{type(inputs).__name__}")
    try:
        return inputs if isinstance(inputs, Sized) else iter(inputs)
    except TypeError:
        raise TypeError(f"inputs must be a list of .npy paths or an iterable of arrays, got "
                        f"{type(inputs).__name__}") from None


def predict(model_path: Union[str, os.PathLike], inputs: Iterable, num_workers: int = 2, backend: str = "ray",
            *, method: str = "predict", threads: Optional[int] = None, retries: int = 2,
            progress: Union[bool, Callable[[int, Optional[int]], Any]] = False, address: Any = None
            ) -> List[np.ndarray]:
    """Apply a saved model to many inputs on ``num_workers`` workers, one model per worker.

    Parameters
    ----------
    model_path : str or path
        A model file written by ``save`` (read by ``rf.load`` once in every worker).
    inputs : list of .npy paths, or iterable of arrays
        One input per task, each what the model's ``predict`` takes (e.g. (N, T, F)). Paths are read by the
        workers; arrays are sent to them.
    num_workers : int, default 2
    backend : {"ray", "dask", "processes"}, default "ray"
    method : {"predict", "predict_proba"}, default "predict"
    threads : int, optional
        Kernel threads per worker; default the cores this process may use // ``num_workers`` (at least 1).
    retries : int, default 2
        Extra tries of a failed task before giving up.
    progress : bool or callable, default False
        True: a tqdm bar (if tqdm is installed); a callable is called as ``progress(done, total)`` after
        each input (``total`` None for an iterable without a length).
    address : optional
        Ray: the cluster address for ``ray.init`` when Ray is not running yet (e.g. ``"auto"``). Dask: a
        scheduler address or a ``dask.distributed.Client``.

    Returns
    -------
    list of numpy.ndarray
        The model's output for each input, in input order.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (before any work).
    FileNotFoundError
        ``model_path`` does not exist.
    ImportError
        The backend's package is not installed.
    RuntimeError
        An input failed ``retries + 1`` times.
    """
    checked = validate_params(dict(num_workers=num_workers, backend=backend, method=method, threads=threads,
                                   retries=retries, progress=False if callable(progress) else progress), _PARAMS)
    num_workers, backend, method, threads, retries = (checked[k] for k in
                                                      ("num_workers", "backend", "method", "threads", "retries"))
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path, got {type(model_path).__name__}")
    model_path = os.path.abspath(os.fspath(model_path))
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"no model file {model_path}")
    inputs = _check_inputs(inputs)
    threads = threads or _default_threads(num_workers)
    total = len(inputs) if isinstance(inputs, Sized) else None
    update, close = _progress_of(progress, total)
    try:
        return _ENGINES[backend](model_path, inputs, num_workers, threads, method, retries, update, address)
    finally:
        close()


# ---------------------------------------------------------------------------------------- engines
def _with_processes(model_path, inputs, num_workers, threads, method, retries, update, address):
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    if address is not None:
        raise ValueError("address applies to backend='ray' or 'dask', not 'processes'")
    pools = [ProcessPoolExecutor(num_workers)]

    def submit(i, item):
        try:
            return pools[-1].submit(_run, model_path, threads, method, item)
        except BrokenProcessPool:  # a worker died: the pool takes no more work; start a new one
            pools[-1].shutdown(wait=False, cancel_futures=True)
            pools.append(ProcessPoolExecutor(num_workers))
            return pools[-1].submit(_run, model_path, threads, method, item)

    try:
        return _drive(submit, inputs, 2 * num_workers, retries, update)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _with_ray(model_path, inputs, num_workers, threads, method, retries, update, address):
    try:
        import ray
    except ImportError as e:
        raise ImportError('backend="ray" needs Ray: pip install "rnnfast[ray]"') from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    actor_cls = ray.remote(max_restarts=retries, max_task_retries=retries)(_Actor)
    actors = [actor_cls.remote(model_path, threads) for _ in range(num_workers)]
    turn = itertools.count()

    def submit(i, item):
        return actors[next(turn) % num_workers].predict.remote(item, method).future()

    try:
        return _drive(submit, inputs, 2 * num_workers, retries, update)
    finally:
        for actor in actors:
            ray.kill(actor)


def _with_dask(model_path, inputs, num_workers, threads, method, retries, update, address):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError('backend="dask" needs dask.distributed: pip install "rnnfast[dask]"') from e
    own = not isinstance(address, Client)
    if address is None:
        client = Client(LocalCluster(n_workers=num_workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None))
    else:
        client = address if not own else Client(address)
    executor = client.get_executor(pure=False)

    def submit(i, item):
        return executor.submit(_run, model_path, threads, method, item)

    try:
        return _drive(submit, inputs, 2 * num_workers, retries, update)
    finally:
        if own:
            cluster = client.cluster
            client.close()
            if address is None and cluster is not None:
                cluster.close()


_ENGINES = {"processes": _with_processes, "ray": _with_ray, "dask": _with_dask}
