"""Gauss–Seidel / SOR sweeps, their transposed triangular solves and gradients.

Sequential over the rows (each row uses the newest values), real values only;
the derivation is in ``fixed_point/steps/_sor.py``. ``forward`` selects the
row order (0..n−1, or n−1..0). Compiled lazily, cached on disk.
"""

import numba as nb

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["sor_grads", "sor_rt", "sor_sweep", "sor_transpose_solve"]

_jit = dict(cache=True, nogil=True)


@nb.njit(**_jit)
def sor_sweep(indptr, indices, data, diag, b, omega, forward, out):
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
def sor_transpose_solve(indptr, indices, data, diag, omega, forward, z):
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
def sor_rt(indptr, indices, data, diag, z, omega, forward, out):
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
def sor_grads(indptr, indices, data, x, y, z, b, omega, forward, gdata):
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
