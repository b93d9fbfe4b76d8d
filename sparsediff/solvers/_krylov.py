"""Machinery shared by the Krylov engines: the solve driver and the engine class.

Every Krylov method here is written once, against two callables on 2-D blocks
(``matvec(X) = op(A) X`` and ``psolve(X) = op(M) X``), and advances all
right-hand sides in lockstep with one scalar per column. The driver
(:func:`krylov_run`) owns everything that does not depend on the method:

* the stopping test ``‖b − op(A) x‖ ≤ max(rtol·‖b‖, atol)`` per column;
* zero right-hand sides (``x = 0`` exactly, no iteration) and initial guesses
  that already pass the test (a copy of ``x0``, no iteration);
* the final verdict, taken on the recomputed true residual of every column;
* the callback, called once per iteration with the current iterate.

Inside the methods, a column whose recursive residual passes the test gets its
true residual recomputed (apparent convergence is never trusted); if that
fails, the true residual replaces the recursive one and the column goes on.
Every ``STAGNATION_WINDOW`` iterations the true residual of the live columns is
recomputed as well (:meth:`State.check_stagnation`): a column stuck at the
rounding level whose best true residual stops halving stops with
``reason="stagnation"``, and the failure message reports that best residual as
the attainable accuracy. Columns that finish are dropped from the block
(compaction), so they stop costing.

How often the loop may read per-column flags to the host is the backend's
``check_every``. With ``check_every = 1`` (the CPU, where reading is free)
every decision above is taken where it arises, and a finished column leaves
the block at once. With ``check_every > 1`` (a device, where each read is a
synchronization) the iterations take no Python decision on array values: a
column that converges, breaks down, turns indefinite or non-finite is
*retired* by a mask (:meth:`State.stop`) — its step sizes are zero and every
piece of its state is kept as it was, so its ``x`` is the iterate of the
iteration that retired it — and its own iteration clock stops. Every
``check_every`` iterations (and when a column reaches ``maxiter``) a
checkpoint (:meth:`State.checkpoint`) reads the flags: columns retired for
apparent convergence get their true residual checked, and those that fail it
resume exactly where they stopped (with the true residual), so that
iterates, iteration counts and reasons are those of ``check_every = 1``; the
others are finished with their reason and their own iteration count.
"""

import numpy as np

from ..backend._csr import diagonal as csr_diagonal
from ._common import column_norms, make_info
from ._operator import CSROperator, aslinearoperator
from ._state import STAGNATION_CHECKS, STAGNATION_WINDOW, State, _Run  # noqa: F401

__all__ = ["KrylovEngine", "State", "is_hermitian", "krylov_run", "matrix_free"]


