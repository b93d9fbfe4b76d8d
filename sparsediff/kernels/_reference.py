"""Pure-NumPy twins of the compiled kernels (the gold standard in tests).

Every function takes raw CSR arrays ``(indptr, indices, data)`` and writes
into ``out``; ``x``, ``u``, ``v`` and ``out`` are 2-D ``(n, m)`` arrays.
"""

import numpy as np

#: The compiled kernels overflow to inf (and inf − inf to NaN) silently, as
#: IEEE arithmetic does; the twins do the same instead of warning, so that a
#: test of the non-finite handling reads alike on every backend.
_QUIET = np.errstate(over="ignore", invalid="ignore")

__all__ = [
    "batched_bicgstab_p",
    "batched_bicgstab_r",
    "batched_bicgstab_x",
    "batched_cg_step",
    "batched_col_dot",
    "batched_csr_matvec",
    "batched_csr_rmatvec",
    "batched_residual_stats",
    "batched_sparse_outer",
    "batched_sqnorm",
    "batched_sub_scaled",
    "batched_swap01",
    "batched_xpby",
    "bicgstab_p",
    "bicgstab_x",
    "cg_step",
    "col_dot",
    "col_sqnorm",
    "csr_matvec",
    "csr_matvec_dot",
    "csr_matvec_dot1",
    "csr_diagonal",
    "csr_rmatvec",
    "direct_facts",
    "direct_lower",
    "direct_residual",
    "direct_residual_t",
    "direct_semipositive",
    "segment_sum",
    "sor_grads",
    "sor_rt",
    "sor_sweep",
    "sor_transpose_solve",
    "sparse_outer",
    "sub_scaled",
    "xpby",
]


def _rows(indptr):
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


@_QUIET
def csr_matvec(indptr, indices, data, x, out):
    """``out = A @ x``."""
    rows = _rows(indptr)
    out[...] = 0
    np.add.at(out, rows, data[:, None] * x[indices])
    return out


@_QUIET
def csr_rmatvec(indptr, indices, data, x, out, conj):
    """``out = A.T @ x`` (``conj=False``) or ``A.conj().T @ x`` (``conj=True``)."""
    rows = _rows(indptr)
    vals = np.conj(data) if conj else data
    out[...] = 0
    np.add.at(out, indices, vals[:, None] * x[rows])
    return out


@_QUIET
def sparse_outer(indptr, indices, u, v, alpha, out):
    """``out[k] = alpha * sum_m u[i_k, m] * v[j_k, m]`` for stored entries k."""
    rows = _rows(indptr)
    out[...] = alpha * np.sum(u[rows] * v[indices], axis=1)
    return out


def csr_diagonal(indptr, indices, data, out):
    """``out[i] = A[i, i]`` (0 where not stored; duplicates summed)."""
    rows = _rows(indptr)
    on = rows == indices
    out[...] = 0
    np.add.at(out, rows[on], data[on])
    return out


def segment_sum(values, starts, out):
    """``out[g] = Σ values[starts[g]:starts[g + 1]]`` (the last to the end)."""
    ends = np.append(starts[1:], values.shape[0])
    for g, (a, b) in enumerate(zip(starts, ends)):
        out[g] = values[a:b].sum()
    return out


# ---------------------------------------------------------------------------
# Fused Krylov updates and reductions (twins of kernels/numba/_krylov.py).
# Reductions accumulate in float64 / complex128 whatever the storage dtype.
# ---------------------------------------------------------------------------


def _wide(a):
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


@_QUIET
def col_dot(a, b, out):
    """``out[c] = Σ_i conj(a[i, c]) · b[i, c]`` (``out`` float64 or complex128)."""
    out[...] = np.sum(np.conj(_wide(a)) * _wide(b), axis=0)
    return out


@_QUIET
def col_sqnorm(a, out):
    """``out[c] = Σ_i |a[i, c]|²`` (``out`` float64)."""
    out[...] = np.sum(np.abs(_wide(a)) ** 2, axis=0)
    return out


