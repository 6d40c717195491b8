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

# Hypothesis profiles. "ci" is the default: hypothesis's usual counts, no deadline (the machines running the
# suite are shared, and a slow example is not a failure). The fuzz tests (tests/nn/test_fuzz.py,
# tests/estimators/test_fuzz.py) scale their counts from the profile's max_examples so that together they
# stay near a minute under "ci". "fuzz" is the release check (README, "Testing"):
#     pytest --hypothesis-profile=fuzz tests/nn/test_fuzz.py tests/estimators/test_fuzz.py
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("RNNFAST_HYPOTHESIS_PROFILE", "ci"))
