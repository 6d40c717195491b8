"""Weight packs kept from one inference call to the next (``KEEP_PACKS``, on by default).

A float32 inference call on the packed, few-rows or batch-1 kernel first packs the weights into the
layout its per-step products read (``_recurrent.dir_buffers``' KEPT_PACKS), which ONNX Runtime does once,
when a session is made. Here a layer keeps the last packs it made, with the 128-bit digests of the W_ih
and W_hh they were made from (csrc/rf_hash.h); a later call takes the digests of the weights it is given
and runs on the kept packs when they are the same, else packs again, into new buffers. The weights are
public arrays that a user, ``load_state_dict`` or an optimizer may write in place at any time, and no hook
sees that: the digest is what keeps the packs from going stale. It reads the weights once (packing reads
and writes them; the exact comparison with a copy it replaced read them twice, and cost what packing did:
``bench/kept_packs.py``). Not exact: two different weight arrays share a digest only by accident, at odds
of about 2^-128 (it is not built to resist arrays crafted to collide; freeze a model whose weights come from
someone who might). Thread counts, dtypes and kernels key the kept packs; the kernel also refuses a pack made for
another count of threads than it runs.

A frozen layer (:func:`rnnfast.nn.freeze`: its weights read-only arrays) keeps its packs without digests,
made from the live arrays themselves, which nothing can write while they stay read-only (checked at every
call: a weight made writeable again, or a parameter replaced, ends the trust and the layer packs and
checks as any other).

A kept entry is never written once published (a call that finds it stale makes a new one), so
concurrent inference calls on one layer share it without a lock. Its bytes count toward the layer's
workspace limit (rnnfast.set_workspace_limit); ``release_memory()`` drops it.
"""
import contextlib
from typing import Iterator, List, Optional

import numpy as np

from rnnfast import _memory
from rnnfast._kernels import _recurrent as _k
from rnnfast.nn.module import aligned_empty

__all__ = ["KEEP_PACKS", "Kept", "frozen", "keeps", "kept_packs", "ran", "fast_ok", "drop", "room", "kept_bytes",
           "pack_args"]

#: Whether inference keeps its weight packs between calls (see above; ``bench/kept_packs.py`` times calls with
#: and without).
KEEP_PACKS = True

_KERNELS = {int(_k.Kernel.KERNEL_PACKED), int(_k.Kernel.KERNEL_UNITS), int(_k.Kernel.KERNEL_LATENCY)}

#: ``fast_ok``'s entry for a call that kept packs but whose plan packs nothing to keep
NOTHING = "nothing to keep"

#: Weight bytes (W_ih and W_hh, every layer and direction) below which a layer packs at every call: packing
#: so few costs less than checking kept packs (a call's check has a fixed cost of about a microsecond; two
#: threads, LSTM B=1 T=32 I=1 H=16, kept / packing at every call 0.93; LSTM B=8 T=8 I=48 H=96, 221 KB, 1.43).
KEEP_MIN_BYTES = 64 * 1024

_MOST = 2  # kept entries per layer (e.g. the batch-1 and the few-rows kernel of one service)
_SKIP = 16  # calls that pack as before after kept packs went stale unused (weights changing at every call)


class Kept:
    """One call layout's kept packs: ``packs`` per layer-direction as the kernel's ``forward`` takes them,
    ``trusted`` (a frozen layer's: no digests), ``fresh`` until the call that makes them has run, ``used``
    once a later call ran on them."""

    __slots__ = ("key", "packs", "nbytes", "trusted", "fresh", "used")

    def __init__(self, key, packs, nbytes, trusted=False):
        self.key, self.packs, self.nbytes, self.trusted = key, packs, nbytes, trusted
        self.fresh, self.used = True, False


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


def worth(layer) -> bool:
    """Whether ``layer``'s weights are big enough to keep their packs (KEEP_MIN_BYTES)."""
    nbytes = layer.__dict__.get("_weight_bytes")
    if nbytes is None:
        weights = [a for name, a in layer._params.items() if name.startswith("weight_")]
        nbytes = layer._weight_bytes = sum(a.nbytes for a in weights)
    return nbytes >= KEEP_MIN_BYTES


def keeps(layer, kernel_args, training: bool) -> bool:
    """Whether a call with the planner's ``kernel_args`` keeps its weight packs: float32 inference on a kernel
    that packs, by a frozen layer or with ``KEEP_PACKS`` over weights ``worth`` it, unless kept packs went
    stale unused lately (then ``_SKIP`` calls pack as before: keeping would take digests and allocate new
    packs at every call)."""
    if training or layer.dtype != np.float32 or kernel_args[0] not in _KERNELS:
        return False
    if frozen(layer):
        return True
    if not KEEP_PACKS or not worth(layer):
        return False
    if layer._pack_skip > 0:
        layer._pack_skip -= 1
        return False
    return True


