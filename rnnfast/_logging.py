"""rnnfast's status messages go through :mod:`logging`, never ``print`` (progress bars and the command
line's own output aside).

Loggers: ``rnnfast`` and its children by module area, ``rnnfast.train`` for training (epoch lines of
:class:`rnnfast.train.callbacks.ProgressBar`, early stopping, checkpoints, learning-rate changes, NaN stops).
A service routes or silences them as any library's (``logging.getLogger("rnnfast").setLevel(...)``).

``verbose`` keeps working with no logging set up: while a fit runs with ``verbose`` set (the estimator's or
the Trainer's, or a callback's own), if no handler anywhere would receive rnnfast's messages (the
``rnnfast`` logger and its ancestors, the root included, have none), :func:`console` attaches one that
writes INFO and above to ``sys.stderr`` as plain lines, and removes it when the fit ends. Once an
application configures logging (a handler on the root or on ``rnnfast``) rnnfast adds nothing and its
messages go where the application sends them, at the levels it sets.
"""
import contextlib
import logging
import sys
import threading
from typing import Iterator

__all__ = ["logger", "get_logger", "console"]

#: The package's logger; children are named ``rnnfast.<area>``.
logger = logging.getLogger("rnnfast")

_lock = threading.Lock()
_users = 0
_handler: "logging.Handler | None" = None
_saved_level = logging.NOTSET


def get_logger(area: str) -> logging.Logger:
    """The logger ``rnnfast.<area>`` (e.g. ``"train"``)."""
    return logging.getLogger(f"rnnfast.{area}")


def _attach() -> bool:
    """Count one user of the console handler, making it if needed; False (nothing counted) when the
    application's logging already has a handler for rnnfast's messages."""
    global _users, _handler, _saved_level
    with _lock:
        if _users == 0:
            if logger.hasHandlers():
                return False
            _handler = logging.StreamHandler(sys.stderr)
            _handler.setFormatter(logging.Formatter("%(message)s"))
            _handler.setLevel(logging.INFO)
            logger.addHandler(_handler)
            _saved_level = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        _users += 1
        return True


def _detach() -> None:
    global _users, _handler
    with _lock:
        _users -= 1
        if _users == 0 and _handler is not None:
            logger.removeHandler(_handler)
            logger.setLevel(_saved_level)
            _handler = None


@contextlib.contextmanager
def console(verbose: bool) -> Iterator[None]:
    """While the block runs: when ``verbose`` and no handler would show rnnfast's messages, show INFO and
    above on ``sys.stderr`` (see the module docstring). Nested and concurrent uses share one handler."""
    counted = bool(verbose) and _attach()
    try:
        yield
    finally:
        if counted:
            _detach()
