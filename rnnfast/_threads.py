"""Thread count of rnnfast's kernels: ``set_num_threads`` / ``get_num_threads``.

The default is the number of cores this process may use: its CPU affinity, further capped by a cgroup
CPU quota (containers), never the host's count. All of rnnfast's parallelism is OpenMP in the kernels
(tasks over batch-row blocks and directions for the recurrence, row blocks for the large GEMMs); BLAS
runs single-threaded inside them. scipy's OpenBLAS has only a process-wide thread count, so while an
rnnfast call runs it is held at 1 and restored when the last concurrent call ends (numpy's own BLAS is
a separate library and is never touched).
"""
import ctypes
import glob
import math
import os
import threading
import warnings
from typing import SupportsIndex

from rnnfast._kernels import _recurrent
from rnnfast._validation import MAX_THREADS, check_threads

__all__ = ["MAX_THREADS", "set_num_threads", "get_num_threads", "resolve_threads", "available_cpus"]

# the kernels clamp every thread count to the same limit (defence in depth: a count that reached them by
# a path that skipped check_threads still starts no more threads than this)
_recurrent.set_max_threads(MAX_THREADS)

_lock = threading.Lock()
_num_threads: int | None = None
# GNU OpenMP's thread pool does not survive fork(): a child's first parallel region waits forever for
# the parent's threads. So once a call has run with threads, a forked child (gunicorn --preload,
# multiprocessing's "fork") runs rnnfast single-threaded, which is safe, and says so once.
_threads_started = False
_forked_after_threads = False
_warned_fork = False


def _after_fork_in_child() -> None:
    global _forked_after_threads
    if _threads_started:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cgroup_quota() -> int | None:
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs quota) limit, or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
            if quota != "max":
                return max(1, math.ceil(int(quota) / int(period)))
            return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


_available: int | None = None


def available_cpus(refresh: bool = False) -> int:
    """Number of CPUs this process may run on (affinity and cgroup quota); read once, then cached
    (``refresh=True`` or ``set_num_threads(None)`` reads it again)."""
    global _available
    if _available is not None and not refresh:
        return _available
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    q = _cgroup_quota()
    if q is not None:
        n = min(n, q)
    _available = max(1, n)
    return _available


def set_num_threads(n: SupportsIndex | None) -> None:
    """Set the number of threads rnnfast's kernels use by default.

    Parameters
    ----------
    n : int or None
        A thread count in [1, :data:`MAX_THREADS`], or None to return to the default (the CPUs this
        process may use).

    Raises
    ------
    TypeError
        ``n`` is not an int (a float, a bool, a string) nor None.
    ValueError
        ``n`` < 1 or ``n`` > :data:`MAX_THREADS`.
    """
    global _num_threads
    value = check_threads(n, "n")
    with _lock:
        _num_threads = value
    if value is None:
        available_cpus(refresh=True)


def get_num_threads() -> int:
    """Return the number of threads rnnfast's kernels use by default.

    Returns
    -------
    int
        The value given to :func:`set_num_threads`, else the CPUs this process may use (at most
        :data:`MAX_THREADS`).
    """
    n = _num_threads
    return min(available_cpus(), MAX_THREADS) if n is None else n


def resolve_threads(n_threads: SupportsIndex | None) -> int:
    """The thread count for one call: ``n_threads`` if given (validated), else the default; 1 in a
    process forked after rnnfast had started threads (see above). ``n_threads`` is checked as ``n`` of
    :func:`set_num_threads` is (TypeError for a non-int, ValueError below 1 or above :data:`MAX_THREADS`)."""
    global _threads_started, _warned_fork
    n = get_num_threads() if n_threads is None else check_threads(n_threads, "n_threads", allow_none=False)
    if n > 1:
        if _forked_after_threads:
            if not _warned_fork:
                _warned_fork = True
                warnings.warn("rnnfast: this process was forked after rnnfast had used OpenMP threads, which "
                              "GNU OpenMP cannot start again in a child; rnnfast runs single-threaded here. "
                              "Use rnnfast first in the children (or the 'spawn'/'forkserver' start methods) "
                              "to keep its threads.", RuntimeWarning, stacklevel=3)
            return 1
        _threads_started = True
    return n


def _find_blas_thread_fns() -> tuple[int | None, int | None] | None:
    """Addresses of the process-wide thread setter and getter of the OpenBLAS that scipy's
    cython_blas uses (scipy's wheels bundle one, with or without a ``scipy_`` symbol prefix)."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (makes sure the library is loaded)

    libdir = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            setter = getattr(lib, prefix + "openblas_set_num_threads", None)
            getter = getattr(lib, prefix + "openblas_get_num_threads", None)
            if setter is not None and getter is not None:
                return (ctypes.cast(setter, ctypes.c_void_p).value, ctypes.cast(getter, ctypes.c_void_p).value)
    return None


_fns = _find_blas_thread_fns()
if _fns:
    _recurrent.set_blas_thread_fns(*_fns)
