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

Two batch-first kernels serve the reports and the gradient of this path on
the canonical CSR pattern, with values ``(B, nnz)`` and vectors
``(B, n, m)`` as the API holds them (no layout copies):
:func:`residual_report` (the residual, ``|A||x|`` and the sums a direct
solve reports, in one pass) and :func:`pattern_product` (``∂L/∂data``).
They run over the elements ``e0:e1`` (a caller spreads ranges over threads).
"""

import numba as nb
import numpy as np

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["numeric", "pattern_product", "residual_report", "solve",
           "solve_batch_first", "symbolic"]

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
    of ``L`` is read once for all ``m`` right-hand sides. The pivot row of a
    step is held in a workspace ``z`` (``(m, w)``), apart from ``y``: the
    element loops then vectorize without aliasing checks (1.2–1.7× faster
    than updating ``y`` in place, bitwise the same)."""
    n, m, w = y.shape
    z = np.empty((m, w), dtype=y.dtype)
    for i in range(n):                           # L z = y
        di = Lp[i]
        ld = Lx[di, b0:b0 + w]
        for c in range(m):
            for e in range(w):
                z[c, e] = y[i, c, e] / ld[e]
                y[i, c, e] = z[c, e]
        for p in range(di + 1, Lp[i + 1]):
            yr = y[Li[p]]
            lp = Lx[p, b0:b0 + w]
            for c in range(m):
                for e in range(w):
                    yr[c, e] -= lp[e] * z[c, e]
    for i in range(n - 1, -1, -1):               # Lᴴ x = z
        di = Lp[i]
        for c in range(m):
            for e in range(w):
                z[c, e] = y[i, c, e]
        for p in range(di + 1, Lp[i + 1]):
            yr = y[Li[p]]
            lp = Lx[p, b0:b0 + w]
            for c in range(m):
                for e in range(w):
                    z[c, e] -= np.conj(lp[e]) * yr[c, e]
        ld = Lx[di, b0:b0 + w]
        for c in range(m):
            for e in range(w):
                y[i, c, e] = z[c, e] / ld[e]
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


@nb.njit(**_opts)
def residual_report(indptr, indices, data, x3, b3, coef, acc, acca, out, e0, e1):
    """For the elements ``e0:e1``, per column ``c``, with ``r = b − A_e x``
    and ``ax = |A_e||x|`` (row sums in the order of the entries):
    ``out[0] = ‖r‖²``, ``out[1] = ‖b‖²``, ``out[2] = Σ |r| + coef·(ax + |b|)``
    (the numerator of LAPACK's forward error bound), ``out[3] = Σ |x|``
    (``out`` float64 of shape ``(4, B, m)``). ``data`` is ``(B, nnz)``,
    ``x3`` and ``b3`` are ``(B, n, m)``, all in one dtype; ``acc`` and
    ``acca`` (length ``m``) are workspaces in that dtype and in its real
    dtype (the row sums accumulate in the working precision). Indices are
    read as unsigned: no wraparound test per access (1.6× faster)."""
    n = x3.shape[1]
    m = x3.shape[2]
    acc[0] = 0
    acca[0] = 0
    zero = acc[0]                   # typed zeros: the working precision
    zero_a = acca[0]
    for e in range(e0, e1):
        d = data[e]
        if m == 1:                  # scalar accumulators: 1.8× faster
            x = x3[e, :, 0]
            b = b3[e, :, 0]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for i in range(n):
                s = zero
                sa = zero_a
                for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                    a = d[k]
                    xj = x[np.uint64(indices[k])]
                    s += a * xj
                    sa += abs(a) * abs(xj)
                ri = abs(b[i] - s)
                ab = abs(b[i])
                s0 += ri * ri
                s1 += ab * ab
                s2 += ri + coef * (sa + ab)
                s3 += abs(x[i])
            out[0, e, 0] = s0
            out[1, e, 0] = s1
            out[2, e, 0] = s2
            out[3, e, 0] = s3
            continue
        for c in range(m):
            for q in range(4):
                out[q, e, c] = 0
        for i in range(n):
            for c in range(m):
                acc[c] = 0
                acca[c] = 0
            for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                j = np.uint64(indices[k])
                a = d[k]
                aa = abs(a)
                for c in range(m):
                    xj = x3[e, j, c]
                    acc[c] += a * xj
                    acca[c] += aa * abs(xj)
            for c in range(m):
                bi = b3[e, i, c]
                ri = abs(bi - acc[c])
                ab = abs(bi)
                out[0, e, c] += ri * ri
                out[1, e, c] += ab * ab
                out[2, e, c] += ri + coef * (acca[c] + ab)
                out[3, e, c] += abs(x3[e, i, c])
    return out


@nb.njit(**_opts)
def pattern_product(indptr, indices, u3, v3, alpha, acc, out, e0, e1):
    """``out[e, k] = alpha · Σ_c u3[e, i_k, c] · v3[e, j_k, c]`` for the
    elements ``e0:e1`` (``u3``, ``v3`` of shape ``(B, n, m)``, ``out``
    ``(B, nnz)``, ``acc`` a workspace of one element in ``out``'s dtype).
    Each sum starts from zero and adds the columns in order."""
    n = u3.shape[1]
    m = u3.shape[2]
    acc[0] = 0
    zero = acc[0]
    for e in range(e0, e1):
        o = out[e]
        if m == 1:
            u = u3[e, :, 0]
            v = v3[e, :, 0]
            for i in range(n):
                ui = u[i]
                for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                    o[k] = alpha * (zero + ui * v[np.uint64(indices[k])])
            continue
        for i in range(n):
            for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                j = np.uint64(indices[k])
                s = zero
                for c in range(m):
                    s += u3[e, i, c] * v3[e, j, c]
                o[k] = alpha * s
    return out
