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

from .._errors import SingularMatrixError
from ._base import Preconditioner, check_diagonal, diagonal, hermitian_part, is_complex

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


def _csr(M, dtype):
    """A canonical CSR copy with int32 indices (pyamg's kernels need them)."""
    M = sp.csr_array(M, dtype=dtype, copy=True)
    M.sum_duplicates()
    M.sort_indices()
    if M.indices.dtype != np.int32 and M.shape[0] < np.iinfo(np.int32).max \
            and M.nnz < np.iinfo(np.int32).max:
        M.indices = M.indices.astype(np.int32)
        M.indptr = M.indptr.astype(np.int32)
    return M


def _adjoint(M, dtype):
    return _csr(M.conj().T, dtype)


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
        A = _csr(sp.csr_array((mat.data, mat.indices, mat.indptr), shape=mat.shape),
                 self._work)
        if symmetry == "nonsymmetric":
            H = None
        elif symmetry == "hermitian":
            H = ((A + A.conj().T) * 0.5).tocsr()
        else:
            sym = mat.symmetry
            rtol = sym.tol if hermitian_rtol is None else hermitian_rtol
            H = hermitian_part(A) if sym.asymmetry <= rtol else None
        self.hermitian = H is not None
        if H is not None:
            A = _csr(H, self._work)
        self._build(A, aggregates)
        self.setup_time = time.perf_counter() - t0

    # -- setup --------------------------------------------------------------

    def _build(self, A, aggregates):
        import pyamg

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
        # pyamg keeps A by reference and may sort it in place: it gets a copy.
        # Its spectral-radius estimates start from NumPy's *global* random
        # generator: seed it for a reproducible hierarchy (update() equals a
        # fresh build) and restore the caller's state afterwards.
        # The setup solves many tiny eigenvalue problems: multi-threaded BLAS
        # makes it 10-20x slower on a 2-core machine (thread start-up and
        # spinning dominate), so BLAS runs on one thread meanwhile.
        with _GLOBAL_RANDOM_LOCK, warnings.catch_warnings(record=True) as caught, \
                threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("always")
            state = np.random.get_state()  # noqa: NPY002 - pyamg uses it
            try:
                np.random.seed(0)  # noqa: NPY002
                ml = pyamg.smoothed_aggregation_solver(A.copy(), **kwargs)
            finally:
                np.random.set_state(state)  # noqa: NPY002
        for w in caught:
            warnings.warn(f"`{self.func}`: pyamg setup: {w.message}", w.category,
                          stacklevel=4)

        levels = []
        for k, lev in enumerate(ml.levels[:-1]):
            Ak = A if k == 0 else _csr(lev.A, self._work)
            if self.hermitian and k > 0:
                # the Galerkin product is Hermitian only to rounding; make the
                # stored level exactly Hermitian so that M = Mᴴ holds
                Ak = _csr((Ak + Ak.conj().T) * 0.5, self._work)
            d = Ak.diagonal()
            if k > 0 and np.any(d == 0):
                raise SingularMatrixError(
                    f"`{self.func}`: the 'amg' hierarchy has a zero diagonal entry "
                    f"on level {k}; Gauss–Seidel smoothing is impossible there. "
                    f"Try M='ilu'."
                )
            P = _csr(lev.P, self._work)
            R = _adjoint(P, self._work) if self.hermitian else _csr(lev.R, self._work)
            levels.append((Ak, R, P))
        coarse = ml.levels[-1].A
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
        self._aggregates = [lev.AggOp for lev in ml.levels[:-1]]
        self.levels = len(ml.levels)
        self.operator_complexity = float(
            sum(lv[0].nnz for lv in levels) + np.count_nonzero(coarse)
        ) / max(A.nnz, 1)

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
