# Type stub of the compiled int8 kernel module (Cython: _int8.pyx). Its functions are internal, called by
# rnnfast.quantize's Int8Backend with validated arrays (and by tests and bench/int8.py), so type checkers
# see them as Any; the public API is typed in rnnfast.quantize.
from typing import Any

def __getattr__(name: str) -> Any: ...
