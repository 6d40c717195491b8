"""Beyond one machine: data-parallel training on MPI and batch inference on Ray, Dask or local processes.

- Training: ``Trainer(..., distributed="mpi")``, ``rnnfast.train.fit(..., distributed="mpi")`` or an
  estimator's ``distributed="mpi"``, run under ``mpiexec -n N`` (``"auto"`` turns it on when the process was
  started by an MPI launcher with more than one rank). See :mod:`rnnfast.distributed.mpi`. Needs
  ``pip install "rnnfast[mpi]"`` (mpi4py and an MPI runtime).
- Inference: :func:`predict` over many inputs with one model per worker; ``backend="ray"``
  (``rnnfast[ray]``), ``"dask"`` (``rnnfast[dask]``) or ``"processes"`` (the standard library).

Every engine is imported lazily: ``import rnnfast.distributed`` needs only numpy.
"""
from __future__ import annotations

from rnnfast._lazy import lazy_names

# public name -> the private module that defines it
_WHERE = {
    "DataParallel": "mpi",
    "mpi_launched": "mpi",
    "predict": "inference",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names("rnnfast.distributed", _WHERE)
