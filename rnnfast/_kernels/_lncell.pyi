# Type stub of the compiled layer-norm kernel module (Cython: _lncell.pyx). Its functions are internal, called
# only by rnnfast.nn._layer_norm with validated arrays, so type checkers see them as Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
