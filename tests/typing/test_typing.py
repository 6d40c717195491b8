"""rnnfast's annotations as a user's type checker sees them: mypy accepts a small typed user program
(user_script.py, which also runs), and rejects a wrong argument type to an annotated public function,
which shows that ``py.typed`` is honoured and the annotations are read, not replaced by ``Any``."""
import importlib.util
import os
import shutil

import pytest
from _child import run_python

HERE = os.path.dirname(os.path.abspath(__file__))
needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")

BAD = """\
import rnnfast as rf
rf.set_num_threads("2")
n: str = rf.get_num_threads()
"""


def _mypy(tmp_path, script):
    """mypy, as a user would run it, on ``script`` in ``tmp_path`` (no project config there)."""
    return run_python(["-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy_cache"),
                       "--disallow-untyped-defs", "--no-color-output", script], tmp_path)


@needs_mypy
def test_mypy_accepts_the_user_script(tmp_path):
    shutil.copy(os.path.join(HERE, "user_script.py"), tmp_path)
    res = _mypy(tmp_path, "user_script.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


@needs_mypy
def test_mypy_rejects_wrong_types_for_annotated_functions(tmp_path):
    (tmp_path / "bad.py").write_text(BAD)
    res = _mypy(tmp_path, "bad.py")
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'bad.py:2: error: Argument 1 to "set_num_threads" has incompatible type "str"' in res.stdout
    assert "bad.py:3: error: Incompatible types in assignment" in res.stdout
    assert "Found 2 errors in 1 file" in res.stdout, res.stdout


def test_user_script_runs(tmp_path):
    res = run_python([os.path.join(HERE, "user_script.py")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok: 2 threads, 32 predictions"), res.stdout
