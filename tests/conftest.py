"""Make tests/reference.py importable as ``reference`` (tests run with --import-mode=importlib, so the
source tree is never put on sys.path and the installed, compiled rnnfast is what gets tested)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
