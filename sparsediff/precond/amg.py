"""Algebraic multigrid preconditioning (smoothed aggregation, via pyamg).

pyamg builds the hierarchy; the V-cycle is ours, because pyamg's
``aspreconditioner()`` has no transpose and its relaxation kernels silently
misread strided vectors. One V-cycle from a zero initial guess is the linear
operator ``M``; with symmetric Gauss–Seidel as pre- and post-smoother it is
written, for level ``l`` with matrix ``A``, prolongation ``P``, restriction
``R`` and coarse operator ``B_c``, as

    x₁ = S b,  x₂ = x₁ + P B_c R (b − A x₁),  x₃ = x₂ + S (b − A x₂),

with ``S`` one symmetric Gauss–Seidel sweep (forward then backward).

Adjoint. Expanding the cycle and transposing term by term gives ``Mᴴ`` as the
same V-cycle run on ``Aᴴ`` with restriction ``Pᴴ``, prolongation ``Rᴴ``,
coarse operator ``B_cᴴ`` and the adjoint smoothers in reverse order. The
adjoint of a symmetric sweep on ``A`` is a symmetric sweep on ``Aᴴ``
(forward GS is ``(D+L)⁻¹``, whose adjoint ``(D+L)⁻ᴴ`` is backward GS on
``Aᴴ``), so ``Mᴴ`` is simply the cycle on the conjugate-transposed hierarchy:
the *exact* adjoint of the forward preconditioner, built once from the same
hierarchy, with no second setup. For a Hermitian ``A``, ``R = Pᴴ`` and every
level is Hermitian, so the cycle is self-adjoint: ``hermitian`` is true and
``rmatvec`` is ``matvec``.

Why the exact transpose rather than a second hierarchy built for ``Aᴴ``:
measured on upwind convection–diffusion, 128² grid, restarted GMRES(30) to
``rtol = 1e-8`` (``benchmarks/bench_amg_transpose.py``; full table in
``benchmarks/results_amg_transpose.md``), GMRES iterations:

    Péclet   forward (M)   adjoint, exact Mᴴ   adjoint, new hierarchy   none
       10           8              8                     8               595
      100           7              7                     7               446
     1000           7              7                     7               382
    10000           5              5                     5               397

Both adjoints converge as fast as the forward solve, but a second hierarchy
doubles the setup (the dominant cost), while the exact adjoint costs one
O(nnz) transposition of the levels, on first use. It is also exact:
``Mᴴ Aᴴ = (A M)ᴴ`` has the forward preconditioned spectrum.
"""

import threading
import time
import warnings

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .._dtypes import is_complex
from .._errors import SingularMatrixError
from ..backend._csr import diagonal
from ._base import Preconditioner, check_diagonal, hermitian_part

__all__ = ["AMG"]

_GLOBAL_RANDOM_LOCK = threading.Lock()
_SMOOTHER = ("gauss_seidel", {"sweep": "symmetric"})
SYMMETRY = ("auto", "hermitian", "nonsymmetric")


def _gs_sweep(A, x, b):
    """One symmetric Gauss–Seidel sweep on ``A x = b`` in place (1-D, contiguous)."""
    from pyamg import amg_core

    n = x.shape[0]
    amg_core.gauss_seidel(A.indptr, A.indices, A.data, x, b, 0, n, 1)
    amg_core.gauss_seidel(A.indptr, A.indices, A.data, x, b, n - 1, -1, -1)


def _int32_ok(M):
    return (M.shape[0] < np.iinfo(np.int32).max
            and M.nnz < np.iinfo(np.int32).max)


def _csr(M, dtype, copy=True):
    """A canonical CSR matrix with int32 indices (pyamg's kernels need them).

    ``copy=False`` reuses ``M``'s arrays where they already fit and may
    canonicalize ``M`` in place: only for matrices this module owns.
    """
    M = sp.csr_array(M, dtype=dtype, copy=copy)
    M.sum_duplicates()
    M.sort_indices()
    if M.indices.dtype != np.int32 and _int32_ok(M):
        M.indices = M.indices.astype(np.int32)
        M.indptr = M.indptr.astype(np.int32)
    return M


