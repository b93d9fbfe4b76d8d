"""Batched sparse Cholesky ``C_e = L_e L_eᴴ`` of B Hermitian matrices on one
pattern: the symbolic analysis once, the numeric factorization and the
triangular solves batch-last (compiled lazily, cached).

The algorithm is the up-looking Cholesky (row ``k`` of ``L`` by a sparse
triangular solve with the rows above it, as in Davis, *Direct Methods for
Sparse Linear Systems*, 2006, ch. 4). On a fixed pattern every step of it is
known in advance: which columns ``i`` row ``k`` reaches (the elimination-tree
reach of column ``k`` of ``C``'s upper triangle, in topological order), and
where ``L[k, i]`` is stored. :func:`symbolic` records that *program* once;
:func:`numeric` runs it for every element of a slice of the batch, with the
element as the innermost, contiguous loop: one pass over the indices serves
every element, and the arithmetic vectorizes across the batch.

Layout: the values of ``C``'s upper triangle are gathered from the canonical
values ``data_t`` (shape ``(nnz, B)``) by ``src``; ``Lx`` is ``(nnz(L), B)``;
right-hand sides are ``(n, m, B)``. Columns of ``L`` are stored diagonal
first, then their rows in increasing order.

The kernels are serial and release the GIL: a caller spreads slices of the
batch over threads (``batched/_common.batch_map``), each writing its own
columns of ``Lx`` and of the right-hand sides.
"""

import numba as nb
import numpy as np

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["numeric", "solve", "solve_batch_first", "symbolic"]

_opts = dict(cache=True, nogil=True, fastmath=False)


@nb.njit(**_opts)
def _etree(n, cp, ci):
    """Elimination tree of the Hermitian matrix whose upper triangle is the
    CSC ``(cp, ci)`` (parent ``-1`` at the roots)."""
    parent = np.full(n, -1, np.int64)
    ancestor = np.full(n, -1, np.int64)
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            while i != -1 and i < k:
                nxt = ancestor[i]
                ancestor[i] = k
                if nxt == -1:
                    parent[i] = k
                i = nxt
    return parent


@nb.njit(**_opts)
def _reach(k, cp, ci, parent, flag, stack, path):
    """The columns row ``k`` of ``L`` reaches: ``stack[top:]`` in topological
    order (the walks up the elimination tree from column ``k``'s entries
    above the diagonal, marked in ``flag``); returns ``top``."""
    n = stack.shape[0]
    flag[k] = k
    top = n
    for p in range(cp[k], cp[k + 1]):
        i = ci[p]
        if i > k:
            continue
        length = 0
        while flag[i] != k:
            path[length] = i
            length += 1
            flag[i] = k
            i = parent[i]
        while length > 0:
            length -= 1
            top -= 1
            stack[top] = path[length]
    return top


@nb.njit(**_opts)
def _program(n, cp, ci, parent):
    """Column pointers and row indices of ``L`` and the step program.

    ``kp[k]:kp[k+1]`` are the steps of row ``k``: column ``ki[q]`` (in
    topological order) whose ``L[k, ki[q]]`` is stored at ``kpos[q]``. A
    first pass counts (``Lp``, the program length), a second fills.
    """
    flag = np.full(n, -1, np.int64)
    stack = np.empty(n, np.int64)
    path = np.empty(n, np.int64)
    counts = np.ones(n, np.int64)            # the diagonal
    kp = np.zeros(n + 1, np.int64)
    for k in range(n):
        top = _reach(k, cp, ci, parent, flag, stack, path)
        kp[k + 1] = kp[k] + (n - top)
        for t in range(top, n):
            counts[stack[t]] += 1
    Lp = np.zeros(n + 1, np.int64)
    for i in range(n):
        Lp[i + 1] = Lp[i] + counts[i]
    Li = np.empty(Lp[n], np.int64)
    ki = np.empty(kp[n], np.int64)
    kpos = np.empty(kp[n], np.int64)
    nxt = Lp[:n] + 1
    flag[:] = -1
    q = 0
    for k in range(n):
        Li[Lp[k]] = k
        top = _reach(k, cp, ci, parent, flag, stack, path)
        for t in range(top, n):
            i = stack[t]
            ki[q] = i
            kpos[q] = nxt[i]
            Li[nxt[i]] = k
            nxt[i] += 1
            q += 1
    return Lp, kp, Li, ki, kpos


