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

import functools

import numpy as np

from ..backend import _csr

__all__ = ["CSROperator", "aslinearoperator", "transposed"]


class CSROperator:
    """``A``, ``Aᵀ`` or ``Aᴴ`` of a canonical CSR matrix, applied to blocks.

    The products run the kernels of ``mat.backend`` (``backend/_csr.py``):
    ``matvec(X)`` is ``op(A) X`` for a 2-D ``X`` (a new array);
    ``matvec_dot(X)`` is ``(A X, Re diag(Xᴴ A X))`` in one pass (the CG product
    fused with ``pᴴ q``, for ``trans="N"``); ``rmatvec(X)`` is ``op(A)ᴴ X``.

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
        # bound once: the Krylov loops call these every iteration
        self.matvec = (functools.partial(_csr.matvec, mat) if trans == "N"
                       else functools.partial(_csr.matvec, mat, trans=trans))
        self.matvec_dot = functools.partial(_csr.matvec_dot, mat)

    def _apply(self, X, trans):
        return _csr.matvec(self.mat, X, trans)

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
