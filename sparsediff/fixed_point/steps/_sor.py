"""Gauss–Seidel / SOR sweeps (Numba) and their adjoints."""

import numba as nb
import numpy as np

from ...kernels.numba import _cache  # noqa: F401  (cache outside the package)
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

_jit = dict(cache=True, nogil=True)


@nb.njit(**_jit)
def _sor_sweep(indptr, indices, data, diag, b, omega, forward, out):
    """In place on ``out`` (holding x on entry): one SOR sweep."""
    n, m = out.shape
    for ii in range(n):
        i = ii if forward else n - 1 - ii
        for c in range(m):
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if j != i:
                    s += data[k] * out[j, c]
            out[i, c] = (1.0 - omega) * out[i, c] + omega * (b[i, c] - s) / diag[i]
    return out


@nb.njit(**_jit)
def _sor_transpose_solve(indptr, indices, data, diag, omega, forward, z):
    """In place on ``z`` (holding v on entry): solve ``Nᵀ z = v``."""
    n, m = z.shape
    for ii in range(n):
        i = n - 1 - ii if forward else ii
        for c in range(m):
            z[i, c] /= diag[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if (forward and j < i) or ((not forward) and j > i):
                a = omega * data[k]
                for c in range(m):
                    z[j, c] -= a * z[i, c]
    return z


@nb.njit(**_jit)
def _sor_rt(indptr, indices, data, diag, z, omega, forward, out):
    """``out = Rᵀ z`` with ``R = (1 − ω) D − ω U`` (forward) or ``− ω L``."""
    n, m = z.shape
    for i in range(n):
        for c in range(m):
            out[i, c] = (1.0 - omega) * diag[i] * z[i, c]
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if (forward and j > i) or ((not forward) and j < i):
                a = omega * data[k]
                for c in range(m):
                    out[j, c] -= a * z[i, c]
    return out


@nb.njit(**_jit)
def _sor_grads(indptr, indices, data, x, y, z, b, omega, forward, gdata):
    """Gradients w.r.t. the canonical values (into ``gdata``) and ω (returned)."""
    n, m = z.shape
    g_omega = 0.0
    for i in range(n):
        for c in range(m):
            g_omega += z[i, c] * b[i, c]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            a = data[k]
            acc = 0.0
            if j == i:
                for c in range(m):
                    acc += z[i, c] * (-y[i, c] + (1.0 - omega) * x[i, c])
                    g_omega -= a * z[i, c] * x[i, c]
            elif (forward and j < i) or ((not forward) and j > i):
                for c in range(m):
                    acc -= omega * z[i, c] * y[j, c]
                    g_omega -= a * z[i, c] * y[j, c]
            else:
                for c in range(m):
                    acc -= omega * z[i, c] * x[j, c]
                    g_omega -= a * z[i, c] * x[j, c]
            gdata[k] = acc
    return g_omega


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
    The sweeps are sequential (Numba). See the comment block above this class
    in the source for the derivation of the VJP: one transposed triangular
    solve per sweep. ``f_inverse`` is a triangular solve with
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
        return _sor_sweep(m.indptr, m.indices, data, d, b2, omega, fwd, x2.copy())

    def f(self, x, params):
        A, data, d, omega, x2, b2, _ = self._setup(x, params)
        for fwd in self._sweeps:
            x2 = self._sweep(A, data, d, b2, omega, fwd, x2)
        return x2.reshape(x.shape)

    def f_vjp(self, x, params, v):
        A, data, d, omega, x2, b2, kind = self._setup(x, params)
        m = A.mat
        xs = [x2]
        for fwd in self._sweeps[:-1]:
            xs.append(self._sweep(A, data, d, b2, omega, fwd, xs[-1]))
        v2 = np.array(_two_d(v), dtype=np.float64, order="C", copy=True)
        g_omega, g_data, g_b = 0.0, np.zeros_like(data), np.zeros_like(b2)
        gd = np.empty_like(data)
        for fwd, x_in in zip(reversed(self._sweeps), reversed(xs)):
            y = self._sweep(A, data, d, b2, omega, fwd, x_in)
            z = _sor_transpose_solve(m.indptr, m.indices, data, d, omega, fwd, v2)
            g_omega += _sor_grads(m.indptr, m.indices, data, x_in, y, z, b2, omega,
                                  fwd, gd)
            g_data += gd
            g_b += omega * z
            v2 = _sor_rt(m.indptr, m.indices, data, d, z, omega, fwd,
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
            y2 = _two_d(_solve(_solver(cache, (np.array(omega), data), build), rhs,
                               rhs.shape))
        return y2.reshape(x_next.shape)
