# Type stub of the compiled kernel module (Cython: _optim.pyx). Its functions are internal, called only by
# rnnfast.train.optimizers and rnnfast.train.clip with checked arrays, so type checkers see them as Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
