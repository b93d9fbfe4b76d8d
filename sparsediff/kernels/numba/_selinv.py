"""Selected inversion of a sparse LU factorization (Takahashi's recurrence).

For ``M = L U`` (``L`` unit lower, ``U`` upper with diagonal ``d``), the
inverse ``Z = M⁻¹`` satisfies (Takahashi, Fagan and Chen 1973; Erisman and
Tinney 1975)

    Z = U⁻¹ D⁻¹ + Z (I − L)          (gives the strictly lower part of Z)
    Z = D⁻¹ L⁻¹ + (I − D⁻¹U) Z       (gives the upper part and the diagonal)

We store ``W = Zᵀ = M⁻ᵀ`` on the pattern of ``F = (L − I) + U``: entry
``(r, c)`` of ``F`` holds ``W[r, c]``. That pattern is closed under the
recurrence: the entries of ``W`` that one step needs are fill positions of
the elimination (``L[r, i] ≠ 0`` and ``U[i, k] ≠ 0`` with ``i < r, k`` put an
entry at ``(r, k)``). Going backwards over ``i``, with ``r`` running over the
strictly lower rows of column ``i`` of ``L`` and ``k`` over the strictly upper
columns of row ``i`` of ``U``:

    W[i, k] = −Σ_r L[r, i] W[r, k]
    W[r, i] = −(1/d_i) Σ_k U[i, k] W[r, k]
    W[i, i] = (1 − Σ_k U[i, k] W[i, k]) / d_i

The two sums read the same entries ``W[r, k]`` (column ``k`` of ``F`` at the
rows of column ``i`` of ``L``), so one merge of two sorted row lists serves
both. The work is of the order of the factorization's; memory is one value
per entry of ``F``.

SciPy's ``L`` and ``U`` omit exact zeros: an entry of ``A`` stored as zero
that no fill reached, and (rarely: measured on a random complex matrix, two
pairs of terms cancelling exactly) a fill entry whose value cancelled to
zero. The recurrence then lacks entries it needs (counted by the kernel), or
a wanted entry has no place. :func:`selected_inverse_lu` then runs again on
the *symbolic* pattern: the closure ``G = G ∪ tril(G)·triu(G)`` of the
pattern of ``L + U`` and the wanted positions, with explicit zeros, which is
closed under the recurrence by construction (a sparse product per round,
about the cost of the factorization; only in those cases).
"""

import numba as nb
import numpy as np
import scipy.sparse as sp

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["pattern_positions", "selected_inverse", "selected_inverse_lu"]

_jit = dict(cache=True, nogil=True)


