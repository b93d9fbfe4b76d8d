"""Gauss–Seidel / SOR sweeps and their adjoints (kernels of the matrix's backend)."""

import numpy as np

from ._common import _Csr, _grad_b, _rhs, _scalar, _solve, _solver, _two_d

# ---------------------------------------------------------------------------
# Gauss–Seidel / SOR
# ---------------------------------------------------------------------------
#
# A forward SOR sweep updates x_i in order i = 0..n−1 with the newest values:
#     x_i ← (1 − ω) x_i + ω (b_i − Σ_{j<i} a_ij y_j − Σ_{j>i} a_ij x_j) / a_ii.
# In matrix form, with A = L + D + U (strict lower, diagonal, strict upper),
#     N y = ω b + R x,   N = D + ωL,   R = (1 − ω) D − ωU.            (*)
# For a cotangent v of y, let z = N⁻ᵀ v — a *transposed triangular solve*:
# Nᵀ = D + ωLᵀ is upper triangular, so z comes by back substitution over the
# CSR rows in reverse order (row i of N holds column i of Nᵀ). Then, from (*):
#     ∂/∂x:  Rᵀ z = (1 − ω) D z − ω Uᵀ z
#     ∂/∂b:  ω z
#     ∂/∂ω:  zᵀ (∂R/∂ω x − ∂N/∂ω y + b) = zᵀ (b − D x − U x − L y)
#     ∂/∂a_ij, i > j (in N):  −ω z_i y_j
#     ∂/∂a_ij, i < j (in R):  −ω z_i x_j
#     ∂/∂a_ii:                 z_i (−y_i + (1 − ω) x_i)
# The backward sweep (i = n−1..0) swaps L and U everywhere.
# Inverse: x = R⁻¹ (N y − ω b), a triangular solve; R is singular for ω = 1
# (plain Gauss–Seidel forgets x_i entirely), so that step has no inverse.


class SOR:
    """Successive over-relaxation sweeps (Gauss–Seidel for ``ω = 1``).

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
        Pattern (every diagonal entry stored) and default values.
    direction : {"forward", "backward", "symmetric"}
        Row order of the sweep; ``"symmetric"`` is a forward then a backward
        sweep (SSOR).

    Notes
    -----
    The sweeps are sequential (the backend's ``sor_*`` kernels). See the
    comment block above this class in the source for the derivation of the
    VJP: one transposed triangular solve per sweep. ``f_inverse`` is a triangular solve with
    ``R = (1 − ω) D − ωU`` and does not exist for ``ω = 1``.
    """

    def __init__(self, A, direction="forward"):
        func = "sparsediff.fixed_point.steps.SOR"
        if direction not in ("forward", "backward", "symmetric"):
            raise ValueError(f"`{func}`: `direction` must be 'forward', 'backward' or "
                             f"'symmetric'; got {direction!r}.")
        self._A = _Csr(A, func, need_diag=True)
        self.direction = direction
        self._sweeps = {"forward": (True,), "backward": (False,),
                        "symmetric": (True, False)}[direction]
        self._cache = {}

    func = property(lambda self: self._A.func)

    def params(self, omega, b=None, data=None):
        """``{"omega": omega, "data": data (default A.data), "b": b}``."""
        return {"omega": float(omega),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    def _setup(self, x, params):
        A = self._A
        data = A.data(params).astype(np.float64, copy=False)
        omega = _scalar(params, "omega", self.func)
        x2 = np.ascontiguousarray(_two_d(x), dtype=np.float64)
        b2, kind = _rhs(params, x2, A.n, self.func)
        b2 = np.ascontiguousarray(b2, dtype=np.float64)
        return A, data, A.diag(data), omega, x2, b2, kind

    def _sweep(self, A, data, d, b2, omega, fwd, x2):
        m = A.mat
        return m.backend.kernels.sor_sweep(m.indptr, m.indices, data, d, b2, omega, fwd,
                                           x2.copy())

    def f(self, x, params):
        A, data, d, omega, x2, b2, _ = self._setup(x, params)
        for fwd in self._sweeps:
            x2 = self._sweep(A, data, d, b2, omega, fwd, x2)
        return x2.reshape(x.shape)

    def f_vjp(self, x, params, v):
        A, data, d, omega, x2, b2, kind = self._setup(x, params)
        m = A.mat
        kern = m.backend.kernels
        xs = [x2]
        for fwd in self._sweeps[:-1]:
            xs.append(self._sweep(A, data, d, b2, omega, fwd, xs[-1]))
        v2 = np.array(_two_d(v), dtype=np.float64, order="C", copy=True)
        g_omega, g_data, g_b = 0.0, np.zeros_like(data), np.zeros_like(b2)
        gd = np.empty_like(data)
        for fwd, x_in in zip(reversed(self._sweeps), reversed(xs)):
            y = self._sweep(A, data, d, b2, omega, fwd, x_in)
            z = kern.sor_transpose_solve(m.indptr, m.indices, data, d, omega, fwd, v2)
            g_omega += kern.sor_grads(m.indptr, m.indices, data, x_in, y, z, b2,
                                      omega, fwd, gd)
            g_data += gd
            g_b += omega * z
            v2 = kern.sor_rt(m.indptr, m.indices, data, d, z, omega, fwd,
                             np.empty_like(z))
        out = {"omega": g_omega, "data": A.caller(g_data),
               "b": _grad_b(g_b, kind, x.shape)}
        return v2.reshape(x.shape), {k: out[k] if k in out else None for k in params}

    def f_inverse(self, x_next, params):
        A, data, d, omega, y2, b2, _ = self._setup(x_next, params)
        if omega == 1.0:
            raise ValueError(
                f"`{self.func}`: a Gauss–Seidel sweep (omega = 1) has no inverse; "
                f"use adjoint='checkpoint'.")
        for fwd in reversed(self._sweeps):
            lower, upper = (A.lower, A.upper) if fwd else (A.upper, A.lower)
            # N y − ω b with N = D + ωL (forward) / D + ωU (backward)
            nd = np.where(lower, omega * data, 0.0)
            nd[A.diag_pos] = d
            rhs = A.matvec(nd, y2) - omega * b2

            def build(fwd=fwd, upper=upper):
                rd = np.where(upper, -omega * data, 0.0)
                rd[A.diag_pos] = (1.0 - omega) * d
                return A.scipy(rd)

            cache = self._cache.setdefault(fwd, {})
            solver = _solver(cache, (np.array(omega), data), build, A.backend)
            y2 = _two_d(_solve(solver, rhs, rhs.shape))
        return y2.reshape(x_next.shape)
