"""Denormal floats in the numpy work around the kernels.

The kernels flush denormals to zero in their own threads (csrc/rf_math.h, rf_ftz_enter). The layers
around them (Linear, attention, the losses) and the weight gradients run numpy's and scipy's BLAS on the
calling thread, where a denormal input makes OpenBLAS's sgemm about 90 times slower (1024 x 512 x 512: 5.6
ms, 498 ms with half the inputs denormal). Training makes them: as a model grows confident its softmax
probabilities, and the gradients they carry back, fall below 1.2e-38. A G2P Seq2Seq ran 3 times slower per
step after four epochs than at its start. :func:`flush_denormals` sets flush-to-zero and
denormals-are-zero on the calling thread for a block (the training loop), and restores the thread's state
after: values below float32's smallest normal then count as zero, as in the kernels and in PyTorch with
``torch.set_flush_denormal(True)``. BLAS threads other than the caller's keep their own state.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["flush_denormals"]


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormals to zero on the calling thread inside the block (restored after, also on error)."""
    from rnnfast._kernels import _recurrent as _k

    old = _k.ftz_enter()
    try:
        yield
    finally:
        _k.ftz_leave(old)
