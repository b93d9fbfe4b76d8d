"""The small linear-operator protocol the Krylov solvers are written against.

An operator is any object with

* ``shape`` — ``(n, n)``;
* ``dtype`` — the dtype of its values;
* ``matvec(X)`` — ``A X`` for a 2-D block ``X`` of shape ``(n, m)``, a new
  array of dtype ``result_type(dtype, X.dtype)``;
* ``rmatvec(X)`` (optional) — ``Aᴴ X``, needed for solves with ``Aᴴ``/``Aᵀ``.

:func:`aslinearoperator` adapts a validated CSR matrix (``MatrixInput``), a
:class:`scipy.sparse.linalg.LinearOperator` (whose ``matvec`` takes vectors;
its ``matmat`` is used) or any object that already follows the protocol.
"""

import numpy as np

from ..kernels import numba as kernels

__all__ = ["CSROperator", "aslinearoperator", "transposed"]


class CSROperator:
    """``A``, ``Aᵀ`` or ``Aᴴ`` of a canonical CSR matrix, applied to blocks.

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix.
    trans : {"N", "T", "H"}
        Which of A, Aᵀ, Aᴴ ``matvec`` applies.
    """

    def __init__(self, mat, trans="N"):
        self.mat = mat
        self.trans = trans
        self.shape = mat.shape
        self.dtype = mat.dtype

    def _apply(self, X, trans):
        mat = self.mat
        X = np.ascontiguousarray(X)
        dtype = np.result_type(mat.dtype, X.dtype)
        if X.dtype != dtype:
            X = X.astype(dtype)
        # the kernels mix a real matrix with a complex block: no complex copy of A
        if trans == "N":
            out = np.empty((mat.shape[0], X.shape[1]), dtype=dtype)
            return kernels.csr_matvec(mat.indptr, mat.indices, mat.data, X, out)
        out = np.empty((mat.shape[1], X.shape[1]), dtype=dtype)
        conj = trans == "H" and mat.dtype.kind == "c"
        return kernels.csr_rmatvec(mat.indptr, mat.indices, mat.data, X, out, conj)

    def matvec(self, X):
        """``op(A) X`` for a 2-D ``X`` (a new array)."""
        return self._apply(X, self.trans)

    def matvec_dot(self, X):
        """``(A X, real(diag(Xᴴ A X)))`` in one serial pass (``trans="N"`` only).

        The CG product ``q = A p`` fused with ``pᴴ q``; real parts, as CG
        needs them for a Hermitian A.
        """
        from ..kernels.numba._krylov import csr_matvec_dot, csr_matvec_dot1

        mat = self.mat
        dtype = np.result_type(mat.dtype, X.dtype)
        X = np.ascontiguousarray(X, dtype=dtype)
        out = np.empty((mat.shape[0], X.shape[1]), dtype=dtype)
        dots = np.empty(X.shape[1], dtype=np.complex128 if dtype.kind == "c"
                        else np.float64)
        if X.shape[1] == 1:
            csr_matvec_dot1(mat.indptr, mat.indices, mat.data, X.reshape(-1),
                            out.reshape(-1), dots)
        else:
            csr_matvec_dot(mat.indptr, mat.indices, mat.data, X, out, dots)
        return out, dots.real

    def rmatvec(self, X):
        """``op(A)ᴴ X`` for a 2-D ``X`` (a new array)."""
        if self.trans == "T":
            # (Aᵀ)ᴴ = conj(A): conj(A conj(X))
            return np.conj(self._apply(np.conj(X), "N"))
        return self._apply(X, "H" if self.trans == "N" else "N")


class _MatmatOperator:
    """Adapter for :class:`scipy.sparse.linalg.LinearOperator` (``matmat``)."""

    def __init__(self, op):
        self._op = op
        self.shape = tuple(op.shape)
        self.dtype = np.dtype(op.dtype)

    def matvec(self, X):
        return np.asarray(self._op.matmat(X))

    def rmatvec(self, X):
        return np.asarray(self._op.rmatmat(X))


def aslinearoperator(A):
    """Adapt ``A`` to the block operator protocol (see the module docstring).

    Parameters
    ----------
    A : MatrixInput, scipy LinearOperator, or object with ``matvec``, ``shape``
        and ``dtype``.

    Returns
    -------
    object with ``matvec(X)``, ``shape``, ``dtype`` (and ``rmatvec`` when
    ``A`` has one).
    """
    from scipy.sparse.linalg import LinearOperator

    if hasattr(A, "indptr") and hasattr(A, "to_canonical"):
        return CSROperator(A)
    if isinstance(A, LinearOperator):
        return _MatmatOperator(A)
    for attr in ("matvec", "shape", "dtype"):
        if not hasattr(A, attr):
            raise TypeError(
                f"a linear operator must have `matvec`, `shape` and `dtype`; "
                f"{type(A).__name__} has no `{attr}`.")
    return A


def transposed(op, trans):
    """``op(A)`` for a block operator with ``rmatvec`` (``trans`` in N/T/H)."""
    if trans == "N":
        return op.matvec
    if trans == "H":
        return op.rmatvec
    return lambda X: np.conj(op.rmatvec(np.conj(X)))
