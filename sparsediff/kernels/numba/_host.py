"""CPU kernels whose best implementation is a compiled loop NumPy or SciPy already has.

Same names and arguments as their twins in ``kernels/_reference.py``; a
compiled Numba loop would only add a compilation on first use per dtype:

* ``csr_diagonal``: SciPy's C++ ``csr_diagonal`` (reads the CSR arrays, makes
  no array of one row index per entry);
* ``segment_sum``: ``numpy.add.reduceat``, one pass over the values.
"""

import numpy as np
import scipy.sparse as sp


def csr_diagonal(indptr, indices, data, out):
    """``out[i] = A[i, i]`` (0 where not stored; duplicates summed)."""
    n = out.shape[0]
    out[...] = sp.csr_array((data, indices, indptr), shape=(n, n)).diagonal()
    return out


def segment_sum(values, starts, out):
    """``out[g] = Σ values[starts[g]:starts[g + 1]]`` (the last to the end).

    Every segment is non-empty (``starts`` strictly increasing, ``starts[0] =
    0``): the sums of duplicate entries into one canonical entry.
    """
    out[...] = np.add.reduceat(values, starts)
    return out
