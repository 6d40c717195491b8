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

# The planner's rules read this machine's cache sizes (rnnfast._planner.machine). Tests that assert which
# plan a shape gets, or that select a kernel path by its shape, pin the machine the rules were measured on
# (the project's 2-vCPU Xeon: 48 KB L1d and 2 MB L2 a core) with this fixture, so they hold and cover the
# same paths on any machine (on a 1 MB-L2 Zen 4 the same shapes plan otherwise, by design).
import pytest  # noqa: E402

from rnnfast import _planner  # noqa: E402

REFERENCE_MACHINE = _planner.Machine(l1d=48 * 1024, l2=2 * 1024 ** 2, l3=32 * 1024 ** 2)


@pytest.fixture
def reference_machine(monkeypatch):
    """Plan as on the machine the planner's rules were measured on (REFERENCE_MACHINE)."""
    monkeypatch.setattr(_planner, "machine", lambda: REFERENCE_MACHINE)
    return REFERENCE_MACHINE


@pytest.fixture
def proj_in_place():
    """Input projections of up to 32 valid rows (a multiple of 4) read W_ih's rows in place at every size
    (TABLE's proj_in_place_* rule with no size limits, handed to the kernels), restored after."""
    from rnnfast.nn import _rnn_calls
    saved = {k: _planner.TABLE[k] for k in ("proj_in_place_min_bytes", "proj_in_place_min_k")}
    _planner.TABLE.update(proj_in_place_min_bytes=0, proj_in_place_min_k=0)
    _rnn_calls.set_proj_in_place()
    yield
    _planner.TABLE.update(saved)
    _rnn_calls.set_proj_in_place()
