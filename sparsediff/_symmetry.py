"""Hermitian to rounding: the symmetry test behind CG, MINRES, ``auto`` and AMG.

Matrices assembled by real codes are Hermitian only to rounding: a finite
element code adds element contributions to ``(i, j)`` and ``(j, i)`` in
different orders, and a COO matrix with duplicates is summed in storage order,
so ``A − Aᴴ`` holds a few ulps (an elasticity matrix: ``max|A − Aᵀ| = 4.4e-16``
against ``max|A| = 4.5``). Whether ``C Cᴴ`` comes out bitwise Hermitian even
depends on the BLAS kernel of the processor. Such matrices are Hermitian for
every purpose here.

The test, entrywise against the row scales::

    asym(A) = max over stored (i, j) of |a_ij − conj(a_ji)| / sqrt(r_i · r_j),
    r_i = max_k |a_ik|          (the largest magnitude in row i)

    A is Hermitian to rounding  ⇔  asym(A) ≤ HERMITIAN_RTOL_ULPS · eps(dtype)

Why this form: a rounding error in an assembled entry is a few ulps of the
contributions summed into it, and those are of the size of the entries of its
row and column, so ``sqrt(r_i r_j)`` is the natural unit. Against ``max|A|``
instead (normwise), a badly scaled matrix whose rows lie 10¹⁰ apart would be
declared Hermitian while its small rows are plainly non-symmetric. The
measure is invariant under ``A → s·A`` and, up to how the row maxima move,
under the symmetric scaling ``D A D``. An entry stored on one side only
counts as ``a_ji = 0``.

What the solves apply when ``A`` is Hermitian only to rounding: the forward
solve applies ``A`` as given; solves with ``Aᴴ`` or ``Aᵀ`` (``trans="H"/"T"``,
and the adjoint solve of ``Solution.vjp``) apply ``Aᴴ``/``Aᵀ`` of the matrix
as given, never ``A`` itself or ``(A + Aᴴ)/2``. Every verdict is taken on the
true residual of that operator, so gradients are exact for the matrix the
caller passed, to the solve tolerance. Preconditioners built for a Hermitian
``A`` (AMG) use its Hermitian part and are exactly Hermitian, so one
preconditioner serves both solves.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp

__all__ = ["HERMITIAN_RTOL_ULPS", "Symmetry", "is_exactly_hermitian", "measure_symmetry"]

#: Tolerance of the Hermitian test in units of the dtype's machine epsilon:
#: float64 2.2e-14, float32 1.2e-5. Assembly rounding is a few ulps; 100
#: leaves room for entries summed from dozens of cancelling contributions.
HERMITIAN_RTOL_ULPS = 100


@dataclasses.dataclass(frozen=True)
class Symmetry:
    """How far a matrix is from Hermitian (see the module docstring).

    Attributes
    ----------
    asymmetry : float
        ``max |a_ij − conj(a_ji)| / sqrt(r_i r_j)`` (0.0 when exactly
        Hermitian; ``inf`` for a non-square matrix or one whose row is zero
        while its column is not).
    where : tuple of int or None
        An entry ``(i, j)`` where the maximum is attained.
    tol : float
        ``HERMITIAN_RTOL_ULPS · eps`` of the matrix dtype.
    """

    asymmetry: float
    where: tuple
    tol: float

    @property
    def exact(self):
        """Whether ``A == Aᴴ`` bit for bit."""
        return self.asymmetry == 0.0

    @property
    def hermitian(self):
        """Whether ``A`` is Hermitian to rounding (``asymmetry ≤ tol``)."""
        return self.asymmetry <= self.tol

    def describe(self):
        """One sentence for error messages: the measured asymmetry and the bound."""
        at = "" if self.where is None else f" at (i, j) = {self.where}"
        return (f"max |a_ij − conj(a_ji)| / sqrt(r_i·r_j) = {self.asymmetry:.3g}"
                f"{at} (r_i: the largest |a_ik| in row i), above the tolerance "
                f"{self.tol:.3g} ({HERMITIAN_RTOL_ULPS}·eps)")


def hermitian_tol(dtype):
    """The Hermitian tolerance for values of ``dtype``."""
    return HERMITIAN_RTOL_ULPS * float(np.finfo(dtype).eps)


def measure_symmetry(indptr, indices, data, shape):
    """:class:`Symmetry` of a canonical CSR matrix (sorted, no duplicates). O(nnz)."""
    tol = hermitian_tol(data.dtype)
    n = shape[0]
    if shape[0] != shape[1]:
        return Symmetry(float("inf"), None, tol)
    if n == 0 or indices.shape[0] == 0:
        return Symmetry(0.0, None, tol)
    diff = _defect(sp.csr_array((data, indices, indptr), shape=shape))
    nonzero = diff.data != 0
    if not nonzero.any():
        return Symmetry(0.0, None, tol)
    rows = diff.row[nonzero]
    cols = diff.col[nonzero]
    absdiff = np.abs(diff.data[nonzero]).astype(np.float64)
    rowmax = _row_max_abs(indptr, data, n)
    scale = np.sqrt(rowmax[rows] * rowmax[cols])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(scale > 0, absdiff / np.where(scale > 0, scale, 1.0), np.inf)
    k = int(np.argmax(ratio))
    return Symmetry(float(ratio[k]), (int(rows[k]), int(cols[k])), tol)


def is_exactly_hermitian(A):
    """Whether a SciPy sparse or dense matrix equals its conjugate transpose bit for bit.

    The test for operators applied as they are given, whose ``Mᴴ`` is taken to
    be ``M`` once they are declared Hermitian (a caller's preconditioner
    matrix), and for :func:`sparsediff.precond._base.hermitian_part`'s shortcut;
    matrices ``A`` are judged to rounding (:func:`measure_symmetry`). Explicit
    zeros do not count.
    """
    if sp.issparse(A):
        return not np.any(_defect(A).data)
    A = np.asarray(A)
    return bool(np.array_equal(A, A.conj().T))


def _defect(A):
    """``A − Aᴴ`` of a SciPy sparse matrix, in COO format."""
    return (A - A.conj().T).tocoo()


def _row_max_abs(indptr, data, n):
    """``max_k |a_ik|`` for every row (0 for empty rows), in float64."""
    absdata = np.abs(data).astype(np.float64)
    out = np.zeros(n)
    counts = np.diff(indptr)
    nonempty = counts > 0
    if absdata.size:
        starts = np.asarray(indptr[:-1], dtype=np.int64)[nonempty]
        out[nonempty] = np.maximum.reduceat(absdata, starts)
    return out
