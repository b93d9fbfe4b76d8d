"""BiCGSTAB (van der Vorst 1992) with right preconditioning, for general A.

Right preconditioning (``A M y = b``, ``x = M y``) keeps the recursive
residual that of the *unpreconditioned* system, which is what the stopping
test ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` measures (SciPy's ``bicgstab``
does the same). Complex systems use ``vdot`` inner products.

Breakdowns (``ρ = r̂ᴴ r ≈ 0``, ``r̂ᴴ v ≈ 0`` or ``ω = 0``, each relative to the
norms of the vectors involved, so scale-invariant) stop the column with
``reason="breakdown"``; its iterate is the last finite one. A column whose
true residual has stopped decreasing at the level of its rounding errors
stops with ``reason="stagnation"``.
"""

import numpy as np

from ._common import column_norms
from ._krylov import KrylovEngine, State, col_dot, matrix_free

__all__ = ["BiCGSTABEngine", "bicgstab"]


def _scalar(v, dtype):
    """Per-column scalars in the precision the fused kernels accept for ``dtype``."""
    return v if np.dtype(dtype).kind == "c" else v.real


def _stabilize(s, matvec, psolve, sv):
    """``(ŝ, t, ω)``: ``ŝ = M s``, ``t = A ŝ`` and the step ``ω = tᴴs / tᴴt``
    (0 where ``t = 0``)."""
    shat = sv if psolve is None else psolve(sv)
    t = matvec(shat)
    tt = col_dot(s, t, t).real
    ts = col_dot(s, t, sv)
    with np.errstate(divide="ignore", invalid="ignore"):
        omega = np.where(tt > 0, ts / np.where(tt > 0, tt, 1.0), 0.0)
    return shat, t, omega


