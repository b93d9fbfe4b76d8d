"""Restarted GMRES (Saad & Schultz 1986) with right preconditioning.

Arnoldi with classical Gram–Schmidt and one reorthogonalization (CGS2: as
stable as modified Gram–Schmidt, and two matrix-vector products with the
basis instead of ``j`` dot products), Givens rotations for the least-squares
problem (complex rotations for complex systems). Right preconditioning
(``A M y = r₀``, ``x = x₀ + M y``) makes the Arnoldi residual estimate that of
the *unpreconditioned* system, the quantity of the stopping test.

All columns of ``b`` run in lockstep, each with its own basis and
Hessenberg matrix; a column whose estimate passes its test mid-cycle stops
extending its basis and is updated with the iterate of that step.

Options (``method=("gmres", {"restart": 50})`` in :func:`sparsediff.solve`
and :class:`sparsediff.Solver`, or ``restart=`` in :func:`gmres`):

restart : int, default 20
    Basis size between restarts (as SciPy; capped at ``n``). Memory is
    ``(restart + 1)·n`` per right-hand side.

Deliberate differences from :func:`scipy.sparse.linalg.gmres`: ``maxiter``
counts inner iterations (matrix-vector products), like every other method
here and like ``info.iterations``, not restart cycles; the callback receives
the current iterate ``xk`` once per inner iteration (SciPy's
``callback_type="x"`` calls once per cycle); the stopping test is on the
unpreconditioned residual; convergence is confirmed on the true residual
after every cycle; a happy breakdown that does not solve the system
(singular A) stops with ``reason="breakdown"``, three cycles without any
decrease of the true residual with ``reason="stagnation"``.
"""

import operator

import numpy as np
from scipy.linalg import solve_triangular

from ._common import column_norms
from ._krylov import KrylovEngine, State

__all__ = ["GMRESEngine", "gmres"]


def _least_squares(H, g, m):
    """``y`` minimizing the rotated system: solve the leading ``m × m`` triangle.

    A zero pivot (singular Hessenberg: breakdown) truncates the solve at that
    step. Returns ``(y, ok)``.
    """
    R = H[:m, :m]
    d = np.abs(np.diagonal(R))
    good = np.flatnonzero(~(d > 0))
    ok = good.size == 0
    if not ok:
        m = int(good[0])
    if m == 0:
        return np.zeros(0, dtype=H.dtype), ok
    return solve_triangular(R[:m, :m], g[:m], check_finite=False), ok


def gmres_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter,
                    restart=20):
    """Restarted GMRES cycles on the live columns."""
    n = b.shape[0]
    dtype = x.dtype
    restart = max(1, min(restart, n))
    cplx = dtype.kind == "c"
    hdt = np.complex128 if cplx else np.float64
    identity = psolve is None
    s = State(run, cols, (), ("colits", "noprogress", "happy"),
              b=b, x=x, r=r, rnorm=rnorm, tol=tol)
    s.colits = np.zeros(s.k, dtype=np.int64)
    s.noprogress = np.zeros(s.k, dtype=np.int64)

    def correction(V, H, g, steps):
        """``M (V y)`` for every column (the update of a cycle), and breakdowns."""
        k = V.shape[0]
        U = np.zeros((n, k), dtype=dtype)
        ok = np.ones(k, dtype=bool)
        for c in range(k):
            y, ok[c] = _least_squares(H[c], g[c], steps[c])
            if y.size:
                U[:, c] = V[c, : y.size].T @ y.astype(dtype, copy=False)
        return (U if identity else psolve(U)), ok

    while s.k:
        if s.it >= maxiter:
            s.finish(np.ones(s.k, dtype=bool), "maxiter")
            break
        k = s.k
        V = np.empty((k, restart + 1, n), dtype=dtype)
        V[:, 0, :] = (s.r / s.rnorm.astype(s.r.real.dtype)).T
        H = np.zeros((k, restart + 1, restart), dtype=hdt)
        cs = np.ones((k, restart), dtype=hdt)
        sn = np.zeros((k, restart), dtype=np.float64)
        g = np.zeros((k, restart + 1), dtype=hdt)
        g[:, 0] = s.rnorm
        steps = np.full(k, -1, dtype=np.int64)
        happy = np.zeros(k, dtype=bool)
        j_done = 0
        for j in range(min(restart, maxiter - s.it)):
            Z = np.ascontiguousarray(V[:, j, :].T)
            w = matvec(Z if identity else psolve(Z))
            active = steps < 0
            for c in np.flatnonzero(active):
                Vc = V[c, : j + 1]
                wc = w[:, c].copy()
                # Vᴴ w as conj(V conj(w)): conjugates a vector, not the basis
                h = np.conj(Vc @ np.conj(wc)) if cplx else Vc @ wc
                wc -= Vc.T @ h
                h2 = np.conj(Vc @ np.conj(wc)) if cplx else Vc @ wc
                wc -= Vc.T @ h2
                h += h2
                hn = np.linalg.norm(wc)
                H[c, : j + 1, j] = h
                H[c, j + 1, j] = hn
                if hn > 0:
                    V[c, j + 1] = wc / hn
                else:
                    V[c, j + 1] = 0
                    happy[c] = True
            # previous rotations on the new column of H, all columns at once
            for i in range(j):
                hi = H[:, i, j].copy()
                hi1 = H[:, i + 1, j]
                H[:, i, j] = np.conj(cs[:, i]) * hi + sn[:, i] * hi1
                H[:, i + 1, j] = -sn[:, i] * hi + cs[:, i] * hi1
            a = H[:, j, j]
            bb = H[:, j + 1, j].real
            d = np.hypot(np.abs(a), bb)
            safe = d > 0
            dd = np.where(safe, d, 1.0)
            cs[:, j] = np.where(safe, a / dd, 1.0)
            sn[:, j] = np.where(safe, bb / dd, 0.0)
            H[:, j, j] = np.where(safe, d, a)
            H[:, j + 1, j] = 0
            g[:, j + 1] = -sn[:, j] * g[:, j]
            g[:, j] = np.conj(cs[:, j]) * g[:, j]
            est = np.abs(g[:, j + 1])
            s.it += 1
            s.colits[active] += 1
            j_done = j + 1
            stop = active & ((est <= s.tol) | happy | ~np.isfinite(est))
            steps[stop] = j + 1
            if run.callback is not None:
                now = np.where(steps < 0, j + 1, steps)
                U, _ = correction(V, H, g, now)
                run.report(s.x + U, s.cols)
            if (steps >= 0).all():
                break
        steps[steps < 0] = j_done
        U, ok = correction(V, H, g, steps)
        s.x += U
        old = s.rnorm
        s.r = s.b - matvec(s.x)
        s.rnorm = column_norms(s.r)
        s.noprogress = np.where(s.rnorm < old, 0, s.noprogress + 1)
        s.best = np.minimum(s.best, s.rnorm)
        s.happy = happy | ~ok
        s.check_nonfinite(s.rnorm)
        done = s.rnorm <= s.tol
        s.finish(done, "converged")
        s.finish(s.happy, "breakdown")
        s.finish(s.noprogress >= 3, "stagnation")


