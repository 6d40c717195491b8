"""Thread count of rnnfast's kernels: ``set_num_threads`` / ``get_num_threads``.

The default is the number of cores this process may use: its CPU affinity, further capped by a cgroup
CPU quota (containers), never the host's count. All of rnnfast's parallelism is OpenMP in the kernels
(tasks over batch-row blocks and directions for the recurrence, row blocks for the large GEMMs); BLAS
runs single-threaded inside them. The BLAS scipy calls has only a process-wide thread count, so while an
rnnfast call runs it is held at 1 and restored when the last concurrent call ends (:func:`find_blas_control`
finds it, whichever BLAS it is; numpy's own BLAS, when a separate library, is never touched).

Thread counts are checked in one place, :func:`rnnfast._validation.check_threads`: an int in
[1, :data:`MAX_THREADS`]; the kernels clamp to the same limit.
"""
import ctypes
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Optional, SupportsIndex

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
    if not _blas_looked_up:
        blas_control()
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


# ------------------------------------------------------------------------------------ BLAS thread hold
# The setter and getter of each BLAS's process-wide thread count, by threadpoolctl's name for the library
# (its ``internal_api``); OpenBLAS builds may prefix or suffix their symbols (scipy's wheels: ``scipy_``).
_THREAD_SYMBOLS = {
    "openblas": [(f"{p}openblas_set_num_threads{s}", f"{p}openblas_get_num_threads{s}")
                 for p in ("", "scipy_") for s in ("", "64_", "_64")],
    "mkl": [("MKL_Set_Num_Threads", "MKL_Get_Max_Threads")],
    "blis": [("bli_thread_set_num_threads", "bli_thread_get_num_threads")],
    "flexiblas": [("flexiblas_set_num_threads", "flexiblas_get_num_threads")],
}
# Symbols that only a BLAS defines, to find the file of the one scipy's cython_blas calls.
_GEMM_SYMBOLS = ("sgemm_", "scipy_sgemm_", "sgemm_64_", "sgemm", "cblas_sgemm", "scipy_cblas_sgemm")


@dataclass(frozen=True)
class BlasControl:
    """How rnnfast holds the BLAS that ``scipy.linalg.cython_blas`` calls: its file, its kind (threadpoolctl's
    ``internal_api``), the addresses of its thread-count setter and getter, and how they were found
    (``"threadpoolctl"`` or ``"dlsym"``)."""

    path: Optional[str]
    api: str
    setter: int
    getter: int
    found_by: str


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _address(fn) -> int:
    return int(ctypes.cast(fn, ctypes.c_void_p).value or 0)


def _file_of(address: int) -> Optional[str]:
    """The real path of the loaded shared object holding ``address`` (``dladdr``), or None."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes, dladdr.restype = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)], ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def _lookup(lib, symbols: dict, path: Optional[str], found_by: str) -> Optional[BlasControl]:
    """The control from the first pair of ``symbols`` (api -> [(setter, getter)]) that ``lib`` resolves."""
    for api, pairs in symbols.items():
        for set_name, get_name in pairs:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                return BlasControl(path, api, _address(setter), _address(getter), found_by)
    return None


def _via_threadpoolctl(path: Optional[str]) -> Optional[BlasControl]:
    """The control of the BLAS at ``path`` among threadpoolctl's (None without threadpoolctl or a match)."""
    try:
        import threadpoolctl  # type: ignore[import-untyped]
    except ImportError:
        return None
    libs = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    if path is not None:
        libs = [c for c in libs if os.path.realpath(c.filepath) == path]
    if len(libs) != 1:
        return None
    ctl = libs[0]
    return _lookup(ctl.dynlib, {ctl.internal_api: _THREAD_SYMBOLS.get(ctl.internal_api, [])},
                   os.path.realpath(ctl.filepath), "threadpoolctl")


def find_blas_control() -> Optional[BlasControl]:
    """The thread control of the BLAS that ``scipy.linalg.cython_blas`` (rnnfast's GEMMs) calls, or None.

    Any BLAS, however scipy was built (its wheels' bundled OpenBLAS, a conda MKL or OpenBLAS, Debian's
    ``libblas.so.3``): symbols looked up through a handle of cython_blas's own shared object are searched in it
    and in the libraries it depends on, which is exactly the BLAS it calls, and never numpy's when that is a
    separate library. threadpoolctl, when installed, picks the setter and getter (it knows more BLAS builds);
    without it the known symbols of OpenBLAS, MKL, BLIS and FlexiBLAS are looked up directly.
    """
    import scipy.linalg.cython_blas as cython_blas

    try:
        handle = ctypes.CDLL(cython_blas.__file__)
    except OSError:
        return None
    path = next((_file_of(_address(f)) for f in (getattr(handle, n, None) for n in _GEMM_SYMBOLS)
                 if f is not None), None)
    return _via_threadpoolctl(path) or _lookup(handle, _THREAD_SYMBOLS, path, "dlsym")


#: How rnnfast holds scipy's BLAS to one thread during its calls, found at the first call (None before,
#: or when that BLAS has no thread control rnnfast knows: it is then left as it is).
BLAS: Optional[BlasControl] = None
_blas_looked_up = False


def blas_control() -> Optional[BlasControl]:
    """:data:`BLAS`, looked up (and handed to the kernels) on first use: threadpoolctl, when installed, is
    imported only then."""
    global BLAS, _blas_looked_up
    if not _blas_looked_up:
        with _lock:
            if not _blas_looked_up:
                BLAS = find_blas_control()
                if BLAS is not None:
                    _recurrent.set_blas_thread_fns(BLAS.setter, BLAS.getter)
                _blas_looked_up = True
    return BLAS
