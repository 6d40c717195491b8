"""The layer protocol shared by every ``rnnfast.nn`` layer, and the small helpers the layers validate with.

A layer owns its parameters (``_params``, name -> array) and their gradients (``grads``, same keys and
shapes, accumulated by ``backward``). ``forward`` in training mode keeps what ``backward`` needs; in eval
mode it keeps nothing, so inference is stateless.

Threads: what a training-mode ``forward`` keeps is kept per thread (as PyTorch's autograd keeps a graph
per call), so one layer may be trained from several threads at once: each thread's ``backward``
differentiates that thread's last ``forward``, and ``backward`` itself runs under the layer's lock, so
gradients accumulate as the serial calls' sum. A ``backward`` in a thread that ran no ``forward`` raises
:class:`BackwardStateError` saying so. ``eval()`` and ``load_state_dict`` drop every thread's cache.

The calling protocol is declared, not guessed: a layer with ``keyword_protocol = True`` (every
:class:`Module`) is called ``forward(x, *, lengths=None, n_threads=None)`` and
``backward(dout, *, n_threads=None)``, and accepts those keywords even when it has no use for them.
:class:`rnnfast.nn.Sequential` and the training loop call any other object with ``forward`` and ``backward``
as ``forward(x)`` and ``backward(dout)``.
"""

import functools
import os
import threading
import weakref

import numpy as np

from rnnfast import _validation

__all__ = ["Module", "BackwardStateError", "call_forward", "call_backward", "check_param_count"]


ALIGN = 64  # bytes: one cache line and one AVX-512 vector


def aligned_empty(shape, dtype):
    """A C-contiguous array starting on a cache-line boundary. numpy's buffers start 16 bytes past
    one, and the kernels' 64-byte vector loads then straddle two lines: the batch-1 kernel, which
    reads the weights in place, and the packed kernels ran 1.2-2x slower on such buffers."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    extra = ALIGN // dtype.itemsize
    raw = np.empty(size + extra, dtype)
    start = (-raw.ctypes.data % ALIGN) // dtype.itemsize
    return raw[start:start + size].reshape(shape)


class BackwardStateError(RuntimeError, ValueError):
    """``backward`` called without a training-mode forward pass to differentiate (one class for every
    layer, so ``except rnnfast.nn.BackwardStateError`` catches them all)."""


# ---------------------------------------------------------------------------------------- helpers
def check_int(value, name, minimum):
    """``value`` as an int >= ``minimum``; bools and non-integers are refused (see :mod:`rnnfast._validation`)."""
    return _validation.check_int(value, name, minimum)


def check_float_dtype(dtype):
    """``dtype`` as ``np.dtype('float32')`` or ``np.dtype('float64')``, else TypeError (see
    :func:`rnnfast._validation.check_float_dtype`)."""
    return _validation.check_float_dtype(dtype)


def to_numpy(a):
    """A torch tensor becomes a numpy array; anything else is returned as is."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        return a.detach().cpu().numpy()
    return a


def as_real_array(a, name):
    """``a`` as a numpy array of real numbers (int, uint or float), without converting its dtype."""
    try:
        arr = np.asarray(to_numpy(a))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array: {e}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def as_float(a, dtype, name):
    """``a`` as a real array of ``dtype``, converted once (no copy if it already is one)."""
    if type(a) is np.ndarray and a.dtype == dtype:  # the common case, first (a streaming step's cost)
        return a
    return as_real_array(a, name).astype(dtype, copy=False)


def as_float_keep(a, name):
    """``a`` as float32 or float64: float arrays keep their precision, integers become float64."""
    arr = as_real_array(a, name)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr


def check_lengths(lengths, B, T, name="lengths"):
    """Validate per-sequence lengths: shape (B,), whole numbers in [1, T]. Returns int64 array or None."""
    if lengths is None:
        return None
    arr = np.asarray(to_numpy(lengths))
    if arr.dtype == object and arr.ndim == 1 and arr.size and all(_validation._is_int(v) for v in arr):
        # Python ints (past 64 bits, or an object array): checked as they are, then as int64
        if min(arr) < 1 or max(arr) > T:
            raise ValueError(f"{name} must be in [1, {T}] (the time steps), got min {min(arr)}, max {max(arr)}")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != B:
        raise ValueError(f"{name} must have shape ({B},), got {arr.shape}")
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise TypeError(f"{name} must be whole numbers")
    # the range is checked in the array's own dtype, before the cast (2**64 - 1 would become -1)
    if B and (arr.min() < 1 or arr.max() > T):
        lo, hi = (str(int(v)) if arr.dtype.kind in "iu" else f"{v:g}" for v in (arr.min(), arr.max()))
        raise ValueError(f"{name} must be in [1, {T}] (the time steps), got min {lo}, max {hi}")
    return arr.astype(np.int64)


