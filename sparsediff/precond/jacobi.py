"""Jacobi (diagonal) preconditioning: ``M = D⁻¹``."""

import time

import numpy as np

from ..backend._csr import diagonal
from ._base import Preconditioner, check_diagonal

__all__ = ["Jacobi"]


class Jacobi(Preconditioner):
    """Jacobi preconditioner ``M = D⁻¹`` with ``D = diag(A)``.

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix (canonical CSR).
    func : str
        Public function name used in error messages.

    Raises
    ------
    SingularMatrixError
        A diagonal entry is zero or not stored; the message names the row.

    Notes
    -----
    ``Mᴴ = conj(D)⁻¹`` and ``Mᵀ = M``. ``hermitian`` is true exactly when the
    diagonal is real (whatever the off-diagonal part of ``A``): then
    ``M = Mᴴ``. For an ``A`` that is Hermitian to rounding (see
    :mod:`sparsediff._symmetry`) the imaginary parts of its diagonal are
    rounding, and ``D`` is its real part. Positive definiteness, which CG also
    needs, additionally requires a positive diagonal; ``positive`` reports it.

    See Also
    --------
    scipy.sparse.linalg.cg : takes the same operator as ``M=LinearOperator(...)``.
    """

    name = "jacobi"

    def __init__(self, mat, *, func="sparsediff.precond.Jacobi"):
        t0 = time.perf_counter()
        self.shape = mat.shape
        self.dtype = mat.dtype
        self.func = func
        d = diagonal(mat)
        if np.iscomplexobj(d) and mat.symmetry.hermitian:
            # A Hermitian to rounding: Im(a_ii) is rounding noise, and the real
            # diagonal makes M exactly Hermitian, as CG and MINRES need
            d = d.real.astype(mat.dtype)
        check_diagonal(d, func, "'jacobi'")
        self._dinv = (1.0 / d)[:, None]
        self._dinv_conj = np.conj(self._dinv) if np.iscomplexobj(d) else self._dinv
        self.hermitian = bool(not np.iscomplexobj(d) or not np.any(d.imag))
        self.positive = bool(self.hermitian and np.all(d.real > 0))
        self.has_adjoint = True
        self.setup_time = time.perf_counter() - t0

    def _apply(self, X, trans):
        dinv = self._dinv_conj if trans == "H" else self._dinv
        return X * dinv.astype(X.dtype, copy=False)

    def update(self, mat):
        """A Jacobi preconditioner for new values on the same pattern."""
        return Jacobi(mat, func=self.func)
