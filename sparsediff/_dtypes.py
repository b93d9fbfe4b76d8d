"""Small dtype helpers shared by the engines, the preconditioners and the public layer."""

import numpy as np

__all__ = ["is_complex", "real_dtype"]


def real_dtype(dtype):
    """The real dtype of the same precision as ``dtype`` (float32 for complex64)."""
    return np.dtype(np.finfo(dtype).dtype)


def is_complex(dtype):
    """Whether ``dtype`` is a complex floating dtype."""
    return np.dtype(dtype).kind == "c"
