"""Compiled kernels of rnnfast (Cython, nogil) and the thread control that goes with them."""
