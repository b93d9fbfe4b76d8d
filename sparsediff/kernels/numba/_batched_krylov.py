"""Fused vector updates of the batched Krylov loops (compiled lazily, cached).

The vectors are ``(n, B, m)`` (element ``e``, column ``c`` of row ``i`` at
``[i, e, c]``, C-contiguous), the per-system scalars ``(B, m)``. The kernels
see them as ``(n, S)`` and ``(S,)`` with ``S = B·m`` (views), so that the
inner loop runs over contiguous systems and vectorizes. Each kernel is one
pass over its vectors where the NumPy expressions of ``batched/_krylov.py``
made several, with temporaries.

Each output element is computed by the same operations in the same order as
those expressions (no fast-math, so no contraction into fused multiply-adds),
and each reduction accumulates over ``i`` in ascending order in the dtype of
the vectors; complex squared norms sum the real and imaginary squares
separately, then add them, as ``_norm`` does. Twins in
``kernels/_reference.py`` (same names, same arguments).
"""

import numba as nb
import numpy as np

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["batched_bicgstab_p", "batched_bicgstab_r", "batched_bicgstab_x",
           "batched_cg_step", "batched_col_dot", "batched_sqnorm",
           "batched_sub_scaled", "batched_xpby"]

_opts = dict(cache=True, nogil=True, fastmath=False)


def _flat(a):
    """``(n, B, m)`` -> ``(n, B·m)`` view (C-contiguous input)."""
    return a.reshape(a.shape[0], -1)


def _flat1(a):
    """``(B, m)`` -> ``(B·m,)`` view (C-contiguous input)."""
    return a.reshape(-1)


@nb.njit(**_opts)
def _sqnorm_complex(r, out):
    n, S = r.shape
    re = np.zeros(S, dtype=out.dtype)
    im = np.zeros(S, dtype=out.dtype)
    for i in range(n):
        for s in range(S):
            v = r[i, s]
            re[s] += v.real * v.real
            im[s] += v.imag * v.imag
    for s in range(S):
        out[s] = re[s] + im[s]


@nb.njit(**_opts)
def _sqnorm_real(r, out):
    n, S = r.shape
    for s in range(S):
        out[s] = 0
    for i in range(n):
        for s in range(S):
            out[s] += r[i, s] * r[i, s]


def batched_sqnorm(r, out):
    """``out[e, c] = ‖r[:, e, c]‖²`` (``out``: the real dtype of ``r``)."""
    if np.iscomplexobj(r):
        _sqnorm_complex(_flat(r), _flat1(out))
    else:
        _sqnorm_real(_flat(r), _flat1(out))
    return out


@nb.njit(**_opts)
def _col_dot(a, b, out):
    n, S = a.shape
    for s in range(S):
        out[s] = 0
    for i in range(n):
        for s in range(S):
            out[s] += np.conj(a[i, s]) * b[i, s]


def batched_col_dot(a, b, out):
    """``out[e, c] = Σ_i conj(a[i, e, c]) · b[i, e, c]``."""
    _col_dot(_flat(a), _flat(b), _flat1(out))
    return out


@nb.njit(**_opts)
def _cg_update(x, r, p, q, alpha):
    n, S = x.shape
    for i in range(n):
        for s in range(S):
            x[i, s] += alpha[s] * p[i, s]
            r[i, s] -= alpha[s] * q[i, s]


def batched_cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q`` and ``out[e, c] = ‖r[:, e, c]‖²``."""
    _cg_update(_flat(x), _flat(r), _flat(p), _flat(q), _flat1(alpha))
    return batched_sqnorm(r, out)


@nb.njit(**_opts)
def _xpby(z, beta, p):
    n, S = p.shape
    for i in range(n):
        for s in range(S):
            p[i, s] = z[i, s] + beta[s] * p[i, s]


def batched_xpby(z, beta, p):
    """``p = z + β p``."""
    _xpby(_flat(z), _flat1(beta), _flat(p))
    return p


@nb.njit(**_opts)
def _bicgstab_p(p, r, v, beta, omega):
    n, S = p.shape
    for i in range(n):
        for s in range(S):
            p[i, s] = r[i, s] + beta[s] * (p[i, s] - omega[s] * v[i, s])


def batched_bicgstab_p(p, r, v, beta, omega):
    """``p = r + β (p − ω v)``."""
    _bicgstab_p(_flat(p), _flat(r), _flat(v), _flat1(beta), _flat1(omega))
    return p


@nb.njit(**_opts)
def _sub_scaled(out, r, alpha, v):
    n, S = out.shape
    for i in range(n):
        for s in range(S):
            out[i, s] = r[i, s] - alpha[s] * v[i, s]


def batched_sub_scaled(out, r, alpha, v):
    """``out = r − α v``."""
    _sub_scaled(_flat(out), _flat(r), _flat1(alpha), _flat(v))
    return out


@nb.njit(**_opts)
def _bicgstab_x(x, alpha, phat, omega, shat):
    n, S = x.shape
    for i in range(n):
        for s in range(S):
            x[i, s] += alpha[s] * phat[i, s] + omega[s] * shat[i, s]


def batched_bicgstab_x(x, alpha, phat, omega, shat):
    """``x += α p̂ + ω ŝ``."""
    _bicgstab_x(_flat(x), _flat1(alpha), _flat(phat), _flat1(omega), _flat(shat))
    return x


@nb.njit(**_opts)
def _bicgstab_r(r, s_, omega, t, active):
    n, S = r.shape
    for i in range(n):
        for s in range(S):
            if active[s]:
                r[i, s] = s_[i, s] - omega[s] * t[i, s]


def batched_bicgstab_r(r, s, omega, t, active, out):
    """``r = s − ω t`` for the ``active`` systems, ``out[e, c] =
    ‖r[:, e, c]‖²`` for all."""
    _bicgstab_r(_flat(r), _flat(s), _flat1(omega), _flat(t), _flat1(active))
    return batched_sqnorm(r, out)
