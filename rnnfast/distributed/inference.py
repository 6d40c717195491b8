"""Batch inference over many inputs with one model per worker: Ray actors, Dask workers or local processes.

:func:`predict` applies a saved model (``rf.load``) to every input of a list of ``.npy`` files or an iterable of
arrays and returns the results in input order. Each worker loads the model once and keeps it; its kernels
run ``threads`` threads (default: the cores this process may use divided by the workers), and so do the
OpenMP / BLAS pools of its process (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``).

Backends (each imported only when asked for):

- ``"ray"``: ``num_workers`` Ray actors (``pip install "rnnfast[ray]"``), spread over the cluster's nodes. Ray
  is started locally when it is not running yet (``ray.init(address=...)`` to join a cluster started with
  ``ray start --head``) and left running for later calls. An actor whose process dies is restarted by Ray and
  its calls retried (``max_restarts`` / ``max_task_retries`` = ``retries``). Starting the actors (processes
  that import rnnfast and load the model) takes a second or more: ``keep_workers=True`` keeps them for the
  next call, and ``predict(model_path, [], keep_workers=True)`` starts them without any input, as a service
  or a nightly job does once. Each task goes to the actor with the least work queued; results come back
  through Ray's object store (large arrays zero-copy, read-only).
- ``"dask"``: tasks on the workers of a ``dask.distributed`` client (``pip install "rnnfast[dask]"``): the one
  given by ``address`` (a scheduler address or a ``Client``), else a ``LocalCluster`` of ``num_workers``
  one-thread worker processes made for the call and closed after it, whose scheduler sends each task to a
  worker at once (``distributed.scheduler.worker-saturation: inf``; Dask's default of 1.1 holds tasks back
  until a worker is free, a round trip per task that made a 64-file run twice as long here; set it so on a
  cluster of your own). Each worker process caches the model.
- ``"processes"``: a ``concurrent.futures.ProcessPoolExecutor`` of ``num_workers`` processes on this machine
  (no extra package); a pool broken by a dead worker is replaced.

Tasks: a task carries ``chunk_size`` inputs (paths are sent, not arrays, and each worker reads its files).
By default a list of inputs is cut into shrinking chunks ("guided" scheduling: a quarter of the remaining
inputs per worker, down to one input at the end), so the fixed cost of a task is paid a few times per worker
while the last tasks stay small enough to keep the workers finishing together; an iterable without a length
goes one input per task. At most ``2 * num_workers`` tasks are in flight at once (one running and one queued
per worker), so an iterable of arrays is read as the work proceeds.

Failures: a task of several inputs that fails is run again one input per task; a one-input task that fails is
submitted again, at most ``retries`` more times (so an input is tried at most ``retries + 1`` times on its
own); then :func:`predict` raises ``RuntimeError`` naming the input and the last error.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sized, Tuple, Union

import numpy as np

from rnnfast._validation import Boolean, Integer, Options, validate_params

__all__ = ["predict", "release", "BACKENDS"]

BACKENDS = ("ray", "dask", "processes")
_PARAMS = {
    "num_workers": Integer(1), "backend": Options(*BACKENDS), "method": Options("predict", "predict_proba"),
    "threads": Integer(1, allow_none=True), "retries": Integer(0), "progress": Boolean(),
    "keep_workers": Boolean(), "chunk_size": Integer(1, allow_none=True),
}
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
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
    chunk_size: Optional[int]


# ---------------------------------------------------------------------------------------- the workers' side
_MODELS: Dict[tuple, Any] = {}  # (model path, threads) -> the model loaded in this worker process


def _worker_model(model_path: str, threads: int):
    """The model of ``model_path``, loaded once per worker process, its kernels set to ``threads`` threads."""
    key = (model_path, threads)
    if key not in _MODELS:
        import rnnfast as rf
        rf.set_num_threads(threads)
        _pin_threads(threads)
        _MODELS[key] = rf.load(model_path)
    return _MODELS[key]


def _pin_threads(threads: int) -> None:
    """This worker's OpenMP / BLAS pools to ``threads`` threads: the environment for libraries loaded from now
    on, and threadpoolctl (when installed) for those loaded already. (Not through Ray's ``runtime_env``: an
    actor with its own environment cannot use the worker processes Ray starts in advance, and starts slower.)"""
    os.environ.update({name: str(threads) for name in _THREAD_VARS})
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # Ray's and Dask's workers start with OMP_NUM_THREADS=1 already
        return
    threadpool_limits(threads)


def _apply(model, items: list, method: str) -> List[np.ndarray]:
    """The model's ``method`` on each input of a task: a .npy path (read here, in the worker) or an array."""
    fn = getattr(model, method)
    return [np.asarray(fn(np.load(item, allow_pickle=False) if isinstance(item, (str, os.PathLike)) else item))
            for item in items]


