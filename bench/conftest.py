"""Fixtures and report extras of the rnnfast benchmark suite (only loaded by ``pytest bench/``)."""
import os

import pytest

import rnnfast

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