@_QUIET
def cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q``, ``out[c] = ‖r[:, c]‖²``."""
    x += (alpha * p).astype(x.dtype, copy=False)
    r -= (alpha * q).astype(r.dtype, copy=False)
    return col_sqnorm(r, out)


@_QUIET
def xpby(z, beta, p):
    """``p = z + β p``."""
    p[...] = z + beta * p
    return p


@_QUIET
def sub_scaled(out, r, alpha, v, norms):
    """``out = r − α v`` and ``norms[c] = ‖out[:, c]‖²``."""
    out[...] = r - alpha * v
    col_sqnorm(out, norms)
    return out


@_QUIET
def bicgstab_p(p, r, v, beta, omega):
    """``p = r + β (p − ω v)``."""
    p[...] = r + beta * (p - omega * v)
    return p


@_QUIET
def bicgstab_x(x, alpha, phat, omega, shat):
    """``x += α p̂ + ω ŝ``."""
    x += alpha * phat + omega * shat
    return x


@_QUIET
def csr_matvec_dot(indptr, indices, data, x, out, dots):
    """``out = A x`` and ``dots[c] = Σ_i conj(x[i, c]) · out[i, c]``."""
    csr_matvec(indptr, indices, data, x, out)
    dots[...] = np.sum(np.conj(_wide(x)) * _wide(out), axis=0)
    return out


@_QUIET
def csr_matvec_dot1(indptr, indices, data, x, out, dots):
    """:func:`csr_matvec_dot` for one right-hand side on 1-D ``x`` and ``out``."""
    csr_matvec_dot(indptr, indices, data, x[:, None], out[:, None], dots[:1])
    return out


# ---------------------------------------------------------------------------
# SOR sweeps (twins of kernels/numba/_sor.py): sequential over the rows, each
# row vectorized over its stored entries and the columns. Real values only.
# ---------------------------------------------------------------------------


@_QUIET
def _order(n, forward):
    return range(n) if forward else range(n - 1, -1, -1)


@_QUIET
def sor_sweep(indptr, indices, data, diag, b, omega, forward, out):
    """In place on ``out`` (holding x on entry): one SOR sweep."""
    for i in _order(out.shape[0], forward):
        lo, hi = indptr[i], indptr[i + 1]
        j = indices[lo:hi]
        a = np.where(j != i, data[lo:hi], 0.0)
        s = a @ out[j]
        out[i] = (1.0 - omega) * out[i] + omega * (b[i] - s) / diag[i]
    return out


@_QUIET
def sor_transpose_solve(indptr, indices, data, diag, omega, forward, z):
    """In place on ``z`` (holding v on entry): solve ``Nᵀ z = v``."""
    for i in _order(z.shape[0], not forward):
        z[i] /= diag[i]
        lo, hi = indptr[i], indptr[i + 1]
        j = indices[lo:hi]
        keep = j < i if forward else j > i
        z[j[keep]] -= omega * data[lo:hi][keep][:, None] * z[i]
    return z


@_QUIET
def sor_rt(indptr, indices, data, diag, z, omega, forward, out):
    """``out = Rᵀ z`` with ``R = (1 − ω) D − ω U`` (forward) or ``− ω L``."""
    rows = _rows(indptr)
    keep = indices > rows if forward else indices < rows
    out[...] = (1.0 - omega) * diag[:, None] * z
    np.add.at(out, indices[keep], -omega * data[keep][:, None] * z[rows[keep]])
    return out


@_QUIET
def sor_grads(indptr, indices, data, x, y, z, b, omega, forward, gdata):
    """Gradients w.r.t. the canonical values (into ``gdata``) and ω (returned)."""
    rows = _rows(indptr)
    diag = indices == rows
    newest = indices < rows if forward else indices > rows  # the N part: y
    src = np.where(newest[:, None], y[indices], x[indices])
    zr = z[rows]
    gdata[...] = -omega * np.sum(zr * src, axis=1)
    gdata[diag] = np.sum(zr[diag] * (-y[rows[diag]] + (1.0 - omega) * x[rows[diag]]),
                         axis=1)
    g_omega = np.sum(z * b) - np.sum(data * np.sum(zr * np.where(
        diag[:, None], x[rows], src), axis=1))
    return float(g_omega)


# batched kernels: values (nnz, B), vectors (n, B, m) (kernels/numba/_batched.py)


@_QUIET
def batched_csr_matvec(indptr, indices, data, x, out):
    """``out[:, e] = A_e @ x[:, e]`` for every batch element ``e``."""
    rows = _rows(indptr)
    out[...] = 0
    np.add.at(out, rows, data[:, :, None] * x[indices])
    return out


@_QUIET
def batched_csr_rmatvec(indptr, indices, data, x, out, conj):
    """``out[:, e] = A_eᵀ @ x[:, e]`` (``conj``: ``A_eᴴ``)."""
    rows = _rows(indptr)
    vals = np.conj(data) if conj else data
    out[...] = 0
    np.add.at(out, indices, vals[:, :, None] * x[rows])
    return out


@_QUIET
def batched_sparse_outer(indptr, indices, u, v, alpha, out):
    """``out[e, k] = alpha · Σ_c u[i_k, e, c] · v[j_k, e, c]`` (batch-first)."""
    rows = _rows(indptr)
    out[...] = (alpha * np.einsum("kec,kec->ke", u[rows], v[indices])).T
    return out


def batched_residual_stats(x, b, r, ax, coef, out):
    """``‖r‖²``, ``‖b‖²``, ``Σ |r| + coef·(ax + |b|)``, ``Σ |x|`` per column."""
    ar, ab = np.abs(r).astype(np.float64), np.abs(b).astype(np.float64)
    out[0] = (ar * ar).sum(axis=0)
    out[1] = (ab * ab).sum(axis=0)
    out[2] = (ar + coef * (ax + ab)).sum(axis=0)
    out[3] = np.abs(x).sum(axis=0, dtype=np.float64)
    return out


def batched_swap01(src, out):
    """``out[j, i, c] = src[i, j, c]``: batch-first ↔ batch-last."""
    out[...] = src.transpose(1, 0, 2)
    return out


# ---------------------------------------------------------------------------
# Fused updates of the batched Krylov loops (twins of
# kernels/numba/_batched_krylov.py): vectors (n, B, m), scalars (B, m).
# ---------------------------------------------------------------------------


@_QUIET
def batched_sqnorm(r, out):
    """``out[e, c] = ‖r[:, e, c]‖²`` (``out``: the real dtype of ``r``)."""
    sq = np.einsum("nbm,nbm->bm", r.real, r.real)
    if np.iscomplexobj(r):
        sq = sq + np.einsum("nbm,nbm->bm", r.imag, r.imag)
    out[...] = sq
    return out


@_QUIET
def batched_col_dot(a, b, out):
    """``out[e, c] = Σ_i conj(a[i, e, c]) · b[i, e, c]``."""
    out[...] = np.einsum("nbm,nbm->bm", np.conj(a), b)
    return out


@_QUIET
def batched_cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q`` and ``out[e, c] = ‖r[:, e, c]‖²``."""
    x += alpha * p
    r -= alpha * q
    return batched_sqnorm(r, out)


