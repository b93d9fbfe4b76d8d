"""Pure-NumPy twins of the compiled kernels (the gold standard in tests).

Every function takes raw CSR arrays ``(indptr, indices, data)`` and writes
into ``out``; ``x``, ``u``, ``v`` and ``out`` are 2-D ``(n, m)`` arrays.
"""

import numpy as np

__all__ = ["csr_matvec", "csr_rmatvec", "sparse_outer"]


def _rows(indptr):
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


def csr_matvec(indptr, indices, data, x, out):
    """``out = A @ x``."""
    rows = _rows(indptr)
    out[...] = 0
    np.add.at(out, rows, data[:, None] * x[indices])
    return out


def csr_rmatvec(indptr, indices, data, x, out, conj):
    """``out = A.T @ x`` (``conj=False``) or ``A.conj().T @ x`` (``conj=True``)."""
    rows = _rows(indptr)
    vals = np.conj(data) if conj else data
    out[...] = 0
    np.add.at(out, indices, vals[:, None] * x[rows])
    return out


def sparse_outer(indptr, indices, u, v, alpha, out):
    """``out[k] = alpha * sum_m u[i_k, m] * v[j_k, m]`` for stored entries k."""
    rows = _rows(indptr)
    out[...] = alpha * np.sum(u[rows] * v[indices], axis=1)
    return out
