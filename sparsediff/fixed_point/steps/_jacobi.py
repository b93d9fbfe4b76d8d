"""Richardson and weighted Jacobi steps."""

import numpy as np
import scipy.sparse as sp

from ._common import _Csr, _grad_b, _rhs, _scalar, _solve, _solver, _two_d

# ---------------------------------------------------------------------------
# Richardson and weighted Jacobi
# ---------------------------------------------------------------------------


class Jacobi:
    """Weighted (damped) Jacobi, ``x ↦ x + ω D⁻¹ (b − A x)``.

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
        Supplies the pattern (every diagonal entry must be stored) and the
        default values of ``params["data"]``.

    Notes
    -----
    With ``r = b − A x``, ``u = D⁻¹ v`` for a cotangent ``v``::

        ∂/∂x:     v − ω Aᵀ u
        ∂/∂ω:     ⟨v, D⁻¹ r⟩
        ∂/∂b:     ω u
        ∂/∂a_ij:  −ω u_i x_j  (+ −ω v_i r_i / d_i² on the diagonal, from D⁻¹)

    Inverse: ``x = (I − ωD⁻¹A)⁻¹ (x_next − ω D⁻¹ b)``, one sparse LU per
    value of ``(ω, data)``. It is ill-conditioned exactly when the step is a
    good smoother (``1 − ω μ ≈ 0`` for eigenvalues ``μ`` of ``D⁻¹A``).
    """

    _richardson = False

    def __init__(self, A):
        self._A = _Csr(A, f"sparsediff.fixed_point.steps.{type(self).__name__}",
                       need_diag=not self._richardson)
        self._cache = {}

    @property
    def func(self):
        return self._A.func

    def params(self, omega, b=None, data=None):
        """``{"omega": omega, "data": data (default A.data), "b": b}``."""
        return {"omega": float(omega),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    def _parts(self, x, params):
        A = self._A
        data = A.data(params)
        omega = _scalar(params, "omega", self.func)
        x2 = _two_d(x)
        b2, kind = _rhs(params, x2, A.n, self.func)
        d = None if self._richardson else A.diag(data)[:, None]
        r = b2 - A.matvec(data, x2)
        return A, data, omega, x2, b2, kind, d, r

    def f(self, x, params):
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        step = r if d is None else r / d
        return (x2 + omega * step).reshape(x.shape)

    def f_vjp(self, x, params, v):
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        v2 = _two_d(v)
        u = v2 if d is None else v2 / d
        v_x = v2 - omega * A.rmatvec(data, u)
        g_omega = float(np.sum(v2 * (r if d is None else r / d)))
        g_data = A.outer(u, x2, -omega)
        if d is not None:
            # D⁻¹ depends on the diagonal values: ∂(r_i/d_i)/∂d_i = −r_i/d_i²
            g_data[A.diag_pos] -= omega * np.sum(v2 * r, axis=1) / d[:, 0] ** 2
        out = {"omega": g_omega, "data": A.caller(g_data),
               "b": _grad_b(omega * u, kind, x.shape)}
        return v_x.reshape(x.shape), {k: out[k] if k in out else None for k in params}

    def f_jvp(self, x, params, dx, dparams):
        """Tangent of ``f``: ``∂f/∂x dx + ∂f/∂θ dθ`` (``dparams`` like ``params``)."""
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        dx2 = _two_d(dx)
        ddata = (A.mat.to_canonical(np.asarray(dparams["data"], dtype=float))
                 if dparams.get("data") is not None else np.zeros_like(data))
        db2, _ = _rhs({"b": dparams.get("b")}, x2, A.n, self.func)
        dr = db2 - A.matvec(ddata, x2) - A.matvec(data, dx2)
        domega = float(dparams.get("omega") or 0.0)
        if d is None:
            out = dx2 + domega * r + omega * dr
        else:
            dd = ddata[A.diag_pos][:, None]
            out = dx2 + domega * r / d + omega * (dr / d - r * dd / d ** 2)
        return out.reshape(x.shape)

    def f_inverse(self, x_next, params):
        A = self._A
        data = A.data(params)
        omega = _scalar(params, "omega", self.func)
        y2 = _two_d(x_next)
        b2, _ = _rhs(params, y2, A.n, self.func)
        if self._richardson:
            rhs = y2 - omega * b2

            def build():
                return (sp.eye_array(A.n, format="csr") - omega * A.scipy(data)).tocsr()
        else:
            d = A.diag(data)
            rhs = y2 - omega * b2 / d[:, None]

            def build():
                md = -omega * data / d[A.mat.rows]
                md[A.diag_pos] += 1.0
                return A.scipy(md)
        solver = _solver(self._cache, (np.array(omega), data), build, A.backend)
        return _solve(solver, rhs, x_next.shape)


class Richardson(Jacobi):
    """Richardson, ``x ↦ x + ω (b − A x)`` (diagonal need not be stored).

    Notes
    -----
    ``∂/∂x: v − ω Aᵀ v``; ``∂/∂ω: ⟨v, r⟩``; ``∂/∂b: ω v``;
    ``∂/∂a_ij: −ω v_i x_j``. Inverse: ``x = (I − ωA)⁻¹ (x_next − ω b)``.
    """

    _richardson = True