@_QUIET
def batched_sub_scaled(out, r, alpha, v):
    """``out = r − α v``."""
    out[...] = r - alpha * v
    return out


# the element-wise updates broadcast over the batch axis: the single-system
# twins are the batched ones
batched_xpby = xpby
batched_bicgstab_p = bicgstab_p
batched_bicgstab_x = bicgstab_x


@_QUIET
def batched_bicgstab_r(r, s, omega, t, active, out):
    """``r = s − ω t`` for the ``active`` systems, ``out[e, c] =
    ‖r[:, e, c]‖²`` for all."""
    r[:, active] = (s - omega * t)[:, active]
    return batched_sqnorm(r, out)


# -- around a direct factorization (canonical CSR: sorted, unique) ---------

#: bits of ``direct_facts``' flags (as in ``kernels/numba/_direct.py``)
POSITIVE_DIAGONAL, Z_MATRIX, HERMITIAN, SYMMETRIC = 1, 2, 4, 8


def direct_facts(indptr, indices, data):
    """``(‖A‖₁, ‖A‖∞, most entries in a row or column, flags)``; the flags
    say: every diagonal entry stored, real and > 0; a real Z-matrix with such
    a diagonal; ``A == Aᴴ``; ``A == Aᵀ`` (exactly, pattern and values)."""
    n = indptr.shape[0] - 1
    rows = _rows(indptr)
    absdata = np.abs(data)
    norm1 = float(np.bincount(indices, weights=absdata, minlength=n).max(initial=0.0))
    norminf = float(np.bincount(rows, weights=absdata, minlength=n).max(initial=0.0))
    most = int(max(np.diff(indptr).max(initial=0),
                   np.bincount(indices, minlength=1).max(initial=0)))
    on = rows == indices
    d = data[on]
    diag_ok = bool(np.count_nonzero(on) == n and np.all(d.real > 0)
                   and np.all(d.imag == 0))
    off = data[~on]
    zmat = diag_ok and bool(np.all((off.imag == 0) & (off.real <= 0)))
    keys = rows.astype(np.int64) * n + indices
    keys_t = indices.astype(np.int64) * n + rows
    perm = np.argsort(keys_t, kind="stable")
    structural = bool(np.array_equal(keys, keys_t[perm]))
    herm = structural and bool(np.array_equal(data[perm], np.conj(data)))
    symm = structural and bool(np.array_equal(data[perm], data))
    flags = ((POSITIVE_DIAGONAL if diag_ok else 0) | (Z_MATRIX if zmat else 0)
             | (HERMITIAN if herm else 0) | (SYMMETRIC if symm else 0))
    return norm1, norminf, most, flags


