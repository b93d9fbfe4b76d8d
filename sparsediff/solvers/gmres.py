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
from ._krylov import KrylovEngine, State, matrix_free

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


class _Cycle:
    """One restart cycle of ``k`` columns: bases, Hessenbergs, rotations.

    ``V[c]`` holds the Arnoldi basis of column ``c`` (one vector a row),
    ``H[c]`` its Hessenberg matrix, rotated in place into the triangle of the
    least-squares problem, ``cs``/``sn`` the Givens rotations and ``g`` the
    rotated right-hand side ``‖r‖ e₁``. ``steps[c]`` is the step at which
    column ``c`` stopped extending its basis (−1 while it goes on); ``happy``
    marks a happy breakdown (``h_{j+1,j} = 0``).

    The bases are backend arrays (``s.xp``); the small least-squares problem
    (``H``, ``cs``, ``sn``, ``g``, ``steps``, ``happy`` and the tolerances
    ``tol``) lives on the host, so each Arnoldi step reads its new Hessenberg
    column to the host.
    """

    def __init__(self, s, restart):
        r, rnorm = s.r, s.rnorm
        n, k = r.shape
        dtype = r.dtype
        self.xp, self.to_host = s.xp, s.to_host
        self.cplx = dtype.kind == "c"
        hdt = np.complex128 if self.cplx else np.float64
        self.V = self.xp.empty((k, restart + 1, n), dtype=dtype)
        self.V[:, 0, :] = (r / rnorm.astype(r.real.dtype)).T
        self.H = np.zeros((k, restart + 1, restart), dtype=hdt)
        self.cs = np.ones((k, restart), dtype=hdt)
        self.sn = np.zeros((k, restart), dtype=np.float64)
        self.g = np.zeros((k, restart + 1), dtype=hdt)
        self.g[:, 0] = self.to_host(rnorm)
        self.tol = self.to_host(s.tol)
        self.steps = np.full(k, -1, dtype=np.int64)
        self.happy = np.zeros(k, dtype=bool)

    def arnoldi(self, w, j, active):
        """Orthogonalize ``w[:, c]`` against ``V[c, :j+1]`` (CGS2) for the active
        columns: column ``j`` of ``H`` and basis vector ``j + 1``."""
        V, H, cplx = self.V, self.H, self.cplx
        for c in np.flatnonzero(active):
            Vc = V[c, : j + 1]
            wc = w[:, c].copy()
            # Vᴴ w as conj(V conj(w)): conjugates a vector, not the basis
            h = np.conj(Vc @ np.conj(wc)) if cplx else Vc @ wc
            wc -= Vc.T @ h
            h2 = np.conj(Vc @ np.conj(wc)) if cplx else Vc @ wc
            wc -= Vc.T @ h2
            h += h2
            hn = float(np.linalg.norm(wc))
            H[c, : j + 1, j] = self.to_host(h)
            H[c, j + 1, j] = hn
            if hn > 0:
                V[c, j + 1] = wc / hn
            else:
                V[c, j + 1] = 0
                self.happy[c] = True

    def rotate(self, j):
        """Givens rotations on column ``j`` of ``H`` and on ``g``, all columns at
        once; returns the residual estimates ``|g_{j+1}|``."""
        H, cs, sn, g = self.H, self.cs, self.sn, self.g
        # the previous rotations on the new column
        for i in range(j):
            hi = H[:, i, j].copy()
            hi1 = H[:, i + 1, j]
            H[:, i, j] = np.conj(cs[:, i]) * hi + sn[:, i] * hi1
            H[:, i + 1, j] = -sn[:, i] * hi + cs[:, i] * hi1
        # the new rotation, zeroing h_{j+1,j}
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
        return np.abs(g[:, j + 1])

    def correction(self, steps, psolve):
        """``M (V y)`` for every column after ``steps[c]`` steps (the update of
        the cycle), and which columns solved their triangle without breakdown."""
        k, _, n = self.V.shape
        dtype = self.V.dtype
        U = self.xp.zeros((n, k), dtype=dtype)
        ok = np.ones(k, dtype=bool)
        for c in range(k):
            y, ok[c] = _least_squares(self.H[c], self.g[c], steps[c])
            if y.size:
                U[:, c] = self.V[c, : y.size].T @ self.xp.asarray(y.astype(dtype))
        return (U if psolve is None else psolve(U)), ok


def _iterate(run, s, cyc, matvec, psolve, nsteps):
    """Up to ``nsteps`` Arnoldi steps of one cycle; sets ``cyc.steps`` of every
    column (where it stopped, or the last step)."""
    j_done = 0
    for j in range(nsteps):
        Z = s.xp.ascontiguousarray(cyc.V[:, j, :].T)
        w = matvec(Z if psolve is None else psolve(Z))
        active = cyc.steps < 0
        cyc.arnoldi(w, j, active)
        est = cyc.rotate(j)
        s.it += 1
        s.colits[active] += 1
        j_done = j + 1
        stop = active & ((est <= cyc.tol) | cyc.happy | ~np.isfinite(est))
        cyc.steps[stop] = j + 1
        if run.callback is not None:
            now = np.where(cyc.steps < 0, j + 1, cyc.steps)
            U, _ = cyc.correction(now, psolve)
            run.report(s.x + U, s.cols)
        if (cyc.steps >= 0).all():
            break
    cyc.steps[cyc.steps < 0] = j_done


def _end_cycle(s, cyc, matvec, psolve):
    """Update ``x`` with the cycle, recompute the true residual, settle columns."""
    U, ok = cyc.correction(cyc.steps, psolve)
    s.x += U
    old = s.rnorm
    s.r = s.b - matvec(s.x)
    s.rnorm = column_norms(s.r)
    s.noprogress = s.xp.where(s.rnorm < old, 0, s.noprogress + 1)
    s.best = s.xp.minimum(s.best, s.rnorm)
    s.happy = cyc.happy | ~ok
    s.check_nonfinite(s.rnorm)
    done = s.rnorm <= s.tol
    s.finish(done, "converged")
    s.finish(s.happy, "breakdown")
    s.finish(s.noprogress >= 3, "stagnation")


def gmres_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter,
                    restart=20):
    """Restarted GMRES cycles on the live columns."""
    restart = max(1, min(restart, b.shape[0]))
    s = State(run, cols, (), ("colits", "noprogress", "happy"),
              b=b, x=x, r=r, rnorm=rnorm, tol=tol)
    s.colits = np.zeros(s.k, dtype=np.int64)  # host: counted by host steps
    s.noprogress = s.xp.zeros(s.k, dtype=np.int64)
    while s.k:
        if s.it >= maxiter:
            s.finish(np.ones(s.k, dtype=bool), "maxiter")
            break
        cyc = _Cycle(s, restart)
        _iterate(run, s, cyc, matvec, psolve, min(restart, maxiter - s.it))
        _end_cycle(s, cyc, matvec, psolve)


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
    restart = check_restart(restart, "gmres")
    return matrix_free(gmres_algorithm, "gmres", op, b, x0, rtol, atol, maxiter,
                       M, callback, restart=restart)
