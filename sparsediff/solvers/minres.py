"""Preconditioned MINRES (Paige & Saunders 1975) for Hermitian, possibly indefinite A.

The recurrences follow SciPy's ``minres`` (itself a port of Saunders' code),
vectorized over the columns of ``b``; every Lanczos scalar is real for a
Hermitian ``A`` and ``M`` (``vdot`` inner products), so complex Hermitian
systems are handled exactly.

Deliberate differences from :func:`scipy.sparse.linalg.minres`:

* the *unpreconditioned* residual ``r = b − A x`` is carried along by the
  recurrence ``A w_k = (A v_k − ε_k A w_{k-2} − δ_k A w_{k-1}) / γ_k`` (``A v_k``
  is the Lanczos product already computed), so the stopping test is SciPy's
  ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` also with a preconditioner (SciPy's
  MINRES tests the ``M``-norm of the residual and ``‖A‖‖x‖``-relative
  quantities);
* a least-squares (not a) solution of a singular inconsistent system —
  ``‖A r‖ ≈ 0`` with ``r`` above the tolerance — stops with
  ``reason="singular"`` and ``converged=False`` (SciPy reports ``info=0``);
* an indefinite preconditioner stops with ``reason="indefinite"``;
* every threshold is relative, so that the iterations are the same for
  ``s A x = s b`` at any scale ``s`` and for ``‖b‖/‖A‖`` of any size: the
  estimate of ‖A‖ (the Frobenius norm of the Lanczos ``T_k``) leaves out
  ``β₁ = ‖b‖_M`` — SciPy's counts it, so that a large ``b`` makes ``A`` look
  singular — and the rotation's ``γ`` is floored at ``ε‖T_k‖``, not at ``ε``
  (which swallowed every ``A`` with entries below 1e-16);
* a column whose true residual has stopped decreasing at the level of its
  rounding errors stops with ``reason="stagnation"``.
"""

import numpy as np

from .._dtypes import real_dtype
from ._krylov import KrylovEngine, State, col_dot, col_sqnorm, matrix_free

__all__ = ["MINRESEngine", "minres"]


def minres_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter):
    """MINRES iterations on the live columns.

    With ``check_every > 1`` every updated block and scalar goes through
    :meth:`State.commit` (a retired column keeps its state, and ``x``, ``r``
    theirs) and retired columns divide by 1; with ``check_every = 1``
    ``commit`` is the identity and ``safe`` returns its argument.
    """
    dtype = x.dtype
    eps = np.finfo(dtype).eps
    # rounding of rᴴ M r relative to ‖r‖‖M r‖ (the indefiniteness test)
    dot_eps = np.sqrt(max(b.shape[0], 1)) * eps
    s = State(run, cols, ("r1", "r2", "y", "w", "w2", "aw", "aw2"),
              ("beta", "oldb", "dbar", "epsln", "phibar", "cs", "sn", "tnorm2",
               "gmax", "gmin", "beta1", "test2", "indefinite", "tnorm"),
              maxiter, b=b, x=x, r=r, rnorm=rnorm, tol=tol)
    if not _start(s, psolve):
        return
    rdt = real_dtype(dtype)
    with np.errstate(**({"divide": "ignore", "invalid": "ignore", "over": "ignore"}
                        if s.masked else {})):
        while s.k:
            if s.at_limit(matvec):
                break
            v, av, alfa, beta, beta2, oldb = _lanczos(s, matvec, psolve, rdt)
            oldeps, delta, gamma, phi = _rotate(s, alfa, beta, oldb, eps)
            _update(s, v, av, oldeps, delta, gamma, phi, rdt)
            if psolve is None:
                indefinite = s.xp.zeros(s.k, dtype=bool)
            else:
                indefinite = beta2 < -dot_eps * np.sqrt(
                    col_sqnorm(s, s.r2) * col_sqnorm(s, s.y))
            s.indefinite = s.commit(indefinite, s.indefinite)
            s.tick()
            s.report()
            s.rnorm = s.commit(np.sqrt(col_sqnorm(s, s.r)), s.rnorm)
            s.after_step(matvec, s.rnorm, s.beta)
            # the preconditioned Lanczos "norm" rᴴ M r must stay positive
            s.stop(s.indefinite, "indefinite")
            # ‖A r‖ ≈ 0 with r above the tolerance: a least-squares solution
            # of a singular, inconsistent system, not a solution
            s.stop(s.test2 <= 10 * eps, "singular")
            # an invariant Krylov subspace without convergence (β_{k+1} at the
            # rounding level of ‖T_k‖)
            s.stop(s.beta <= eps * s.tnorm, "breakdown")
            s.check_stagnation(matvec)


def _start(s, psolve):
    """``β₁ = ‖r‖_M`` and the initial recurrence state; False when no column
    is left (an indefinite or non-finite ``rᴴ M r``)."""
    r = s.r
    s.y = r if psolve is None else psolve(r)
    s.beta1 = s.rnorm ** 2 if psolve is None else col_dot(s, r, s.y).real
    s.check_nonfinite(s.beta1)
    s.finish(~(s.beta1 > 0), "indefinite")
    if not s.k:
        return False
    k = s.k
    s.beta1 = np.sqrt(s.beta1)
    s.r1 = s.r.copy()
    s.r2 = s.r.copy()
    s.beta = s.beta1.copy()
    s.oldb = s.xp.zeros(k)
    s.dbar = s.xp.zeros(k)
    s.epsln = s.xp.zeros(k)
    s.phibar = s.beta1.copy()
    s.cs = -s.xp.ones(k)
    s.sn = s.xp.zeros(k)
    s.tnorm2 = s.xp.zeros(k)
    s.gmax = s.xp.zeros(k)
    s.gmin = s.xp.full(k, np.inf)
    s.test2 = s.xp.zeros(k)
    s.indefinite = s.xp.zeros(k, dtype=bool)
    s.tnorm = s.xp.zeros(k)
    s.w = s.xp.zeros_like(s.r)
    s.w2 = s.xp.zeros_like(s.r)
    s.aw = s.xp.zeros_like(s.r)
    s.aw2 = s.xp.zeros_like(s.r)
    return True


