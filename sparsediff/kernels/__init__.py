"""Raw-array kernels: same names and arguments on every backend.

``_reference`` holds a pure-NumPy twin of each kernel; ``numba`` the CPU
kernels; the tests compare the two. No kernel validates its inputs.
"""
