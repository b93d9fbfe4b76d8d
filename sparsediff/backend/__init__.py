"""Backend selection: NumPy/SciPy on the CPU (CuPy on the GPU, planned).

The backend is chosen once, at the public boundary, from the argument types;
no environment variable or global state decides it (STYLE.md rule 3).
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
        cpu = libs - set(_GPU_MODULES)
        if cpu - {"builtins"}:
            raise TypeError(
                f"`{func}`: arguments mix CuPy ({sorted(gpu)}) and host "
                f"({sorted(cpu)}) arrays; move them to one device first."
            )
        raise TypeError(
            f"`{func}`: CuPy arrays are not supported by this version of "
            f"sparsediff (the GPU backend is not implemented yet); pass "
            f"NumPy/SciPy arguments."
        )
    return _NUMPY