def krylov_run(algorithm, matvec, psolve, b, x0=None, *, rtol=1e-8, atol=0.0,
               maxiter=None, callback=None, refuse=None, backend=None, **options):
    """Solve ``op(A) x = b`` (2-D ``b``) with one Krylov ``algorithm``.

    Returns ``(x, converged, iterations, residual, rhs_norm, reasons,
    details)`` with per-column arrays; ``details`` (for
    :attr:`SolveInfo.extra` and the messages of a failure) holds ``rtol``,
    ``atol``, the per-column ``target`` ``max(rtol·‖b‖, atol)`` and
    ``attainable``, the smallest true residual seen. ``refuse`` (a reason)
    stops every column that needs iterations at once (CG on a matrix known
    not to be positive definite). ``backend`` (default: the Numba backend)
    gives the kernels, the array namespace and ``check_every`` (see the
    module docstring). ``b``, ``x0`` and the returned ``x`` are the backend's
    arrays; the per-column reports are host arrays, read once per solve.
    """
    if backend is None:
        from ..backend import NUMBA

        backend = NUMBA
    xp, to_host = backend.xp, backend.to_host
    n, m = b.shape
    dtype = b.dtype if x0 is None else np.result_type(b.dtype, x0.dtype)
    b = xp.ascontiguousarray(b, dtype=dtype)
    if maxiter is None:
        maxiter = 10 * n
    bnorm = column_norms(b)
    tol = xp.maximum(rtol * bnorm, atol)
    if x0 is None:
        x = xp.zeros((n, m), dtype=dtype)
    else:
        x = xp.array(x0, dtype=dtype, order="C", copy=True)
    run = _Run(x, callback, backend)
    details = {"rtol": float(rtol), "atol": float(atol), "target": to_host(tol)}
    zero = to_host(bnorm == 0)
    # x = 0 exactly for b = 0, whatever x0 (it is the only x that passes
    # ‖b − A x‖ ≤ atol for atol = 0)
    x[:, zero] = 0
    if n == 0 or m == 0:
        details["attainable"] = np.zeros(m)
        return (x, np.ones(m, bool), run.iterations, np.zeros(m), to_host(bnorm),
                run.reasons, details)
    r = b.copy() if x0 is None else b - matvec(x)
    rnorm = column_norms(r)
    if x0 is not None:
        # an initial guess with ‖b − A x0‖ > ‖b‖ is worse than x = 0, and a
        # badly scaled one loses the solution to cancellation in r
        worse = to_host(~(rnorm <= bnorm))
        if worse.any():
            x[:, worse] = 0
            r[:, worse] = b[:, worse]
            rnorm[worse] = bnorm[worse]
    rnorm[zero] = 0.0
    # NaN-safe: a NaN residual is live, then nonfinite (one host read)
    live, nonfinite = to_host(xp.stack([~(rnorm <= tol), ~xp.isfinite(rnorm)]))
    nonfinite &= live
    for c in np.flatnonzero(nonfinite):
        run.reasons[c] = "nonfinite"
    live &= ~nonfinite
    if live.any() and refuse is not None:
        for c in np.flatnonzero(live):
            run.reasons[c] = refuse
        live[:] = False
    if live.any():
        cols = np.flatnonzero(live)
        algorithm(run, matvec, psolve,
                  xp.ascontiguousarray(b[:, cols]), xp.ascontiguousarray(x[:, cols]),
                  xp.ascontiguousarray(r[:, cols]), rnorm[cols].copy(),
                  tol[cols].copy(), cols, maxiter, **options)
    # the verdict is the true residual's, column by column
    residual = column_norms(b - matvec(x))
    residual[zero] = 0.0
    residual = to_host(residual)
    converged = residual <= details["target"]
    bnorm = to_host(bnorm)
    reasons = run.reasons
    for c in range(m):
        if converged[c]:
            reasons[c] = "converged"
        elif reasons[c] == "converged":
            reasons[c] = "nonfinite" if not np.isfinite(residual[c]) else "stagnation"
    details["attainable"] = np.fmin(run.best, residual)
    return x, converged, run.iterations, residual, bnorm, reasons, details


# ---------------------------------------------------------------------------
# matrix properties
# ---------------------------------------------------------------------------


def is_hermitian(mat):
    """Whether a validated matrix is Hermitian to rounding (see :mod:`.._symmetry`).

    O(nnz), computed once per matrix and cached on it; explicit zeros do not
    count.
    """
    return mat.symmetry.hermitian


def col_dot(s, a, b):
    """``diag(aᴴ b)``, one inner product per column (complex for complex blocks).

    ``s`` gives the backend's ``kernels`` and ``xp`` (a :class:`State`).
    """
    cplx = a.dtype.kind == "c" or b.dtype.kind == "c"
    out = s.xp.empty(a.shape[1], dtype=np.complex128 if cplx else np.float64)
    return s.kernels.col_dot(a, b, out)


def col_sqnorm(s, a):
    """``‖a_c‖²`` for every column ``c`` (float64); ``s`` as for :func:`col_dot`."""
    return s.kernels.col_sqnorm(a, s.xp.empty(a.shape[1]))


def resolve_preconditioner(M, mat, func):
    """The public ``M`` as a preconditioner object (or ``None``)."""
    if M is None:
        return None
    from ..precond import make_preconditioner

    return make_preconditioner(M, mat, func)


def _cast(f, dtype):
    """Wrap a block map so that it returns ``dtype`` (C-contiguous)."""
    def apply(X):
        Y = f(X)
        return Y.astype(dtype, order="C", copy=False) if hasattr(Y, "astype") \
            else np.ascontiguousarray(Y, dtype=dtype)
    return apply


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------


