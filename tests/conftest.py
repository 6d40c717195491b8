"""Make the helper modules here (``reference``, ``_child``, ...) importable, and test the installed, compiled
rnnfast: tests run with --import-mode=importlib, which puts nothing on sys.path, but ``python -m pytest``
from the checkout root puts the root there, whose ``rnnfast/`` is uncompiled unless built in place; that
entry is dropped then (see _source_tree.py)."""
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from _source_tree import without_unbuilt_source_tree  # noqa: E402  (after tests/ is on sys.path)

sys.path[:] = without_unbuilt_source_tree(sys.path, os.path.dirname(_TESTS))

# Keras 3 is a test oracle here on its PyTorch backend: no TensorFlow is installed
os.environ.setdefault("KERAS_BACKEND", "torch")
