"""Batched Cholesky factors of Hermitian positive definite matrices on one
pattern: one ordering and one symbolic analysis, then every element's
numeric factorization and solves by the batch-last kernels of
``kernels/numba/_cholesky.py``.

The fill-reducing ordering is SuperLU's minimum degree on ``A + Aᵀ``
(``MMD_AT_PLUS_A``), computed from the pattern alone: the incomplete
factorization of a diagonally dominant matrix with that pattern is enough to
obtain it, and no element's values are involved. The batch is cut into
slices of at most :data:`SLICE` elements, each stored contiguously and
factored by one thread (``batch_map``).
"""

import math

import numpy as np
import scipy.sparse as sp

from ._common import batch_map

__all__ = ["CholeskyAnalysis", "BatchedCholesky"]

#: Elements per slice. The kernels' innermost loop runs over a slice: wider
#: slices amortize the index arithmetic (ms per element at 64², 2-D
#: diffusion, one thread: 6.1, 3.1, 2.5, 1.9 for 4, 8, 16, 32 elements) but
#: leave fewer slices to spread over the threads.
SLICE = 32


def _minimum_degree(mat, func):
    """A fill-reducing symmetric permutation (new → old) of the pattern."""
    n = mat.shape[0]
    rows = np.repeat(np.arange(n), np.diff(mat.indptr))
    off = rows != mat.indices
    # a diagonally dominant surrogate: the ordering depends on the pattern only
    vals = np.where(off, -1.0, 0.0)
    degree = np.bincount(rows, minlength=n)
    surrogate = sp.csc_array((vals, mat.indices, mat.indptr), shape=mat.shape)
    surrogate = surrogate + sp.diags_array(degree + 1.0)
    ilu = mat.backend.ilu(surrogate.tocsc(), func=func, drop_tol=1.0, fill_factor=1.0,
                          permc_spec="MMD_AT_PLUS_A",
                          options=dict(SymmetricMode=True))
    return np.argsort(ilu.perm_c)


class CholeskyAnalysis:
    """Ordering and symbolic factorization of a pattern, shared by every
    element and kept across ``update``.

    Attributes: ``perm`` (new → old), the upper triangle of the permuted
    matrix as CSC ``(cp, ci)`` with ``src`` its entries' positions in the
    canonical values, and the kernel's program ``(Lp, Li, kp, ki, kpos)``.
    """

    def __init__(self, mat, func="sparsediff.BatchedSolver"):
        n = mat.shape[0]
        self.n = n
        self.kernels = mat.backend.batched_cholesky(func=func)
        self.perm = _minimum_degree(mat, func) if n > 1 else np.arange(n)
        inv = np.argsort(self.perm)
        rows = inv[mat.rows]
        cols = inv[mat.indices]
        keep = np.flatnonzero(rows <= cols)
        src = keep[np.lexsort((rows[keep], cols[keep]))]
        self.src = src.astype(np.int64)
        self.ci = rows[src].astype(np.int64)
        self.cp = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(cols[src], minlength=n), out=self.cp[1:])
        self.Lp, self.Li, self.kp, self.ki, self.kpos = self.kernels.symbolic(
            n, self.cp, self.ci)

    @property
    def fill(self):
        """``nnz(L)``."""
        return int(self.Lp[-1])

    @property
    def flops(self):
        """Multiply-adds of one numeric factorization (``Σ_j colcount_j²``)."""
        return float(np.sum(np.diff(self.Lp).astype(np.float64) ** 2))


class _Element:
    """One element's factor, for the per-element solves of the condition
    estimate (``library``, ``solve(b, trans)`` as the other factors)."""

    library = "cholesky"

    def __init__(self, owner, slot, col):
        self._owner = owner
        self._slot = slot
        self._col = col

    def solve(self, b, trans="N"):
        return self._owner.solve_one(self._slot, self._col, b, trans)


class BatchedCholesky:
    """``A_e = Pᵀ L_e L_eᴴ P`` for every element (see the module).

    ``ok[e]`` is False for an element that is not positive definite (a
    pivot not positive): the caller factors it otherwise.
    """

    def __init__(self, analysis, data, elements, dtype, workers):
        self.analysis = analysis
        self.dtype = np.dtype(dtype)
        B = data.shape[0]
        self.batch = B
        width = max(1, min(SLICE, math.ceil(B / max(1, workers))))
        self.slices = [(b0, min(B, b0 + width)) for b0 in range(0, B, width)]
        self.ok = np.zeros(B, bool)
        self.ok[elements] = True
        a, k = analysis, analysis.kernels
        self._L = [None] * len(self.slices)

        def factor(s):
            b0, b1 = self.slices[s]
            vals = np.ascontiguousarray(data[b0:b1].T, dtype=self.dtype)
            Lx = np.empty((a.fill, b1 - b0), dtype=self.dtype)
            ok = np.ones(b1 - b0, bool)
            if a.n:
                k.numeric(a.cp, a.ci, a.src, a.Lp, a.Li, a.kp, a.ki, a.kpos, vals, Lx, ok)
            self._L[s] = Lx
            self.ok[b0:b1] &= ok

        batch_map(factor, range(len(self.slices)), workers)

    def element(self, e):
        """The factor of element ``e`` (``None`` when it is not positive definite)."""
        if not self.ok[e]:
            return None
        for s, (b0, b1) in enumerate(self.slices):
            if b0 <= e < b1:
                return _Element(self, s, e - b0)
        raise IndexError(e)

    def _run(self, s, b0, y):
        if self.analysis.n:
            a = self.analysis
            a.kernels.solve(a.Lp, a.Li, self._L[s], y, b0)
        return y

    def solve_one(self, s, col, b, trans):
        """``op(A_e)⁻¹ b`` for a 1-D or 2-D ``b`` (a new array, the factor's dtype)."""
        conj = trans == "T" and self.dtype.kind == "c"   # Aᵀ = conj(A)
        b2 = np.asarray(b).reshape(self.analysis.n, -1)
        src = np.conj(b2) if conj else b2
        y = np.ascontiguousarray(src[self.analysis.perm][:, :, None], dtype=self.dtype)
        self._run(s, col, y)
        x = np.empty_like(y[:, :, 0])
        x[self.analysis.perm] = y[:, :, 0]
        return (np.conj(x) if conj else x).reshape(np.shape(b))

    def solve_batch(self, b3, trans, workers):
        """``x3[e] = op(A_e)⁻¹ b3[e]`` for every element, ``b3`` of shape
        ``(B, n, m)`` in the factor's dtype; elements not ``ok`` get garbage."""
        conj = trans == "T" and self.dtype.kind == "c"
        a = self.analysis
        src = np.ascontiguousarray(np.conj(b3) if conj else b3)
        x3 = np.empty_like(src)
        if a.n == 0:
            return x3

        def one(s):
            b0, b1 = self.slices[s]
            y = np.empty((a.n, src.shape[2], b1 - b0), dtype=src.dtype)
            a.kernels.solve_batch_first(a.Lp, a.Li, self._L[s], a.perm, src, x3, b0, y)

        batch_map(one, range(len(self.slices)), workers)
        return np.conj(x3, out=x3) if conj else x3
