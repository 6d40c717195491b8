"""One parameter-checking policy for all of rnnfast.

Every parameter that enters through a public constructor or function is checked here, and the
exception says which parameter is wrong and why:

- ``TypeError`` when the value has the wrong type (a float where an int is needed, a string where a
  bool is, ``True`` where a number is: bools are never taken for numbers);
- ``ValueError`` when the type is right and the value is not (an int below its minimum, a name that
  is not among the options, NaN).

A dtype that numpy knows but rnnfast does not compute in (``int32``, ``float16``) raises
:class:`UnsupportedDtypeError`, which is both: it is a bad value of a ``dtype`` parameter and the
wrong element type for the arrays it describes, and callers written against either reading catch it.

Two ways in: the ``check_*`` functions for a single value, and constraint objects
(:class:`Integer`, :class:`Real`, :class:`Boolean`, :class:`Options`, :class:`FloatDtype`,
:class:`InstanceOf`, :class:`Pair`, :class:`AnyOf`) for a declarative table checked by
:func:`validate_params`, as scikit-learn's ``_parameter_constraints``::

    TABLE = {"hidden_size": Integer(1), "dropout": Real(0.0, 1.0, closed="left"),
             "pooling": Options("last", "mean", "max")}
    values = validate_params({"hidden_size": 8, "dropout": 0.1, "pooling": "mean"}, TABLE)
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Literal, Mapping, Optional, overload

import numpy as np

__all__ = ["UnsupportedDtypeError", "Constraint", "Integer", "Real", "Boolean", "Options", "FloatDtype", "InstanceOf",
           "Pair", "AnyOf", "SEED", "validate_params", "check_int", "check_real", "check_bool", "check_option",
           "check_float_dtype", "check_seed", "MAX_THREADS", "Threads", "THREADS", "check_threads"]


class UnsupportedDtypeError(TypeError, ValueError):
    """A real numpy dtype that rnnfast does not compute in (see the module docstring)."""


class Constraint:
    """What one parameter may be; ``check(value, name)`` returns the value, converted, or raises."""

    allow_none = False

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def accepts_type(self, value: Any) -> bool:
        """Whether ``value`` has a type this constraint takes (its value may still be out of range)."""
        raise NotImplementedError  # pragma: no cover

    def convert(self, value: Any, name: str) -> Any:
        """``value`` (of an accepted type) checked and converted; raises ValueError when out of range."""
        return value

    def check(self, value: Any, name: str) -> Any:
        if value is None and self.allow_none:
            return None
        if not self.accepts_type(value):
            raise TypeError(f"{name} must be {self.describe()}, got {type(value).__name__} {value!r}")
        return self.convert(value, name)

    def _none(self) -> str:
        return " or None" if self.allow_none else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class Integer(Constraint):
    """An int (numpy ints too; not bool) in [low, high]; either bound may be None (open)."""

    def __init__(self, low: Optional[int] = None, high: Optional[int] = None, *, allow_none: bool = False):
        self.low, self.high, self.allow_none = low, high, allow_none

    def describe(self) -> str:
        return "an int" + self._none()

    def accepts_type(self, value: Any) -> bool:
        return _is_int(value)

    def convert(self, value: Any, name: str) -> int:
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            if self.high is None:
                raise ValueError(f"{name} must be >= {self.low}{self._none()}, got {value}")
            lo = "-inf" if self.low is None else self.low
            raise ValueError(f"{name} must be in [{lo}, {self.high}]{self._none()}, got {value}")
        return int(value)


class Real(Constraint):
    """A real number (ints too; not bool) in an interval; ``closed`` says which ends belong to it:
    "both", "left", "right" or "neither". NaN is refused unless ``allow_nan`` (a monitored value may be NaN)."""

    def __init__(self, low: float = -math.inf, high: float = math.inf, *, closed: str = "both",
                 allow_none: bool = False, allow_nan: bool = False):
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither', got {closed!r}")
        self.low, self.high, self.closed, self.allow_none, self.allow_nan = low, high, closed, allow_none, allow_nan

    def describe(self) -> str:
        return "a number" + self._none()

    def accepts_type(self, value: Any) -> bool:
        return _is_real(value)

    def interval(self) -> str:
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        return f"{lb}{self.low}, {self.high}{rb}"

    def _range(self) -> str:
        """The allowed values in words: "a number >= 0.0", "a finite number > 0.0", "a number in [0.0, 1.0)"."""
        if self.high != math.inf:
            return "a number in " + self.interval()
        what = "a number" if self.closed in ("both", "right") else "a finite number"
        if self.low == -math.inf:
            return what + (", not NaN" if what == "a number" else "")
        return what + (" >= " if self.closed in ("both", "left") else " > ") + str(self.low)

    def convert(self, value: Any, name: str) -> float:
        v = float(value)
        if self.allow_nan and math.isnan(v):
            return v
        lo_ok = v >= self.low if self.closed in ("both", "left") else v > self.low
        hi_ok = v <= self.high if self.closed in ("both", "right") else v < self.high
        if math.isnan(v) or not (lo_ok and hi_ok):
            raise ValueError(f"{name} must be {self._range()}{self._none()}, got {value!r}")
        return v


class Boolean(Constraint):
    """True or False (numpy bools too; not 0 or 1)."""

    def describe(self) -> str:
        return "a bool (True or False)"

    def accepts_type(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def convert(self, value: Any, name: str) -> bool:
        return bool(value)


class Options(Constraint):
    """One of a fixed set of values (strings, usually); a value of another type is a TypeError."""

    def __init__(self, *options: Any, allow_none: bool = False):
        self.options, self.allow_none = tuple(options), allow_none

    def describe(self) -> str:
        return f"one of {list(self.options)}{self._none()}"

    def accepts_type(self, value: Any) -> bool:
        return any(type(value) is type(o) or (isinstance(o, str) and isinstance(value, str)) for o in self.options)

    def convert(self, value: Any, name: str) -> Any:
        if value not in self.options:
            raise ValueError(f"{name} must be one of {list(self.options)}{self._none()}, got {value!r}")
        return value


class FloatDtype(Constraint):
    """``float32`` or ``float64`` given any way numpy reads a dtype; returns the ``numpy.dtype``."""

    def describe(self) -> str:
        return "float32 or float64"

    def accepts_type(self, value: Any) -> bool:
        try:
            np.dtype(value)
        except (TypeError, ValueError):
            return False
        return True

    def convert(self, value: Any, name: str) -> np.dtype:
        dt = np.dtype(value)
        if dt not in (np.float32, np.float64):
            raise UnsupportedDtypeError(f"{name} must be float32 or float64, got {dt}")
        return dt


class InstanceOf(Constraint):
    """An instance of one of ``classes``; ``description`` names them in messages ("a numpy Generator")."""

    def __init__(self, *classes: type, description: str, allow_none: bool = False):
        self.classes, self.description, self.allow_none = classes, description, allow_none

    def describe(self) -> str:
        return self.description + self._none()

    def accepts_type(self, value: Any) -> bool:
        return isinstance(value, self.classes)


class Pair(Constraint):
    """A tuple or list of two items, each checked by its own constraint (as ``name[0]``, ``name[1]``); returns a
    tuple. Another type or length is a TypeError."""

    def __init__(self, first: Constraint, second: Constraint, *, allow_none: bool = False):
        self.items, self.allow_none = (first, second), allow_none

    def describe(self) -> str:
        return f"a pair ({self.items[0].describe()}, {self.items[1].describe()}){self._none()}"

    def accepts_type(self, value: Any) -> bool:
        return isinstance(value, (tuple, list)) and len(value) == 2

    def convert(self, value: Any, name: str) -> tuple:
        return tuple(c.check(v, f"{name}[{i}]") for i, (c, v) in enumerate(zip(self.items, value)))


class AnyOf(Constraint):
    """The first of several constraints whose type the value has (TypeError when none takes it)."""

    def __init__(self, *constraints: Constraint, allow_none: bool = False):
        self.constraints, self.allow_none = constraints, allow_none

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.constraints) + self._none()

    def accepts_type(self, value: Any) -> bool:
        return any(c.accepts_type(value) for c in self.constraints)

    def convert(self, value: Any, name: str) -> Any:
        for c in self.constraints:
            if c.accepts_type(value):
                return c.convert(value, name)
        raise AssertionError("unreachable: accepts_type was checked")  # pragma: no cover


#: The most threads any rnnfast call may use (``n_threads``, ``rf.set_num_threads``, an estimator's or a
#: model file's ``n_threads``). A fixed number, not a multiple of this machine's cores, so that a setting
#: valid here is valid on every machine a model file travels to. 256 is above the cores of any one host
#: rnnfast's kernels scale on (their per-step barriers stop paying well before), and far below what makes
#: GNU OpenMP fail to start threads (50,000 did, and 100,000 crashed the process).
#: The kernels clamp to it as well (defence in depth).
MAX_THREADS = 256


class Threads(Integer):
    """A thread count: an int in [1, :data:`MAX_THREADS`] (the message names the limit)."""

    def __init__(self, *, allow_none: bool = False):
        super().__init__(1, MAX_THREADS, allow_none=allow_none)

    def convert(self, value: Any, name: str) -> int:
        if value < 1:
            raise ValueError(f"{name} must be >= 1{self._none()}, got {value}")
        if value > MAX_THREADS:
            raise ValueError(f"{name} must be at most {MAX_THREADS} (rnnfast.MAX_THREADS, the most threads a call "
                             f"may use), got {value}")
        return int(value)


#: A thread count or None (the default).
THREADS = Threads(allow_none=True)


#: A seed: an int >= 0, a numpy Generator (used as is) or None (fresh entropy).
SEED = AnyOf(Integer(0), InstanceOf(np.random.Generator, description="a numpy Generator"), allow_none=True)


def validate_params(values: Mapping[str, Any], table: Mapping[str, Constraint]) -> dict:
    """Check every entry of ``values`` against ``table`` (name -> constraint).

    Parameters
    ----------
    values : mapping of str to object
        Parameter values; names missing from ``table`` are refused.
    table : mapping of str to Constraint

    Returns
    -------
    dict
        The converted values, in ``values``' order.

    Raises
    ------
    TypeError
        A value of the wrong type.
    ValueError
        A value out of range, or a name the table does not know.
    """
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known: {sorted(table)}")
    return {name: table[name].check(v, name) for name, v in values.items()}


# ---------------------------------------------------------------------------------------- one value
@overload
def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None, *,
              allow_none: Literal[False] = False) -> int: ...


@overload
def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None, *,
              allow_none: bool) -> Optional[int]: ...


def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None, *,
              allow_none: bool = False) -> Optional[int]:
    """``value`` as an int in [minimum, maximum] (TypeError for a non-int or a bool, ValueError out of range)."""
    return Integer(minimum, maximum, allow_none=allow_none).check(value, name)


@overload
def check_real(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *, closed: str = "both",
               allow_none: Literal[False] = False, allow_nan: bool = False) -> float: ...


@overload
def check_real(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *, closed: str = "both",
               allow_none: bool, allow_nan: bool = False) -> Optional[float]: ...


def check_real(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *, closed: str = "both",
               allow_none: bool = False, allow_nan: bool = False) -> Optional[float]:
    """``value`` as a float in the interval (TypeError for a non-number or a bool, ValueError outside, or NaN
    unless ``allow_nan``)."""
    return Real(low, high, closed=closed, allow_none=allow_none, allow_nan=allow_nan).check(value, name)


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool (TypeError for anything but True / False)."""
    return Boolean().check(value, name)


