# Type stub of the compiled kernel module (Cython: _variant.pyx). Its functions are internal, called only by
# rnnfast.nn._variant with validated arrays, so type checkers see them as Any; the public API is typed in Python.
from typing import Any

def __getattr__(name: str) -> Any: ...
