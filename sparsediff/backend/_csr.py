"""CSR operations on a validated matrix, through the kernels of its backend.

The one place that does "promote, make contiguous, allocate, call the kernel"
for the products every layer needs: the engines' operator (``CSROperator``),
residuals and tangents (``op_matvec``), the pattern gradient of the adjoint
rules and of :func:`sparsediff.sparse_outer`, and the built-in fixed-point
steps. Each function takes the matrix (a ``MatrixInput``, or a :class:`CSR`
for raw arrays) and calls ``mat.backend.kernels``, so that nothing below the
public layer names a kernel module.

Conventions: blocks are 2-D ``(n, m)``; results are new arrays of dtype
``result_type(values, block)``. A real matrix is applied to a complex block as
it is (the kernels mix them: no complex copy of ``A``); complex values of a
lower precision than the block are promoted.
"""

import numpy as np

__all__ = ["CSR", "column_norms", "diagonal", "matvec", "matvec_dot", "pattern_product"]


class CSR:
    """Raw CSR arrays with a backend (for matrices that are not ``MatrixInput``).

    The products need a valid CSR structure only (sorted indices and unique
    entries are not required).
    """

    __slots__ = ("backend", "data", "dtype", "indices", "indptr", "shape")

    def __init__(self, indptr, indices, data, shape, backend):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.dtype = data.dtype
        self.shape = tuple(shape)
        self.backend = backend

    @property
    def nnz(self):
        return self.indices.shape[0]


def _promote(xp, data, X):
    """``(data, X, dtype)`` for a product: ``X`` contiguous in the result dtype;
    complex values promoted to it, real values left real (the kernels mix them)."""
    dtype = np.result_type(data.dtype, X.dtype)
    X = xp.ascontiguousarray(X, dtype=dtype)
    if data.dtype.kind == "c" and data.dtype != dtype:
        data = data.astype(dtype)
    return data, X, dtype


def matvec(mat, X, trans="N", data=None):
    """``op(A) @ X`` for a 2-D block ``X`` (a new array).

    Parameters
    ----------
    mat : MatrixInput or CSR
    X : array, shape (A.shape[1], m) for "N", (A.shape[0], m) otherwise
    trans : {"N", "T", "H"}
    data : array, optional
        Values replacing ``mat.data`` (tangents ``Ȧ x``, the steps' values).
    """
    if data is None:
        data = mat.data
    backend = mat.backend
    xp = backend.xp
    data, X, dtype = _promote(xp, data, X)
    if trans == "N":
        out = xp.empty((mat.shape[0], X.shape[1]), dtype=dtype)
        return backend.kernels.csr_matvec(mat.indptr, mat.indices, data, X, out)
    out = xp.empty((mat.shape[1], X.shape[1]), dtype=dtype)
    return backend.kernels.csr_rmatvec(mat.indptr, mat.indices, data, X, out,
                                       trans == "H" and data.dtype.kind == "c")


def matvec_dot(mat, X):
    """``(A X, Re diag(Xᴴ A X))`` in one pass: the CG product fused with ``pᴴq``.

    One right-hand side runs the 1-D kernel variant.
    """
    backend = mat.backend
    xp = backend.xp
    data, X, dtype = _promote(xp, mat.data, X)
    m = X.shape[1]
    out = xp.empty((mat.shape[0], m), dtype=dtype)
    dots = xp.empty(m, dtype=np.complex128 if dtype.kind == "c" else np.float64)
    if m == 1:
        backend.kernels.csr_matvec_dot1(mat.indptr, mat.indices, data, X.reshape(-1),
                                        out.reshape(-1), dots)
    else:
        backend.kernels.csr_matvec_dot(mat.indptr, mat.indices, data, X, out, dots)
    return out, dots.real


def pattern_product(mat, u, v, alpha, dtype=None):
    """``out[k] = alpha Σ_c u[i_k, c] v[j_k, c]`` over the stored entries.

    The values of ``alpha · u vᵀ`` on the pattern of ``mat`` (canonical order),
    nothing conjugated. ``u``, ``v`` are 2-D; ``dtype`` defaults to the
    promotion of theirs.
    """
    backend = mat.backend
    xp = backend.xp
    if dtype is None:
        dtype = np.result_type(u.dtype, v.dtype)
    dtype = np.dtype(dtype)
    u = xp.ascontiguousarray(u, dtype=dtype)
    v = xp.ascontiguousarray(v, dtype=dtype)
    out = xp.empty(mat.indices.shape[0], dtype=dtype)
    return backend.kernels.sparse_outer(mat.indptr, mat.indices, u, v,
                                        dtype.type(alpha), out)


def diagonal(mat):
    """The diagonal of a square canonical CSR matrix (0 where not stored).

    Read from the CSR arrays by the backend's ``csr_diagonal`` kernel: no
    array of one row index per entry is made (nor cached on ``mat``:
    ``MatrixInput.rows`` stays unbuilt, which the preconditioners' memory
    depends on).
    """
    out = mat.backend.xp.empty(mat.shape[0], dtype=mat.data.dtype)
    return mat.backend.kernels.csr_diagonal(mat.indptr, mat.indices, mat.data, out)


def column_norms(a):
    """2-norm of every column of a 2-D array (float64, no overflow for f32).

    NumPy functions that dispatch to the array's own library (NEP 18), so
    any backend's arrays are accepted and the result stays where they are.
    """
    if a.shape[0] == 0:
        return np.zeros_like(a, dtype=np.float64, shape=(a.shape[1],))
    return np.linalg.norm(a.astype(np.result_type(a.dtype, np.float64), copy=False),
                          axis=0)