def _lanczos(s, matvec, psolve, rdt):
    """One preconditioned Lanczos step: ``v``, ``A v``, ``α``, ``β``, ``β²`` (the
    unclipped ``rᴴ M r``) and the previous ``β``; advances ``r1``, ``r2``, ``y``."""
    c = s.commit
    v = s.y * (1.0 / s.safe(s.beta)).astype(rdt)
    av = matvec(v)
    y = (av - (s.beta / s.safe(s.oldb)).astype(rdt) * s.r1 if s.it
         else av.copy())
    alfa = col_dot(s, v, y).real
    y -= (alfa / s.safe(s.beta)).astype(rdt) * s.r2
    s.r1 = c(s.r2, s.r1)
    s.r2 = c(y, s.r2)
    s.y = c(y if psolve is None else psolve(y), s.y)
    oldb = s.beta
    beta2 = col_dot(s, s.r2, s.y).real
    beta = np.sqrt(np.maximum(beta2, 0.0))
    return v, av, alfa, beta, beta2, oldb


def _rotate(s, alfa, beta, oldb, eps):
    """The next Givens rotation of the QR of ``T_k``; commits the rotation and
    norm scalars and returns ``(ε_k, δ_k, γ_k, φ_k)`` for the direction update."""
    c = s.commit
    # ‖T_k‖_F² (β_k enters T from the second step on: β₁ = ‖b‖_M is
    # the scale of the right-hand side, not of A)
    tnorm2 = s.tnorm2 + alfa ** 2 + beta ** 2
    if s.it:
        tnorm2 += oldb ** 2
    tnorm = np.sqrt(tnorm2)
    oldeps = s.epsln
    delta = s.cs * s.dbar + s.sn * alfa
    gbar = s.sn * s.dbar - s.cs * alfa
    epsln = s.sn * beta
    dbar = -s.cs * beta
    root = np.hypot(gbar, dbar)
    # γ below rounding of ‖T_k‖ is floored there (SciPy: at ε); γ = 0
    # (T_k = 0: A v = 0) leaves x alone and ends as "singular" below
    gamma = np.maximum(np.hypot(gbar, beta), eps * tnorm)
    gamma = np.where(gamma > 0, gamma, np.inf)
    cs = gbar / gamma
    sn = beta / gamma
    phi = cs * s.phibar
    phibar = sn * s.phibar
    s.epsln = c(epsln, s.epsln)
    s.dbar = c(dbar, s.dbar)
    s.cs = c(cs, s.cs)
    s.sn = c(sn, s.sn)
    s.phibar = c(phibar, s.phibar)
    s.tnorm2 = c(tnorm2, s.tnorm2)
    s.oldb = c(oldb, s.oldb)
    s.beta = c(beta, s.beta)
    s.gmax = c(np.maximum(s.gmax, gamma), s.gmax)
    s.gmin = c(np.minimum(s.gmin, gamma), s.gmin)
    # ‖A r‖ / (‖A‖ ‖r‖) (SciPy's test2), kept per column so that it follows
    # the compactions
    s.test2 = c(np.divide(root, tnorm, out=s.xp.zeros_like(root),
                          where=tnorm > 0), s.test2)
    s.tnorm = c(tnorm, s.tnorm)
    return oldeps, delta, gamma, phi


def _update(s, v, av, oldeps, delta, gamma, phi, rdt):
    """The directions ``w`` and ``A w`` and the updates of ``x`` and ``r``."""
    c = s.commit
    inv = (1.0 / gamma).astype(rdt)
    w = (v - oldeps.astype(rdt) * s.w2 - delta.astype(rdt) * s.w) * inv
    s.w2 = c(s.w, s.w2)
    s.w = c(w, s.w)
    aw = (av - oldeps.astype(rdt) * s.aw2 - delta.astype(rdt) * s.aw) * inv
    s.aw2 = c(s.aw, s.aw2)
    s.aw = c(aw, s.aw)
    if s.masked:
        s.x = c(s.x + phi.astype(rdt) * s.w, s.x)
        s.r = c(s.r - phi.astype(rdt) * s.aw, s.r)
    else:
        s.x += phi.astype(rdt) * s.w
        s.r -= phi.astype(rdt) * s.aw


class MINRESEngine(KrylovEngine):
    """Engine for ``method="minres"``: Hermitian A and Hermitian M only."""

    name = "minres"
    requires_hermitian = True
    algorithm = staticmethod(minres_algorithm)


def minres(op, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, M=None,
           callback=None):
    """Matrix-free MINRES on blocks (see :func:`sparsediff.solvers.cg.cg`).

    ``op`` and ``M`` must be Hermitian (not checked).

    See Also
    --------
    scipy.sparse.linalg.minres
    """
    return matrix_free(minres_algorithm, "minres", op, b, x0, rtol, atol,
                       maxiter, M, callback)
