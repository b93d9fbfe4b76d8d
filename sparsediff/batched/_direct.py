"""Batched direct solves: one ordering per pattern, one LU per element.

The fill-reducing ordering is computed once, from the first element that
factors: SuperLU (through ``mat.backend.lu``) returns the permutations of
``Pr M Pc = L U`` with ``M = Aᵀ`` (the CSC matrix with A's CSR arrays, the
transpose trick of ``solvers/direct.py``). Every element ``e`` is then
factored *pre-permuted*, ``C_e = Pr M_e Pc``, with ``permc_spec="NATURAL"``:
no ordering and the same fill as the first (measured in
``benchmarks/results_batched.md``). With ``A_e = Pc C_eᵀ Pr``:

    A x = b    :  x = Prᵀ C⁻ᵀ Pcᵀ b   (``F.solve(b[ipc], "T")[pr]``)
    Aᵀ x = b   :  x = Pc C⁻¹ Pr b     (``F.solve(b[ipr], "N")[pc]``)
    Aᴴ x = b   :  x = conj(Aᵀ⁻¹ conj(b))

Partial pivoting still runs per element (a different pivot only changes
that element's fill). A backend whose factorization has no ``perm_r`` /
``perm_c`` factors every element with the chosen ordering instead.

Each element reports what ``sparsediff.solve`` reports (docs/design.md 3.2):
the true residual, the condition estimate from its own factors (cached per
element, precision and N/T), singular to working precision, LAPACK's
forward error bound.
"""

import threading
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .._dtypes import real_dtype
from ..backend._direct import PerturbedPivotsError
from ..solvers._common import make_info
from ..solvers._conditioning import (
    SINGULAR_BOUND,
    equilibration,
    inverse_norm1,
    positivity_margin,
    semipositive,
    z_matrix,
)
from ..solvers._info import SolveInfo
from ..solvers.direct import LIBRARY_MIN_N, _auto_lu, _transpose_order
from ._cholesky import BatchedCholesky, CholeskyAnalysis
from ._common import (
    batch_last_matvec,
    batch_map,
    pattern_operands,
    pattern_products,
    swap01,
)

__all__ = ["BatchedDirect", "DirectReports"]

_REFUSED = object()     # an element a library declines: SuperLU factors it

#: The batched Cholesky kernels take a Hermitian positive-diagonal batch when
#: one factorization costs at most this many multiply-adds per stored entry of
#: ``L`` (``Σ colcount² / nnz(L)``), or when CHOLMOD is not installed; above
#: it, CHOLMOD's supernodal factorization (dense blocks) is faster per element.
#: Measured (ms per element, one thread, ours / CHOLMOD): 2-D diffusion 64²
#: (35 per entry) 1.9 / 3.9, 128² (64) 18 / 21; 3-D Poisson 10³ (75) 2.0 /
#: 1.5, 14³ (183) 31 / 6.1 (``benchmarks/results_batched.md``).
CHOLESKY_MAX_DEPTH = 72


def _column_sums(mat, abs_t, by_rows):
    """Per element: sums of ``|a|`` over each column (or row), batch-last
    (n, B), from ``abs_t = |data|ᵀ`` (nnz, B) by one batched product with ones."""
    ones = np.ones((mat.shape[0], abs_t.shape[1], 1))
    return batch_last_matvec(mat, abs_t, ones, "N" if by_rows else "T")[:, :, 0]


def _choose_ordering(mat, absdata):
    """``"MMD_AT_PLUS_A"`` for a structurally symmetric, diagonally dominant
    matrix, else ``"COLAMD"`` (the rule of ``solvers/direct.py``)."""
    n = mat.shape[0]
    if n <= 1:
        return "COLAMD"
    rows = mat.rows.astype(np.int64)
    cols = mat.indices.astype(np.int64)
    keys_t = np.sort(cols * n + rows)
    if not np.array_equal(rows * n + cols, keys_t):
        return "COLAMD"
    on = rows == cols
    diag = np.zeros(n)
    np.add.at(diag, cols[on], absdata[on])
    off = np.bincount(rows[~on], weights=absdata[~on], minlength=n)
    ok = np.all(diag > 0) and np.all(diag * (1 + 1e-12) >= off)
    return "MMD_AT_PLUS_A" if ok else "COLAMD"


