"""rnnfast's annotations as a user's type checker sees them: mypy accepts a small typed user program
(user_script.py, which also runs), and rejects a wrong argument type to an annotated public function,
which shows that ``py.typed`` is honoured and the annotations are read, not replaced by ``Any``."""
import importlib.util
import os
import shutil

import pytest
from _child import run_python

HERE = os.path.dirname(os.path.abspath(__file__))
PYPROJECT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "pyproject.toml")
# the modules whose public API is annotated so far (the rest is typed as it is rewritten)
ANNOTATED = ["-m", "rnnfast.io", "-m", "rnnfast._threads", "-m", "rnnfast._typing", "-m", "rnnfast.nn.layers",
             "-m", "rnnfast.nn.recurrent", "-m", "rnnfast._planner", "-m", "rnnfast._tune", "-p", "rnnfast.datasets",
             "-m", "rnnfast._validation", "-m", "rnnfast.train.optimizers", "-m", "rnnfast.train.schedules",
             "-m", "rnnfast.models", "-m", "rnnfast.nn.normalization"]
needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")

BAD = """\
import rnnfast as rf
rf.set_num_threads("2")
n: str = rf.get_num_threads()
"""


def _mypy(tmp_path, *args):
    """mypy in ``tmp_path``, outside the checkout: a user's run, with no project config unless given."""
    return run_python(["-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy_cache"),
                       "--no-color-output", *args], tmp_path)


@needs_mypy
def test_mypy_accepts_the_user_script(tmp_path):
    shutil.copy(os.path.join(HERE, "user_script.py"), tmp_path)
    res = _mypy(tmp_path, "--disallow-untyped-defs", "user_script.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


@needs_mypy
def test_mypy_rejects_wrong_types_for_annotated_functions(tmp_path):
    (tmp_path / "bad.py").write_text(BAD)
    res = _mypy(tmp_path, "--disallow-untyped-defs", "bad.py")
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'bad.py:2: error: Argument 1 to "set_num_threads" has incompatible type "str"' in res.stdout
    assert "bad.py:3: error: Incompatible types in assignment" in res.stdout
    assert "Found 2 errors in 1 file" in res.stdout, res.stdout


@needs_mypy
@pytest.mark.skipif(not os.path.exists(PYPROJECT), reason="needs the checkout's pyproject.toml (mypy config)")
def test_annotated_modules_pass_mypy(tmp_path):
    res = _mypy(tmp_path, "--config-file", PYPROJECT, *ANNOTATED)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


def test_user_script_runs(tmp_path):
    res = run_python([os.path.join(HERE, "user_script.py")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok: 2 threads, 32 predictions"), res.stdout
