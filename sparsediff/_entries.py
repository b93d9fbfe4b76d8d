"""A matrix's stored entries, format by format: structural checks, and the
sort into canonical CSR order (duplicates summed) behind
`sparsediff._validation.as_matrix`."""

import numpy as np

__all__ = ["ENTRY_BUILDERS", "canonicalize", "expand", "index_dtype", "other_entries"]


def index_dtype(*arrays, func, name):
    for a in arrays:
        if a.dtype.kind not in "iu":
            raise TypeError(
                f"`{func}`: the index arrays of `{name}` must be integers; "
                f"got {a.dtype.name}."
            )
    need64 = any(a.dtype.itemsize > 4 or a.dtype == np.uint32 for a in arrays)
    return np.dtype(np.int64 if need64 else np.int32)


def expand(indptr, nmajor):
    """Major index of every stored entry (row of a CSR, column of a CSC)."""
    return np.repeat(np.arange(nmajor, dtype=indptr.dtype), np.diff(indptr))


def _check_compressed(indptr, indices, ndata, nmajor, nminor, func, name, fmt):
    """Full structural check of CSR/CSC/BSR arrays, before any native call."""
    where = f"`{func}`: `{name}` ({fmt})"
    if indptr.ndim != 1 or indices.ndim != 1:
        raise ValueError(f"{where} has index arrays that are not 1-D.")
    if indptr.shape[0] != nmajor + 1:
        raise ValueError(
            f"{where}: `indptr` must have length {nmajor + 1}; got {indptr.shape[0]}."
        )
    if indptr[0] != 0:
        raise ValueError(f"{where}: `indptr[0]` must be 0; got {indptr[0]}.")
    if indptr[-1] != indices.shape[0]:
        raise ValueError(
            f"{where}: `indptr[-1]` must equal len(indices) = {indices.shape[0]}; "
            f"got {indptr[-1]}."
        )
    if ndata != indices.shape[0]:
        raise ValueError(
            f"{where}: `data` and `indices` must have the same length; "
            f"got {ndata} and {indices.shape[0]}."
        )
    if nmajor and np.any(np.diff(indptr) < 0):
        raise ValueError(f"{where}: `indptr` must be non-decreasing.")
    if indices.shape[0]:
        lo, hi = indices.min(), indices.max()
        if lo < 0 or hi >= nminor:
            raise ValueError(
                f"{where}: indices must lie in [0, {nminor}); got values in [{lo}, {hi}]."
            )


def _check_data(data, ndim, func, name, fmt):
    if np.ndim(data) != ndim:
        raise ValueError(
            f"`{func}`: `{name}` ({fmt}) must have a {ndim}-D `data` array; "
            f"got shape {np.shape(data)}.")


def _is_canonical_csr(indptr, indices):
    """True when column indices are strictly increasing within every row."""
    if indices.shape[0] < 2:
        return True
    inc = np.diff(indices) > 0
    # positions where a new row starts do not need to increase
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < indices.shape[0])]
    inc[starts - 1] = True
    return bool(inc.all())



def _coo_entries(A, func, name):
    """Row, column and values of a COO object, with checks."""
    row, col = np.asarray(A.row), np.asarray(A.col)
    if row.shape != col.shape or row.shape != A.data.shape:
        raise ValueError(
            f"`{func}`: `{name}` (coo) has row, col and data of different lengths."
        )
    index_dtype(row, col, func=func, name=name)
    if row.shape[0]:
        for arr, lim, what in ((row, A.shape[0], "row"), (col, A.shape[1], "column")):
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi >= lim:
                raise ValueError(
                    f"`{func}`: `{name}` (coo) {what} indices must lie in [0, {lim}); "
                    f"got values in [{lo}, {hi}]."
                )
    return row, col



# One entry builder per format: ``builder(A, shape, dtype, layout, func, name)``
# checks the structure, records in ``layout`` what `MatrixInput.wrap` needs to
# rebuild the caller's format, and returns the canonical CSR parts
# ``(indptr, indices, data, perm, order, starts, nnz)``: as they are when the
# caller's layout is already canonical, else through `canonicalize`.


def _csr_entries(A, shape, dtype, layout, func, name):
    nrows, ncols = shape
    indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
    idx_t = index_dtype(indptr, indices, func=func, name=name)
    _check_data(A.data, 1, func, name, "csr")
    _check_compressed(indptr, indices, A.data.shape[0], nrows, ncols, func, name, "csr")
    if _is_canonical_csr(indptr, indices):
        # fast path (the common case): O(nnz), three copies and no sort
        values = np.array(A.data, dtype=dtype, copy=True)
        indptr_c = indptr.astype(idx_t, copy=True)
        indices_c = indices.astype(idx_t, copy=True)
        # the caller's layout is the canonical one; keep the caller's index
        # dtypes (private arrays, never written; `wrap` copies them again)
        layout.update(
            indptr=indptr_c if indptr.dtype == idx_t else indptr.copy(),
            indices=indices_c if indices.dtype == idx_t else indices.copy())
        return indptr_c, indices_c, values, None, None, None, values.shape[0]
    # private copies: a caller changing A's arrays after the call must not
    # change the structure of the gradients we hand back later
    layout.update(indptr=indptr.copy(), indices=indices.copy())
    return canonicalize(shape, dtype, expand(indptr, nrows), indices, A.data, idx_t)


