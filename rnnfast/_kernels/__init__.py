"""Compiled kernels of rnnfast (Cython, nogil) and the thread control that goes with them.

OpenMP threads that spin while waiting for work steal the cores they wait for when another process
competes for them: measured here with one busy process on 2 cores, a 2-thread call went from 3.3 ms to
17.5 ms with libgomp's default spinning, and stayed at 3.3 ms with it short. So, unless the user chose a
wait policy, libgomp is asked to spin briefly before sleeping (3000 turns, some 30 us here: long enough
to bridge the Python between two streaming ``step`` calls, which with 1000 turns often paid a wake-up
each, 25-30 us a step instead of 14; beside a busy process LSTM small inference took 2.55 ms against 2.50
with 1000, and 8.7 with the default). libgomp reads this once, when it loads, which is when the
extension below is imported.
"""
import os

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"
