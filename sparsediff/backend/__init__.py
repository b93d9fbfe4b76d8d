"""Backend selection: NumPy/SciPy on the CPU (CuPy on the GPU, planned).

The backend is chosen once, at the public boundary, from the argument types;
no environment variable or global state decides it (docs/backends.md).
"""

import numpy as np
import scipy.sparse

__all__ = ["NumpyBackend", "get_backend"]


class NumpyBackend:
    """CPU backend: NumPy arrays, SciPy sparse matrices, Numba kernels."""

    name = "numpy"
    xp = np
    sparse = scipy.sparse

    @property
    def kernels(self):
        from ..kernels import numba as kernels  # compiled lazily, not at import
        return kernels


_NUMPY = NumpyBackend()

_GPU_MODULES = ("cupy", "cupyx")


def _library(obj):
    return type(obj).__module__.split(".")[0]


def get_backend(*args, func):
    """The backend for these arguments (``None`` entries are ignored).

    Raises ``TypeError`` when NumPy and CuPy arguments are mixed, or for CuPy
    arguments while the GPU backend is not available in this version.
    """
    libs = {_library(a) for a in args if a is not None}
    gpu = libs & set(_GPU_MODULES)
    if gpu:
        cpu = sorted(libs - set(_GPU_MODULES) - {"builtins"})
        mixed = (f"arguments mix CuPy ({', '.join(sorted(gpu))}) and host "
                 f"({', '.join(cpu)}) arrays, and " if cpu else "")
        raise TypeError(
            f"`{func}`: {mixed}CuPy arguments are not supported by this version "
            f"of sparsediff: only the CPU backend (NumPy arrays, SciPy sparse "
            f"matrices) is implemented. Bring every argument to the host "
            f"(`cupy.asnumpy(b)`, `A.get()` for a cupyx.scipy.sparse matrix) "
            f"and pass NumPy/SciPy objects."
        )
    return _NUMPY
