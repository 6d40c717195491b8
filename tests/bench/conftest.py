"""Put bench/ on sys.path, so that the tests here import its modules (``grid``, ``_cases``) as its scripts do.

Where bench/ is not there (an sdist or a copy of tests/ alone), the tests here are not collected.
"""
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")

if os.path.isfile(os.path.join(BENCH, "grid.py")):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
else:
    collect_ignore_glob = ["test_*.py"]
