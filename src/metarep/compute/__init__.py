"""How the kernels run: backends (numba, chunked NumPy), thread scheduling, buffers and the
compiled kernels."""