def _exactly_hermitian(mat, data):
    """Per element: ``A_e = A_eᴴ`` bitwise (structurally symmetric pattern,
    ``a_ji = conj(a_ij)`` for every stored entry); O(B·nnz)."""
    B = data.shape[0]
    if not mat.nnz:
        return np.ones(B, bool)
    pos = _transpose_order(mat)                # entry k of Aᵀ is entry pos[k]
    if pos is None:
        return np.zeros(B, bool)
    mirror = np.take(data, pos, axis=1)        # (5× faster than data[:, pos])
    if np.iscomplexobj(data):
        np.conjugate(mirror, out=mirror)
    return np.all(mirror == data, axis=1)


def _ranges(B, workers):
    """``workers`` (or fewer) contiguous ranges ``(e0, e1)`` covering ``0:B``."""
    parts = max(1, min(workers, B))
    edges = np.linspace(0, B, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class DirectReports(Sequence):
    """The B reports of one batched direct solve, a read-only sequence whose
    element ``e`` (a :class:`SolveInfo`, or ``None`` when not solved) is
    built on first access from the batch's arrays: a caller that only needs
    which elements failed (``solved``, ``converged``) or their condition
    estimates (``kappa``) makes no per-element objects.

    ``special`` holds the reports already made (elements with no factor, or
    no unknowns).
    """

    def __init__(self, solved, converged, special, residual_norm, rhs_norm,
                 column_converged, kappa, errors, method, trans):
        self.solved = solved
        self.converged = converged & solved
        self.kappa = kappa
        self._special = special
        self._res, self._rhs = residual_norm, rhs_norm
        self._cols = column_converged
        self._errors = errors
        self._method, self._trans = method, trans
        self._cache = [None] * len(solved)

    def __len__(self):
        return len(self.solved)

    def __getitem__(self, e):
        if isinstance(e, slice):
            return tuple(self[i] for i in range(*e.indices(len(self))))
        e = range(len(self))[e]
        info = self._cache[e]
        if info is None and self.solved[e]:
            info = self._special.get(e)
            if info is None:
                info = self._make(e)
            self._cache[e] = info
        return info

    def _make(self, e):
        ok = bool(self.converged[e])
        m = self._res.shape[1]
        return SolveInfo(
            converged=ok, iterations=0, residual_norm=self._res[e],
            method=self._method, reason="converged" if ok else "singular",
            rhs_norm=self._rhs[e], column_converged=self._cols[e],
            column_iterations=np.zeros(m, np.int64), trans=self._trans,
            condition_estimate=self.kappa[e], error_estimate=self._errors[e])

    def condition_estimates(self, elements):
        """The condition estimates of ``elements`` (indices) that have one."""
        out = [self.kappa[elements[~np.isin(elements, list(self._special))]]]
        out += [np.ravel(self._special[e].condition_estimate) for e in elements
                if e in self._special
                and self._special[e].condition_estimate is not None]
        return np.concatenate(out)


class _Ordering:
    """The pre-permutation shared by every element (identity when none)."""

    def __init__(self, mat, spec, perm_r=None, perm_c=None):
        n = mat.shape[0]
        self.spec = spec
        if perm_r is None:
            self.natural = False     # factor M_e itself with `spec`
            self.pr = self.pc = self.ipr = self.ipc = None
            self.gather = None
            self.indptr, self.indices = mat.indptr, mat.indices
            return
        self.natural = True
        pr = np.asarray(perm_r, dtype=np.int64)
        pc = np.asarray(perm_c, dtype=np.int64)
        self.pr, self.pc = pr, pc
        self.ipr, self.ipc = np.argsort(pr), np.argsort(pc)
        # entry k of M = Aᵀ sits at (indices[k], rows[k]); in C at
        # (pr[indices[k]], pc[rows[k]]); C in CSC: sort by (column, row)
        r = pr[mat.indices]
        c = pc[mat.rows]
        order = np.lexsort((r, c))
        self.gather = order
        idx_t = mat.indices.dtype
        self.indices = r[order].astype(idx_t)
        indptr = np.zeros(n + 1, dtype=idx_t)
        np.cumsum(np.bincount(c, minlength=n), out=indptr[1:])
        self.indptr = indptr


class BatchedDirect:
    """SuperLU factorizations of B matrices on one pattern.

    Parameters
    ----------
    mat : MatrixInput
        The validated pattern (canonical CSR, its ``backend``).
    data : ndarray, shape (B, nnz)
        Canonical values of every element (private, never written).
    finite : ndarray of bool, shape (B,)
        Elements with finite values (the others are never factored).
    ordering : _Ordering or None
        Reused from a previous engine (``update``); computed when ``None``.
    """

    method = "direct"
    iterative = False

    def __init__(self, mat, data, finite, *, workers, func, ordering=None,
                 analysis=None, library=None):
        self.mat = mat
        self.data = data
        self.data_t = np.ascontiguousarray(data.T)
        self.dtype = data.dtype
        self.finite = finite
        self.workers = workers
        self.func = func
        self.batch = data.shape[0]
        n = mat.shape[0]
        self.abs_t = np.abs(self.data_t)
        if mat.nnz and self.batch:
            self._norm1 = _column_sums(mat, self.abs_t, False).max(axis=0)
            self._norminf = _column_sums(mat, self.abs_t, True).max(axis=0)
        else:
            self._norm1 = self._norminf = np.zeros(self.batch)
        self._row_nnz = int(max(np.diff(mat.indptr).max(initial=0),
                                np.bincount(mat.indices, minlength=1).max(initial=0)))
        self._exact_hermitian = _exactly_hermitian(mat, data)
        self._lock = threading.Lock()
        self._factors = {}
        self._inverse_norms = {}
        self._m_matrices = {}    # (e, dtype) -> (proven M-matrix, A⁻¹·1)
        self.singular = np.zeros(self.batch, bool)
        self._analysis = analysis
        self._cholesky = {}     # dtype -> BatchedCholesky
        self.library = library if analysis is not None else self._choose_library()
        if n == 0:
            self.ordering = _Ordering(mat, "NATURAL")
        elif self.library != "superlu":
            # SuperLU only for elements refused (not positive definite, or
            # perturbed pivots), each with its own ordering
            self.ordering = ordering or _Ordering(mat, "COLAMD")
        else:
            self.ordering = ordering or self._order()
        self.factors(self.dtype)

    def _choose_library(self):
        """The factorization of the batch (docs/batched.md, "Direct path"):

        * every element bitwise Hermitian with a positive diagonal:
          ``"cholesky"`` (the batched kernels) for shallow elimination or
          without CHOLMOD, ``"cholmod"`` otherwise (one symbolic analysis,
          ``LLᴴ`` per element); an element not positive definite is factored
          by SuperLU instead;
        * otherwise, from ``LIBRARY_MIN_N`` unknowns, the ``LU`` library
          ``sparsediff.solve`` would choose (UMFPACK, or MKL Pardiso for real
          matrices whose graph is not two-dimensional) with one symbolic
          analysis, when installed;
        * else ``"superlu"`` (one ordering, pre-permuted factorizations).
        """
        mat, data = self.mat, self.data
        backend = mat.backend
        if getattr(backend, "device", False) or not mat.nnz or not self.finite.any():
            return "superlu"
        libs = ()
        if (data.dtype in (np.float64, np.complex128)
                and hasattr(backend, "direct_libraries")):
            try:
                libs = backend.direct_libraries()
            except Exception:  # noqa: BLE001 - a broken optional library: ours
                libs = ()
        fin = self.finite
        on = mat.rows == mat.indices
        if not (self._exact_hermitian[fin].all() and np.count_nonzero(on) == mat.shape[0]
                and np.all(data[fin][:, on].real > 0)):
            if not libs or mat.shape[0] < LIBRARY_MIN_N:
                return "superlu"     # the rule of sparsediff.solve (docs/direct.md)
            return _auto_lu(mat, libs, data.dtype)
        cholesky = CholeskyAnalysis(mat, self.func)
        if "cholmod" in libs and cholesky.flops > CHOLESKY_MAX_DEPTH * cholesky.fill:
            return "cholmod"
        self._analysis = cholesky
        return "cholesky"

    # -- factorization -----------------------------------------------------

    def _lu(self, values, spec):
        m = self.mat
        o = self.ordering if hasattr(self, "ordering") else None
        if o is not None and o.natural:
            csc = sp.csc_array((values[o.gather], o.indices, o.indptr), shape=m.shape)
        else:
            csc = sp.csc_array((values, m.indices, m.indptr), shape=m.shape)
        try:
            return m.backend.lu(csc, permc_spec=spec, func=self.func)
        except RuntimeError as exc:
            if "singular" in str(exc).lower():
                return None
            raise

    def _library_factor(self, library, values):
        """A factor by an optional library on the shared analysis; ``None``
        for an element UMFPACK finds singular; ``_REFUSED`` for one that
        SuperLU must take (not positive definite for CHOLMOD, perturbed
        pivots in Pardiso)."""
        m = self.mat
        try:
            return m.backend.direct_factor(
                library, m.shape[0], m.rows.astype(np.int64),
                m.indices.astype(np.int64), values, self._analysis, func=self.func)
        except PerturbedPivotsError:
            return _REFUSED
        except ArithmeticError:
            return _REFUSED if library == "cholmod" else None

    def _order(self):
        """The ordering of the first element that factors (see the module)."""
        for e in np.flatnonzero(self.finite):
            spec = _choose_ordering(self.mat, np.abs(self.data[e]))
            lu = self._lu(self.data[e], spec)
            if lu is None:
                continue
            perm_r, perm_c = getattr(lu, "perm_r", None), getattr(lu, "perm_c", None)
            if perm_r is None or perm_c is None:
                return _Ordering(self.mat, spec)
            return _Ordering(self.mat, spec, perm_r, perm_c)
        return _Ordering(self.mat, "COLAMD")

    def factors(self, dtype):
        """The B factorizations in ``dtype`` (``None``: singular or non-finite)."""
        dtype = np.dtype(dtype)
        lus = self._factors.get(dtype)
        if lus is not None:
            return lus
        with self._lock:
            lus = self._factors.get(dtype)
            if lus is not None:
                return lus
            if self.library == "cholesky":
                return self._cholesky_factors(dtype)
            o = self.ordering
            spec = "NATURAL" if o.natural else o.spec
            n = self.mat.shape[0]

            library = self.library if dtype == self.dtype else "superlu"
            first = {}

            def one(e):
                if not self.finite[e] or n == 0:
                    return None
                if self.mat.nnz == 0:
                    return None
                if e in first:
                    return first[e]
                values = self.data[e].astype(dtype, copy=False)
                if library != "superlu":
                    f = self._library_factor(library, values)
                    if f is not _REFUSED:
                        return f
                return self._lu(values, spec)

            workers = self.workers
            if library != "superlu":
                # CHOLMOD and UMFPACK (through their binding) keep the GIL, and
                # Pardiso runs its own threads: the elements one after another
                workers = 1
                if self._analysis is None:
                    # the symbolic analysis once, from the first element that
                    # factors
                    for e in np.flatnonzero(self.finite):
                        f = first[e] = self._library_factor(library, self.data[e])
                        if f is _REFUSED:
                            first[e] = self._lu(self.data[e], spec)
                        elif f is not None:
                            self._analysis = f.analysis
                            break
            lus = batch_map(one, range(self.batch), workers)
            if n:
                self.singular |= np.array([lu is None for lu in lus], bool) & self.finite
            self._factors[dtype] = lus
            return lus

    def _cholesky_factors(self, dtype):
        """The batched Cholesky factors in ``dtype``; SuperLU for an element
        that is not positive definite (under ``self._lock``)."""
        chol = BatchedCholesky(self._analysis, self.data, self.finite, dtype,
                               self.workers)
        self._cholesky[dtype] = chol
        lus = [chol.element(e) for e in range(self.batch)]
        spec = self.ordering.spec
        for e in np.flatnonzero(self.finite & ~chol.ok):
            lus[e] = self._lu(self.data[e].astype(dtype, copy=False), spec)
        if self.mat.shape[0]:
            self.singular |= np.array([lu is None for lu in lus], bool) & self.finite
        self._factors[dtype] = lus
        return lus

    # -- solves ----------------------------------------------------------------

    def _solve_one(self, lu, b, trans):
        """``op(A_e) x = b`` for a 2-D ``b`` in the factor's dtype."""
        if getattr(lu, "library", None) == "cholesky":
            return lu.solve(b, trans)
        if getattr(lu, "library", None) == "cholmod":
            # A = Aᴴ (checked): H is N; the factor handles T (conj for complex)
            return lu.solve(np.ascontiguousarray(b), "T" if trans == "T" else "N")
        if getattr(lu, "library", None) in ("umfpack", "pardiso"):
            return lu.solve(np.ascontiguousarray(b), trans)      # LU of A itself
        o = self.ordering
        if not o.natural:
            t = {"N": "T", "T": "N", "H": "_conj"}[trans]
            if t == "_conj":
                return np.conj(lu.solve(np.conj(b), trans="N"))
            return lu.solve(b, trans=t)
        if trans == "N":
            return lu.solve(np.ascontiguousarray(b[o.ipc]), trans="T")[o.pr]
        if trans == "T":
            return lu.solve(np.ascontiguousarray(b[o.ipr]), trans="N")[o.pc]
        return np.conj(lu.solve(np.ascontiguousarray(np.conj(b)[o.ipr]),
                                trans="N"))[o.pc]

    def _solve_factor(self, lu, b, factor_dtype, trans):
        m = b.shape[1]
        if np.iscomplexobj(b) and np.dtype(factor_dtype).kind != "c":
            bf = np.concatenate([b.real, b.imag], axis=1).astype(factor_dtype)
            y = self._solve_one(lu, bf, trans)
            return (y[:, :m] + 1j * y[:, m:]).astype(b.dtype)
        return np.asarray(self._solve_one(lu, b.astype(factor_dtype, copy=False),
                                          trans), dtype=b.dtype)

    def solve_batch(self, b3, *, trans="N", elements=None, x0=None, rtol=None,
                    atol=None, maxiter=None):
        """Solve ``op(A_e) x_e = b3[e]`` for the elements in ``elements``
        (a boolean mask, default all); returns ``(x3, infos)`` with one
        :class:`SolveInfo` (per-column arrays) per element, ``None`` for
        elements not solved (their ``x`` is NaN)."""
        B, n, m = b3.shape
        if elements is None:
            elements = np.ones(B, bool)
        factor_dtype = np.result_type(self.dtype, real_dtype(b3.dtype))
        lus = self.factors(factor_dtype)
        kind = "N" if trans == "N" else "T"
        x3 = None                     # NaN for what is not solved, made when needed
        batched = np.zeros(B, bool)
        if self.library == "cholesky" and n:
            # every element's solve in one pass over the factors' indices
            chol = self._cholesky[np.dtype(factor_dtype)]
            batched = elements & np.array(
                [getattr(lu, "library", None) == "cholesky" for lu in lus], bool)
            if batched.any():
                # the ones-vector solves of the M-matrix certificate ride along
                # as one more column (one pass over the factors for both)
                certify = self._certificates_needed(factor_dtype, batched)
                fuse = certify.any() and real_dtype(b3.dtype) == factor_dtype
                rhs = b3
                if fuse:
                    rhs = np.concatenate([b3, np.ones((B, n, 1), dtype=b3.dtype)], axis=2)
                x = self._cholesky_solve(chol, rhs, factor_dtype, trans)
                if not fuse and batched.all() and x.dtype == b3.dtype:
                    x3 = x                     # every element solved: no copy
                else:
                    x3 = np.full_like(b3, np.nan)
                    x3[batched] = x[batched, :, :m]
                if fuse:
                    self._certify(factor_dtype, certify, x[:, :, m:].real)
                elif certify.any():
                    ones = np.ones((B, n, 1), dtype=factor_dtype)
                    self._certify(factor_dtype, certify,
                                  chol.solve_batch(ones, "N", self.workers))

        if x3 is None:
            x3 = np.full_like(b3, np.nan)

        def one(e):
            if not elements[e] or n == 0 or lus[e] is None:
                return None
            if not batched[e]:
                x3[e] = self._solve_factor(lus[e], b3[e], factor_dtype, trans)
            return self._inverse_norm(e, factor_dtype, kind)

        # a thread per element only where there is work: a solve, or a
        # condition estimate not yet known (thread hand-offs cost more than
        # looking up the rest)
        busy = [e for e in range(B) if elements[e] and n and lus[e] is not None
                and (not batched[e] or self._inverse_norm_key(e, factor_dtype, kind)
                     not in self._inverse_norms
                     and not self._m_matrices.get((e, np.dtype(factor_dtype)),
                                                  (False,))[0])]
        workers = self.workers if len(busy) > 1 else 1
        inv = batch_map(one, range(B), workers)
        if n == 0:
            x3[...] = 0
        finite_cols = np.isfinite(x3).all(axis=1)           # (B, m), one pass
        xz = x3 if finite_cols.all() else np.nan_to_num(x3)
        stats = self._residual_stats(xz, b3, trans)
        res_norms, rhs_norms = np.sqrt(stats[0]), np.sqrt(stats[1])
        errors = self._forward_errors(stats[2], stats[3], inv)
        # the reports: built per element on first access from these arrays;
        # the rare elements that need more (no unknowns, no factor, possibly
        # singular to working precision) are decided here
        solved = elements.copy()
        special = {}
        norm = self._norm1 if kind == "N" else self._norminf
        inv_arr = np.array([np.nan if v is None else v for v in inv], np.float64)
        kappa = norm * inv_arr
        column_ok = finite_cols.copy()
        eps = float(np.finfo(factor_dtype).eps)
        for e in np.flatnonzero(elements):
            if n == 0:
                special[e] = make_info(np.ones(m, bool), np.zeros(m), np.zeros(m),
                                       rhs_norms[e], self.method, [], False, trans)
            elif lus[e] is None:
                reason = "singular" if self.finite[e] else "nonfinite"
                special[e] = make_info(np.zeros(m, bool), np.zeros(m),
                                       np.full(m, np.nan), rhs_norms[e], self.method,
                                       [reason], False, trans)
                x3[e] = np.nan
            elif kappa[e] * eps >= SINGULAR_BOUND and (
                    self._singular_to_working_precision(e, factor_dtype, kappa[e])):
                column_ok[e] = False
        converged = column_ok.all(axis=1)
        for e, info in special.items():
            converged[e] = info.converged
        infos = DirectReports(solved, converged, special, res_norms, rhs_norms,
                              column_ok, kappa, errors, self.method, trans)
        return x3, infos

    def _residual_stats(self, xz, b3, trans):
        """Per element and column (4, B, m): ``‖r‖²``, ``‖b‖²``, the numerator
        of the forward error bound and ``Σ |x|`` (``batched_residual_stats``),
        for ``xz`` finite."""
        B, n, m = b3.shape
        coef = (self._row_nnz + 1) * float(np.finfo(xz.dtype).eps)
        # a batch that is bitwise symmetric (real) or Hermitian has op(A) = A
        # for T (H): the row-oriented product, no scatter
        if trans != "N" and self._exact_hermitian.all() and (
                trans == "H" or not np.iscomplexobj(self.data)):
            trans_mv = "N"
        else:
            trans_mv = trans
        stats = np.empty((4, B, m))
        if trans_mv == "N" and isinstance(self._analysis, CholeskyAnalysis) and n:
            # batch-first, one pass per element over the pattern: no layout
            # copies and no (B, n, m) temporaries
            kernel = self._analysis.kernels.residual_report
            dtype = np.result_type(self.dtype, xz.dtype)
            data = self.data.astype(dtype, copy=False)
            x = np.ascontiguousarray(xz, dtype=dtype)
            b = np.ascontiguousarray(b3, dtype=dtype)
            real = np.empty(0, dtype).real.dtype
            mat = self.mat

            def run(r):
                kernel(mat.indptr, mat.indices, data, x, b, coef, np.empty(m, dtype),
                       np.empty(m, real), stats, r[0], r[1])

            batch_map(run, _ranges(B, self.workers), self.workers)
            return stats
        # batch-last, (n, B, m): two copies in, none out, and every reduction
        # runs down contiguous rows
        xt, bt = swap01(self.mat, xz), swap01(self.mat, b3)
        rt = batch_last_matvec(self.mat, self.data_t, xt, trans_mv)
        np.subtract(bt, rt, out=rt)
        axt = batch_last_matvec(self.mat, self.abs_t, np.abs(xt), trans_mv)
        self.mat.backend.kernels.batched_residual_stats(xt, bt, rt, axt, coef, stats)
        return stats

    def pattern_products(self, x3, lam3, trans):
        """Canonical ``∂L/∂data`` (B, nnz) from finite ``x3`` and ``λ3``
        (``_common.pattern_products``; batch-first on the Cholesky path)."""
        if not isinstance(self._analysis, CholeskyAnalysis) or not self.mat.shape[0]:
            return pattern_products(self.mat, x3, lam3, trans)
        u, v = pattern_operands(x3, lam3, trans)
        dtype = np.result_type(u.dtype, v.dtype)
        u = np.ascontiguousarray(u, dtype=dtype)
        v = np.ascontiguousarray(v, dtype=dtype)
        B = u.shape[0]
        out = np.empty((B, self.mat.nnz), dtype=dtype)
        kernel, mat = self._analysis.kernels.pattern_product, self.mat

        def run(r):
            kernel(mat.indptr, mat.indices, u, v, dtype.type(-1), np.empty(1, dtype),
                   out, r[0], r[1])

        batch_map(run, _ranges(B, self.workers), self.workers)
        return out

    def _cholesky_solve(self, chol, b3, factor_dtype, trans):
        """``op(A_e)⁻¹ b3[e]`` for every element by the batched factors."""
        m = b3.shape[2]
        if np.iscomplexobj(b3) and np.dtype(factor_dtype).kind != "c":
            bf = np.concatenate([b3.real, b3.imag], axis=2).astype(factor_dtype)
            y = chol.solve_batch(bf, trans, self.workers)
            return (y[:, :, :m] + 1j * y[:, :, m:]).astype(b3.dtype)
        y = chol.solve_batch(b3.astype(factor_dtype, copy=False), trans, self.workers)
        return y.astype(b3.dtype, copy=False)

    def _certificates_needed(self, dtype, elements):
        """Elements whose M-matrix certificate (:meth:`_m_matrix`) is not yet
        decided in ``dtype``; the non-candidates are decided here (no)."""
        dtype = np.dtype(dtype)
        todo = np.zeros(self.batch, bool)
        if dtype.kind != "f":
            return todo
        for e in np.flatnonzero(elements):
            todo[e] = (e, dtype) not in self._m_matrices
        if not todo.any():
            return todo
        cand = todo & z_matrix(self.mat, self.data)
        for e in np.flatnonzero(todo & ~cand):
            self._m_matrices[(e, dtype)] = (False, None)
        return cand

    def _certify(self, dtype, elements, y):
        """:meth:`_m_matrix` for every element in ``elements`` at once, from
        ``y[e] = A_e⁻¹·1`` (B, n, 1): ``_conditioning.semipositive``, batched
        (``y ≥ 0`` and ``A y > 0`` above its rounding bound)."""
        dtype = np.dtype(dtype)
        y = y.astype(dtype, copy=False)
        yt = swap01(self.mat, np.nan_to_num(y.astype(np.float64), nan=-1.0))
        ay = batch_last_matvec(self.mat, self.data_t.astype(np.float64, copy=False), yt)
        bound = batch_last_matvec(self.mat, self.abs_t.astype(np.float64, copy=False),
                                  yt)
        proven = (np.isfinite(y).all(axis=(1, 2)) & np.all(y >= 0, axis=(1, 2))
                  & np.all(ay > positivity_margin(self._row_nnz) * bound, axis=(0, 2)))
        for e in np.flatnonzero(elements):
            self._m_matrices[(e, dtype)] = (bool(proven[e]), y[e, :, 0])

    # -- conditioning (per element, as solvers/direct.py) -----------------------

    def _inverse_norm_key(self, e, dtype, kind):
        if kind == "T" and self._exact_hermitian[e]:
            kind = "N"        # A = Aᴴ bitwise: ‖A⁻ᴴ‖₁ = ‖A⁻¹‖₁ (saves the solves)
        return (e, np.dtype(dtype), kind)

    def _inverse_norm(self, e, dtype, kind):
        key = self._inverse_norm_key(e, dtype, kind)
        kind = key[2]
        est = self._inverse_norms.get(key)
        if est is not None:
            return est
        lu = self.factors(dtype)[e]
        n = self.mat.shape[0]
        if lu is None:
            est = 0.0 if n == 0 else np.inf
        else:
            def sol(trans, r=None, c=None):
                def f(v):
                    w = v if r is None else v / r
                    y = self._solve_one(lu, w[:, None].astype(dtype), trans)[:, 0]
                    return y if c is None else y / c
                return f

            if kind != "equilibrated" and self._m_matrix(e, lu, dtype):
                # A⁻¹ ≥ 0: ‖A⁻¹‖₁ = ‖A⁻ᵀ·1‖∞, ‖A⁻ᵀ‖₁ = ‖A⁻¹·1‖∞ (exact), as
                # solvers/direct.py; A = Aᵀ makes the two ones-vector solves one
                y = self._m_matrices[(e, np.dtype(dtype))][1]
                if kind == "N" and not self._exact_hermitian[e]:
                    y = sol("H")(np.ones(n, dtype=dtype))
                est = float(np.abs(y).max()) if np.isfinite(y).all() else np.inf
            elif kind == "N":
                est = inverse_norm1(sol("N"), sol("H"), n, dtype)
            elif kind == "T":
                est = inverse_norm1(sol("H"), sol("N"), n, dtype)
            else:
                r, c = self._equilibration(e)
                r, c = r.astype(dtype), c.astype(dtype)
                est = inverse_norm1(sol("N", r, c), sol("H", c, r), n, dtype)
        self._inverse_norms[key] = est
        return est

    def _m_matrix(self, e, lu, dtype):
        """Whether element ``e`` is proven a nonsingular M-matrix (``A⁻¹ ≥ 0``),
        by ``_conditioning.z_matrix`` and ``semipositive`` on ``A⁻¹·1`` (kept
        for the norm). Cached per element and precision."""
        key = (e, np.dtype(dtype))
        known = self._m_matrices.get(key)
        if known is not None:
            return known[0]
        data, ok, y = self.data[e], False, None
        if np.dtype(dtype).kind == "f" and z_matrix(self.mat, data):
            n = self.mat.shape[0]
            y = self._solve_one(lu, np.ones((n, 1), dtype=dtype), "N")[:, 0]
            ok = semipositive(self.mat, data, y, self._row_nnz)
        self._m_matrices[key] = (ok, y)
        return ok

    def _equilibration(self, e):
        """Row and column scalings of element ``e`` (``_conditioning.equilibration``)."""
        return equilibration(self.mat, self.data[e])

    def _singular_to_working_precision(self, e, dtype, kappa):
        eps = float(np.finfo(dtype).eps)
        if not kappa * eps >= SINGULAR_BOUND:
            return False
        mat = self.mat
        r, c = self._equilibration(e)
        vals = np.abs(self.data[e]).astype(np.float64) * r[mat.rows] * c[mat.indices]
        norm = float(np.bincount(mat.indices, weights=vals,
                                 minlength=mat.shape[0]).max(initial=0.0))
        return bool(norm * self._inverse_norm(e, dtype, "equilibrated") * eps
                    >= SINGULAR_BOUND)

    @staticmethod
    def _forward_errors(wn, xn, inv):
        """LAPACK's FERR in the 1-norm of every element, largest over its
        columns, from the column sums ``wn = Σ |r| + (k+1)·eps·(|A||x| + |b|)``
        and ``xn = Σ |x|`` (B, m) (``inv[e]`` its ‖op(A_e)⁻¹‖₁ estimate,
        ``None``: not solved)."""
        inv_norm = np.array([np.nan if v is None else v for v in inv], np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ferr = np.where(xn > 0, inv_norm[:, None] * wn / np.where(xn > 0, xn, 1.0),
                            np.where(wn > 0, np.inf, 0.0))
        ferr = np.where(np.isnan(ferr), np.inf, ferr)
        return ferr.max(axis=1, initial=0.0)

    def update(self, data, finite):
        """A new engine for new values on the same pattern (same ordering)."""
        analysis = self._analysis if self.library != "superlu" else None
        new = BatchedDirect(self.mat, data, finite, workers=self.workers,
                            func=self.func, ordering=self.ordering,
                            analysis=analysis, library=self.library)
        if (new.library in ("cholmod", "cholesky")
                and not new._exact_hermitian[finite].all()):
            # new values no longer Hermitian: start afresh with SuperLU
            new = BatchedDirect(self.mat, data, finite, workers=self.workers,
                                func=self.func)
        return new
