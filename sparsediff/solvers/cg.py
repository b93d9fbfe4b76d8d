"""Preconditioned conjugate gradients for Hermitian positive definite systems.

Hestenes–Stiefel CG with a Hermitian positive definite preconditioner ``M``
(Saad, *Iterative Methods for Sparse Linear Systems*, Alg. 9.1), on all
right-hand sides at once, with complex Hermitian matrices handled by ``vdot``
inner products (every scalar of the recurrence is then real).

Differences from :func:`scipy.sparse.linalg.cg`, deliberate:

* ``pᴴ A p ≤ 0`` or ``rᴴ M r ≤ 0`` stops the column with
  ``reason="indefinite"`` (SciPy iterates on, and can report success from a
  negative curvature); NaN/Inf stops it at once with ``reason="nonfinite"``;
* convergence is confirmed on the recomputed true residual, and a column
  whose true residual has stopped decreasing at the level of its rounding
  errors stops with ``reason="stagnation"`` (SciPy runs on to ``maxiter``);
* ``b`` may be ``(n, m)``: every column has its own stopping test.
"""

import numpy as np

from ._info import SolveInfo  # noqa: F401  (documented return type)
from ._krylov import KrylovEngine, State, col_dot, matrix_free
from ._operator import CSROperator

__all__ = ["CGEngine", "cg"]


def _curvature(s, matvec, matvec_dot):
    """``(q, pᴴq)`` with ``q = A p``, per column (fused when offered)."""
    if matvec_dot is not None:
        return matvec_dot(s.p)
    q = matvec(s.p)
    return q, col_dot(s, s.p, q).real


def _precondition(s, psolve):
    """``z = M r`` into ``s.z``; returns ``ρ = rᴴz`` per column."""
    if psolve is None:
        s.z = s.r
        return s.rnorm ** 2
    s.z = psolve(s.r)
    return col_dot(s, s.r, s.z).real


def cg_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter,
                 matvec_dot=None):
    """CG iterations on the live columns (see :mod:`._krylov` for the frame).

    ``matvec_dot(P) -> (A P, Re diag(Pᴴ A P))`` fuses the product with the
    curvature, when the operator offers it.
    """
    s = State(run, cols, ("p", "z"), ("rho",), maxiter, b=b, x=x, r=r,
              rnorm=rnorm, tol=tol)
    fused = s.kernels
    s.rho = _precondition(s, psolve)
    if psolve is not None:
        s.check_nonfinite(s.rho)
        s.finish(~(s.rho > 0), "indefinite")
    s.p = s.z.copy()
    if s.masked:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            _cg_masked(s, matvec, psolve, matvec_dot)
        return
    while s.k:
        if s.at_limit(matvec):
            break
        q, pq = _curvature(s, matvec, matvec_dot)
        if not (pq > 0).all():
            keep = pq > 0
            s.check_nonfinite(pq)
            s.finish(~(pq[np.isfinite(pq)] > 0), "indefinite")
            q = np.ascontiguousarray(q[:, keep])
            pq = pq[keep]
            if not s.k:
                break
        rr = s.xp.empty(s.k)
        fused.cg_step(s.x, s.r, s.p, q, s.rho / pq, rr)
        s.it += 1
        s.report()
        s.rnorm = np.sqrt(rr)
        # one test on the common path: every column finite and above tolerance
        if not ((s.rnorm > s.tol) & (s.rnorm < np.inf)).all():
            s.check_nonfinite(s.rnorm)
            s.check_converged(matvec)
            if not s.k:
                break
        s.check_stagnation(matvec)
        if not s.k:
            break
        rho = _precondition(s, psolve)
        if psolve is not None and not (rho > 0).all():
            keep = rho > 0
            s.check_nonfinite(rho)
            s.finish(~(rho[np.isfinite(rho)] > 0), "indefinite")
            rho = rho[keep]
            if not s.k:
                break
        fused.xpby(s.z, rho / s.rho, s.p)
        s.rho = rho


