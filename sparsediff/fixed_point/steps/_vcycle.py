"""An AMG V-cycle (damped-Jacobi smoothing) as a differentiable step."""

import numpy as np
import scipy.sparse as sp

from ..._validation import as_matrix
from ...backend import _csr
from ._common import _grad_b, _rhs, _scalar, _two_d, cpu_backend

# ---------------------------------------------------------------------------
# AMG V-cycle
# ---------------------------------------------------------------------------


class AMGVCycle:
    """One smoothed-aggregation AMG V-cycle with damped-Jacobi smoothing.

    ``x ↦ V(x, b; ω)``: ``presmooth`` damped-Jacobi sweeps, restriction of
    the residual, the same cycle on the coarse level from a zero guess (an LU
    solve on the coarsest), prolongation of the correction, ``postsmooth``
    sweeps. Linear in ``(x, b)`` for fixed ``ω``, so it is differentiated
    exactly by running the cycle's transpose; the hierarchy (pyamg
    ``smoothed_aggregation_solver``) depends on ``A`` only and is built once,
    so the parameters are ``{"omega", "b"}`` (one ``ω`` on every level).
    No ``f_inverse``.

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
    presmooth, postsmooth : int
    **kwargs
        Passed to the backend's AMG factory, pyamg's
        ``smoothed_aggregation_solver`` on the CPU (``max_coarse``,
        ``max_levels``, ...).
    """

    f_inverse = None

    def __init__(self, A, presmooth=1, postsmooth=1, **kwargs):
        import scipy.linalg as sla

        func = "sparsediff.fixed_point.steps.AMGVCycle"
        mat = as_matrix(A, func, "A", backend=cpu_backend(A, func))
        kwargs.setdefault("max_coarse", 10)
        ml = mat.backend.amg_hierarchy(mat.to_scipy().copy(), func=func, **kwargs)
        self.func = func
        self.n = mat.shape[0]
        self.levels = []
        for lev in ml.levels[:-1]:
            Al = sp.csr_array(lev.A)
            Al.sort_indices()
            self.levels.append(dict(
                A=_csr.CSR(Al.indptr, Al.indices, Al.data, Al.shape, mat.backend),
                n=Al.shape[0],
                d=Al.diagonal()[:, None], P=sp.csr_array(lev.P), R=sp.csr_array(lev.R)))
        self._coarse = sla.lu_factor(np.asarray(ml.levels[-1].A.toarray()))
        self.presmooth = int(presmooth)
        self.postsmooth = int(postsmooth)

    def params(self, omega, b=None):
        """``{"omega": omega, "b": b}``."""
        return {"omega": float(omega), "b": b}

    def _jacobi(self, lev, x, b, omega):
        return x + omega * (b - _csr.matvec(lev["A"], x)) / lev["d"]

    def _cycle(self, level, x, b, omega, tape):
        import scipy.linalg as sla

        if level == len(self.levels):
            return sla.lu_solve(self._coarse, b)
        lev = self.levels[level]
        rec = {"pre": [], "post": []} if tape is not None else None
        for _ in range(self.presmooth):
            if rec is not None:
                rec["pre"].append(x)
            x = self._jacobi(lev, x, b, omega)
        bc = lev["R"] @ (b - _csr.matvec(lev["A"], x))
        sub = [] if tape is not None else None
        ec = self._cycle(level + 1, np.zeros_like(bc), bc, omega, sub)
        x = x + lev["P"] @ ec
        for _ in range(self.postsmooth):
            if rec is not None:
                rec["post"].append(x)
            x = self._jacobi(lev, x, b, omega)
        if tape is not None:
            rec["sub"] = sub
            rec["bc"] = bc
            tape.append(rec)
        return x

    def _jacobi_vjp(self, lev, x, b, omega, v, acc):
        u = v / lev["d"]
        acc["omega"] += float(np.sum(u * (b - _csr.matvec(lev["A"], x))))
        acc["b"] += omega * u
        return v - omega * _csr.matvec(lev["A"], u, "T")

    def _cycle_vjp(self, level, b, omega, v, tape):
        """Returns (v_x, v_b, g_omega) of the cycle at ``level`` (tape of its run)."""
        import scipy.linalg as sla

        if level == len(self.levels):
            return None, sla.lu_solve(self._coarse, v, trans=1), 0.0
        lev = self.levels[level]
        rec = tape[-1]
        acc = {"omega": 0.0, "b": np.zeros_like(v)}
        for x_s in reversed(rec["post"]):
            v = self._jacobi_vjp(lev, x_s, b, omega, v, acc)
        # x_post0 = x_pre_end + P ec,  ec = C(R (b − A x_pre_end))
        _, v_bc, g = self._cycle_vjp(level + 1, rec["bc"], omega, lev["P"].T @ v,
                                     rec["sub"])
        acc["omega"] += g
        t = lev["R"].T @ v_bc
        acc["b"] += t
        v = v - _csr.matvec(lev["A"], t, "T")
        for x_s in reversed(rec["pre"]):
            v = self._jacobi_vjp(lev, x_s, b, omega, v, acc)
        return v, acc["b"], acc["omega"]

    def f(self, x, params):
        omega = _scalar(params, "omega", self.func)
        x2 = np.asarray(_two_d(x), dtype=np.float64)
        b2, _ = _rhs(params, x2, self.n, self.func)
        return self._cycle(0, x2, np.asarray(b2, dtype=np.float64), omega,
                           None).reshape(x.shape)

    def f_vjp(self, x, params, v):
        omega = _scalar(params, "omega", self.func)
        x2 = np.asarray(_two_d(x), dtype=np.float64)
        b2, kind = _rhs(params, x2, self.n, self.func)
        b2 = np.asarray(b2, dtype=np.float64)
        tape = []
        self._cycle(0, x2, b2, omega, tape)
        v_x, v_b, g_omega = self._cycle_vjp(0, b2, omega, _two_d(v).astype(np.float64),
                                            tape)
        out = {"omega": g_omega, "b": _grad_b(v_b, kind, x.shape)}
        return v_x.reshape(x.shape), {k: out[k] if k in out else None for k in params}
