"""Batch inference over many inputs with one model per worker: Ray actors, Dask workers or local processes.

:func:`predict` applies a saved model (``rf.load``) to every input of a list of ``.npy`` files or an iterable of
arrays and returns the results in input order. Each worker loads the model once and keeps it; its kernels
run ``threads`` threads (default: the cores this process may use divided by the workers).

Backends (each imported only when asked for):

- ``"ray"``: ``num_workers`` Ray actors (``pip install "rnnfast[ray]"``). Ray is started locally when it is
  not running yet (``ray.init(address=...)`` to join a cluster started with ``ray start --head``) and left
  running for later calls. An actor whose process dies is restarted by Ray and its calls retried
  (``max_restarts`` / ``max_task_retries`` = ``retries``). Starting an actor (a process that imports rnnfast
  and loads the model) takes a second or more: ``keep_workers=True`` keeps the actors for the next call.
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

import dataclasses
import itertools
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Iterable, List, Optional, Sized, Union

import numpy as np

from rnnfast._validation import Boolean, Integer, Options, validate_params

__all__ = ["predict", "release", "BACKENDS"]

BACKENDS = ("ray", "dask", "processes")
_PARAMS = {
    "num_workers": Integer(1), "backend": Options(*BACKENDS), "method": Options("predict", "predict_proba"),
    "threads": Integer(1, allow_none=True), "retries": Integer(0), "progress": Boolean(),
    "keep_workers": Boolean(),
}
_RAY_POOLS: Dict[tuple, list] = {}  # (model path, its mtime, threads, workers, retries) -> actors kept alive


@dataclasses.dataclass(frozen=True)
class _Job:
    """One call of :func:`predict`, checked."""

    model_path: str
    num_workers: int
    threads: int
    method: str
    retries: int
    update: Callable[[], Any]
    address: Any
    keep_workers: bool

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
            progress: Union[bool, Callable[[int, Optional[int]], Any]] = False, address: Any = None,
            keep_workers: bool = False) -> List[np.ndarray]:
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
    keep_workers : bool, default False
        Ray: keep the actors (and their loaded models) for the next call with the same model file, threads,
        workers and retries, instead of ending them; they end with Ray (``ray.shutdown()``) or :func:`release`.
        The other backends start their workers for each call.

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
                                   retries=retries, progress=False if callable(progress) else progress,
                                   keep_workers=keep_workers), _PARAMS)
    num_workers, threads = checked["num_workers"], checked["threads"]
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path, got {type(model_path).__name__}")
    model_path = os.path.abspath(os.fspath(model_path))
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"no model file {model_path}")
    inputs = _check_inputs(inputs)
    total = len(inputs) if isinstance(inputs, Sized) else None
    update, close = _progress_of(progress, total)
    job = _Job(model_path, num_workers, threads or _default_threads(num_workers), checked["method"],
               checked["retries"], update, address, checked["keep_workers"])
    try:
        return _ENGINES[checked["backend"]](job, inputs)
    finally:
        close()


def release() -> None:
    """End the Ray actors kept by ``predict(..., keep_workers=True)``."""
    import ray
    while _RAY_POOLS:
        for actor in _RAY_POOLS.popitem()[1]:
            ray.kill(actor)


# ---------------------------------------------------------------------------------------- engines
def _with_processes(job: _Job, inputs) -> List[np.ndarray]:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    if job.address is not None:
        raise ValueError("address applies to backend='ray' or 'dask', not 'processes'")
    pools = [ProcessPoolExecutor(job.num_workers)]

    def submit(i, item):
        try:
            return pools[-1].submit(_run, job.model_path, job.threads, job.method, item)
        except BrokenProcessPool:  # a worker died: the pool takes no more work; start a new one
            pools[-1].shutdown(wait=False, cancel_futures=True)
            pools.append(ProcessPoolExecutor(job.num_workers))
            return pools[-1].submit(_run, job.model_path, job.threads, job.method, item)

    try:
        return _drive(submit, inputs, 2 * job.num_workers, job.retries, job.update)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_actors(ray, job: _Job) -> list:
    """The job's actors: kept ones when there are, else new ones (kept when ``keep_workers``)."""
    key = (job.model_path, os.stat(job.model_path).st_mtime_ns, job.threads, job.num_workers, job.retries)
    if key in _RAY_POOLS:
        return _RAY_POOLS[key]
    actor_cls = ray.remote(max_restarts=job.retries, max_task_retries=job.retries)(_Actor)
    actors = [actor_cls.remote(job.model_path, job.threads) for _ in range(job.num_workers)]
    if job.keep_workers:
        _RAY_POOLS[key] = actors
    return actors


def _with_ray(job: _Job, inputs) -> List[np.ndarray]:
    try:
        import ray
    except ImportError as e:
        raise ImportError('backend="ray" needs Ray: pip install "rnnfast[ray]"') from e
    if not ray.is_initialized():
        _RAY_POOLS.clear()  # actors of an earlier Ray session are gone
        ray.init(address=job.address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    actors = _ray_actors(ray, job)
    turn = itertools.count()

    def submit(i, item):
        return actors[next(turn) % len(actors)].predict.remote(item, job.method).future()

    try:
        return _drive(submit, inputs, 2 * job.num_workers, job.retries, job.update)
    finally:
        if not any(actors is kept for kept in _RAY_POOLS.values()):
            for actor in actors:
                ray.kill(actor)


def _with_dask(job: _Job, inputs) -> List[np.ndarray]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError('backend="dask" needs dask.distributed: pip install "rnnfast[dask]"') from e
    address = job.address
    own = not isinstance(address, Client)
    if address is None:
        client = Client(LocalCluster(n_workers=job.num_workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None))
    else:
        client = address if not own else Client(address)
    executor = client.get_executor(pure=False)

    def submit(i, item):
        return executor.submit(_run, job.model_path, job.threads, job.method, item)

    try:
        return _drive(submit, inputs, 2 * job.num_workers, job.retries, job.update)
    finally:
        if own:
            cluster = client.cluster
            client.close()
            if address is None and cluster is not None:
                cluster.close()


_ENGINES = {"processes": _with_processes, "ray": _with_ray, "dask": _with_dask}
