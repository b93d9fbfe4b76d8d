"""Incomplete LU preconditioning through SuperLU (``scipy.sparse.linalg.spilu``)."""

import threading
import time

import numpy as np
import scipy.sparse as sp

from .._dtypes import is_complex, real_dtype
from .._errors import SingularMatrixError
from ._base import Preconditioner

__all__ = ["ILU"]


class ILU(Preconditioner):
    """Threshold incomplete LU, ``M = (L̃ Ũ)⁻¹`` with SuperLU's row pivoting.

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix (canonical CSR).
    func : str
        Public function name used in error messages.
    drop_tol : float, optional
        Entries of ``L`` and ``U`` below ``drop_tol`` (relative to their
        column) are dropped. Default ``1e-4`` (SciPy's default).
    fill_factor : float, optional
        Upper bound on ``nnz(L + U) / nnz(A)``. Default ``10`` (SciPy's).
    drop_rule, permc_spec, diag_pivot_thresh : optional
        Passed to :func:`scipy.sparse.linalg.spilu` (``None``: its defaults).

    Raises
    ------
    SingularMatrixError
        SuperLU meets a zero pivot (or the factors are not finite).

    Notes
    -----
    One factorization serves all three operators: ``M X``, ``Mᵀ X`` and
    ``Mᴴ X`` are ``SuperLU.solve(X, trans="N" | "T" | "H")`` on the same
    factors, so ⟨M u, v⟩ = ⟨u, Mᴴ v⟩ holds to rounding. ``M`` is never
    Hermitian (``hermitian`` is ``False``), even for a Hermitian ``A``.

    Real factors applied to a complex block solve the real and imaginary parts
    together; a right-hand side of higher precision than the factors gets a
    factorization in that precision (made once, on first use), so the operator
    is exactly linear in every precision.

    See Also
    --------
    scipy.sparse.linalg.spilu
    """

    name = "ilu"
    hermitian = False
    has_adjoint = True

    def __init__(self, mat, *, func="sparsediff.precond.ILU", drop_tol=1e-4,
                 fill_factor=10.0, drop_rule=None, permc_spec=None,
                 diag_pivot_thresh=None):
        t0 = time.perf_counter()
        self.shape = mat.shape
        self.dtype = mat.dtype
        self.func = func
        self._mat = mat
        self.options = dict(drop_tol=drop_tol, fill_factor=fill_factor,
                            drop_rule=drop_rule, permc_spec=permc_spec,
                            diag_pivot_thresh=diag_pivot_thresh)
        self._lock = threading.Lock()
        self._factors = {}
        self._factor(self.dtype)
        self.setup_time = time.perf_counter() - t0

    def _factor(self, dtype):
        lu = self._factors.get(dtype)
        if lu is not None:
            return lu
        with self._lock:
            lu = self._factors.get(dtype)
            if lu is not None:
                return lu
            mat = self._mat
            n = mat.shape[0]
            if n == 0:
                return None
            if mat.nnz == 0:
                raise SingularMatrixError(
                    f"`{self.func}`: the 'ilu' preconditioner cannot factor `A`: it "
                    f"has no stored entries."
                )
            # SuperLU takes CSC; our private copies, never the caller's arrays
            csr = sp.csr_array((mat.data.astype(dtype), mat.indices.copy(),
                                mat.indptr.copy()), shape=mat.shape)
            opts = {k: v for k, v in self.options.items() if v is not None}
            try:
                lu = mat.backend.ilu(csr.tocsc(), func=self.func, **opts)
            except RuntimeError as exc:
                if "singular" in str(exc).lower():
                    raise SingularMatrixError(
                        f"`{self.func}`: the 'ilu' preconditioner met a zero pivot "
                        f"(SuperLU: {exc}). `A` is singular or needs a smaller "
                        f"`drop_tol` / larger `fill_factor`; try M='jacobi' or "
                        f"method='direct'."
                    ) from exc
                raise
            diag_u = lu.U.diagonal()
            if not np.all(np.isfinite(lu.L.data)) or not np.all(np.isfinite(lu.U.data)) \
                    or np.any(diag_u == 0):
                raise SingularMatrixError(
                    f"`{self.func}`: the 'ilu' factors of `A` are not usable (zero "
                    f"or non-finite pivot). Try a smaller `drop_tol`, M='jacobi' or "
                    f"method='direct'."
                )
            self._factors[dtype] = lu
            return lu

    def _work_dtype(self, dtype):
        # real factors + complex rhs: split into real and imaginary parts
        dtype = np.result_type(self.dtype, dtype)
        if not is_complex(self.dtype) and is_complex(dtype):
            return real_dtype(dtype)
        return dtype

    def _apply(self, X, trans):
        lu = self._factor(np.dtype(X.dtype))
        return lu.solve(X, trans=trans)

    def update(self, mat):
        """An ILU factorization of new values on the same pattern.

        Nothing numeric survives a change of values in a threshold ILU (the
        dropping decisions depend on them); the options are kept.
        """
        return ILU(mat, func=self.func, **self.options)