def _physical_memory() -> int:
    """Bytes of memory this machine has (a large number when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 1 << 50


def check_param_count(count: int, dtype, what: str) -> None:
    """Refuse, before anything is allocated, parameters that could never fit in this machine's memory.

    ``count`` is the layer's number of parameters (or an upper bound, computed from its sizes without
    building anything: a loop over 2**31 layers would take minutes before it ran out of memory).

    Raises
    ------
    ValueError
        ``count`` parameters of ``dtype`` (and as many gradients) take more than the physical memory.
    """
    nbytes = 2 * int(count) * np.dtype(dtype).itemsize  # the parameters and their gradients
    if nbytes > _physical_memory():
        raise ValueError(f"{what} would need {nbytes / 2**30:,.1f} GiB for its parameters and their gradients, "
                         f"more than this machine's {_physical_memory() / 2**30:,.1f} GiB of memory")


def time_mask(lengths, B, T):
    """(B, T) bool mask, True at valid steps (all True when ``lengths`` is None)."""
    if lengths is None:
        return np.ones((B, T), dtype=bool)
    return np.arange(T)[None, :] < lengths[:, None]


def make_rng(seed):
    """A numpy Generator from an int >= 0, None or a Generator (used as is); see
    :func:`rnnfast._validation.check_seed`."""
    seed = _validation.check_seed(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def validate_state_dict(state_dict, expected, what="state_dict"):
    """Check a state dict against ``expected`` (name -> array) and convert its values.

    Parameters
    ----------
    state_dict : mapping of str to array-like
    expected : dict of str to numpy.ndarray
        The current parameters; keys, shapes and dtypes to match.

    Returns
    -------
    dict of str to numpy.ndarray
        The new values, converted to the expected dtypes (not yet copied anywhere).

    Raises
    ------
    ValueError
        Missing or unexpected keys, or a shape mismatch.
    TypeError
        ``state_dict`` is not a mapping, or a value is not an array of real numbers.
    """
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"{what} must be a mapping, got {type(state_dict).__name__}")
    keys = set(state_dict.keys())
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected), key=str)
    if missing or unexpected:
        raise ValueError(f"{what} does not match: missing keys {missing}, unexpected keys {unexpected}")
    new = {}
    for name, cur in expected.items():
        arr = as_real_array(state_dict[name], f"{what}[{name!r}]")
        if arr.shape != cur.shape:
            raise ValueError(f"{what}[{name!r}] has shape {arr.shape}, expected {cur.shape}")
        new[name] = arr.astype(cur.dtype, copy=False)
    return new


def call_forward(layer, x, lengths=None, n_threads: "int | None" = None):
    """``layer.forward`` under the layer protocol: with the keywords when the layer declares
    ``keyword_protocol``, else ``forward(x)`` (TypeError when ``lengths`` would be lost)."""
    if getattr(layer, "keyword_protocol", False):
        return layer.forward(x, lengths=lengths, n_threads=n_threads)
    if lengths is not None:
        raise TypeError(f"the data has variable lengths but {type(layer).__name__} does not follow the layer "
                        "protocol forward(x, *, lengths=None, n_threads=None) (set keyword_protocol = True)")
    return layer.forward(x)


def call_backward(layer, dout, n_threads: "int | None" = None):
    """``layer.backward`` under the layer protocol (``n_threads`` only when declared)."""
    if getattr(layer, "keyword_protocol", False):
        return layer.backward(dout, n_threads=n_threads)
    return layer.backward(dout)


# ---------------------------------------------------------------------------------------- Module
class _Shared:
    """What a layer shares between its threads: a lock for gradient accumulation and the per-thread store
    of backward caches. Kept in the layer's ``__dict__`` (``_shared``); a pickled or deep-copied layer gets
    a fresh one (``__reduce__``), and so does a shallow copy (``owner`` tells it is not its own)."""

    __slots__ = ("lock", "local", "owner")

    def __init__(self, owner=None) -> None:
        self.lock = threading.RLock()
        self.local = threading.local()
        self.owner = None if owner is None else weakref.ref(owner)

    def __reduce__(self):
        return _Shared, ()


_SHARED_LOCK = threading.Lock()


def _shared(obj) -> _Shared:
    """``obj``'s lock and per-thread store, made on first use."""
    sh = obj.__dict__.get("_shared")
    if sh is not None and sh.owner is not None and sh.owner() is obj:
        return sh
    with _SHARED_LOCK:
        sh = obj.__dict__.get("_shared")
        if sh is None or sh.owner is None or sh.owner() is not obj:
            sh = obj.__dict__["_shared"] = _Shared(obj)
        return sh


