"""Chebyshev semi-iteration as a differentiable step."""

import numpy as np

from ._common import _Csr, _grad_b, _rhs, _scalar, _two_d

# ---------------------------------------------------------------------------
# Chebyshev
# ---------------------------------------------------------------------------


class Chebyshev:
    """Chebyshev semi-iteration for ``A x = b``, eigenvalues in ``[lmin, lmax]``.

    The three-term recurrence needs the previous iterate, so the *state* is
    the stacked pair ``s = (x_k, x_{k−1})``, shape ``(2, n)`` or
    ``(2, n, m)``: build it with :meth:`initial_state` and read the iterate
    with :meth:`solution`. One step::

        x_{k+1} = x_{k−1} + ω (γ (b − A x_k) + x_k − x_{k−1})
        γ = 2 / (lmax + lmin),   ω = 2 / (1 + √(1 − q²)),
        q = (lmax − lmin) / (lmax + lmin)

    This is the stationary form of the Chebyshev semi-iteration (Golub &
    Varga's second-order Richardson): the non-stationary weights ``ω_k`` of
    the textbook recurrence tend to this ``ω`` and would make ``f`` depend on
    ``k``; the asymptotic rate is Chebyshev's, ``√(ω − 1)`` per step on
    ``[lmin, lmax]``. Starting from ``x_{−1} = x_0``.

    Parameters are ``{"lmin", "lmax", "data", "b"}`` (``0 < lmin < lmax``).
    ``f_inverse`` solves the recurrence backwards, ``x_{k−1} = (x_{k+1} − ω
    x_k − ωγ (b − A x_k)) / (1 − ω)``: no linear solve.
    """

    def __init__(self, A):
        self._A = _Csr(A, "sparsediff.fixed_point.steps.Chebyshev", need_diag=False)

    func = property(lambda self: self._A.func)

    def params(self, lmin, lmax, b=None, data=None):
        """``{"lmin", "lmax", "data" (default A.data), "b"}``."""
        return {"lmin": float(lmin), "lmax": float(lmax),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    @staticmethod
    def initial_state(x0):
        """The state ``(x_0, x_{−1} = x_0)``."""
        x0 = np.asarray(x0)
        return np.stack([x0, x0])

    @staticmethod
    def solution(state):
        """The current iterate ``x_k`` of a state (a view)."""
        return state[0]

    def _coef(self, params):
        lo = _scalar(params, "lmin", self.func)
        hi = _scalar(params, "lmax", self.func)
        if not 0 < lo < hi < np.inf:
            raise ValueError(f"`{self.func}`: the bounds must satisfy 0 < lmin < lmax; "
                             f"got lmin = {lo}, lmax = {hi}.")
        s = lo + hi
        q = (hi - lo) / s
        root = np.sqrt(1.0 - q * q)
        gamma = 2.0 / s
        omega = 2.0 / (1.0 + root)
        # derivatives of (γ, ω) with respect to (lmin, lmax)
        dgamma = -2.0 / s ** 2
        domega_dq = 2.0 * q / (root * (1.0 + root) ** 2)
        dq = (-2.0 * hi / s ** 2, 2.0 * lo / s ** 2)
        return gamma, omega, dgamma, (domega_dq * dq[0], domega_dq * dq[1])

    def _split(self, s, func):
        if s.ndim < 2 or s.shape[0] != 2 or s.shape[1] != self._A.n:
            raise ValueError(f"`{func}`: the Chebyshev state must have shape (2, n) or "
                             f"(2, n, m) with n = {self._A.n}; got {s.shape}.")
        return _two_d(s[0]), _two_d(s[1])

    def _residual(self, x, params):
        """``(data, r = b − A x, kind of b)`` at the current iterate."""
        A = self._A
        data = A.data(params)
        b2, kind = _rhs(params, x, A.n, self.func)
        return data, b2 - A.matvec(data, x), kind

    def f(self, s, params):
        x, xp = self._split(s, self.func)
        gamma, omega, _, _ = self._coef(params)
        _, r, _ = self._residual(x, params)
        x_new = xp + omega * (gamma * r + x - xp)
        return np.stack([x_new.reshape(s.shape[1:]), s[0]])

    def f_vjp(self, s, params, v):
        A = self._A
        x, xp = self._split(s, self.func)
        v1, v2 = _two_d(v[0]), _two_d(v[1])
        gamma, omega, dgamma, domega = self._coef(params)
        data, r, kind = self._residual(x, params)
        # x_new = (1 − ω) x_prev + ω x + ωγ (b − A x);  the second output is x
        v_x = omega * v1 - omega * gamma * A.rmatvec(data, v1) + v2
        v_xp = (1.0 - omega) * v1
        g_omega = float(np.sum(v1 * (gamma * r + x - xp)))
        g_gamma = float(np.sum(v1 * omega * r))
        out = {
            "lmin": g_gamma * dgamma + g_omega * domega[0],
            "lmax": g_gamma * dgamma + g_omega * domega[1],
            "data": A.caller(A.outer(v1, x, -omega * gamma)),
            "b": _grad_b(omega * gamma * v1, kind, s.shape[1:]),
        }
        v_s = np.stack([v_x.reshape(s.shape[1:]), v_xp.reshape(s.shape[1:])])
        return v_s, {k: out[k] if k in out else None for k in params}

    def f_inverse(self, s_next, params):
        x_new, x = self._split(s_next, self.func)
        gamma, omega, _, _ = self._coef(params)
        _, r, _ = self._residual(x, params)
        xp = (x_new - omega * x - omega * gamma * r) / (1.0 - omega)
        return np.stack([s_next[1], xp.reshape(s_next.shape[1:])])
