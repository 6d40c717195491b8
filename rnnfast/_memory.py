"""How much memory the recurrent layers keep between calls: :func:`set_workspace_limit`.

A recurrent layer keeps the buffers of its last calls (up to a few workspaces, each as large as the
largest call it served, and the packed layouts of recent batches) so that steady-state calls neither
allocate nor page-fault fresh memory. One very large request therefore pins its memory until
``release_memory()`` runs. A workspace limit bounds what is kept: after each call, buffers that would
take a layer's kept workspaces above the limit are freed instead of being pooled.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

from rnnfast._validation import check_int

__all__ = ["set_workspace_limit", "get_workspace_limit", "return_freed_memory"]

_limit: Optional[int] = None


def set_workspace_limit(nbytes: Optional[int]) -> None:
    """Bound the memory each recurrent layer keeps for reuse between calls.

    After every call, a layer returns its workspace to its pool only while the pool's workspaces take at
    most ``nbytes`` together, and remembers a batch's packed layout only when it takes at most ``nbytes``;
    anything larger is freed when the call returns. So a request far larger than usual costs its memory
    for its own duration only, while calls of the usual size still reuse their buffers (set the limit
    above their workspace, a few MB for typical serving shapes). Results are the same with any limit.

    Setting a limit also has glibc serve allocations of 1 MiB or more with ``mmap`` from then on, process-wide,
    so the memory freed after a large request goes back to the system (glibc's adaptive threshold would
    otherwise keep part of it in the heap).

    Parameters
    ----------
    nbytes : int >= 0 or None
        The bytes each recurrent layer may keep between calls; 0 keeps nothing, None (the default) keeps
        up to four workspaces of any size.

    Raises
    ------
    TypeError
        ``nbytes`` is not an int or None.
    ValueError
        ``nbytes`` is negative.

    Examples
    --------
    >>> import rnnfast as rf
    >>> rf.set_workspace_limit(64 * 2**20)   # keep at most 64 MiB per layer
    >>> rf.get_workspace_limit()
    67108864
    >>> rf.set_workspace_limit(None)
    """
    global _limit
    _limit = None if nbytes is None else check_int(nbytes, "nbytes", 0)
    if _limit is not None:
        _mmap_large_blocks()


def get_workspace_limit() -> Optional[int]:
    """The limit :func:`set_workspace_limit` set (bytes per layer), or None for no limit."""
    return _limit


def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


_LIBC = _libc()


_M_MMAP_THRESHOLD = -3       # glibc's mallopt parameter
_MMAP_THRESHOLD = 1 << 20    # bytes: blocks from this size up are mmapped, so freeing them unmaps them


def _mmap_large_blocks() -> None:
    """Ask glibc to serve every block of 1 MiB or more by mmap, whose memory goes back to the system when
    freed. By default glibc raises that threshold (up to 32 MiB) each time a large block is freed, so after
    one large request, buffers of several MB come from the heap, and a freed heap block in the middle
    stays in the process: with a limit set, the memory of a large request would still be kept (9 MB of
    70 MB in tests/nn/test_memory.py). Process-wide, and it stays set (glibc cannot restore the adaptive
    threshold); a no-op without glibc."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def return_freed_memory() -> None:
    """Hand memory the C allocator holds free back to the operating system (glibc's ``malloc_trim``;
    nothing elsewhere). numpy's large arrays are mmapped and return on their own, but glibc raises its
    mmap threshold after such frees, so later buffers of a few MB come from the heap and stay there."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
