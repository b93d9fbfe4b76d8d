"""Fused vector updates of the Krylov solvers (compiled lazily, cached on disk).

Every kernel works on 2-D ``(n, m)`` C-contiguous blocks, one column per
right-hand side, with one scalar per column. Fusing the AXPYs of an iteration
with the reduction that follows them (``‖r‖²`` after ``r -= α q``) reads each
vector once per iteration instead of once per NumPy operation; reductions
accumulate in float64 / complex128 whatever the storage precision.
"""

import numba as nb
import numpy as np

__all__ = [
    "bicgstab_p",
    "bicgstab_x",
    "cg_step",
    "col_dot",
    "col_sqnorm",
    "sub_scaled",
    "xpby",
]

_opts = dict(cache=True, nogil=True, fastmath=False)


@nb.njit(**_opts)
def col_dot(a, b, out):
    """``out[c] = Σ_i conj(a[i, c]) · b[i, c]`` (``out`` float64 or complex128)."""
    n, m = a.shape
    for c in range(m):
        out[c] = 0
    for i in range(n):
        for c in range(m):
            out[c] += np.conj(a[i, c]) * b[i, c]
    return out


@nb.njit(**_opts)
def col_sqnorm(a, out):
    """``out[c] = Σ_i |a[i, c]|²`` (``out`` float64)."""
    n, m = a.shape
    for c in range(m):
        out[c] = 0.0
    for i in range(n):
        for c in range(m):
            v = a[i, c]
            out[c] += v.real * v.real + v.imag * v.imag
    return out


@nb.njit(**_opts)
def cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q``, ``out[c] = ‖r[:, c]‖²`` in one pass."""
    n, m = x.shape
    for c in range(m):
        out[c] = 0.0
    for i in range(n):
        for c in range(m):
            a = alpha[c]
            x[i, c] += a * p[i, c]
            v = r[i, c] - a * q[i, c]
            r[i, c] = v
            out[c] += v.real * v.real + v.imag * v.imag
    return out


@nb.njit(**_opts)
def xpby(z, beta, p):
    """``p = z + β p`` (the new search direction)."""
    n, m = p.shape
    for i in range(n):
        for c in range(m):
            p[i, c] = z[i, c] + beta[c] * p[i, c]
    return p


@nb.njit(**_opts)
def sub_scaled(out, r, alpha, v, norms):
    """``out = r − α v`` and ``norms[c] = ‖out[:, c]‖²``."""
    n, m = r.shape
    for c in range(m):
        norms[c] = 0.0
    for i in range(n):
        for c in range(m):
            s = r[i, c] - alpha[c] * v[i, c]
            out[i, c] = s
            norms[c] += s.real * s.real + s.imag * s.imag
    return out


@nb.njit(**_opts)
def bicgstab_p(p, r, v, beta, omega):
    """``p = r + β (p − ω v)``."""
    n, m = p.shape
    for i in range(n):
        for c in range(m):
            p[i, c] = r[i, c] + beta[c] * (p[i, c] - omega[c] * v[i, c])
    return p


@nb.njit(**_opts)
def bicgstab_x(x, alpha, phat, omega, shat):
    """``x += α p̂ + ω ŝ``."""
    n, m = x.shape
    for i in range(n):
        for c in range(m):
            x[i, c] += alpha[c] * phat[i, c] + omega[c] * shat[i, c]
    return x