def _run(model_path: str, threads: int, method: str, items: list) -> List[np.ndarray]:
    """One task of the ``"processes"`` and ``"dask"`` backends."""
    return _apply(_worker_model(model_path, threads), items, method)


class _Actor:
    """A Ray actor holding one model (wrapped by ``ray.remote`` when the ``"ray"`` backend runs)."""

    def __init__(self, model_path: str, threads: int) -> None:
        self.model = _worker_model(model_path, threads)

    def ready(self) -> bool:
        return True

    def predict(self, items: list, method: str) -> List[np.ndarray]:
        return _apply(self.model, items, method)


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


class _Futures:
    """How :func:`_drive` runs tasks on a ``concurrent.futures`` executor (local processes, Dask):
    ``submit(items)`` returns a future of the task's list of results."""

    def __init__(self, submit: Callable[[list], Future], window: int) -> None:
        self.submit, self.window = submit, window

    @staticmethod
    def wait(pending: list) -> Iterable[Future]:
        return wait(pending, return_when=FIRST_COMPLETED)[0]

    @staticmethod
    def outcome(fut: Future) -> Tuple[Optional[list], Optional[BaseException]]:
        exc = fut.exception()
        return (None, exc) if exc is not None else (fut.result(), None)

    @staticmethod
    def cancel(fut: Future) -> None:
        fut.cancel()