def kept_packs(layer, kernel_args, n_threads: int) -> Optional[Kept]:
    """The layer's kept packs for a call on ``kernel_args`` at ``n_threads``, or new empty ones (``fresh``:
    the call packs them) when there are none (or the last went stale: ``drop``). None when the call's kernel
    packs nothing to keep."""
    key = (kernel_args, n_threads)
    entry = layer._packs.get(key)
    if entry is not None:
        return entry
    H, D, L = layer.hidden_size, layer._D, layer.num_layers
    hoist = kernel_args[1]
    trusted = frozen(layer)
    packs, nbytes = [], 0
    for k in range(L * D):
        F = layer.input_size if k < D else D * H
        shapes = _k.dir_buffers(layer._cell, F, H, 1, 1, False, False, *kernel_args, n_threads)
        bufs = {name: aligned_empty(shape, np.float32) for name, shape in shapes.items() if name in _k.KEPT_PACKS}
        if not bufs:
            return None
        if trusted:  # (a frozen layer's read-only weights: the kernel reads them, and trusts the packs)
            sfx = f"_l{k // D}" + ("_reverse" if k % D == 1 else "")
            w_ih = None if hoist and "wpp" not in bufs else layer._params["weight_ih" + sfx]
            packs.append((bufs, w_ih, layer._params["weight_hh" + sfx], np.zeros(2, np.intc), None))
        else:  # (the digests of the weights the packs are made from: the call that makes them takes them)
            packs.append((bufs, None, None, np.zeros(2, np.intc), np.zeros(4, np.uint64)))
        nbytes += sum(a.nbytes for a in bufs.values())
    return Kept(key, packs, nbytes, trusted)


def ran(layer, entry, pooled: int) -> None:
    """After a call that ran with ``entry`` (a Kept, or None): keep it for the next calls when that call made
    it, within the workspace limit (``pooled``: the bytes of the layer's workspaces, that call's included:
    they come first); else note it used."""
    if not isinstance(entry, Kept):
        return
    if not entry.fresh:
        entry.used = True
        return
    entry.fresh = False
    limit = _memory.get_workspace_limit()
    kept: dict = layer._packs
    if limit is not None and entry.nbytes + pooled + kept_bytes(layer, but=entry.key) > limit:
        layer._pack_skip = _SKIP  # (else the next calls would make packs to drop again)
        return
    if entry.key not in kept and len(kept) >= getattr(layer, "_packs_most", _MOST):
        kept.clear()
    kept[entry.key] = entry


def fast_ok(layer, entry: "Kept | str | None", kernel_args) -> bool:
    """Whether an inference call may run again on the filled kernel arguments of an earlier one
    (``_eval_fast``) that ran with ``entry`` (None: packing at the call; NOTHING: its plan packs nothing to
    keep): a trusted entry while the layer stays frozen, a checked one while the layer keeps it (the kernel
    then checks its digests); without one, while keeping stays off for it (a count of ``_SKIP`` calls runs
    down here too)."""
    if entry is NOTHING:
        return True
    if entry is None:
        return not keeps(layer, kernel_args, False)
    if entry.trusted:
        return frozen(layer)
    return KEEP_PACKS and layer._packs.get(entry.key) is entry


def drop(layer, entry, why: int) -> None:
    """Forget ``entry`` (a kept entry, or what ``fast_ok`` takes), refused by the kernel (``why``: -2 made from
    other weights, -1 for another count of threads) at a call that then ran nothing: the next call makes new
    packs, or, when the weights changed before a call used the entry (an optimizer stepping between calls),
    packs as before for ``_SKIP`` calls."""
    if not isinstance(entry, Kept):
        return
    if layer._packs.get(entry.key) is entry:
        layer._packs.pop(entry.key, None)  # (another thread may drop it first; at worst a new one goes: repacked)
    if why == -2 and not entry.used:
        layer._pack_skip = _SKIP


@contextlib.contextmanager
def room(layer, n: int) -> Iterator[None]:
    """Within the block ``layer`` keeps the packs of up to ``n`` call layouts (rather than ``_MOST``): timing
    several plans in turn (rnnfast.tune, bench/plan_ab.py) then times each on its kept packs, as its calls
    would run, not packing at every call as each plan's packs push out the last's."""
    layer._packs_most = max(n, _MOST)
    try:
        yield
    finally:
        del layer._packs_most
        if len(layer._packs) > _MOST:
            layer._packs = {}


def kept_bytes(layer, but=None) -> int:
    """Bytes of the layer's kept packs (but those kept under key ``but``)."""
    return sum(e.nbytes for e in list(layer._packs.values()) if e.key != but)


def pack_args(entry: Optional[Kept]) -> Optional[List[tuple]]:
    """The kernel's ``packs`` argument for ``entry``."""
    return None if entry is None else entry.packs
