"""Single-pass checks and products around a direct factorization (Numba).

Same names and arguments as the twins in ``kernels/_reference.py``. The
direct engine (``solvers/direct.py``) needs, once per matrix, its norms, the
longest row or column, whether its diagonal is real and positive, whether it
is a Z-matrix, and whether ``A = Aᴴ`` or ``A = Aᵀ`` exactly; then, per solve,
the residual with the sums of LAPACK's forward error bound. Done with NumPy
and SciPy that is a dozen O(nnz) passes and a transpose of the pattern
(about 25 ms at nnz = 327k, 2-D Poisson 256², where a CHOLMOD solve takes
15 ms); here it is one pass each.

All functions take a *canonical* CSR matrix (sorted, unique column indices
in each row), as ``MatrixInput`` holds it.
"""

import numba as nb
import numpy as np

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

_opts = dict(cache=True, nogil=True, fastmath=False)

#: bits of ``direct_facts``' flags (the same in the reference twin)
POSITIVE_DIAGONAL = 1     # every diagonal entry stored, real and > 0
Z_MATRIX = 2              # real, no positive off-diagonal entry
HERMITIAN = 4             # A == Aᴴ exactly (pattern and values)
SYMMETRIC = 8             # A == Aᵀ exactly


@nb.njit(inline="always", **_opts)
def _modulus(z):
    """``|z|`` by a square root where ``re² + im²`` cannot over- or underflow
    (a complex ``abs`` is ``hypot``: about 30 ns, 20× slower), ``hypot``
    otherwise; exact for real ``z``."""
    re = abs(z.real)
    im = abs(z.imag)
    if im == 0:             # every real z: the branch folds away
        return re
    big = max(re, im)
    if big > 1e-150 and big < 1e150:
        return np.sqrt(re * re + im * im)
    return np.hypot(re, im)


@nb.njit(**_opts)
def direct_facts(indptr, indices, data):
    """``(‖A‖₁, ‖A‖∞, most entries in a row or column, flags)`` in one pass.

    ``flags``: the bits ``POSITIVE_DIAGONAL``, ``Z_MATRIX``, ``HERMITIAN``
    and ``SYMMETRIC`` of this module. The transpose tests pair each
    upper-triangle entry ``(i, j)`` with ``(j, i)``: rows are visited in
    order, so the partners in row ``j`` come in the order of its (sorted)
    strictly lower part, read by a cursor per row; with as many strictly
    lower as strictly upper entries, every entry is paired.
    """
    n = indptr.shape[0] - 1
    colsum = np.zeros(n, dtype=np.float64)
    colcnt = np.zeros(n, dtype=np.int64)
    cursor = np.empty(n, dtype=np.int64)
    for i in range(n):
        cursor[i] = indptr[i]
    norminf = 0.0
    most = np.int64(0)
    diag_ok = True
    zmat = True
    herm = True
    symm = True
    upper = 0
    lower = 0
    for i in range(n):
        if indptr[i + 1] - indptr[i] > most:
            most = indptr[i + 1] - indptr[i]
        k0 = np.uint64(indptr[i])
        k1 = np.uint64(indptr[i + 1])
        rowsum = 0.0
        seen_diag = False
        for k in range(k0, k1):
            j = indices[k]
            uj = np.uint64(j)
            a = data[k]
            aa = _modulus(a)
            rowsum += aa
            colsum[uj] += aa
            colcnt[uj] += 1
            if j == i:
                seen_diag = True
                if not (a.real > 0 and a.imag == 0):
                    diag_ok = False
                if a.imag != 0:
                    herm = False
            elif j < i:
                lower += 1
                if not (a.imag == 0 and a.real <= 0):
                    zmat = False
            else:
                upper += 1
                if not (a.imag == 0 and a.real <= 0):
                    zmat = False
                if herm or symm:
                    p = np.uint64(cursor[uj])
                    if p < np.uint64(indptr[j + 1]) and indices[p] == i:
                        cursor[uj] += 1
                        t = data[p]
                        if t != a:
                            symm = False
                        if t != np.conj(a):
                            herm = False
                    else:
                        herm = False
                        symm = False
        if not seen_diag:
            diag_ok = False
        if rowsum > norminf:
            norminf = rowsum
    if upper != lower:
        herm = False
        symm = False
    zmat = zmat and diag_ok
    norm1 = 0.0
    for j in range(n):
        if colsum[j] > norm1:
            norm1 = colsum[j]
        if colcnt[j] > most:
            most = colcnt[j]
    flags = ((POSITIVE_DIAGONAL if diag_ok else 0) | (Z_MATRIX if zmat else 0)
             | (HERMITIAN if herm else 0) | (SYMMETRIC if symm else 0))
    return norm1, norminf, most, flags


@nb.njit(**_opts)
def direct_lower(indptr, indices, data):
    """The lower triangle of a Hermitian ``A`` as ``(rows, cols, values)``
    (int64, int64, values' dtype), in column-major order.

    Read from the *upper* triangle of the CSR arrays: entry ``(i, j)``,
    ``j ≥ i``, of row ``i`` is ``(j, i)`` of the lower triangle with value
    ``conj(a_ij) = a_ji``, so the triplets come out sorted by column, then
    row, which is the order a compressed-column matrix is built in. With
    sorted rows, the upper part of row ``i`` is its tail from the first
    index ``≥ i``.
    """
    n = indptr.shape[0] - 1
    start = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        k0 = np.uint64(indptr[i])
        k1 = np.uint64(indptr[i + 1])
        k = k0
        while k < k1 and indices[k] < i:
            k += np.uint64(1)
        start[i] = k
        count += k1 - k
    rows = np.empty(count, dtype=np.int64)
    cols = np.empty(count, dtype=np.int64)
    vals = np.empty(count, dtype=data.dtype)
    p = np.uint64(0)
    for i in range(n):
        k1 = np.uint64(indptr[i + 1])
        for k in range(np.uint64(start[i]), k1):
            rows[p] = indices[k]
            cols[p] = i
            vals[p] = np.conj(data[k])
            p += np.uint64(1)
    return rows, cols, vals