def _chunks(items: Iterable, total: Optional[int], chunk_size: Optional[int], workers: int) -> Iterator[list]:
    """``(index, item)`` pairs in tasks: ``chunk_size`` a task if given, else shrinking chunks of a quarter of
    the remaining inputs per worker when ``total`` is known, else one input a task."""
    source, left = enumerate(items), total
    while True:
        size = chunk_size or (max(1, left // (4 * workers)) if left is not None else 1)
        task = list(itertools.islice(source, size))
        if not task:
            return
        if left is not None:
            left -= len(task)
        yield task


def _drive(runner, tasks: Iterator[list], retries: int, progress: Callable[[], Any]) -> List[np.ndarray]:
    """Run ``tasks`` (lists of ``(index, item)``) on ``runner`` (``submit``, ``wait``, ``outcome``, ``cancel``,
    ``window``: see :class:`_Futures`) with at most ``runner.window`` in flight, a failed task of several inputs
    again one input a task and a failed input at most ``retries`` more times; the results in input order."""
    results: Dict[int, np.ndarray] = {}
    pending: Dict[Any, tuple] = {}  # a task's handle -> (its [(index, item)], tries of a one-input task so far)
    again: collections.deque = collections.deque()  # ([(index, item)], tries) to submit before new tasks

    def feed() -> None:
        while len(pending) < runner.window:
            task = again.popleft() if again else (next(tasks, None), 0)
            if task[0] is None:
                return
            pending[runner.submit([item for _, item in task[0]])] = task

    feed()
    while pending:
        for handle in runner.wait(list(pending)):
            (task, tries), (out, exc) = pending.pop(handle), runner.outcome(handle)
            if exc is None:
                for (i, _), res in zip(task, out):
                    results[i] = res
                    progress()
            elif len(task) > 1:
                again.extend(([pair], 0) for pair in task)
            elif tries < retries:
                again.append((task, tries + 1))
            else:
                for other in pending:
                    runner.cancel(other)
                raise RuntimeError(f"input {task[0][0]} failed {tries + 1} time(s); last error: "
                                   f"{type(exc).__name__}: {exc}") from exc
        feed()
    return [results[i] for i in range(len(results))]


def _check_model_path(model_path) -> str:
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path, got {type(model_path).__name__}")
    model_path = os.path.abspath(os.fspath(model_path))
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"no model file {model_path}")
    return model_path


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
            keep_workers: bool = False, chunk_size: Optional[int] = None) -> List[np.ndarray]:
    """Apply a saved model to many inputs on ``num_workers`` workers, one model per worker.

    Parameters
    ----------
    model_path : str or path
        A model file written by ``save`` (read by ``rf.load`` once in every worker).
    inputs : list of .npy paths, or iterable of arrays
        One input per result, each what the model's ``predict`` takes (e.g. (N, T, F)). Paths are read by the
        workers (the cheap way: nothing but the path is sent); arrays are sent to them.
    num_workers : int, default 2
    backend : {"ray", "dask", "processes"}, default "ray"
    method : {"predict", "predict_proba"}, default "predict"
    threads : int, optional
        Kernel (and OpenMP / BLAS) threads per worker; default the cores this process may use //
        ``num_workers`` (at least 1).
    retries : int, default 2
        Extra tries of a failed input before giving up.
    progress : bool or callable, default False
        True: a tqdm bar (if tqdm is installed); a callable is called as ``progress(done, total)`` after
        each input (``total`` None for an iterable without a length).
    address : optional
        Ray: the cluster address for ``ray.init`` when Ray is not running yet (e.g. ``"auto"``). Dask: a
        scheduler address or a ``dask.distributed.Client``.
    keep_workers : bool, default False
        Ray: keep the actors (and their loaded models) for the next call with the same model file, threads,
        workers and retries, instead of ending them; they end with Ray (``ray.shutdown()``) or :func:`release`.
        With no inputs, the call only starts them (and returns when every actor has loaded the model). The
        other backends start their workers for each call.
    chunk_size : int, optional
        Inputs per task; default shrinking chunks for a list, one input a task for an iterable without a
        length (see the module's docstring).

    Returns
    -------
    list of numpy.ndarray
        The model's output for each input, in input order (on Ray, large ones are read-only views of its
        object store: copy one to write to it).

    Raises
    ------
    TypeError, ValueError
        Bad arguments (before any work).
    FileNotFoundError
        ``model_path`` does not exist.
    ImportError
        The backend's package is not installed.
    RuntimeError
        An input failed ``retries + 1`` times, or a Ray worker could not load the model.
    """
    checked = validate_params(dict(num_workers=num_workers, backend=backend, method=method, threads=threads,
                                   retries=retries, progress=False if callable(progress) else progress,
                                   keep_workers=keep_workers, chunk_size=chunk_size), _PARAMS)
    num_workers, threads = checked["num_workers"], checked["threads"]
    model_path, inputs = _check_model_path(model_path), _check_inputs(inputs)
    total = len(inputs) if isinstance(inputs, Sized) else None
    update, close = _progress_of(progress, total)
    job = _Job(model_path, num_workers, threads or _default_threads(num_workers), checked["method"],
               checked["retries"], update, address, checked["keep_workers"], checked["chunk_size"])
    try:
        return _ENGINES[checked["backend"]](job, _chunks(inputs, total, job.chunk_size, num_workers))
    finally:
        close()


def release() -> None:
    """End the Ray actors kept by ``predict(..., keep_workers=True)``."""
    import ray
    while _RAY_POOLS:
        for actor in _RAY_POOLS.popitem()[1]:
            ray.kill(actor)


# ---------------------------------------------------------------------------------------- engines
def _with_processes(job: _Job, tasks: Iterator[list]) -> List[np.ndarray]:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    if job.address is not None:
        raise ValueError("address applies to backend='ray' or 'dask', not 'processes'")
    pools = [ProcessPoolExecutor(job.num_workers)]

    def submit(items):
        try:
            return pools[-1].submit(_run, job.model_path, job.threads, job.method, items)
        except BrokenProcessPool:  # a worker died: the pool takes no more work; start a new one
            pools[-1].shutdown(wait=False, cancel_futures=True)
            pools.append(ProcessPoolExecutor(job.num_workers))
            return pools[-1].submit(_run, job.model_path, job.threads, job.method, items)

    try:
        return _drive(_Futures(submit, 2 * job.num_workers), tasks, job.retries, job.update)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


