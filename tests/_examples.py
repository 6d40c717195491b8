"""The example scripts (examples/*.py, not part of the installed package) for tests/examples: their folder,
put on sys.path (the scripts import their helper module _common, and each other), a script imported once by
its name, and a data loader that skips the test, with the reason, when its package is absent."""
import importlib.util
import sys
from pathlib import Path

import pytest

from rnnfast.datasets import DatasetNotAvailable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if EXAMPLES.is_dir() and str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def load_example(name: str):
    """examples/<name>.py as a module (once: time_to_accuracy imports char_lm and vowels by these names)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def data_or_skip(loader, package: str, *args, **kwargs):
    """``loader(*args, **kwargs)``, or a skip naming ``package`` when its data is not installed."""
    try:
        return loader(*args, **kwargs)
    except DatasetNotAvailable as e:
        pytest.skip(f"the data package {package!r} is not installed: {e}")
