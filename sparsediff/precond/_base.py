"""The preconditioner protocol and helpers shared by every preconditioner.

A preconditioner ``M ≈ A⁻¹`` is applied to blocks ``X`` of shape ``(n, m)``.
Every built-in one carries its adjoint ``Mᴴ`` (used by the adjoint solve with
``Aᴴ``) and its transpose ``Mᵀ X = conj(Mᴴ conj(X))`` (used by solves with
``Aᵀ``), so the gradient of a preconditioned Krylov solve reuses the forward
preconditioner instead of building a second one.
"""

import numpy as np

from .._dtypes import is_complex
from .._errors import SingularMatrixError
from .._symmetry import is_exactly_hermitian

__all__ = ["Preconditioner"]

TRANS = ("N", "T", "H")


class Preconditioner:
    """Base class: an operator ``M ≈ A⁻¹`` with its adjoint and transpose.

    Subclasses implement ``_apply(X, trans)`` for a 2-D ``X`` already cast to
    a dtype they accept (see ``_work_dtype``), and set the attributes below.

    Attributes
    ----------
    name : str
        ``"jacobi"``, ``"ilu"``, ``"amg"`` or ``"user"``.
    shape : tuple of int
        ``(n, n)``.
    dtype : numpy.dtype
        The dtype of the operator's values. Applying it to ``X`` returns
        ``numpy.result_type(dtype, X.dtype)``.
    hermitian : bool
        Whether ``M = Mᴴ`` (then ``rmatvec`` is ``matvec``).
    has_adjoint : bool
        Whether ``rmatvec`` and ``tmatvec`` are available.
    setup_time : float
        Seconds spent building the operator.
    """

    name = "base"
    hermitian = False
    has_adjoint = True
    setup_time = 0.0

    def __repr__(self):
        return (f"<{type(self).__name__} name={self.name!r} shape={self.shape} "
                f"dtype={self.dtype} hermitian={self.hermitian}>")

    # -- public protocol ----------------------------------------------------

    def matvec(self, X):
        """``M X`` as a new array (``X``: ``(n,)`` or ``(n, m)``; not modified)."""
        return self._call(X, "N")

    def rmatvec(self, X):
        """``Mᴴ X``, the adjoint (conjugate transpose), as a new array."""
        if self.hermitian:
            return self._call(X, "N")
        return self._call(X, "H")

    def tmatvec(self, X):
        """``Mᵀ X = conj(Mᴴ conj(X))``, the plain transpose, as a new array."""
        if self.hermitian and self.dtype is not None and not is_complex(self.dtype):
            return self._call(X, "N")
        return self._call(X, "T")

    def apply(self, X, trans="N"):
        """``op(M) X`` for ``trans`` in ``{"N", "T", "H"}``."""
        if trans not in TRANS:
            raise ValueError(f"`trans` must be one of {TRANS}; got {trans!r}.")
        return {"N": self.matvec, "T": self.tmatvec, "H": self.rmatvec}[trans](X)

    def update(self, mat):  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def aslinearoperator(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` view (for SciPy solvers)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            return self.matvec(np.asarray(x))

        rmv = (lambda x: self.rmatvec(np.asarray(x))) if self.has_adjoint else None
        return LinearOperator(self.shape, matvec=mv, rmatvec=rmv, matmat=mv,
                              rmatmat=rmv, dtype=self.dtype)

    # -- machinery ----------------------------------------------------------

    def _call(self, X, trans):
        # a backend array stays where it is; anything else becomes a NumPy one
        X = X if hasattr(X, "ndim") and hasattr(X, "astype") else np.asarray(X)
        n = self.shape[0]
        if X.ndim not in (1, 2) or X.shape[0] != n:
            raise ValueError(
                f"`{self.name}` preconditioner: `X` must have shape (n,) or (n, m) "
                f"with n = {n}; got {X.shape}."
            )
        if trans != "N" and not self.has_adjoint:
            raise TypeError(
                f"`{self.name}` preconditioner: this operator has no adjoint "
                f"(give it `rmatvec`, `.H` or `.T`)."
            )
        is_1d = X.ndim == 1
        X2 = X.reshape(n, 1) if is_1d else X
        out_dtype = self._result_dtype(X2.dtype)
        if n == 0 or X2.shape[1] == 0:
            Y = np.zeros_like(X2, dtype=out_dtype)
        else:
            Y = self._apply_promoted(X2, trans, out_dtype)
        return Y.reshape(n) if is_1d else Y

    def _result_dtype(self, dtype):
        """The dtype of ``op(M) X`` for ``X`` of ``dtype`` (promoted, never cast down)."""
        out = np.result_type(self.dtype, dtype)
        return out if out.kind in "fc" else np.result_type(out, np.float64)

    def _work_dtype(self, dtype):
        """The dtype ``_apply`` computes in for a right-hand side of ``dtype``.

        Returning a real dtype for a complex ``dtype`` makes the base class
        apply the (real) operator to the real and imaginary parts separately,
        which is exact for a real operator.
        """
        return np.result_type(self.dtype, dtype)

    def _apply_promoted(self, X, trans, out_dtype):
        work = np.dtype(self._work_dtype(out_dtype))
        if is_complex(out_dtype) and not is_complex(work):
            # a real operator on a complex block: apply it to both parts at once
            m = X.shape[1]
            parts = np.concatenate([X.real, X.imag], axis=1).astype(work)
            Y = self._apply(parts, "T" if trans == "H" else trans)
            out = np.empty_like(X, dtype=out_dtype)
            out.real = Y[:, :m]
            out.imag = Y[:, m:]
            return out
        # astype copies when the dtype changes; otherwise _apply receives X
        # itself and must not write into it
        Y = self._apply(X.astype(work, copy=False), trans)
        if not hasattr(Y, "astype"):
            Y = np.asarray(Y)
        return Y.astype(out_dtype, order="C", copy=False)

    def _apply(self, X, trans):  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Helpers on validated matrices
# ---------------------------------------------------------------------------


def check_diagonal(d, func, what):
    """Raise ``SingularMatrixError`` naming the first zero diagonal entry."""
    zero = np.flatnonzero(d == 0)
    if zero.size:
        i = int(zero[0])
        more = f" (and {zero.size - 1} more rows)" if zero.size > 1 else ""
        raise SingularMatrixError(
            f"`{func}`: the {what} preconditioner needs a nonzero diagonal, but "
            f"A[{i}, {i}] = 0 (row {i}){more}. Use M='ilu' or a permutation that "
            f"puts nonzeros on the diagonal."
        )


def hermitian_part(A, dtype=None, known_inexact=False):
    """``(A + Aᴴ)/2`` of a SciPy CSR matrix (``A`` itself when exactly Hermitian).

    The returned matrix is exactly Hermitian in floating point: entry ``(i, j)``
    is ``(a_ij + conj(a_ji))/2`` and IEEE addition commutes. ``dtype``: the
    values are converted first (the sum is computed in it). With
    ``known_inexact`` the test for an exactly Hermitian ``A`` (an O(nnz)
    difference matrix) is skipped and the sum always formed (its stored zeros
    dropped). The result is a new matrix, halved in place: besides it only
    ``Aᴴ`` is allocated meanwhile.
    """
    if dtype is not None and A.dtype != dtype:
        A = A.astype(dtype)
    if not known_inexact and is_exactly_hermitian(A):
        return A
    AH = A.conj().T.tocsr()
    H = (A + AH).tocsr()
    del AH
    H.data *= 0.5
    H.sort_indices()
    return H