class _RayActors:
    """How :func:`_drive` runs tasks on Ray actors: each task to the actor with the fewest tasks in flight (an
    actor found dead gets no more), waiting with ``ray.wait`` (blocking, no polling) and collecting every task
    done by then at once."""

    def __init__(self, ray, actors: list, method: str) -> None:
        self.ray, self.actors, self.method = ray, actors, method
        self.window = 2 * len(actors)
        self.busy = [0.0] * len(actors)  # tasks in flight per actor (inf: dead)
        self.owner: Dict[Any, int] = {}

    def submit(self, items: list):
        k = min(range(len(self.actors)), key=self.busy.__getitem__)
        ref = self.actors[k].predict.remote(items, self.method)
        self.busy[k] += 1
        self.owner[ref] = k
        return ref

    def wait(self, refs: list) -> list:
        done, rest = self.ray.wait(refs, num_returns=1)
        if rest:
            done += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return done

    def outcome(self, ref) -> Tuple[Optional[list], Optional[BaseException]]:
        k = self.owner.pop(ref)
        self.busy[k] -= 1
        try:
            return self.ray.get(ref), None
        except self.ray.exceptions.RayActorError as e:  # restarted up to max_restarts times, then gone
            self.busy[k] = math.inf
            return None, e
        except Exception as e:  # the task raised
            return None, e

    @staticmethod
    def cancel(ref) -> None:
        """Nothing: the queued calls of an actor end with it (or run on a kept one)."""


def _ray_actors(ray, job: _Job) -> list:
    """The job's actors: kept ones when there are, else new ones that have loaded the model (kept when
    ``keep_workers``)."""
    key = (job.model_path, os.stat(job.model_path).st_mtime_ns, job.threads, job.num_workers, job.retries)
    if key in _RAY_POOLS:
        return _RAY_POOLS[key]
    actor_cls = ray.remote(_Actor).options(
        max_restarts=job.retries, max_task_retries=job.retries, scheduling_strategy="SPREAD")
    actors = [actor_cls.remote(job.model_path, job.threads) for _ in range(job.num_workers)]
    try:
        ray.get([actor.ready.remote() for actor in actors])
    except ray.exceptions.RayActorError as e:
        for actor in actors:
            ray.kill(actor)
        raise RuntimeError(f"the Ray workers could not load {job.model_path}: {e}") from e
    if job.keep_workers:
        _RAY_POOLS[key] = actors
    return actors


def _with_ray(job: _Job, tasks: Iterator[list]) -> List[np.ndarray]:
    try:
        import ray
    except ImportError as e:
        raise ImportError('backend="ray" needs Ray: pip install "rnnfast[ray]"') from e
    if not ray.is_initialized():
        _RAY_POOLS.clear()  # actors of an earlier Ray session are gone
        ray.init(address=job.address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 logging_level=logging.WARNING)
    actors = _ray_actors(ray, job)
    try:
        return _drive(_RayActors(ray, actors, job.method), tasks, job.retries, job.update)
    finally:
        if not any(actors is kept for kept in _RAY_POOLS.values()):
            for actor in actors:
                ray.kill(actor)


def _with_dask(job: _Job, tasks: Iterator[list]) -> List[np.ndarray]:
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError('backend="dask" needs dask.distributed: pip install "rnnfast[dask]"') from e
    address = job.address
    own = not isinstance(address, Client)
    if address is None:  # its scheduler sends every task to a worker at once (queued there, not held back)
        with dask.config.set({"distributed.scheduler.worker-saturation": math.inf}):
            client = Client(LocalCluster(n_workers=job.num_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None))
    else:
        client = address if not own else Client(address)
    executor = client.get_executor(pure=False)

    def submit(items):
        return executor.submit(_run, job.model_path, job.threads, job.method, items)

    try:
        return _drive(_Futures(submit, 2 * job.num_workers), tasks, job.retries, job.update)
    finally:
        if own:
            cluster = client.cluster
            client.close()
            if address is None and cluster is not None:
                cluster.close()


_ENGINES = {"processes": _with_processes, "ray": _with_ray, "dask": _with_dask}