@nb.njit(**_jit)
def _lower_bound(indices, lo, hi, value):
    """First position in ``indices[lo:hi]`` (sorted) holding ``>= value``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(**_jit)
def selected_inverse(indptr, indices, data, out):
    """``out[p] = (M⁻ᵀ)[r, c]`` for every entry ``p = (r, c)`` of ``F`` (CSC,
    sorted rows, diagonal stored). Returns the number of needed entries that
    ``F`` does not store (0 when ``out`` is exact), or −1 for a missing or
    zero diagonal."""
    n = indptr.shape[0] - 1
    diag = np.empty(n, np.int64)
    for c in range(n):
        p = _lower_bound(indices, indptr[c], indptr[c + 1], c)
        if p == indptr[c + 1] or indices[p] != c or data[p] == 0:
            return -1
        diag[c] = p
    # the strictly upper part of F by rows: columns and positions, sorted
    urp = np.zeros(n + 1, np.int64)
    for c in range(n):
        for p in range(indptr[c], diag[c]):
            urp[indices[p] + 1] += 1
    for i in range(n):
        urp[i + 1] += urp[i]
    nxt = urp[:-1].copy()
    ucol = np.empty(urp[n], np.int64)
    upos = np.empty(urp[n], np.int64)
    for c in range(n):
        for p in range(indptr[c], diag[c]):
            r = indices[p]
            ucol[nxt[r]] = c
            upos[nxt[r]] = p
            nxt[r] += 1
    tmp = np.zeros(n, out.dtype)
    missing = 0
    for i in range(n - 1, -1, -1):
        lo = diag[i] + 1
        nl = indptr[i + 1] - lo
        for t in range(nl):
            tmp[t] = 0
        d = data[diag[i]]
        s_diag = data[diag[i]] * 0
        for q in range(urp[i], urp[i + 1]):
            k = ucol[q]
            pu = upos[q]
            u = data[pu]
            end = indptr[k + 1]
            pk = _lower_bound(indices, indptr[k], end, i + 1)
            acc = data[pu] * 0
            t = 0
            while t < nl and pk < end:
                r = indices[lo + t]
                rk = indices[pk]
                if rk < r:
                    pk += 1
                elif rk > r:
                    missing += 1
                    t += 1
                else:
                    w = out[pk]
                    acc += data[lo + t] * w
                    tmp[t] += u * w
                    t += 1
                    pk += 1
            missing += nl - t
            out[pu] = -acc
            s_diag += u * out[pu]
        for t in range(nl):
            out[lo + t] = -tmp[t] / d
        out[diag[i]] = (1 - s_diag) / d
    return missing


@nb.njit(**_jit)
def pattern_positions(indptr, indices, rows, cols, out):
    """``out[e]``: the position of ``(rows[e], cols[e])`` in the CSC pattern
    (sorted rows), or −1 where it is not stored."""
    for e in range(rows.shape[0]):
        c = cols[e]
        p = _lower_bound(indices, indptr[c], indptr[c + 1], rows[e])
        out[e] = p if (p < indptr[c + 1] and indices[p] == rows[e]) else -1
    return out


def _symbolic_closure(F, rows, cols):
    """The pattern of ``F`` and of ``(rows, cols)``, closed under elimination
    fill (``G ∪ tril(G)·triu(G)`` until it stops growing), CSC, sorted."""
    n = F.shape[0]
    ones = np.ones(F.nnz + rows.shape[0])
    G = sp.csc_array((ones, (np.concatenate([F.tocoo().row, rows]),
                             np.concatenate([F.tocoo().col, cols]))), shape=(n, n))
    G.sum_duplicates()
    G.data[:] = 1.0
    eye = sp.eye_array(n, format="csc")
    while True:
        P = (sp.tril(G, -1, format="csc") + eye) @ sp.triu(G, format="csc")
        new = (G + P).tocsc()
        new.data[:] = 1.0
        if new.nnz == G.nnz:
            G.sort_indices()
            return G
        G = new


def _run(indptr, indices, data, rows, cols):
    out = np.zeros_like(data)
    missing = int(selected_inverse(indptr, indices, data, out)) if indptr.size > 1 else 0
    pos = pattern_positions(indptr, indices, rows, cols, np.empty(rows.shape[0], np.int64))
    found = pos >= 0
    values = np.zeros(rows.shape[0], data.dtype)
    values[found] = out[pos[found]]
    return values, found, missing


def selected_inverse_lu(lu, rows, cols):
    """``(M⁻¹)[cols[e], rows[e]]`` for SuperLU's ``M = Pr A Pc = L U``.

    Returns ``(values, found, missing)`` (see ``Backend.selected_inverse``).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    F = (sp.tril(lu.L, -1, format="csc") + lu.U).tocsc()
    F.sort_indices()
    indptr = F.indptr.astype(np.int64)
    indices = F.indices.astype(np.int64)
    data = np.ascontiguousarray(F.data)
    values, found, missing = _run(indptr, indices, data, rows, cols)
    if missing == 0 and found.all():
        return values, found, missing
    G = _symbolic_closure(F, rows, cols)
    g_indptr = G.indptr.astype(np.int64)
    g_indices = G.indices.astype(np.int64)
    f_cols = np.repeat(np.arange(F.shape[0], dtype=np.int64), np.diff(indptr))
    at = pattern_positions(g_indptr, g_indices, indices, f_cols,
                           np.empty(indices.shape[0], np.int64))
    g_data = np.zeros(G.nnz, data.dtype)
    g_data[at] = data
    return _run(g_indptr, g_indices, g_data, rows, cols)