def _csc_entries(A, shape, dtype, layout, func, name):
    nrows, ncols = shape
    indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
    idx_t = index_dtype(indptr, indices, func=func, name=name)
    _check_data(A.data, 1, func, name, "csc")
    _check_compressed(indptr, indices, A.data.shape[0], ncols, nrows, func, name, "csc")
    layout.update(indptr=indptr.copy(), indices=indices.copy())
    return canonicalize(shape, dtype, indices, expand(indptr, ncols), A.data, idx_t)


def _bsr_entries(A, shape, dtype, layout, func, name):
    nrows, ncols = shape
    R, C = A.blocksize
    indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
    idx_t = index_dtype(indptr, indices, func=func, name=name)
    _check_data(A.data, 3, func, name, "bsr")
    if A.data.shape[1:] != (R, C) or nrows % R or ncols % C:
        raise ValueError(
            f"`{func}`: `{name}` (bsr) has blocks of shape {A.data.shape[1:]} "
            f"for blocksize {(R, C)} and shape {shape}.")
    _check_compressed(indptr, indices, A.data.shape[0], nrows // R, ncols // C,
                      func, name, "bsr")
    layout.update(indptr=indptr.copy(), indices=indices.copy(),
                  blockshape=A.data.shape)
    brow = expand(indptr, nrows // R).astype(np.int64)
    bcol = indices.astype(np.int64)
    r = np.arange(R)[None, :, None]
    c = np.arange(C)[None, None, :]
    rows = (brow[:, None, None] * R + r + 0 * c).ravel()
    cols = (bcol[:, None, None] * C + c + 0 * r).ravel()
    return canonicalize(shape, dtype, rows, cols, A.data.ravel(), idx_t)


def _dense_entries(A, shape, dtype, layout, func, name):
    """Every entry is stored, row-major: canonical as it is."""
    nrows, ncols = shape
    idx_t = np.dtype(np.int64 if nrows * ncols > np.iinfo(np.int32).max
                     else np.int32)
    indptr_c = np.arange(0, nrows * ncols + 1, max(ncols, 1), dtype=idx_t)
    if ncols == 0:
        indptr_c = np.zeros(nrows + 1, dtype=idx_t)
    indices_c = np.tile(np.arange(ncols, dtype=idx_t), nrows)
    values = np.array(A.ravel(), dtype=dtype, copy=True)
    return indptr_c, indices_c, values, None, None, None, values.shape[0]


def other_entries(A, shape, dtype, layout, func, name):
    """COO as it is; lil, dok, dia in the entry order of ``A.tocoo()``."""
    coo = A if A.format == "coo" else A.tocoo(copy=True)
    rows, cols = _coo_entries(coo, func, name)
    idx_t = index_dtype(rows, cols, func=func, name=name)
    layout.update(row=np.array(rows, copy=True), col=np.array(cols, copy=True))
    return canonicalize(shape, dtype, rows, cols, coo.data, idx_t)


ENTRY_BUILDERS = {"csr": _csr_entries, "csc": _csc_entries, "bsr": _bsr_entries,
            "dense": _dense_entries}


def canonicalize(shape, dtype, rows, cols, values, idx_t):
    """Sort the caller's entries into canonical CSR order, summing duplicates.

    ``perm`` maps each caller's entry to its canonical position; ``order`` and
    ``starts`` (``None`` without duplicates) let `to_canonical` sum new values.
    """
    nrows, ncols = shape
    nnz = values.shape[0]
    if max(nrows, ncols, nnz) > np.iinfo(np.int32).max:
        idx_t = np.dtype(np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    order = np.lexsort((cols, rows))
    r_s, c_s = rows[order], cols[order]
    new = np.empty(nnz, dtype=bool)
    if nnz:
        new[0] = True
        new[1:] = (r_s[1:] != r_s[:-1]) | (c_s[1:] != c_s[:-1])
    group = np.cumsum(new) - 1
    perm = np.empty(nnz, dtype=np.int64)
    perm[order] = group
    vals = np.asarray(values).astype(dtype, copy=False)
    if new.all():
        starts = None
        data_c = vals[order]
        r_u, c_u = r_s, c_s
    else:
        starts = np.flatnonzero(new)
        data_c = np.add.reduceat(vals[order], starts) if nnz else vals[:0].copy()
        r_u, c_u = r_s[starts], c_s[starts]
    indptr_c = np.zeros(nrows + 1, dtype=idx_t)
    np.cumsum(np.bincount(r_u, minlength=nrows), out=indptr_c[1:])
    indices_c = c_u.astype(idx_t)
    return indptr_c, indices_c, np.array(data_c, copy=True), perm, order, starts, nnz