class KrylovEngine:
    """A Krylov method with its preconditioner for one matrix (engine protocol).

    Subclasses set ``name``, ``requires_hermitian`` and ``algorithm`` (a
    function ``algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols,
    maxiter, **options)``).

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix.
    precond : Preconditioner or None
        Built preconditioner (see :mod:`sparsediff.precond`).
    options : dict
        Method options (GMRES: ``restart``).
    func : str
        Public function name for error messages.
    """

    name = "krylov"
    iterative = True
    requires_hermitian = False
    option_names = ()

    def __init__(self, mat, precond=None, options=None, *, func, hermitian=None):
        self.mat = mat
        self.precond = precond
        self.options = dict(options or {})
        self.func = func
        self.hermitian = is_hermitian(mat) if hermitian is None else hermitian
        # Hermitian to rounding is Hermitian for the method, but solves with
        # Aᴴ/Aᵀ apply the matrix as given unless it is Hermitian bit for bit
        self.exact_hermitian = self.hermitian and mat.symmetry.exact
        self.method = self.name + (f"+{precond.name}" if precond is not None else "")
        self._check(func)
        self._positive_diagonal = None

    @classmethod
    def _refuse_nonhermitian(cls, mat, func, advice=None):
        if advice is None:
            advice = "Use method='gmres' or method='bicgstab'."
        raise ValueError(
            f"`{func}`: method={cls.name!r} needs a Hermitian (real: symmetric) "
            f"matrix, and A is not Hermitian to rounding: "
            f"{mat.symmetry.describe()}. {advice}")

    def _check(self, func):
        """Refuse what the method cannot do (CG/MINRES: Hermitian only)."""
        if self.requires_hermitian and not self.hermitian:
            advice = None
            if func == "Solver.update":
                advice = ("The new values are not; build a new Solver with "
                          "method='gmres' or method='bicgstab' (method='auto' "
                          "re-chooses on update).")
            self._refuse_nonhermitian(self.mat, func, advice)
        if (self.requires_hermitian and self.precond is not None
                and not self.precond.hermitian):
            raise ValueError(
                f"`{func}`: method={self.name!r} needs a Hermitian preconditioner "
                f"(M = Mᴴ); M={self.precond.name!r} is not. Use method='gmres' or "
                f"method='bicgstab', or a Hermitian M such as 'jacobi'.")

    @property
    def positive_diagonal(self):
        """Whether every diagonal entry has a positive real part."""
        if self._positive_diagonal is None:
            d = csr_diagonal(self.mat)
            self._positive_diagonal = bool((d.real > 0).all())
        return self._positive_diagonal

    def _plan(self, trans, dtype):
        """``(matvec, psolve, conj)`` solving ``op(A) x = b`` for ``trans``.

        For an exactly Hermitian A, Aᴴ = A and Aᵀ = conj(A): solves with Aᵀ
        run on A with conjugated input and output (``conj``), so the forward
        preconditioner serves every ``trans``. A Hermitian-to-rounding A is
        applied as ``op(A)`` of the matrix as given (with the Hermitian
        preconditioner), so adjoint solves are exact for that matrix.
        """
        M = self.precond
        conj = False
        if self.exact_hermitian or trans == "N":
            conj = trans == "T" and np.dtype(dtype).kind == "c" \
                and self.mat.dtype.kind == "c"
            matvec = CSROperator(self.mat, "N").matvec
            psolve = None if M is None else M.matvec
        else:
            matvec = CSROperator(self.mat, trans).matvec
            psolve = None
            if M is not None:
                if not M.has_adjoint:
                    raise TypeError(
                        f"the preconditioner M={M.name!r} has no adjoint (no "
                        f"`rmatvec`, `.H` or `.T`), and A is not Hermitian: solves "
                        f"with A{'ᴴ' if trans == 'H' else 'ᵀ'} — the adjoint solve "
                        f"of `Solution.vjp`, or `trans={trans!r}` — need Mᴴ. Give "
                        f"M an `rmatvec` (or `.H`), or use M='jacobi'/'ilu'/'amg'.")
                if trans == "H":
                    psolve = M.rmatvec
                elif hasattr(M, "tmatvec"):
                    psolve = M.tmatvec
                else:
                    psolve = lambda X: np.conj(M.rmatvec(np.conj(X)))  # noqa: E731
        if psolve is not None:
            psolve = _cast(psolve, dtype)
        return matvec, psolve, conj

    def _refuse(self):
        return None

    def _options(self, trans, conj):
        """Extra keyword arguments of ``algorithm`` for this solve."""
        return {}

    def solve(self, b, *, x0=None, trans="N", rtol=1e-8, atol=0.0, maxiter=None,
              callback=None):
        """Solve ``op(A) x = b`` for a 2-D ``b``; returns ``(x, info)``."""
        dtype = b.dtype
        matvec, psolve, conj = self._plan(trans, dtype)
        if conj:
            b = np.conj(b)
            x0 = None if x0 is None else np.conj(x0)
            if callback is not None:
                user = callback
                callback = lambda xk: user(np.conj(xk))  # noqa: E731
        x, converged, its, residual, bnorm, reasons, details = krylov_run(
            type(self).algorithm, matvec, psolve, b, x0, rtol=rtol, atol=atol,
            maxiter=maxiter, callback=callback, refuse=self._refuse(),
            backend=self.mat.backend, **self.options,
            **self._options(trans, conj))
        if conj:
            x = np.conj(x)
        return x, make_info(converged, its, residual, bnorm, self.method, reasons,
                            False, trans, extra=details)

    def update(self, mat):
        """An engine for new values on the same pattern (preconditioner updated)."""
        precond = None if self.precond is None else self.precond.update(mat)
        return type(self)(mat, precond, self.options, func="Solver.update")