def bicgstab_algorithm(run, matvec, psolve, b, x, r, rnorm, tol, cols, maxiter):
    """BiCGSTAB iterations on the live columns."""
    dtype = x.dtype
    eps = np.finfo(dtype).eps
    s = State(run, cols, ("rhat", "p", "v"),
              ("rho_old", "alpha", "omega", "rhat_norm", "omega_zero"),
              maxiter, b=b, x=x, r=r, rnorm=rnorm, tol=tol)
    fused = s.kernels
    s.rhat = r.copy()
    s.rhat_norm = rnorm.copy()
    s.p = s.xp.zeros_like(r)
    s.v = s.xp.zeros_like(r)
    one = s.xp.ones(s.k, dtype=np.complex128 if dtype.kind == "c" else np.float64)
    s.rho_old, s.alpha, s.omega = one.copy(), one.copy(), one.copy()
    identity = psolve is None
    if s.masked:
        s.omega_zero = s.xp.zeros(s.k, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            _bicgstab_masked(s, matvec, psolve, eps, dtype)
        return
    while s.k:
        if s.at_limit(matvec):
            break
        rho = col_dot(s, s.rhat, s.r)
        s.check_nonfinite(rho)
        rho = rho[np.isfinite(rho)]
        small = np.abs(rho) <= eps ** 2 * s.rhat_norm * s.rnorm
        s.finish(small, "breakdown")
        rho = rho[~small]
        if not s.k:
            break
        beta = (rho / s.rho_old) * (s.alpha / s.omega)
        fused.bicgstab_p(s.p, s.r, s.v, _scalar(beta, dtype), _scalar(s.omega, dtype))
        phat = s.p if identity else psolve(s.p)
        s.v = matvec(phat)
        rv = col_dot(s, s.rhat, s.v)
        bad = ~(np.abs(rv) > eps ** 2 * s.rhat_norm * column_norms(s.v))
        if bad.any():
            keep = ~bad
            s.check_nonfinite(rv)
            s.finish(bad[np.isfinite(rv)], "breakdown")
            rho, rv, phat = rho[keep], rv[keep], np.ascontiguousarray(phat[:, keep])
            if not s.k:
                break
        alpha = rho / rv
        snorm2 = s.xp.empty(s.k)
        sv = s.xp.empty_like(s.r)
        fused.sub_scaled(sv, s.r, _scalar(alpha, dtype), s.v, snorm2)
        shat, t, omega = _stabilize(s, matvec, psolve, sv)
        # s = 0 exactly means x + α p̂ solves the system: ω = 0 is then harmless
        omega_ok = (omega != 0) | (snorm2 == 0)
        fused.bicgstab_x(s.x, _scalar(alpha, dtype), phat, _scalar(omega, dtype), shat)
        fused.sub_scaled(s.r, sv, _scalar(omega, dtype), t, snorm2)
        s.it += 1
        s.report()
        s.rnorm = np.sqrt(snorm2)
        s.rho_old, s.alpha, s.omega = rho, alpha, np.where(omega_ok, omega, 1.0)
        # ω = 0 with s ≠ 0: the stabilizing step made no progress
        s.omega_zero = ~omega_ok
        s.check_nonfinite(s.rnorm, omega)
        s.check_converged(matvec)
        s.finish(s.omega_zero, "breakdown")
        s.check_stagnation(matvec)


def _bicgstab_masked(s, matvec, psolve, eps, dtype):
    """The BiCGSTAB loop for ``check_every > 1``: no decision on array values.

    The arithmetic of :func:`bicgstab_algorithm` on active columns; a
    retired column has ``α = ω = 0`` (``x`` and ``r`` unchanged, its
    ``v``, ``p̂``, ``ŝ``, ``t`` zeroed in the updates against ``0·Inf``) and
    keeps ``p``, ``v`` and its scalars, to resume where it stopped.
    """
    fused = s.kernels
    identity = psolve is None
    while s.k:
        if s.at_limit(matvec):
            break
        rho = col_dot(s, s.rhat, s.r)
        s.stop(~np.isfinite(rho), "nonfinite")
        s.stop(np.abs(rho) <= eps ** 2 * s.rhat_norm * s.rnorm, "breakdown")
        beta = (rho / s.safe(s.rho_old)) * (s.alpha / s.safe(s.omega))
        p = s.p.copy()
        fused.bicgstab_p(p, s.r, s.v, _scalar(beta, dtype), _scalar(s.omega, dtype))
        s.p = s.commit(p, s.p)
        phat = s.p if identity else psolve(s.p)
        s.v = s.commit(matvec(phat), s.v)
        rv = col_dot(s, s.rhat, s.v)
        bad = ~(np.abs(rv) > eps ** 2 * s.rhat_norm * column_norms(s.v))
        s.stop(bad & ~np.isfinite(rv), "nonfinite")
        s.stop(bad, "breakdown")
        alpha = rho / s.safe(rv)
        a_step = s.step_size(alpha)
        snorm2 = s.xp.empty(s.k)
        sv = s.xp.empty_like(s.r)
        fused.sub_scaled(sv, s.r, _scalar(a_step, dtype), s.live(s.v), snorm2)
        shat, t, omega = _stabilize(s, matvec, psolve, sv)
        omega_ok = (omega != 0) | (snorm2 == 0)
        w_step = s.step_size(omega)
        fused.bicgstab_x(s.x, _scalar(a_step, dtype), s.live(phat),
                         _scalar(w_step, dtype), s.live(shat))
        fused.sub_scaled(s.r, sv, _scalar(w_step, dtype), s.live(t), snorm2)
        s.tick()
        s.report()
        s.rnorm = s.commit(np.sqrt(snorm2), s.rnorm)
        s.rho_old = s.commit(rho, s.rho_old)
        s.alpha = s.commit(alpha, s.alpha)
        s.omega_zero = s.commit(~omega_ok, s.omega_zero)
        omega = s.commit(omega, s.omega)
        s.omega = s.commit(np.where(omega_ok, omega, 1.0), s.omega)
        s.after_step(matvec, s.rnorm, omega)
        s.stop(s.omega_zero, "breakdown")
        s.check_stagnation(matvec)


class BiCGSTABEngine(KrylovEngine):
    """Engine for ``method="bicgstab"``."""

    name = "bicgstab"
    algorithm = staticmethod(bicgstab_algorithm)


def bicgstab(op, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, M=None,
             callback=None):
    """Matrix-free BiCGSTAB on blocks (see :func:`sparsediff.solvers.cg.cg`).

    See Also
    --------
    scipy.sparse.linalg.bicgstab
    """
    return matrix_free(bicgstab_algorithm, "bicgstab", op, b, x0, rtol, atol,
                       maxiter, M, callback)