def direct_lower(indptr, indices, data):
    """The lower triangle of a Hermitian A as ``(rows, cols, values)`` in
    column-major order, read from the upper triangle of the CSR arrays."""
    rows = _rows(indptr)
    keep = indices >= rows
    # entry (i, j), j ≥ i, is (j, i) of the lower triangle, value conj(a_ij);
    # rows of the CSR arrays come in order: sorted by column i, then row j
    return (indices[keep].astype(np.int64), rows[keep].astype(np.int64),
            np.conj(data[keep]))


def _residual_sums(r, ax, x, b, coef, sums):
    """``r = b − op(A) x`` from ``r = op(A) x`` and the sums of
    :func:`direct_residual` (``ax = |A||x|``)."""
    r[...] = b - r
    ar = np.abs(r)
    den = ax + np.abs(b)
    sums[0] = (ar * ar).sum(axis=0)
    sums[1] = (ar + coef * den).sum(axis=0)
    sums[2] = np.abs(x).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(den > 0, ar / np.where(den > 0, den, 1.0),
                     np.where(ar > 0, np.inf, 0.0))
    q = np.where(np.isnan(ar), np.inf, q)
    sums[3] = q.max(axis=0, initial=0.0)
    return sums


@_QUIET
def direct_residual(indptr, indices, data, absdata, x, b, conj, coef, r, sums):
    """``r = b − op(A) x`` with ``op(A) = conj(A)`` if ``conj`` else ``A``; per
    column: ``‖r‖₂²``, ``‖|r| + coef (|A||x| + |b|)‖₁``, ``‖x‖₁`` and the
    componentwise backward error ``maxᵢ |rᵢ| / (|A||x| + |b|)ᵢ``;
    ``absdata = |data|``."""
    vals = np.conj(data) if conj else data
    csr_matvec(indptr, indices, vals, x, r)
    ax = csr_matvec(indptr, indices, np.asarray(absdata, dtype=np.float64),
                    np.abs(x), np.empty(x.shape, dtype=np.float64))
    return _residual_sums(r, ax, x, b, coef, sums)


@_QUIET
def direct_residual_t(indptr, indices, data, absdata, x, b, conj, coef, r, sums):
    """:func:`direct_residual` for ``op(A) = Aᵀ`` (``Aᴴ`` when ``conj``)."""
    vals = np.conj(data) if conj else data
    csr_rmatvec(indptr, indices, vals, x, r, False)
    ax = csr_rmatvec(indptr, indices, np.asarray(absdata, dtype=np.float64),
                     np.abs(x), np.empty(x.shape, dtype=np.float64), False)
    return _residual_sums(r, ax, x, b, coef, sums)


@_QUIET
def direct_semipositive(indptr, indices, data, y, margin):
    """Whether ``y ≥ 0`` (finite) and ``A y > margin·|A| y`` in every row."""
    if not (np.isfinite(y).all() and np.all(y >= 0)):
        return False
    y2 = y.reshape(-1, 1).astype(np.float64)
    ay = csr_matvec(indptr, indices, data, y2, np.empty_like(y2))
    aay = csr_matvec(indptr, indices, np.abs(data), y2, np.empty_like(y2))
    return bool(np.all(ay > margin * aay))
