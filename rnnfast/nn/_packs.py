"""Weight packs kept from one inference call to the next.

A float32 inference call on the packed, few-rows or batch-1 kernel first packs the weights into the
layout its per-step products read (``_recurrent.dir_buffers``' KEPT_PACKS). At short calls that packing
was a large part of the call (rnn B=6 T=10 I=128 H=512 bidirectional: about 0.2 of 1.2 ms), so a layer
keeps the last packs it made, with a copy of the weights they were made from. The kernel entry compares
that copy with the live weights bit for bit (memcmp, about a quarter to a tenth of the packing's time) and
packs again, into new buffers, when they differ. The comparison is what keeps the packs from going stale:
the weights are public arrays that a user, ``load_state_dict`` or an optimizer may write in place at any
time, and no hook sees that.

A kept entry is never written once published (a call that finds it stale makes a new one), so
concurrent inference calls on one layer share it without a lock. Its bytes count toward the layer's
workspace limit (rnnfast.set_workspace_limit); ``release_memory()`` drops it.
"""
from typing import List, Optional

import numpy as np

from rnnfast import _memory
from rnnfast._kernels import _recurrent as _k
from rnnfast.nn.module import aligned_empty

__all__ = ["KEEP_PACKS", "Kept", "kept_packs", "publish"]

#: Whether inference keeps its weight packs between calls (False: packs at every call; for A/B timing).
KEEP_PACKS = True

_KERNELS = {int(_k.Kernel.KERNEL_PACKED), int(_k.Kernel.KERNEL_UNITS), int(_k.Kernel.KERNEL_LATENCY)}

_MOST = 2  # kept entries per layer (e.g. the batch-1 and the few-rows kernel of one service)


class Kept:
    """One call layout's kept packs: ``packs`` per layer-direction as the kernel's ``forward`` takes them,
    ``fresh`` until the call that makes them has run."""

    __slots__ = ("key", "packs", "nbytes", "fresh")

    def __init__(self, key, packs, nbytes):
        self.key, self.packs, self.nbytes, self.fresh = key, packs, nbytes, True


def keeps(kernel_args, training: bool, dtype) -> bool:
    """Whether a call with the planner's ``kernel_args`` keeps its weight packs."""
    return KEEP_PACKS and not training and dtype == np.float32 and kernel_args[0] in _KERNELS


def kept_packs(layer, kernel_args, n_threads: int, stale: bool = False) -> Optional[Kept]:
    """The layer's kept packs for a call on ``kernel_args`` at ``n_threads``, or new empty ones (``fresh``:
    the call packs them) when there are none, or ``stale`` (the kernel found them made from other weights).
    None when the call's kernel packs nothing to keep."""
    key = (kernel_args, n_threads)
    entry = None if stale else layer._packs.get(key)
    if entry is not None:
        return entry
    H, D, L = layer.hidden_size, layer._D, layer.num_layers
    hoist = kernel_args[1]
    packs, nbytes = [], 0
    for k in range(L * D):
        F = layer.input_size if k < D else D * H
        shapes = _k.dir_buffers(layer._cell, F, H, 1, 1, False, False, *kernel_args, n_threads)
        bufs = {name: aligned_empty(shape, np.float32) for name, shape in shapes.items() if name in _k.KEPT_PACKS}
        if not bufs:
            return None
        sfx = f"_l{k // D}" + ("_reverse" if k % D == 1 else "")
        # (copies of what the packs are made from: the call reads these, so pack and copy always agree)
        w_ih = None if hoist else _copy(layer._params["weight_ih" + sfx])
        w_hh = _copy(layer._params["weight_hh" + sfx])
        packs.append((bufs, w_ih, w_hh, np.zeros(1, np.intc)))
        nbytes += sum(a.nbytes for a in bufs.values()) + w_hh.nbytes + (0 if w_ih is None else w_ih.nbytes)
    return Kept(key, packs, nbytes)


def _copy(a):
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def publish(layer, entry: Kept, pooled: int) -> None:
    """Keep ``entry`` (made by the call that just ran) for the next calls, within the workspace limit
    (``pooled``: the bytes of the layer's pooled workspaces)."""
    entry.fresh = False
    limit = _memory.get_workspace_limit()
    kept: dict = layer._packs
    if limit is not None and entry.nbytes + pooled + kept_bytes(layer, but=entry.key) > limit:
        return
    if entry.key not in kept and len(kept) >= _MOST:
        kept.clear()
    kept[entry.key] = entry


def kept_bytes(layer, but=None) -> int:
    """Bytes of the layer's kept packs (but those kept under key ``but``)."""
    return sum(e.nbytes for e in list(layer._packs.values()) if e.key != but)


def pack_args(entry: Optional[Kept]) -> Optional[List[tuple]]:
    """The kernel's ``packs`` argument for ``entry``."""
    return None if entry is None else entry.packs
