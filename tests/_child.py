"""Run a child Python that imports the same rnnfast as these tests (installed, or on PYTHONPATH in a
checkout), from a directory outside the source tree."""
import os
import subprocess
import sys

import rnnfast


def run_python(args, cwd, timeout=300):
    """``sys.executable *args`` in ``cwd``, rnnfast's parent folder first on PYTHONPATH; output captured."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    path = os.pathsep.join(filter(None, [pkg_parent, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd)