def check_option(value: Any, name: str, options: Any) -> Any:
    """``value`` if it is one of ``options`` (TypeError for another type, ValueError for another value)."""
    return Options(*options).check(value, name)


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as ``np.dtype('float32')`` or ``np.dtype('float64')``.

    Raises
    ------
    TypeError
        Not a dtype at all.
    UnsupportedDtypeError
        A dtype other than float32 / float64 (a TypeError and a ValueError).
    """
    return FloatDtype().check(dtype, name)


def check_seed(seed: Any, name: str = "seed") -> Any:
    """``seed`` as :data:`SEED` takes it: an int >= 0, a numpy Generator or None, returned as given (ints as int).

    Raises
    ------
    TypeError
        Another type (a float, a bool, a string).
    ValueError
        A negative int.
    """
    return SEED.check(seed, name)


@overload
def check_threads(value: Any, name: str = "n_threads", *, allow_none: Literal[False]) -> int: ...


@overload
def check_threads(value: Any, name: str = "n_threads", *, allow_none: bool = True) -> Optional[int]: ...


def check_threads(value: Any, name: str = "n_threads", *, allow_none: bool = True) -> Optional[int]:
    """``value`` as a thread count in [1, :data:`MAX_THREADS`], or None when ``allow_none``.

    The one check of every thread count rnnfast takes (per-call ``n_threads``, ``set_num_threads``, the
    estimators, the Trainer, a loaded model file).

    Raises
    ------
    TypeError
        Not an int (a float, a bool, a string), or None when not allowed.
    ValueError
        Below 1 or above :data:`MAX_THREADS` (the message names ``name`` and the limit).
    """
    if type(value) is int and 1 <= value <= MAX_THREADS:  # (the per-call common case, without the ABC checks)
        return value
    return Threads(allow_none=allow_none).check(value, name)
