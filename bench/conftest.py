"""Fixtures and report extras of the rnnfast benchmark suite (only loaded by ``pytest bench/``)."""
import importlib.machinery
import os
import sys

import pytest

_BENCH = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH)


def _import_the_built_rnnfast():
    """Benchmark the installed rnnfast, as ``tests/`` tests it, not the uncompiled source tree.

    ``python -m pytest bench/`` puts the checkout root on ``sys.path``, where ``rnnfast/`` has no compiled
    kernels unless they were built in place (``pip install -e .``): the root is dropped from ``sys.path`` in
    that case. ``bench/`` itself goes on it, so that the suite's plain helper modules import (pytest runs
    in ``--import-mode=importlib``, which adds nothing).
    """
    kernels = os.path.join(_ROOT, "rnnfast", "_kernels")
    built = any(os.path.exists(os.path.join(kernels, "_recurrent" + suffix))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    if not built:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)


_import_the_built_rnnfast()
import rnnfast  # noqa: E402  (after the path fix above)

_RESULTS = pytest.StashKey()
_SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def pytest_configure(config):
    config.stash[_RESULTS] = {}


def pytest_report_header(config):
    lines = [f"rnnfast {rnnfast.__version__}, threads = rnnfast.get_num_threads() = {rnnfast.get_num_threads()}"]
    try:
        import torch
        lines.append(f"torch {torch.__version__} (set to the same thread count)")
    except ImportError:
        lines.append("torch not installed: its cases are skipped")
    bad = [f"{k}={os.environ[k]}" for k in _SLOW_BLAS_ENV if k in os.environ]
    if bad:
        lines.append("WARNING: " + ", ".join(bad) + " set: numpy/scipy's OpenBLAS may run slower "
                     "(see bench/README.md)")
    return lines


@pytest.fixture(scope="session")
def torch_threads():
    """rnnfast's default thread count, applied to torch too (when installed). Returns the count."""
    n = rnnfast.get_num_threads()
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    return n


@pytest.fixture
def record(request):
    """record(group, impl, median_s, gflops): keep a result for the summary table at the end."""
    results = request.config.stash[_RESULTS]

    def _record(group, impl, median, gflops):
        results.setdefault(group, {})[impl] = (median, gflops)

    return _record


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS, {})
    if not results:
        return
    tr = terminalreporter
    tr.section("rnnfast vs torch (median)")
    tr.write_line(f"{'group':<22}{'rnnfast ms':>12}{'GFLOP/s':>9}{'peer':>15}{'peer ms':>12}{'GFLOP/s':>9}"
                  f"{'peer/rnnfast':>14}")
    for group, r in results.items():
        a = r.get("rnnfast")
        peers = [(k, v) for k, v in r.items() if k != "rnnfast"] or [("torch", None)]
        for impl, b in peers:
            cells = [f"{group:<22}"]
            cells.append(f"{a[0] * 1e3:>12.3f}{a[1]:>9.1f}" if a else f"{'-':>12}{'-':>9}")
            cells.append(f"{impl:>15}")
            cells.append(f"{b[0] * 1e3:>12.3f}{b[1]:>9.1f}" if b else f"{'-':>12}{'-':>9}")
            cells.append(f"{b[0] / a[0]:>14.2f}" if a and b else f"{'-':>14}")
            tr.write_line("".join(cells))