def _cg_masked(s, matvec, psolve, matvec_dot):
    """The CG loop for ``check_every > 1``: no decision on array values.

    The same arithmetic as the loop of :func:`cg_algorithm` on active
    columns; a retired column has ``α = 0`` (``x``, ``r`` unchanged, its
    ``p``/``q`` zeroed in the step so that ``0·Inf`` cannot reach ``x``),
    ``p ← 0 + 1·p`` and ``ρ`` kept, so that it can resume where it stopped
    when its convergence is not confirmed.
    """
    fused = s.kernels
    while s.k:
        if s.at_limit(matvec):
            break
        q, pq = _curvature(s, matvec, matvec_dot)
        # as the loop above: +Inf passes the curvature test (α = 0)
        s.stop(~(pq > 0) & ~np.isfinite(pq), "nonfinite")
        s.stop(~(pq > 0), "indefinite")
        alpha = s.step_size(s.rho / s.safe(pq))
        rr = s.xp.empty(s.k)
        fused.cg_step(s.x, s.r, s.live(s.p), s.live(q), alpha, rr)
        s.tick()
        s.report()
        s.rnorm = s.commit(np.sqrt(rr), s.rnorm)
        s.after_step(matvec, s.rnorm)
        if not s.k:
            break
        s.check_stagnation(matvec)
        if not s.k:
            break
        rho = _precondition(s, psolve)
        if psolve is not None:
            s.stop(~(rho > 0) & ~np.isfinite(rho), "nonfinite")
            s.stop(~(rho > 0), "indefinite")
        fused.xpby(s.live(s.z), s.commit(rho / s.rho, 1.0), s.p)
        s.rho = s.commit(rho, s.rho)


class CGEngine(KrylovEngine):
    """Engine for ``method="cg"``: Hermitian A and Hermitian M only."""

    name = "cg"
    requires_hermitian = True
    algorithm = staticmethod(cg_algorithm)

    def _options(self, trans, conj):
        # CG runs on A itself for every trans when A is exactly Hermitian: fuse
        # A p, pᴴAp (the fused product exists for A, not for Aᴴ/Aᵀ)
        if trans != "N" and not self.exact_hermitian:
            return {}
        return {"matvec_dot": CSROperator(self.mat, "N").matvec_dot}

    def _refuse(self):
        # a non-positive diagonal entry of a Hermitian A certifies that A is
        # not positive definite: CG would divide by pᴴAp ≤ 0 sooner or later
        return None if self.positive_diagonal else "indefinite"


def cg(op, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, M=None,
       callback=None):
    """Matrix-free preconditioned CG on blocks: solve ``A X = B``.

    Parameters
    ----------
    op : object with ``matvec(X)``, ``shape``, ``dtype``
        Hermitian positive definite operator applied to 2-D blocks (a
        :class:`scipy.sparse.linalg.LinearOperator` is accepted: its
        ``matmat`` is used). Not checked for symmetry.
    b : ndarray, shape (n, m)
        Right-hand sides, one per column.
    x0 : ndarray, shape (n, m), optional
        Initial guess.
    rtol, atol : float
        Stopping test ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` per column, on the
        true residual.
    maxiter : int, optional
        Iteration limit (default ``10 n``).
    M : object with ``matvec(X)``, optional
        Hermitian positive definite preconditioner ``M ≈ A⁻¹``.
    callback : callable, optional
        ``callback(xk)`` after each iteration (``xk`` 1-D for ``m = 1``).

    Returns
    -------
    x : ndarray, shape (n, m)
    info : SolveInfo
        Per-column arrays (``column_converged``, ``column_iterations``).

    See Also
    --------
    scipy.sparse.linalg.cg
    """
    return matrix_free(cg_algorithm, "cg", op, b, x0, rtol, atol, maxiter, M,
                       callback)
