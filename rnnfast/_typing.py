"""Type aliases used in rnnfast's public annotations (checked by mypy; nothing here runs at call time).

``ArrayLike`` and ``DTypeLike`` are NumPy's; ``Seed`` is what every ``seed=`` / ``random_state=`` accepts and
``PathLike`` what every file argument accepts.
"""
import os
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = ["ArrayLike", "DTypeLike", "PathLike", "Seed"]

PathLike = Union[str, "os.PathLike[str]"]
Seed = Union[int, np.random.Generator, None]
