"""Compiled kernels of rnnfast (Cython, nogil) and the thread control that goes with them.

OpenMP threads that spin while waiting for work steal the cores they wait for when another process
competes for them: measured here with one busy process on 2 cores, a 2-thread call went from 3.3 ms to
17.5 ms with libgomp's default spinning, and stayed at 3.3 ms with it short. So, unless the user chose a
wait policy, libgomp is asked to spin briefly before sleeping. libgomp reads this once, when it loads,
which is when the extension below is imported.
"""
import os

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"