def parse_options(cls, options, func):
    """Check method options against ``cls.option_names``."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(
            f"`{func}`: the options in `method=(name, options)` must be a dict; "
            f"got {type(options).__name__}.")
    unknown = sorted(set(options) - set(cls.option_names))
    if unknown:
        raise ValueError(
            f"`{func}`: method={cls.name!r} has options {cls.option_names}; got "
            f"unknown {unknown}.")
    return dict(options)


# ---------------------------------------------------------------------------
# the matrix-free entry points (``cg``, ``minres``, ``gmres``, ``bicgstab``)
# ---------------------------------------------------------------------------


def matrix_free(algorithm, name, op, b, x0, rtol, atol, maxiter, M, callback,
                **options):
    """Shared body of the matrix-free entry points: check, wrap, run.

    ``op`` and ``M`` are anything :func:`._operator.aslinearoperator` accepts,
    applied to 2-D blocks on the host (the Numba backend's kernels).
    """
    op = aslinearoperator(op)
    b = np.asarray(b)
    if b.ndim != 2 or b.shape[0] != op.shape[0]:
        raise ValueError(
            f"`{name}`: `b` must have shape (n, m) with n = {op.shape[0]}; got "
            f"{b.shape}.")
    if rtol < 0 or atol < 0:
        raise ValueError(f"`{name}`: `rtol` and `atol` must be >= 0; got "
                         f"rtol={rtol}, atol={atol}.")
    dtype = np.result_type(op.dtype, b.dtype, np.float32)
    b = np.ascontiguousarray(b, dtype=dtype)
    if x0 is not None:
        x0 = np.asarray(x0)
        if x0.shape != b.shape:
            raise ValueError(f"`{name}`: `x0` must have the shape of `b`, {b.shape}; "
                             f"got {x0.shape}.")
    matvec = _cast(op.matvec, dtype)
    psolve = None
    if M is not None:
        Mop = aslinearoperator(M)
        if tuple(Mop.shape) != tuple(op.shape):
            raise ValueError(f"`{name}`: `M` must have the shape of the operator, "
                             f"{tuple(op.shape)}; got {tuple(Mop.shape)}.")
        psolve = _cast(Mop.matvec, dtype)

    from ..backend import NUMBA

    x, converged, its, residual, bnorm, reasons, details = krylov_run(
        algorithm, matvec, psolve, b, x0, rtol=rtol, atol=atol, maxiter=maxiter,
        callback=callback, backend=NUMBA, **options)
    label = name + ("+user" if M is not None else "")
    return x, make_info(converged, its, residual, bnorm, label, reasons, False,
                        extra=details)