@nb.njit(**_opts)
def _residual_column(indptr, indices, data, absdata, x, c, conj, absx, r, aax):
    """``r[:, c] = op(A) x[:, c]`` and ``aax = |A||x[:, c]|``, rows gathered."""
    n = x.shape[0]
    for i in range(n):
        absx[i] = _modulus(x[i, c])
    k0 = np.uint64(indptr[0])
    for i in range(n):
        k1 = np.uint64(indptr[i + 1])
        acc = x.dtype.type(0)
        s = 0.0
        if conj:
            for k in range(k0, k1):
                j = np.uint64(indices[k])
                acc += np.conj(data[k]) * x[j, c]
                s += absdata[k] * absx[j]
        else:
            for k in range(k0, k1):
                j = np.uint64(indices[k])
                acc += data[k] * x[j, c]
                s += absdata[k] * absx[j]
        k0 = k1
        r[i, c] = acc
        aax[i] = s


@nb.njit(**_opts)
def _finish_column(x, b, r, aax, coef, sums, c):
    """Turn ``r[:, c] = op(A) x`` and ``aax = |A||x|`` into the residual and
    its sums (see :func:`direct_residual`)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for i in range(x.shape[0]):
        bi = b[i, c]
        ri = bi - r[i, c]
        r[i, c] = ri
        ar = _modulus(ri)
        den = aax[i] + _modulus(bi)
        s0 += ar * ar
        s1 += ar + coef * den
        s2 += _modulus(x[i, c])
        if den > 0.0:
            q = ar / den
        elif ar > 0.0 or ar != ar:
            q = np.inf
        else:
            q = 0.0
        if q > s3 or q != q:
            s3 = q
    sums[0, c] = s0
    sums[1, c] = s1
    sums[2, c] = s2
    sums[3, c] = s3


@nb.njit(**_opts)
def direct_residual(indptr, indices, data, absdata, x, b, conj, coef, r, sums):
    """The residual of a solve of ``op(A) x = b``, ``op(A) = A`` (or
    ``conj(A)`` when ``conj``), and its sums, in one pass over the matrix:
    ``r = b − op(A) x`` and, for each column ``c``, ``sums[0, c] = ‖r‖₂²``,
    ``sums[1, c] = ‖w‖₁`` with ``w = |r| + coef·(|A||x| + |b|)`` (LAPACK's
    forward error bound), ``sums[2, c] = ‖x‖₁`` and ``sums[3, c] =
    maxᵢ |rᵢ| / (|A||x| + |b|)ᵢ``, the componentwise backward error (``inf``
    where a nonzero ``rᵢ`` meets a zero denominator). ``absdata = |data|``
    (float64, kept by the caller: a complex modulus per entry and solve costs
    more than the product); ``x``, ``b``, ``r``: ``(n, m)`` of one dtype;
    ``sums``: ``(4, m)`` float64.
    """
    absx = np.empty(x.shape[0], dtype=np.float64)
    aax = np.empty(x.shape[0], dtype=np.float64)
    for c in range(x.shape[1]):
        _residual_column(indptr, indices, data, absdata, x, c, conj, absx, r, aax)
        _finish_column(x, b, r, aax, coef, sums, c)
    return sums


@nb.njit(**_opts)
def direct_residual_t(indptr, indices, data, absdata, x, b, conj, coef, r, sums):
    """:func:`direct_residual` for ``op(A) = Aᵀ`` (``Aᴴ`` when ``conj``), by
    scattering the rows of the CSR arrays: one pass over the matrix and one
    over the vectors per column."""
    n = x.shape[0]
    absx = np.empty(n, dtype=np.float64)
    aax = np.empty(n, dtype=np.float64)
    for c in range(x.shape[1]):
        for i in range(n):
            absx[i] = _modulus(x[i, c])
            aax[i] = 0.0
            r[i, c] = 0
        k0 = np.uint64(indptr[0])
        for i in range(n):
            k1 = np.uint64(indptr[i + 1])
            xi = x[i, c]
            axi = absx[i]
            if conj:
                for k in range(k0, k1):
                    j = np.uint64(indices[k])
                    r[j, c] += np.conj(data[k]) * xi
                    aax[j] += absdata[k] * axi
            else:
                for k in range(k0, k1):
                    j = np.uint64(indices[k])
                    r[j, c] += data[k] * xi
                    aax[j] += absdata[k] * axi
            k0 = k1
        _finish_column(x, b, r, aax, coef, sums, c)
    return sums


@nb.njit(**_opts)
def direct_semipositive(indptr, indices, data, y, margin):
    """Whether ``y ≥ 0`` (finite) and ``A y > margin·|A| y`` in every row."""
    n = indptr.shape[0] - 1
    for i in range(n):
        if not (y[i] >= 0 and np.isfinite(y[i])):
            return False
    for i in range(n):
        ay = 0.0
        aay = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            a = data[k]
            v = y[indices[k]]
            ay += a * v
            aay += abs(a) * v
        if not ay > margin * aay:
            return False
    return True