class GMRESEngine(KrylovEngine):
    """Engine for ``method="gmres"`` (option ``restart``)."""

    name = "gmres"
    option_names = ("restart",)
    algorithm = staticmethod(gmres_algorithm)

    def __init__(self, mat, precond=None, options=None, *, func, hermitian=None):
        options = dict(options or {})
        if "restart" in options:
            options["restart"] = check_restart(options["restart"], func)
        super().__init__(mat, precond, options, func=func, hermitian=hermitian)


def check_restart(restart, func):
    """``restart`` as an int ≥ 1 (TypeError / ValueError otherwise)."""
    try:
        restart = operator.index(restart)
    except TypeError:
        raise TypeError(f"`{func}`: `restart` must be an integer; got "
                        f"{restart!r}.") from None
    if restart < 1:
        raise ValueError(f"`{func}`: `restart` must be >= 1; got {restart}.")
    return restart


def gmres(op, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, restart=20, M=None,
          callback=None):
    """Matrix-free restarted GMRES on blocks: solve ``A X = B``.

    Parameters
    ----------
    op : object with ``matvec(X)``, ``shape``, ``dtype``
        The operator, applied to 2-D blocks (a
        :class:`scipy.sparse.linalg.LinearOperator` is accepted: its
        ``matmat`` is used).
    b : ndarray, shape (n, m)
        Right-hand sides, one per column.
    x0 : ndarray, shape (n, m), optional
        Initial guess.
    rtol, atol : float
        Stopping test ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` per column, on the
        true residual.
    maxiter : int, optional
        Limit on inner iterations (default ``10 n``).
    restart : int
        Basis size between restarts (default 20, as SciPy).
    M : object with ``matvec(X)``, optional
        Right preconditioner ``M ≈ A⁻¹``.
    callback : callable, optional
        ``callback(xk)`` after each inner iteration (``xk`` 1-D for ``m = 1``).

    Returns
    -------
    x : ndarray, shape (n, m)
    info : SolveInfo
        Per-column arrays (``column_converged``, ``column_iterations``).

    See Also
    --------
    scipy.sparse.linalg.gmres

    Examples
    --------
    >>> import numpy as np
    >>> from sparsediff.solvers.gmres import gmres
    >>> class Op:
    ...     shape, dtype = (2, 2), np.dtype(float)
    ...     def matvec(self, X):
    ...         return np.array([[2.0, 1.0], [0.0, 3.0]]) @ X
    >>> x, info = gmres(Op(), np.array([[3.0], [3.0]]))
    >>> np.allclose(x[:, 0], [1.0, 1.0]), info.converged
    (True, True)
    """
    from .cg import _matrix_free

    restart = check_restart(restart, "gmres")
    return _matrix_free(gmres_algorithm, "gmres", op, b, x0, rtol, atol, maxiter,
                        M, callback, restart=restart)