def symbolic(n, cp, ci):
    """The analysis of a pattern whose upper triangle is the CSC ``(cp, ci)``
    (rows sorted within each column, the diagonal present):
    ``(Lp, Li, kp, ki, kpos)``, see the module. ``Lp[n]`` is ``nnz(L)``."""
    cp = np.ascontiguousarray(cp, dtype=np.int64)
    ci = np.ascontiguousarray(ci, dtype=np.int64)
    parent = _etree(n, cp, ci)
    Lp, kp, Li, ki, kpos = _program(n, cp, ci, parent)
    return Lp, Li, kp, ki, kpos


@nb.njit(**_opts)
def numeric(cp, ci, src, Lp, Li, kp, ki, kpos, data_t, Lx, ok):
    """Factor the ``w`` elements of a slice: ``Lx[:, e]`` (shape
    ``(nnz(L), w)``) from ``data_t[src, e]`` (shape ``(nnz, w)``).

    ``ok[e]`` is cleared for an element with a pivot that is not positive
    and finite (not positive definite to working precision); its factor is
    then meaningless (that pivot is replaced by 1 to keep the others' loop
    finite) and must not be used.
    """
    n = Lp.shape[0] - 1
    w = Lx.shape[1]
    x = np.zeros((n, w), dtype=Lx.dtype)
    z = np.empty(w, dtype=Lx.dtype)
    d = np.empty(w, dtype=np.float64)
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            s = src[p]
            for e in range(w):
                x[i, e] = data_t[s, e]
        for e in range(w):
            d[e] = x[k, e].real
            x[k, e] = 0
        for q in range(kp[k], kp[k + 1]):
            i = ki[q]
            pos = kpos[q]
            di = Lp[i]
            for e in range(w):
                z[e] = x[i, e] / Lx[di, e]
                x[i, e] = 0
            for p in range(di + 1, pos):
                r = Li[p]
                for e in range(w):
                    x[r, e] -= Lx[p, e] * z[e]
            for e in range(w):
                ze = z[e]
                d[e] -= (ze * np.conj(ze)).real
                Lx[pos, e] = np.conj(ze)
        dk = Lp[k]
        for e in range(w):
            if d[e] > 0 and np.isfinite(d[e]):
                Lx[dk, e] = np.sqrt(d[e])
            else:
                ok[e] = False
                Lx[dk, e] = 1
    return ok


@nb.njit(**_opts)
def solve(Lp, Li, Lx, y, b0):
    """``y[:, :, j] ← (L_e L_eᴴ)⁻¹ y[:, :, j]`` with ``L_e = Lx[:, b0 + j]``,
    for every column ``j`` of ``y`` (shape ``(n, m, w)``). Each stored entry
    of ``L`` is read once for all ``m`` right-hand sides."""
    n, m, w = y.shape
    for i in range(n):                           # L z = y
        di = Lp[i]
        for c in range(m):
            for e in range(w):
                y[i, c, e] /= Lx[di, b0 + e]
        for p in range(di + 1, Lp[i + 1]):
            r = Li[p]
            for c in range(m):
                for e in range(w):
                    y[r, c, e] -= Lx[p, b0 + e] * y[i, c, e]
    for i in range(n - 1, -1, -1):               # Lᴴ x = z
        di = Lp[i]
        for p in range(di + 1, Lp[i + 1]):
            r = Li[p]
            for c in range(m):
                for e in range(w):
                    y[i, c, e] -= np.conj(Lx[p, b0 + e]) * y[r, c, e]
        for c in range(m):
            for e in range(w):
                y[i, c, e] /= Lx[di, b0 + e]
    return y


@nb.njit(**_opts)
def solve_batch_first(Lp, Li, Lx, perm, b3, x3, b0, y):
    """``x3[b0 + j] = Pᵀ (L_j L_jᴴ)⁻¹ P b3[b0 + j]`` for the ``w`` elements of a
    slice (``L_j = Lx[:, j]``, ``P`` the ordering ``perm``, new → old): the
    gather, the two triangular solves and the scatter in one call, with
    ``y`` (shape ``(n, m, w)``) as the workspace."""
    n, m, w = y.shape
    for i in range(n):
        pi = perm[i]
        for c in range(m):
            for e in range(w):
                y[i, c, e] = b3[b0 + e, pi, c]
    solve(Lp, Li, Lx, y, 0)
    for i in range(n):
        pi = perm[i]
        for c in range(m):
            for e in range(w):
                x3[b0 + e, pi, c] = y[i, c, e]
    return x3
