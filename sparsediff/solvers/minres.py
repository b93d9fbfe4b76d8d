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

from ..kernels.numba import _krylov as fused
from ._krylov import KrylovEngine, State

__all__ = ["MINRESEngine", "minres"]


def _dot(a, b):
    out = np.empty(a.shape[1], dtype=np.complex128 if np.iscomplexobj(a) or
                   np.iscomplexobj(b) else np.float64)
    return fused.col_dot(a, b, out).real


def _sqnorm(a):
    return fused.col_sqnorm(a, np.empty(a.shape[1]))


def minres_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter):
    """MINRES iterations on the live columns."""
    dtype = x.dtype
    eps = np.finfo(dtype).eps
    # rounding of rᴴ M r relative to ‖r‖‖M r‖ (the indefiniteness test)
    dot_eps = np.sqrt(max(b.shape[0], 1)) * eps
    s = State(run, cols, ("r1", "r2", "y", "w", "w2", "aw", "aw2"),
              ("beta", "oldb", "dbar", "epsln", "phibar", "cs", "sn", "tnorm2",
               "gmax", "gmin", "beta1", "test2", "indefinite", "tnorm"),
              b=b, x=x, r=r, rnorm=rnorm, tol=tol)
    s.y = r if psolve is None else psolve(r)
    beta1 = rnorm ** 2 if psolve is None else _dot(r, s.y)
    s.beta1 = beta1
    s.check_nonfinite(s.beta1)
    s.finish(~(s.beta1 > 0), "indefinite")
    if not s.k:
        return
    k = s.k
    s.beta1 = np.sqrt(s.beta1)
    s.r1 = s.r.copy()
    s.r2 = s.r.copy()
    s.beta = s.beta1.copy()
    s.oldb = np.zeros(k)
    s.dbar = np.zeros(k)
    s.epsln = np.zeros(k)
    s.phibar = s.beta1.copy()
    s.cs = -np.ones(k)
    s.sn = np.zeros(k)
    s.tnorm2 = np.zeros(k)
    s.gmax = np.zeros(k)
    s.gmin = np.full(k, np.inf)
    s.w = np.zeros_like(s.r)
    s.w2 = np.zeros_like(s.r)
    s.aw = np.zeros_like(s.r)
    s.aw2 = np.zeros_like(s.r)
    rdt = np.finfo(dtype).dtype
    while s.k:
        if s.it >= maxiter:
            s.finish(np.ones(s.k, dtype=bool), "maxiter")
            break
        v = s.y * (1.0 / s.beta).astype(rdt)
        av = matvec(v)
        y = av - (s.beta / s.oldb).astype(rdt) * s.r1 if s.it else av.copy()
        alfa = _dot(v, y)
        y -= (alfa / s.beta).astype(rdt) * s.r2
        s.r1 = s.r2
        s.r2 = y
        s.y = y if psolve is None else psolve(y)
        oldb = s.beta
        beta2 = _dot(s.r2, s.y)
        beta = np.sqrt(np.maximum(beta2, 0.0))
        # ‖T_k‖_F² (β_k enters T from the second step on: β₁ = ‖b‖_M is the
        # scale of the right-hand side, not of A)
        s.tnorm2 = s.tnorm2 + alfa ** 2 + beta ** 2
        if s.it:
            s.tnorm2 += oldb ** 2
        tnorm = np.sqrt(s.tnorm2)
        oldeps = s.epsln
        delta = s.cs * s.dbar + s.sn * alfa
        gbar = s.sn * s.dbar - s.cs * alfa
        s.epsln = s.sn * beta
        s.dbar = -s.cs * beta
        root = np.hypot(gbar, s.dbar)
        # γ below rounding of ‖T_k‖ is floored there (SciPy: at ε); γ = 0
        # (T_k = 0: A v = 0) leaves x alone and ends as "singular" below
        gamma = np.maximum(np.hypot(gbar, beta), eps * tnorm)
        gamma = np.where(gamma > 0, gamma, np.inf)
        s.cs = gbar / gamma
        s.sn = beta / gamma
        phi = s.cs * s.phibar
        s.phibar = s.sn * s.phibar
        inv = (1.0 / gamma).astype(rdt)
        w1, s.w2 = s.w2, s.w
        s.w = (v - oldeps.astype(rdt) * w1 - delta.astype(rdt) * s.w2) * inv
        aw1, s.aw2 = s.aw2, s.aw
        s.aw = (av - oldeps.astype(rdt) * aw1 - delta.astype(rdt) * s.aw2) * inv
        s.x += phi.astype(rdt) * s.w
        s.r -= phi.astype(rdt) * s.aw
        s.oldb = oldb
        s.beta = beta
        s.gmax = np.maximum(s.gmax, gamma)
        s.gmin = np.minimum(s.gmin, gamma)
        # ‖A r‖ / (‖A‖ ‖r‖) (SciPy's test2) and the sign of rᴴ M r, kept per
        # column so that they follow the compactions below
        s.test2 = np.divide(root, tnorm, out=np.zeros_like(root),
                            where=tnorm > 0)
        if psolve is None:
            s.indefinite = np.zeros(s.k, dtype=bool)
        else:
            s.indefinite = beta2 < -dot_eps * np.sqrt(_sqnorm(s.r2) * _sqnorm(s.y))
        s.tnorm = tnorm
        s.it += 1
        s.report()
        s.rnorm = np.sqrt(_sqnorm(s.r))
        s.check_nonfinite(s.rnorm, s.beta)
        s.check_converged(matvec)
        # the preconditioned Lanczos "norm" rᴴ M r must stay positive
        s.finish(s.indefinite, "indefinite")
        # ‖A r‖ ≈ 0 with r above the tolerance: a least-squares solution of a
        # singular, inconsistent system, not a solution
        s.finish(s.test2 <= 10 * eps, "singular")
        # an invariant Krylov subspace without convergence (β_{k+1} at the
        # rounding level of ‖T_k‖)
        s.finish(s.beta <= eps * s.tnorm, "breakdown")
        s.check_stagnation(matvec)


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
    from .cg import _matrix_free

    return _matrix_free(minres_algorithm, "minres", op, b, x0, rtol, atol,
                        maxiter, M, callback)