def _adjoint(M, dtype):
    return _csr(M.conj().T, dtype)


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def _shared(mat, dtype):
    """The validated matrix as a CSR array sharing its arrays, read-only.

    ``None`` when its arrays cannot serve as they are (another dtype, 64-bit
    indices that fit in 32 bits): then a converted copy is needed. The arrays
    are read-only views, so neither pyamg nor the cycle can write into the
    validated matrix, which the solver iterates with.
    """
    if mat.dtype != dtype:
        return None
    M = sp.csr_array((_readonly(mat.data), _readonly(mat.indices),
                      _readonly(mat.indptr)), shape=mat.shape)
    if M.indices.dtype != np.int32 and _int32_ok(M):
        return None
    # canonical already (sorted, no duplicates): record it so that nothing
    # tries to sort the read-only arrays
    M.has_sorted_indices = True
    M.has_canonical_format = True
    return M


def _root(a):
    """The array owning ``a``'s memory (``a`` itself when it owns it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _bytes(arrays):
    """Total bytes of the distinct buffers behind ``arrays``."""
    roots = {id(_root(a)): _root(a) for a in arrays}
    return sum(r.nbytes for r in roots.values())


def _held_arrays(obj, seen=None):
    """Every NumPy array reachable from ``obj`` through sparse matrices,
    tuples, lists and dicts (used to account for what a hierarchy holds)."""
    out = []
    stack = [obj]
    seen = set() if seen is None else seen
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            out.append(o)
        elif sp.issparse(o):
            stack.extend(getattr(o, name) for name in ("data", "indices", "indptr")
                         if hasattr(o, name))
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return out


class AMG(Preconditioner):
    """Smoothed-aggregation AMG V-cycle, ``M ≈ A⁻¹``, with its exact adjoint.

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix (canonical CSR); its diagonal must be nonzero.
    func : str
        Public function name used in error messages.
    symmetry : {"auto", "hermitian", "nonsymmetric"}
        ``"auto"`` treats ``A`` as Hermitian when it is Hermitian to rounding
        (the test of CG and MINRES, :mod:`sparsediff._symmetry`:
        ``|a_ij − conj(a_ji)| ≤ hermitian_rtol · sqrt(r_i r_j)`` for every
        stored entry, ``r_i`` the largest ``|a_ik|`` of row ``i``) and then
        builds everything from ``(A + Aᴴ)/2``, which is exactly Hermitian in
        floating point; ``"hermitian"`` does so always (a
        symmetric preconditioner for a mildly non-symmetric ``A``);
        ``"nonsymmetric"`` builds pyamg's non-symmetric hierarchy (restriction
        smoothed with ``Aᴴ``).
    hermitian_rtol : float or None
        Tolerance of the ``"auto"`` test; ``None`` means the library's
        (``HERMITIAN_RTOL_ULPS · eps(dtype)``, 100 ulps).
    max_levels, max_coarse : int
        Hierarchy limits (pyamg's meaning). The coarsest level is solved with
        a dense pseudo-inverse, so it also handles a singular coarse operator
        (pure Neumann problems).
    smooth : tuple
        Prolongation smoother (pyamg's ``smooth``). The default Jacobi
        smoother estimates a spectral radius by Arnoldi on every level, which
        dominates the setup; ``("jacobi", {"omega": 4/3, "weighting":
        "local"})`` skips it (measured: 5× faster setup on convection–diffusion
        128², one more GMRES iteration; on Poisson 256² 10 % faster, 13 instead
        of 10 iterations).
    reuse : {"aggregates", "none"}
        What :meth:`update` keeps: the aggregation of every level (the
        strength-of-connection graph and the aggregates are skipped; the
        prolongators are rebuilt from the new values) or nothing.
    aggregates : list of sparse arrays, optional
        Predefined aggregation operators, one per coarsening (used by
        :meth:`update`).

    Raises
    ------
    SingularMatrixError
        A zero diagonal entry on some level (Gauss–Seidel divides by it), or a
        hierarchy with non-finite values.

    Warns
    -----
    Warnings emitted by pyamg's setup are re-emitted with the function name.

    Notes
    -----
    The cycle is computed in float64 (complex128 for complex ``A``), as pyamg's
    coarse levels are; results are returned in
    ``result_type(A.dtype, X.dtype)``. Complex Hermitian matrices are
    supported (pyamg's smoothed aggregation handles them).

    Adjoint choice, measured (see the module docstring and
    ``benchmarks/results_amg_transpose.md``): ``rmatvec`` is the exact adjoint
    of the forward V-cycle of the same hierarchy, not a cycle of a second
    hierarchy built for ``Aᴴ``.

    :meth:`update` with ``reuse="aggregates"`` keeps the aggregates and redoes
    the numerics (candidate smoothing, tentative and smoothed prolongators,
    Galerkin products). Measured: 0.5–0.9 of a full setup (2-D Poisson 256²,
    convection–diffusion 128²), with the same GMRES iterations; the
    spectral-radius estimates of the prolongation smoother, which depend on
    the values, dominate what remains.

    pyamg draws its spectral-radius start vectors from NumPy's global random
    generator; the setup seeds it (and restores the caller's state, under a
    lock), so that equal matrices give identical hierarchies.

    See Also
    --------
    pyamg.smoothed_aggregation_solver
    """

    name = "amg"
    has_adjoint = True

    def __init__(self, mat, *, func="sparsediff.precond.AMG", symmetry="auto",
                 hermitian_rtol=None, max_levels=25, max_coarse=50,
                 smooth=("jacobi", {"omega": 4.0 / 3.0}), reuse="aggregates",
                 aggregates=None):
        t0 = time.perf_counter()
        if symmetry not in SYMMETRY:
            raise ValueError(
                f"`{func}`: `symmetry` must be one of {SYMMETRY}; got {symmetry!r}."
            )
        if reuse not in ("aggregates", "none"):
            raise ValueError(
                f"`{func}`: `reuse` must be 'aggregates' or 'none'; got {reuse!r}."
            )
        self.shape = mat.shape
        self.dtype = mat.dtype
        self.func = func
        self._backend = mat.backend
        self.options = dict(symmetry=symmetry, hermitian_rtol=hermitian_rtol,
                            max_levels=max_levels, max_coarse=max_coarse,
                            smooth=smooth, reuse=reuse)
        self._work = np.dtype(np.complex128 if is_complex(mat.dtype) else np.float64)
        self._lock = threading.Lock()
        self._ops = {}
        self._aggregates = None
        self.hermitian = False
        self.levels = 0
        if mat.shape[0] == 0:
            self.hermitian = True
            self.setup_time = time.perf_counter() - t0
            return
        check_diagonal(diagonal(mat), func, "'amg'")
        # Level 0 is the validated matrix itself when it can be (work dtype,
        # int32 indices, exactly Hermitian or built non-symmetric): no copy.
        # Otherwise one matrix is made, (A + Aᴴ)/2 or a converted copy, and
        # serves both pyamg's setup and the level-0 smoother.
        if symmetry == "nonsymmetric":
            herm, exact = False, False
        elif symmetry == "hermitian":
            herm, exact = True, False
        else:
            sym = mat.symmetry
            rtol = sym.tol if hermitian_rtol is None else hermitian_rtol
            herm = sym.asymmetry <= rtol
            exact = herm and sym.exact
        self.hermitian = herm
        A = _shared(mat, self._work)
        if herm and not exact:
            # "hermitian" takes the sum even for an exactly Hermitian A (it
            # drops stored zeros, as it always has)
            A = hermitian_part(mat.to_scipy() if A is None else A, dtype=self._work,
                               known_inexact=True)
            A = _csr(A, self._work, copy=False)
        elif A is None:
            A = _csr(mat.to_scipy(), self._work)
        self._build(A, aggregates)
        self.setup_time = time.perf_counter() - t0

    # -- setup --------------------------------------------------------------

    def _build(self, A, aggregates):
        """The hierarchy of the level-0 matrix ``A``: pyamg's setup, taken over."""
        # no name here holds pyamg's solver: _take_over releases it as it goes
        self._take_over(self._setup(A, aggregates), A)

    def _setup(self, A, aggregates):
        """pyamg's smoothed-aggregation setup, reproducible (returns its solver).

        The hierarchy comes from the backend's AMG factory; the seeding, the
        BLAS thread limit and the re-emitted warnings are this method's.
        """
        opts = self.options
        kwargs = dict(
            symmetry="hermitian" if self.hermitian else "nonsymmetric",
            presmoother=_SMOOTHER, postsmoother=_SMOOTHER,
            max_levels=opts["max_levels"], max_coarse=opts["max_coarse"],
            smooth=opts["smooth"], keep=True,
        )
        if aggregates:
            kwargs["aggregate"] = [("predefined", {"AggOp": agg}) for agg in aggregates]
            kwargs["strength"] = None  # only the aggregation would use it
        # pyamg keeps A by reference (as its level 0) and would sort it in
        # place: it gets the level-0 matrix itself, canonical (nothing to sort)
        # and, when it is the validated matrix, on read-only arrays.
        # Its spectral-radius estimates start from NumPy's *global* random
        # generator: seed it for a reproducible hierarchy (update() equals a
        # fresh build) and restore the caller's state afterwards.
        # The setup solves many tiny eigenvalue problems: multi-threaded BLAS
        # makes it 10-20x slower on a 2-core machine (thread start-up and
        # spinning dominate), so BLAS runs on one thread meanwhile.
        # keep=True is for the aggregates (update() reuses them); the other
        # extras (strength matrices, tentative prolongators, candidates,
        # pyamg's smoother closures) are dropped below, level by level.
        with _GLOBAL_RANDOM_LOCK, warnings.catch_warnings(record=True) as caught, \
                threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("always")
            state = np.random.get_state()  # noqa: NPY002 - pyamg uses it
            try:
                np.random.seed(0)  # noqa: NPY002
                ml = self._backend.amg_hierarchy(A, func=self.func, **kwargs)
            finally:
                np.random.set_state(state)  # noqa: NPY002
        for w in caught:
            warnings.warn(f"`{self.func}`: pyamg setup: {w.message}", w.category,
                          stacklevel=5)
        return ml

    def _take_over(self, ml, A):
        """Take over pyamg's output (``A``: the level-0 matrix it was given).

        Every operator is converted (BSR to CSR, exactly Hermitian coarse
        levels) and pyamg's version released at once, so that at most one
        level is held twice meanwhile.
        """
        w = self._work
        nlev = len(ml.levels)
        levels, aggregates = [], []
        for k in range(nlev - 1):
            lev = ml.levels[k]
            if k == 0:
                Ak = A  # the matrix pyamg was given: shared, not copied
            elif self.hermitian:
                # the Galerkin product is Hermitian only to rounding; make the
                # stored level exactly Hermitian so that M = Mᴴ holds
                Ak = _csr(hermitian_part(lev.A, dtype=w, known_inexact=True), w,
                          copy=False)
            else:
                Ak = _csr(lev.A, w, copy=False)
            d = Ak.diagonal()
            if k > 0 and np.any(d == 0):
                raise SingularMatrixError(
                    f"`{self.func}`: the 'amg' hierarchy has a zero diagonal entry "
                    f"on level {k}; Gauss–Seidel smoothing is impossible there. "
                    f"Try M='ilu'."
                )
            P = _csr(lev.P, w, copy=False)
            if self.hermitian:
                # R = Pᴴ: the transposed view (CSC, no copy) for real values
                R = P.T if not is_complex(w) else P.conj().T
            else:
                R = _csr(lev.R, w, copy=False)
            aggregates.append(lev.AggOp)
            ml.levels[k] = None  # release pyamg's A, P, R, C, T, B of this level
            levels.append((Ak, R, P))
        coarse = ml.levels[-1].A
        del ml
        coarse = coarse.toarray() if sp.issparse(coarse) else np.asarray(coarse)
        cinv = sla.pinv(coarse.astype(self._work))
        if self.hermitian:
            cinv = (cinv + cinv.conj().T) * 0.5
        ok = np.isfinite(cinv).all() and all(
            np.isfinite(m.data).all() for lv in levels for m in lv)
        if not ok:
            raise SingularMatrixError(
                f"`{self.func}`: the 'amg' hierarchy of `A` holds non-finite values; "
                f"`A` is not suitable for smoothed aggregation. Try M='ilu'."
            )
        self._ops["N"] = (levels, np.ascontiguousarray(cinv))
        self._aggregates = aggregates
        self.levels = nlev
        self.operator_complexity = float(
            sum(lv[0].nnz for lv in levels) + np.count_nonzero(coarse)
        ) / max(A.nnz, 1)

    @property
    def nbytes(self):
        """Bytes of the arrays this preconditioner holds (each buffer once).

        Counts the hierarchy (level matrices, restrictions, prolongations,
        the coarse pseudo-inverse), the adjoint hierarchy once built, and the
        aggregates kept for :meth:`update`. Level 0 is counted although it
        usually shares the validated matrix's arrays (see
        :meth:`owned_nbytes`).
        """
        return _bytes(_held_arrays([self._ops, self._aggregates]))

    def owned_nbytes(self, mat):
        """:attr:`nbytes` less the buffers shared with ``mat`` (a MatrixInput)."""
        shared = {id(_root(a)) for a in (mat.data, mat.indices, mat.indptr)}
        held = _held_arrays([self._ops, self._aggregates])
        return _bytes([a for a in held if id(_root(a)) not in shared])

    def _adjoint_ops(self):
        """The conjugate-transposed hierarchy (built on first use, then kept)."""
        ops = self._ops.get("H")
        if ops is not None:
            return ops
        with self._lock:
            ops = self._ops.get("H")
            if ops is None:
                levels, cinv = self._ops["N"]
                w = self._work
                # cycle on Aᴴ: restriction Pᴴ, prolongation Rᴴ, coarse B_cᴴ
                adj = [(_adjoint(Ak, w), _adjoint(P, w), _adjoint(R, w))
                       for Ak, R, P in levels]
                ops = (adj, np.ascontiguousarray(cinv.conj().T))
                self._ops["H"] = ops
        return ops

    # -- application --------------------------------------------------------

    def _work_dtype(self, dtype):
        if is_complex(dtype) and not is_complex(self._work):
            return np.dtype(np.float64)  # real cycle on both parts
        return self._work

    def _apply(self, X, trans):
        if trans == "T" and is_complex(self._work):
            # Mᵀ X = conj(Mᴴ conj(X))
            return np.conj(self._apply(np.conj(X), "H"))
        # real: Mᵀ = Mᴴ; Hermitian: Mᴴ = M
        ops = self._ops["N"] if trans == "N" or self.hermitian else self._adjoint_ops()
        # F-order: every column is one contiguous vector for the kernels
        Xf = np.asfortranarray(X)
        Y = np.empty(X.shape, dtype=self._work, order="F")
        for j in range(X.shape[1]):
            Y[:, j] = self._cycle(ops, Xf[:, j])
        return Y

    @staticmethod
    def _cycle(ops, b):
        """One V-cycle from a zero initial guess (a new 1-D array)."""
        levels, cinv = ops
        rhs, sol = [], []
        b = np.ascontiguousarray(b)
        for A, R, _ in levels:
            x = np.zeros_like(b)
            _gs_sweep(A, x, b)            # pre-smoothing
            rhs.append(b)
            sol.append(x)
            b = np.ascontiguousarray(R @ (b - A @ x))
        x = cinv @ b                      # coarsest level
        for k in range(len(levels) - 1, -1, -1):
            A, _, P = levels[k]
            x = sol[k] + P @ x            # coarse-grid correction
            _gs_sweep(A, x, rhs[k])       # post-smoothing
        return x

    def update(self, mat):
        """An AMG preconditioner for new values on the same pattern.

        With ``reuse="aggregates"`` the aggregation of every level is kept and
        only the numerics are rebuilt (see the class Notes for timings).
        """
        aggs = self._aggregates if self.options["reuse"] == "aggregates" else None
        return AMG(mat, func=self.func, aggregates=aggs, **self.options)
