"""Weight packs kept from one inference call to the next (``KEEP_PACKS``; off by default, see there).

A float32 inference call on the packed, few-rows or batch-1 kernel first packs the weights into the
layout its per-step products read (``_recurrent.dir_buffers``' KEPT_PACKS). With ``KEEP_PACKS`` a layer
keeps the last packs it made, with a copy of the weights they were made from, which the call then reads
in place of the live ones (so pack and copy always agree). The kernel entry compares that copy with the
live weights bit for bit (memcmp) and packs again, into new buffers, when they differ. The comparison is
what keeps the packs from going stale: the weights are public arrays that a user, ``load_state_dict`` or
an optimizer may write in place at any time, and no hook sees that. Thread counts, dtypes and kernels
key the kept packs; the kernel also refuses a pack made for another count of threads than it runs.

A frozen layer (:func:`rnnfast.nn.freeze`: its weights read-only arrays) keeps its packs whatever
``KEEP_PACKS`` says, W_ih^T packed whole for the projection over all steps too (``FROZEN_PACKS``), and
skips the comparison: the packs are made from the live arrays themselves, which
nothing can write while they stay read-only (checked at every call: a weight made writeable again, or a
parameter replaced, ends the trust and the layer packs and compares as any other).

A kept entry is never written once published (a call that finds it stale makes a new one), so
concurrent inference calls on one layer share it without a lock. Its bytes count toward the layer's
workspace limit (rnnfast.set_workspace_limit); ``release_memory()`` drops it.
"""
from typing import List, Optional

import numpy as np

from rnnfast import _memory
from rnnfast._kernels import _recurrent as _k
from rnnfast.nn.module import aligned_empty

__all__ = ["KEEP_PACKS", "Kept", "frozen", "keeps", "kept_packs", "ran", "kept_bytes", "pack_args"]

#: Whether inference keeps its weight packs between calls. Off: measured on the shared 2-core machine the
#: exact check cost what packing did (perf samples, rnn B6 T10 H512 bi: pack 9.1% of the call, memcmp 10.1%;
#: gru B4 T50 H256: 3.9% / 4.8%; gru B1 T100 H256: 5.5% / 3.5%; lstm B8 T8 H96: 0.8% / 0.9%), although on
#: its own, with the weights in L3, memcmp takes half packing's time (bench/pack_cost.c). bench/kept_packs.py
#: times both ways side by side.
KEEP_PACKS = False

_KERNELS = {int(_k.Kernel.KERNEL_PACKED), int(_k.Kernel.KERNEL_UNITS), int(_k.Kernel.KERNEL_LATENCY)}

_MOST = 2  # kept entries per layer (e.g. the batch-1 and the few-rows kernel of one service)
_SKIP = 16  # calls that pack as before after kept packs went stale unused (weights changing at every call)


class Kept:
    """One call layout's kept packs: ``packs`` per layer-direction as the kernel's ``forward`` takes them,
    ``fresh`` until the call that makes them has run, ``used`` once a later call ran on them."""

    __slots__ = ("key", "packs", "nbytes", "fresh", "used")

    def __init__(self, key, packs, nbytes):
        self.key, self.packs, self.nbytes, self.fresh, self.used = key, packs, nbytes, True, False


def frozen(layer) -> bool:
    """Whether ``layer`` is frozen and its weights still are the read-only arrays freezing made them: else
    the layer is no longer frozen, and the packs made from those arrays are dropped (they were not compared
    with the weights when made)."""
    kept = layer._frozen
    if not kept:
        return False
    params = layer._params
    for name, a in kept.items():  # (a plain loop: this runs at every call of a frozen layer)
        if params.get(name) is not a or a.flags.writeable:
            layer._frozen, layer._packs = {}, {}
            return False
    return True


def keeps(layer, kernel_args, training: bool) -> bool:
    """Whether a call with the planner's ``kernel_args`` keeps its weight packs: float32 inference on a kernel
    that packs, by a frozen layer or with ``KEEP_PACKS``, unless kept packs went stale unused lately (then
    ``_SKIP`` calls pack as before: keeping would copy the weights and allocate new packs at every call)."""
    if training or layer.dtype != np.float32 or kernel_args[0] not in _KERNELS:
        return False
    if frozen(layer):
        return True
    if not KEEP_PACKS:
        return False
    if layer._pack_skip > 0:
        layer._pack_skip -= 1
        return False
    return True


def kept_packs(layer, kernel_args, n_threads: int, stale: bool = False) -> Optional[Kept]:
    """The layer's kept packs for a call on ``kernel_args`` at ``n_threads``, or new empty ones (``fresh``:
    the call packs them) when there are none, or ``stale`` (the kernel found them made from other weights).
    None when the call's kernel packs nothing to keep."""
    key = (kernel_args, n_threads)
    entry = layer._packs.get(key)
    if entry is not None and not stale:
        return entry
    if entry is not None and not entry.used:
        layer._pack_skip = _SKIP
    H, D, L = layer.hidden_size, layer._D, layer.num_layers
    hoist = kernel_args[1]
    trusted = frozen(layer)
    copy, names = ((lambda a: a), _k.FROZEN_PACKS) if trusted else (_copy, _k.KEPT_PACKS)
    packs, nbytes = [], 0
    for k in range(L * D):
        F = layer.input_size if k < D else D * H
        shapes = _k.dir_buffers(layer._cell, F, H, 1, 1, False, False, *kernel_args, n_threads)
        bufs = {name: aligned_empty(shape, np.float32) for name, shape in shapes.items() if name in names}
        if not bufs:
            return None
        sfx = f"_l{k // D}" + ("_reverse" if k % D == 1 else "")
        # (copies of what the packs are made from: the call reads these, so pack and copy always agree; a
        # frozen layer's read-only weights are their own copies, which the kernel then does not compare)
        w_ih = None if hoist and "wpp" not in bufs else copy(layer._params["weight_ih" + sfx])
        w_hh = copy(layer._params["weight_hh" + sfx])
        packs.append((bufs, w_ih, w_hh, np.zeros(2, np.intc)))  # (counts: the packs', the whole W_ih^T's)
        nbytes += sum(a.nbytes for a in bufs.values())
        if copy is _copy:
            nbytes += w_hh.nbytes + (0 if w_ih is None else w_ih.nbytes)
    return Kept(key, packs, nbytes)


def _copy(a):
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def ran(layer, entry: Optional[Kept], pooled: int) -> None:
    """After a call that ran with ``entry``: keep it for the next calls when that call made it, within the
    workspace limit (``pooled``: the bytes of the layer's workspaces, that call's included: they come first)."""
    if entry is None:
        return
    if not entry.fresh:
        entry.used = True
        return
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
