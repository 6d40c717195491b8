"""Build of rnnfast's compiled kernels.

Everything that shapes the compiled code lives here, in one place:

* Cython directives (``DIRECTIVES``). Set ``RNNFAST_DEBUG=1`` in the environment to turn bounds checks,
  wrap-around and initialisation checks back on for debugging.
* OpenMP: used when the compiler accepts ``-fopenmp``; otherwise the kernels build serial
  (``RNNFAST_NO_OPENMP=1`` forces that).
* The ``csrc/`` include path for the plain-C helpers.

BLAS comes at run time from ``scipy.linalg.cython_blas``: nothing links against a BLAS library.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("RNNFAST_DEBUG", "0") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}


def _compiler_accepts(flags):
    """True if the C compiler builds and links a small OpenMP program with ``flags``."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n<1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            res = subprocess.run([cc, *flags, path, "-o", os.path.join(tmp, "t")],
                                 capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


def _openmp_flags():
    if os.environ.get("RNNFAST_NO_OPENMP", "0") == "1" or sys.platform == "win32":
        return [], []
    if _compiler_accepts(["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    print("rnnfast: the compiler does not support OpenMP; building serial kernels", file=sys.stderr)
    return [], []


omp_compile, omp_link = _openmp_flags()
# -g0: no debug info (Python's flags add -g), which keeps the wheel small
extra_compile = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math"] + omp_compile
if DEBUG:
    extra_compile = ["-O0", "-g"] + omp_compile

ext_common = dict(
    include_dirs=[os.path.join(HERE, "csrc"), np.get_include()],
    depends=[os.path.join("csrc", f) for f in ("rf_math.h", "rf_cells.h", "rf_cells_impl.h", "rf_gemm.h",
                                                "rf_latency.h", "rf_rows.h", "rf_units.h", "rf_hash.h")],
    extra_compile_args=extra_compile,
    extra_link_args=omp_link,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
)

extensions = [
    Extension("rnnfast._kernels._recurrent", ["rnnfast/_kernels/_recurrent.pyx"], **ext_common),
    Extension("rnnfast._kernels._lncell", ["rnnfast/_kernels/_lncell.pyx"],
              **dict(ext_common, depends=ext_common["depends"] + ["csrc/rf_lncell.h"])),
    Extension("rnnfast._kernels._lowp", ["rnnfast/_kernels/_lowp.pyx"],
              **dict(ext_common, depends=ext_common["depends"] + ["csrc/rf_cpu.h", "csrc/rf_bf16.h"])),
    Extension("rnnfast._kernels._variant", ["rnnfast/_kernels/_variant.pyx"], **ext_common),
    # optimizers: no FMA contraction, so Adam's one pass rounds as numpy's separate passes (bit for bit)
    Extension("rnnfast._kernels._optim", ["rnnfast/_kernels/_optim.pyx"],
              **dict(ext_common, extra_compile_args=extra_compile + ["-ffp-contract=off"],
                     depends=ext_common["depends"] + ["csrc/rf_optim.h"])),
    # int8: no FMA contraction, so every instruction path dequantizes to the same bits (csrc/rf_int8.h)
    Extension("rnnfast._kernels._int8", ["rnnfast/_kernels/_int8.pyx"],
              **dict(ext_common, extra_compile_args=extra_compile + ["-ffp-contract=off"],
                     depends=ext_common["depends"] + ["csrc/rf_cpu.h", "csrc/rf_int8.h"])),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
)