class _PerThread:
    """A data descriptor whose value is per thread (None until the thread sets it): the backward caches."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return _shared(obj).local.__dict__.get(self.name)  # (getattr with a default pays for an exception)

    def __set__(self, obj, value) -> None:
        _shared(obj).local.__dict__[self.name] = value


def _locked_backward(backward):
    """``backward`` run under the layer's lock: gradients accumulate one call at a time."""
    @functools.wraps(backward)
    def locked(self, *args, **kwargs):
        with _shared(self).lock:
            return backward(self, *args, **kwargs)
    locked._locked = True  # type: ignore[attr-defined]
    return locked


class _ReadOnly:
    """A data descriptor for one constructor setting that may be set once (by ``__init__``) and never again.

    It has no ``__get__``: reads find the value in the instance's ``__dict__`` as for a plain attribute (no
    cost on the hot paths); only assignment and deletion come here. Pickling, ``copy`` and ``__setstate__``
    write ``__dict__`` directly and are not affected."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self, obj, what: str):
        cls = type(obj).__name__
        return AttributeError(f"cannot {what} {cls}.{self.name}: it is read-only, fixed at construction (it decides "
                              f"the parameters' shapes or the kernels' setup); build a new {cls} instead")

    def __set__(self, obj, value) -> None:
        if self.name in obj.__dict__:
            raise self._refuse(obj, "set")
        obj.__dict__[self.name] = value

    def __delete__(self, obj) -> None:
        raise self._refuse(obj, "delete")


class Module:
    """Base class of the layers: parameters, accumulated gradients, training flag, state dicts.

    Subclasses register their parameters with :meth:`_add_param` and implement ``forward`` (keeping what
    ``backward`` needs via ``self._cache`` only when ``self.training``) and ``backward``, which adds to
    ``grads`` and returns the gradient wrt the input.

    Attributes
    ----------
    training : bool
        True (the default) in training mode; see :meth:`train` and :meth:`eval`.
    grads : dict of str to numpy.ndarray
        Gradients with the keys and shapes of :meth:`state_dict`; ``backward`` adds to them.
    keyword_protocol : bool
        Class attribute, True: ``forward`` takes ``lengths=`` and ``n_threads=``, ``backward`` takes
        ``n_threads=`` (see the module docstring).
    _read_only : tuple of str
        Class attribute: the constructor settings a subclass fixes for the layer's life (those that shape
        the parameters, such as ``input_size`` or ``bidirectional``). ``__init__`` sets each once; setting
        or deleting one afterwards raises AttributeError (a changed ``input_size`` used to run silently
        with different results). Settings that are harmless to change (``batch_first``, ``dropout``, as in
        PyTorch) are left out.
    """

    keyword_protocol = True
    _read_only: tuple = ()
    #: The read-only parameter arrays :func:`rnnfast.nn.freeze` made, by name (empty: not frozen; never
    #: mutated, replaced).
    _frozen: dict = {}
    #: Class attribute: the attributes a training-mode forward sets for backward; each thread has its own.
    _per_thread: tuple = ()
    _cache = _PerThread("_cache")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for names, kind in ((cls.__dict__.get("_read_only", ()), _ReadOnly),
                            (cls.__dict__.get("_per_thread", ()), _PerThread)):
            for name in names:
                if not isinstance(getattr(cls, name, None), kind):
                    setattr(cls, name, kind(name))
        backward = cls.__dict__.get("backward")
        if callable(backward) and not getattr(backward, "_locked", False):
            cls.backward = _locked_backward(backward)

    #: Attributes pickling leaves out (caches of the last call, buffers kept for reuse), each with a function
    #: making its empty value again when unpickled. Subclasses extend it.
    _TRANSIENT: dict = {"_cache": lambda: None}

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name, empty in self._TRANSIENT.items():
            setattr(self, name, empty())
        if self._frozen:
            # unpickled arrays are writeable and start 16 bytes past a cache line: a frozen layer's are made
            # read-only and aligned again (copies, which no one can tell apart: they never change)
            for name in self._frozen:
                self._params[name] = b = aligned_empty(self._params[name].shape, self._params[name].dtype)
                b[...] = self._frozen[name]
                b.flags.writeable = False
            self._frozen = {name: self._params[name] for name in self._frozen}

    #: Transient attributes that hold no memory to speak of and that release_memory keeps.
    _KEPT_ON_RELEASE: tuple = ()

    def release_memory(self) -> None:
        """Drop what the layer keeps between calls (buffers for reuse, a training forward's backward cache).
        The next call allocates again; results do not change."""
        for name, empty in self._TRANSIENT.items():
            if name not in self._KEPT_ON_RELEASE:
                setattr(self, name, empty())

    def __init__(self):
        self._params = {}
        self.grads = {}
        self.training = True

    def _add_param(self, name, value):
        """Register a parameter (C-contiguous, on a cache line) and its zero gradient."""
        value = np.asarray(value)
        arr = aligned_empty(value.shape, value.dtype)
        arr[...] = value
        self._params[name] = arr
        grad = aligned_empty(value.shape, value.dtype)
        grad[...] = 0
        self.grads[name] = grad
        return arr

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _keep(self, cache):
        """Keep ``cache`` for backward in training mode; eval mode keeps nothing."""
        self._cache = cache if self.training else None

    def _peek_cache(self):
        """This thread's cache of its last training-mode forward (BackwardStateError when there is none)."""
        cache = self._cache
        if cache is None:
            if not self.training:
                raise BackwardStateError(f"{type(self).__name__}.backward() needs a forward pass in training "
                                         "mode; this layer is in eval mode, which keeps no backward cache "
                                         "(call .train())")
            raise BackwardStateError(f"{type(self).__name__}.backward() called without a preceding "
                                     "training-mode forward() in this thread (or twice for one forward); "
                                     "each thread's backward differentiates that thread's own forward")
        return cache

    def _take_cache(self):
        """This thread's cache of its last training-mode forward, consumed (one backward per forward)."""
        cache = self._peek_cache()
        self._cache = None
        return cache

    def _drop_caches(self) -> None:
        """Forget every thread's backward cache (new weights, or eval mode)."""
        _shared(self).local = threading.local()

    # ------------------------------------------------------------------ randomness
    @property
    def uses_rng(self) -> bool:
        """Whether the layer draws random numbers in training (dropout): it keeps a stream in ``_rng``."""
        return "_rng" in self.__dict__

    def reseed(self, seed) -> "Module":
        """Restart the layer's random stream (its dropout masks) from ``seed``.

        A layer that draws no random numbers ignores it.

        Parameters
        ----------
        seed : int, numpy.random.SeedSequence, numpy.random.Generator or None

        Returns
        -------
        self
        """
        if isinstance(seed, np.random.SeedSequence):
            rng = np.random.default_rng(seed)
        else:
            rng = make_rng(seed)
        if self.uses_rng:
            self._rng = rng
        return self

    # ------------------------------------------------------------------ parameters
    def state_dict(self):
        """Copies of the parameters.

        Returns
        -------
        dict of str to numpy.ndarray
        """
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict):
        """Load parameters (numpy arrays or torch tensors), copying them into the live arrays.

        The arrays keep their identity, so an optimizer holding them stays connected.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            Exactly the keys of :meth:`state_dict`, each of the same shape; values of any real dtype
            are converted to the parameter's dtype.

        Raises
        ------
        ValueError
            Missing or unexpected keys, or a wrong shape.
        TypeError
            ``state_dict`` is not a mapping or a value is not real-numeric.
            Nothing is changed when an error is raised.
        """
        if any(not a.flags.writeable for a in self._params.values()):
            raise ValueError(f"{type(self).__name__}'s weights are read-only arrays (a model frozen by "
                             "rnnfast.nn.freeze is a snapshot for inference: load the weights into the model it "
                             "was frozen from, then freeze that again)")
        new = validate_state_dict(state_dict, self._params)
        for name, arr in new.items():
            self._params[name][...] = arr
        self._drop_caches()

    def named_parameters(self):
        """(name, array) pairs of the live parameter arrays (updating them in place updates the layer).

        Returns
        -------
        list of (str, numpy.ndarray)
        """
        return list(self._params.items())

    def zero_grad(self):
        """Set every accumulated gradient to zero (in place)."""
        for g in self.grads.values():
            g[...] = 0

    def train(self, mode=True):
        """Set training mode (``mode=True``) or eval mode. Returns self.

        Raises
        ------
        TypeError
            ``mode`` is not a bool (PyTorch refuses it too).
        """
        mode = _validation.check_bool(mode, "mode")
        if mode and self._frozen:
            raise RuntimeError(f"this {type(self).__name__} is frozen (rnnfast.nn.freeze: a snapshot for "
                               "inference); train the model it was frozen from, then freeze that again")
        self.training = mode
        if not self.training:
            self._drop_caches()
        return self

    def eval(self):
        """Inference mode: no dropout, no backward cache. Returns self."""
        return self.train(False)

    def extra_repr(self):
        """The arguments shown by ``repr`` (override in subclasses)."""
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
