# Type stub of the compiled low-precision kernel module (Cython: _lowp.pyx). Its functions are internal, called
# only by rnnfast.quantize with validated arrays, so type checkers see them as Any; the public API is typed there.
from typing import Any

def __getattr__(name: str) -> Any: ...
