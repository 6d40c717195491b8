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

from rnnfast._kernels import _recurrent

_lock = threading.Lock()
_num_threads = None


def _cgroup_quota():
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
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


_available = None


def available_cpus(refresh=False):
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


def set_num_threads(n):
    """Set the number of threads rnnfast's kernels use by default.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to return to the default (the CPUs this process may use).
    """
    global _num_threads
    if n is not None:
        if isinstance(n, bool) or not hasattr(n, "__index__"):
            raise TypeError(f"n must be a positive int or None, got {type(n).__name__}")
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
    with _lock:
        _num_threads = n
    if n is None:
        available_cpus(refresh=True)


def get_num_threads():
    """Return the number of threads rnnfast's kernels use by default.

    Returns
    -------
    int
        The value given to :func:`set_num_threads`, else the CPUs this process may use.
    """
    n = _num_threads
    return available_cpus() if n is None else n


def resolve_threads(n_threads):
    """The thread count for one call: ``n_threads`` if given (validated), else the default."""
    if n_threads is None:
        return get_num_threads()
    if isinstance(n_threads, bool) or not hasattr(n_threads, "__index__"):
        raise TypeError(f"n_threads must be a positive int or None, got {type(n_threads).__name__}")
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    return n


def _find_blas_thread_fns():
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
